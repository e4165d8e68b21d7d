"""Gate `metrics`: every metric the policy names is present and finite on the candidate's run.

Policy key `required_metrics: [test_jaccard, model_size_mb, ...]`; the metrics the other gates
and the alias rules name are required too (Policy.all_metrics)."""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from registry.gates import CANDIDATE, Candidate, Context, Gate, GateResult, register_gate
from registry.policy_types import Metric

GATE_METRICS = "metrics"


def check_metrics(candidate: Candidate, names: Iterable[str]) -> GateResult:
    names = list(names)
    missing = [n for n in names if n not in candidate.metrics]
    bad = [f"{n}={candidate.metrics[n]}" for n in names
           if n in candidate.metrics and not math.isfinite(candidate.metrics[n])]
    if missing or bad:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"not finite {', '.join(bad)}"] if bad else [])
        return GateResult(GATE_METRICS, False, "; ".join(parts))
    return GateResult(GATE_METRICS, True, "required metrics present and finite")


@register_gate
class MetricsGate(Gate):
    name, key, stage = GATE_METRICS, "required_metrics", CANDIDATE
    params, default = tuple[Metric, ...], ()
    summary = "required metrics present and finite"

    def metrics(self, settings: Any) -> tuple[str, ...]:
        return tuple(settings)

    def check(self, candidate: Candidate, settings: Any, ctx: Context, rule=None) -> GateResult:
        return check_metrics(candidate, ctx.policy.all_metrics())
