"""Gate `holdout_baseline` (holdout evaluation only): the policy's `beats_baseline` asked again
on the holdout, against the study's trivial predictors scored on the same units.

A run's own test side can be a dozen patients, where a model at chance passes by luck; the
holdout is the same for every candidate. The candidate's holdout metric must be above every
trivial predictor's (paired bootstrap; with `beats_baseline.significance`, the paired p-value
below it)."""
from __future__ import annotations

import math
from typing import Any

from projects.core.uncertainty import paired_difference
from registry.gates import HOLDOUT, Candidate, Context, Gate, GateResult, register_gate

GATE_HOLDOUT_BASELINE = "holdout_baseline"


def scored_metric(gate_metric: str) -> str:
    """The metric a baseline gate is about, as holdout_scores names it:
    test_balanced_accuracy_minus_baseline -> balanced_accuracy, test_jaccard -> jaccard."""
    name = gate_metric[len("test_"):] if gate_metric.startswith("test_") else gate_metric
    return name[:-len("_minus_baseline")] if name.endswith("_minus_baseline") else name


@register_gate
class HoldoutBaselineGate(Gate):
    name, stage = GATE_HOLDOUT_BASELINE, HOLDOUT
    summary = "beats the study's trivial predictors on the holdout"

    def settings(self, policy) -> Any:
        return policy.gates.beats_baseline

    def check(self, candidate: Candidate, settings: Any, ctx: Context, rule=None) -> GateResult | None:
        if ctx.evaluation is None:
            return None
        if settings is None:
            return self.result(True, "no baseline gate in the policy")
        s = ctx.evaluation.scored[candidate.run_id]
        metric = scored_metric(settings.metric)
        if not s.baselines or s.scores is None or metric not in s.point:
            return self.result(True, f"the study names no trivial predictor for {metric} on "
                                     "its holdout: judged by the run's own test numbers")
        value, (low, high) = s.point[metric], s.intervals.get(metric, (math.nan, math.nan))
        unit, level = ctx.evaluation.study.unit, settings.significance
        beaten = []
        for name, baseline in s.baselines.items():
            test = paired_difference(s.scores, baseline, metric)
            base = baseline.point()[metric]
            if not test.difference > 0 or (level is not None and not test.p_value < level):
                at = f" at level {level:g}" if level is not None else ""
                return self.result(False, f"does not beat the {name} predictor on the holdout{at}: {metric} "
                                          f"{value:.4f} [{low:.3f}, {high:.3f}] vs {base:.4f} on the same "
                                          f"{test.n_units} {unit}s (paired p = {test.p_value:.3g})")
            beaten.append(f"{name} {base:.4f} (p = {test.p_value:.3g})")
        return self.result(True, f"holdout {metric} {value:.4f} [{low:.3f}, {high:.3f}] > " + ", ".join(beaten))
