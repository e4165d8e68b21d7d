"""Gate `holdout_clean` (holdout evaluation only): the candidate's run set the study's holdout
aside (it logged the same holdout digest), and its model can be scored there."""
from __future__ import annotations

from typing import Any

from projects.core import tracking
from registry.gates import HOLDOUT, Candidate, Context, Gate, GateResult, register_gate

GATE_HOLDOUT = "holdout_clean"


@register_gate
class HoldoutCleanGate(Gate):
    name, stage = GATE_HOLDOUT, HOLDOUT
    summary = "trained without the study's holdout, and scored on it"

    def check(self, candidate: Candidate, settings: Any, ctx: Context, rule=None) -> GateResult | None:
        if ctx.evaluation is None:
            return None
        holdout = ctx.evaluation.holdout_for(candidate)
        if holdout is None:
            return self.result(False, "the study's data has no holdout (holdout_fraction 0): "
                                      "compare within groups instead (evaluation: compare_within)")
        logged = candidate.tags.get(tracking.TAG_HOLDOUT_DIGEST, "")
        if logged != holdout.digest:
            why = ("its run set no holdout aside (trained on all the data)" if logged in ("", "none")
                   else f"its run set another holdout aside ({logged} != {holdout.digest})")
            return self.result(False, why)
        scored = ctx.evaluation.score(candidate, ctx.model_uri(candidate))
        if scored.error:
            return self.result(False, f"cannot be scored on the holdout ({scored.error})")
        return self.result(True, f"trained without the holdout ({holdout.n_units} units)")
