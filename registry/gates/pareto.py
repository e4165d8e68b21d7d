"""Gate `pareto` (for aliases that say `pareto: true`): the candidate is on the accuracy vs
cost Pareto front of the gated candidates.

Policy key `pareto: {accuracy: test_jaccard, costs: [model_size_mb, cpu_latency_ms_p50]}`. A
candidate is on the front when no other has accuracy >= and every cost <= (one strictly);
under holdout evaluation accuracy is the holdout's. A model that fails the smoke gate must not
dominate (and so hide) a working one: the front is rebuilt without the broken ones."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator

from registry.gates import ALIAS, Candidate, Context, Gate, GateResult, register_gate
from registry.gates import smoke
from registry.policy_types import Metric, StrictModel, names, problem

GATE_PARETO = "pareto"


def _costs(value: Any) -> Any:
    value = names(value)
    if isinstance(value, list) and not value:
        raise problem("name at least one cost metric (model_size_mb, cpu_latency_ms_p50, ...)")
    return value


class ParetoSpec(StrictModel):
    """A candidate is on the front when no other has accuracy >= and every cost <= (one strict)."""
    accuracy: Metric
    costs: Annotated[tuple[Metric, ...], BeforeValidator(_costs)]


def pareto_front(candidates: Sequence[Candidate], spec: ParetoSpec) -> set[str]:
    """Run ids of the candidates no other candidate dominates (accuracy up, costs down)."""
    points = []
    for c in candidates:
        values = [c.value(spec.accuracy)] + [c.value(m) for m in spec.costs]
        if all(v is not None for v in values):
            points.append((c.run_id, -values[0], values[1:]))
    front = set()
    for run_id, neg_acc, costs in points:
        own = (neg_acc, *costs)
        dominated = False
        for other_id, other_neg_acc, other_costs in points:
            if other_id == run_id:
                continue
            other = (other_neg_acc, *other_costs)
            if all(o <= s for o, s in zip(other, own)) and any(o < s for o, s in zip(other, own)):
                dominated = True
                break
        if not dominated:
            front.add(run_id)
    return front


def check_pareto(candidate: Candidate, front: set[str], spec: ParetoSpec) -> GateResult:
    axes = f"{spec.accuracy} vs {', '.join(spec.costs)}"
    if candidate.run_id in front:
        return GateResult(GATE_PARETO, True, f"on the Pareto front of {axes}")
    return GateResult(GATE_PARETO, False, f"not on the Pareto front of {axes} (another gated candidate "
                                          "is at least as accurate and no larger/slower)")


def working_front(ctx: Context, spec: ParetoSpec) -> set[str]:
    """The front of the gated candidates whose models work (see the module docstring)."""
    if GATE_PARETO not in ctx.cache:
        spec = spec.model_copy(update={"accuracy": ctx.metric(spec.accuracy)})
        check_smoke = smoke.enabled(ctx.policy.gates.smoke_predict)
        pool = list(ctx.gated)
        while True:
            front = pareto_front(pool, spec)
            broken = ({c.run_id for c in pool if c.run_id in front and not smoke.cached_smoke(ctx, c).passed}
                      if check_smoke else set())
            if not broken:
                break
            pool = [c for c in pool if c.run_id not in broken]
        ctx.cache[GATE_PARETO] = front
    return ctx.cache[GATE_PARETO]


@register_gate
class ParetoGate(Gate):
    name, key, stage = GATE_PARETO, "pareto", ALIAS
    params, default = ParetoSpec | None, None
    summary = "on the accuracy vs cost Pareto front (aliases with pareto: true)"

    def metrics(self, settings: ParetoSpec | None) -> tuple[str, ...]:
        return (settings.accuracy, *settings.costs) if settings else ()

    def check_policy(self, settings: Any, aliases: dict) -> str | None:
        for alias, rule in aliases.items():
            if rule.pareto and settings is None:
                return f"aliases.{alias}: pareto: true needs gates.pareto (accuracy and costs)"
        return None

    def check(self, candidate: Candidate, settings: Any, ctx: Context, rule=None) -> GateResult | None:
        if not (rule.pareto and settings):
            return None
        return check_pareto(candidate, working_front(ctx, settings), settings)
