"""Gate `baseline`: the candidate beats the trivial predictor(s) the policy names, on its own
test side (under holdout evaluation the `holdout_baseline` gate asks it again on the holdout).

Policy key `beats_baseline: {metric: test_jaccard, above: [baseline_jaccard_all_background, 0.1],
significance: 0.05}`: `metric` strictly above every entry of `above` (metric names or numbers);
`significance` asks the holdout's paired test to pass at that level too."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from registry.gates import CANDIDATE, Candidate, Context, Gate, GateResult, register_gate
from registry.policy_types import Level, Metric, StrictModel, check_metric, check_number, problem

GATE_BASELINE = "baseline"


def _above(value: Any) -> Any:
    values = value if isinstance(value, list) else [value]
    out = []
    for item in values:
        if isinstance(item, str):
            out.append(check_metric(item))
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            out.append(check_number(item))
        else:
            raise problem(f"expected metric names or numbers, got {item!r}")
    if not out:
        raise problem("name at least one baseline metric or number")
    return tuple(out)


class BaselineGate(StrictModel):
    """`metric` must be strictly above every entry of `above` (metric names or numbers). Under
    holdout evaluation the candidate must also beat the study's trivial predictors on the
    holdout (registry/evaluation.py); with `significance`, by a paired test at that level."""
    metric: Metric
    above: Annotated[tuple[Metric | float, ...], Field(min_length=1), BeforeValidator(_above)]
    significance: Level | None = None

    def describe(self) -> str:
        text = f"{self.metric} > " + " and ".join(str(a) for a in self.above)
        return text + (f" (on the holdout at level {self.significance:g})" if self.significance else "")


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4g}"


def check_baseline(candidate: Candidate, gate: BaselineGate | None) -> GateResult:
    if gate is None:
        return GateResult(GATE_BASELINE, True, "no baseline gate in the policy")
    value = candidate.value(gate.metric)
    if value is None:
        return GateResult(GATE_BASELINE, False, f"{gate.metric} missing")
    for ref in gate.above:
        ref_value = candidate.value(ref) if isinstance(ref, str) else float(ref)
        ref_name = ref if isinstance(ref, str) else f"{ref:g}"
        if ref_value is None:
            return GateResult(GATE_BASELINE, False, f"baseline {ref_name} missing")
        if not value > ref_value:
            return GateResult(GATE_BASELINE, False,
                              f"does not beat its baseline: {gate.metric} {value:.4f} <= {ref_name} {ref_value:.4f}")
    refs = ", ".join(f"{r} {_fmt(candidate.value(r))}" if isinstance(r, str) else f"{r:g}" for r in gate.above)
    return GateResult(GATE_BASELINE, True, f"{gate.metric} {value:.4f} > {refs}")


@register_gate
class BaselineGateCheck(Gate):
    name, key, stage = GATE_BASELINE, "beats_baseline", CANDIDATE
    params, default = BaselineGate | None, None
    summary = "beats the trivial predictor(s) the policy names"

    def metrics(self, settings: BaselineGate | None) -> tuple[str, ...]:
        if settings is None:
            return ()
        return (settings.metric, *(a for a in settings.above if isinstance(a, str)))

    def check(self, candidate: Candidate, settings: Any, ctx: Context, rule=None) -> GateResult:
        return check_baseline(candidate, settings)
