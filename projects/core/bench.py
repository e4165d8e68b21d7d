"""The benchmark kit every benchmark section uses (the platform's own in benchmarks/, and the
ones a study brings for its own pipeline): interleaved timing, medians, the machine
description, and the Section / Table a section returns.

Method (see benchmarks/RESULTS.md): variants that are compared are measured in the SAME
process and run, interleaved (A B C A B C ... rounds), and summarised by medians: this
machine is shared and noisy, absolute times drift by 2-5x within minutes, ratios measured
side by side hold; every table ends in ratios and records what decides the numbers.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# --- timing -----------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a small sample; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def interleaved(fns: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 1,
                repeat: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each fn, measured in A B C A B C ... order.

    warmup calls of each fn (in the same interleaved order) are not recorded; `repeat`
    calls per fn per round are timed one by one (all recorded), so a round stays short and
    the variants see the same slice of the machine's load.
    """
    for _ in range(max(0, warmup)):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, rounds)):
        for name, fn in fns.items():
            for _ in range(max(1, repeat)):
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return samples


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine() -> dict[str, str]:
    """What decides this machine's numbers (logged as params, printed under every table)."""
    import torch

    from projects.core import runtime

    threads = runtime.thread_settings()
    info = {
        "cpu_model": threads["cpu_model"],
        "cpu_count": threads["cpu_count"],
        "torch_threads": threads["torch_threads"],
        "torch_interop_threads": threads["torch_interop_threads"],
        "omp_wait_policy": threads["omp_wait_policy"],
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "cpu_flags": _cpu_flags(),
        "load_average_start": load_average(),
    }
    try:
        import onnxruntime

        info["onnxruntime_version"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime_version"] = "not installed"
    return info


def _cpu_flags() -> str:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return " ".join(f for f in wanted if f in have)
    except OSError:
        pass
    return ""


# --- tables -----------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        magnitude = abs(value)
        if math.isnan(value):
            return "n/a"
        if magnitude == 0:
            return "0"
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 10:
            return f"{value:.2f}"
        if magnitude >= 0.001:
            return f"{value:.3f}"
        return f"{value:.2e}"
    return str(value)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed under the table (ratios, caveats)

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def render(self, markdown: bool = False) -> str:
        cells = [[fmt(c) for c in row] for row in self.rows]
        if markdown:
            lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                     "|" + "|".join("---" for _ in self.columns) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in cells]
            lines += [""] + [f"- {n}" for n in self.notes]
            return "\n".join(lines) + "\n"
        widths = [max([len(c)] + [len(r[i]) for r in cells if i < len(r)]) for i, c in enumerate(self.columns)]
        line = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths))
        out = [f"== {self.title}", line, "-" * len(line)]
        out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
        out += [f"  {n}" for n in self.notes]
        return "\n".join(out) + "\n"


@dataclass
class Section:
    """What a benchmark section returns: tables to print, metrics and params to log."""

    name: str
    tables: list[Table] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    headline: list[str] = field(default_factory=list)  # one line per target / key ratio
    seconds: float = 0.0

    def render(self, markdown: bool = False) -> str:
        body = "\n".join(t.render(markdown) for t in self.tables)
        if self.headline:
            body += ("\n" if markdown else "") + "\n".join(("- " if markdown else ">> ") + h for h in self.headline) + "\n"
        return body


def metric_key(*parts: Any) -> str:
    """An MLflow-safe metric name from parts: 'runtimes', 'unet', 'ort int8' -> runtimes.unet.ort_int8."""
    import re

    return ".".join(re.sub(r"[^A-Za-z0-9_\-/]", "_", str(p)) for p in parts if str(p))


def log_once(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
