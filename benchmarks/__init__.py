"""Benchmarks of the platform itself: CPU runtimes, distance from the machine's limit,
tracking overhead, data pipeline, search vs grid.

    python -m benchmarks --quick true          # a few minutes; every section
    mlflow run . -e benchmark --env-manager local -P quick=true

Method, shared by every section (see benchmarks/RESULTS.md):
- variants that are compared are measured in the SAME process and run, interleaved (A B C A
  B C ... rounds), and summarised by medians: this machine is shared and noisy, absolute
  times drift by 2-5x within minutes, ratios measured side by side hold;
- every table ends in ratios, and records what decides the numbers (torch threads, the
  OpenMP wait policy, the load average before and after);
- each section returns a `Section`: its tables (printed), flat metrics and params (logged
  to the MLflow experiment `benchmarks`, one child run per section).

The shared pieces are projects.core.bench; the platform's sections are the sibling
modules, and each study may bring sections for its own pipeline (its benchmark_sections: a
__main__.SectionsStudy).
"""
from __future__ import annotations

SECTIONS = ("runtimes", "flops", "training", "system_metrics", "search_vs_grid", "predict_latency")  # the platform's own; studies add theirs (benchmarks.__main__.all_sections)
