"""Gate `not_rolled_back`: the version was not rolled back from this alias (`registry.promote
--rollback` tags the version it leaves `rolled_back.<alias>`; deleting the tag allows it again)."""
from __future__ import annotations

from typing import Any

from registry.gates import ALIAS, Candidate, Context, Gate, GateResult, register_gate

GATE_ROLLED_BACK = "not_rolled_back"


def rolled_back_key(alias: str) -> str:
    """Version tag set when rollback moved the alias away from the version: blocks it there."""
    return f"rolled_back.{alias}"


def check_not_rolled_back(candidate: Candidate, alias: str, tag_key: str) -> GateResult:
    when = candidate.version_tags.get(tag_key)
    if when:
        return GateResult(GATE_ROLLED_BACK, False, f"{candidate.label()} was rolled back from {alias} ({when}); "
                                                   f"delete its tag {tag_key} to allow it again")
    return GateResult(GATE_ROLLED_BACK, True, "not rolled back")


@register_gate
class NotRolledBackGate(Gate):
    name, stage = GATE_ROLLED_BACK, ALIAS
    summary = "not rolled back from this alias"

    def check(self, candidate: Candidate, settings: Any, ctx: Context, rule=None) -> GateResult:
        return check_not_rolled_back(candidate, rule.alias, rolled_back_key(rule.alias))
