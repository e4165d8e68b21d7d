"""Gate `data`: the candidate was trained on the champion's data (same `dataset_digest` tag),
unless the policy allows a change (`data_change: refuse | allow`, default refuse).

The champion is compared with the champion it would replace; every other alias with the
champion this promotion has just decided on."""
from __future__ import annotations

from typing import Any, Literal

from projects.core import tracking
from registry.gates import ALIAS, Candidate, Context, Gate, GateResult, register_gate
from registry.policy_types import CHAMPION

GATE_DATA = "data"


def check_data(candidate: Candidate, champion: Candidate | None, champion_label: str,
               allow_change: bool) -> GateResult:
    if allow_change:
        return GateResult(GATE_DATA, True, "policy allows a data change")
    if champion is None:
        return GateResult(GATE_DATA, True, "no champion yet")
    if not candidate.digest:
        return GateResult(GATE_DATA, False, f"run has no {tracking.TAG_DATASET_DIGEST} tag")
    if candidate.digest != champion.digest:
        return GateResult(GATE_DATA, False,
                          f"{tracking.TAG_DATASET_DIGEST} {candidate.digest[:12]} differs from champion "
                          f"{champion_label}'s {champion.digest[:12]} (policy data_change: refuse)")
    return GateResult(GATE_DATA, True, f"same {tracking.TAG_DATASET_DIGEST} as the champion")


@register_gate
class DataGate(Gate):
    name, key, stage = GATE_DATA, "data_change", ALIAS
    params, default = Literal["refuse", "allow"], "refuse"
    summary = "same dataset_digest as the champion, unless the policy allows a change"

    def check_policy(self, settings: Any, aliases: dict) -> str | None:
        if settings == "refuse" and CHAMPION not in aliases:
            return (f"gates.data_change: refuse compares with the {CHAMPION!r} alias, which this policy "
                    "does not define (define it or set data_change: allow)")
        return None

    def check(self, candidate: Candidate, settings: Any, ctx: Context, rule=None) -> GateResult | None:
        if CHAMPION not in ctx.policy.alias_names():
            return None
        reference = ctx.holder(CHAMPION) if rule.alias == CHAMPION else ctx.decided.get(CHAMPION)
        version = str(reference.version) if reference and reference.version else ""
        label = (f"v{version}" if version.isdigit() else version) or "(new)"
        return check_data(candidate, reference, label, settings == "allow")
