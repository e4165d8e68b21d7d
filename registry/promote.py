"""`promote`: move each registered model's aliases by its written policy, and roll them back.

    python -m registry.promote                       # every policy (registry/policies/ and the studies' own)
    python -m registry.promote --model pathology-tumor --dry-run true
    python -m registry.promote --model pathology-tumor --rollback champion
    python -m registry.promote --rollback pathology-tumor champion

How a policy is applied: registry.decision (candidates, gates, the study's holdout, the
significance rule). What a move leaves behind: on the version, tags
`promotion.<alias>.{policy,rule,metric,value,compared,gates,previous_version,at,kind,by,
significance}`; in the `registry-audit` experiment, one run per move (registry.audit), the
trail rollback reads; in `registry-evaluations`, the holdout evaluation the decision rests on.

Races: a local store is locked for the whole decision (registry.store); for any store every
write that can lose a race is repeated, and every move is verified after the write
(registry.audit.reconcile), so the last writer leaves a consistent state.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TextIO

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from projects.core import cli, tracking
from projects.core.errors import InputError
from registry import audit, export, pages, store
from registry import gates as G
from registry.gates import smoke
from registry.audit import history, promotion_key, reconcile, rolled_back_key  # noqa: F401 (the registry's API)
from registry.decision import Promotion
from registry.report import (MOVED, NONE, REFUSED, ROLLED_BACK, UNCHANGED, WOULD_MOVE,  # noqa: F401
                             WOULD_ROLL_BACK, Decision, ModelReport)
from registry.policy import Policy, find_policy, load_policies
from registry.store import LOCK_ENV, register_run, vlabel  # noqa: F401


def promote_model(name: str, dry_run: bool = False, *, policy: Policy | None = None,
                  client: MlflowClient | None = None, out: TextIO | None = None) -> ModelReport:
    """Apply one registered model's policy; prints and returns the table of what moved."""
    tracking.setup_tracking()
    policy = policy or find_policy(name)
    client = client or MlflowClient()
    with contextlib.nullcontext() if dry_run else store.promotion_lock(name):
        if not dry_run:
            store.check_can_manage(client, name, policy)
        report = Promotion(client, policy, dry_run).run()
        moved = {v for d in report.decisions if d.before != d.after for v in (d.before, d.after) if v and v.isdigit()}
        if moved and not dry_run:  # a no-op promotion rewrites nothing, descriptions included
            export.after_promotion(client, name, report.decisions, out)  # the champion's ONNX model
            pages.refresh(client, name, policy, moved)
    print(report.table(), file=out or sys.stdout, flush=True)
    return report


def promote_all(dry_run: bool = False, out: TextIO | None = None) -> str:
    """Every policy in registry/policies/; returns a one-line summary per model, joined by '; '."""
    return "; ".join(r.summary() for r in promote_reports(dry_run, out))


def promote_reports(dry_run: bool = False, out: TextIO | None = None) -> list[ModelReport]:
    """Every policy in registry/policies/, applied in name order: one report per model."""
    tracking.setup_tracking()
    policies = sorted(load_policies().items())
    if not dry_run:  # all refused or none: no model promoted before another one is refused
        client = MlflowClient()
        for name, policy in policies:
            store.check_can_manage(client, name, policy)
    return [promote_model(name, dry_run, policy=policy, out=out) for name, policy in policies]


def _previous_holder(hist: list[dict], holder: str) -> tuple[bool, bool, str | None]:
    """Replay the trail as a stack (promote pushes, rollback pops): what was there before.

    Returns (the trail ends on the holder, it has a previous holder, that holder or None).
    """
    stack: list[str | None] = []
    for e in hist:
        version = e.get("version")
        version = None if version is None else str(version)
        if e.get("kind") == "rollback":
            if stack and stack[-1] == (None if e.get("previous") is None else str(e["previous"])):
                stack.pop()
        if not stack or stack[-1] != version:
            stack.append(version)
    if not stack or stack[-1] != holder:
        return False, False, None
    return True, len(stack) >= 2, stack[-2] if len(stack) >= 2 else None


def rollback(name: str, alias: str, dry_run: bool = False, *, client: MlflowClient | None = None,
             out: TextIO | None = None) -> Decision:
    """Move `alias` of `name` back to its previous holder, from the audit trail.

    The version it moves away from gets the tag `rolled_back.<alias>`, which the
    `not_rolled_back` gate reads: later promotions will not put it back on that alias.
    """
    tracking.setup_tracking()
    policy = find_policy(name)
    policy.alias(alias)  # an alias this policy maintains, or InputError
    client = client or MlflowClient()
    with contextlib.nullcontext() if dry_run else store.promotion_lock(name):
        if not dry_run:
            store.check_can_manage(client, name, policy)
        if store.registered_model(client, name) is None:
            raise InputError("--model", f"{name} is not registered yet (nothing to roll back)")
        holder = store.alias_holder(client, name, alias)
        if holder is None:
            raise InputError("--rollback", f"{name} has no alias {alias!r} to roll back")
        complete, found, target = _previous_holder(audit.read_history(client, name, alias), holder)
        if not complete:  # the trail does not end on the holder: its own tags name its predecessor
            prev = store.version_tags(client, name, holder).get(promotion_key(alias, "previous_version"))
            found, target = prev not in (None, "", "none"), prev
        if not found:
            raise InputError("--rollback", f"{name}@{alias} ({vlabel(holder)}) has no previous holder "
                                           "in the audit trail")
        d = Decision(alias, f"rollback of {vlabel(holder)}", holder, target,
                     WOULD_ROLL_BACK if dry_run else ROLLED_BACK)
        old = store.version_tags(client, name, target) if target is not None else {}
        gates = ""
        if target is not None and smoke.enabled(policy.gates.smoke_predict):
            # It passed every gate when it was promoted; its artifact must still load.
            result = smoke.smoke_predict(f"models:/{name}/{target}", old.get(G.P_IMAGE_SHAPE),
                                         smoke.probabilities(policy.gates.smoke_predict))
            if not result.passed:
                d.status, d.after = REFUSED, holder
                d.refused.append((vlabel(target), str(result)))
                d.note = "the previous holder fails its smoke test; the alias stays"
            gates = G.passed_text([(smoke.GATE_SMOKE, "re-checked for the rollback")],
                                  earlier=old.get(promotion_key(alias, "gates"), ""))
        if d.status == ROLLED_BACK:
            at = audit.now()
            store.retry_conflicts(client.set_model_version_tag, name, holder, rolled_back_key(alias), at)
            entry = {"version": target, "previous": holder, "at": at, "kind": "rollback", "policy": policy.ref,
                     "rule": f"rollback of {vlabel(holder)} to its previous holder",
                     "metric": old.get(promotion_key(alias, "metric"), ""),
                     "value": old.get(promotion_key(alias, "value"), ""),
                     "compared": old.get(promotion_key(alias, "compared"), ""), "gates": gates, "by": audit.by()}
            if target is None:
                store.retry_conflicts(client.delete_registered_model_alias, name, alias)
            else:
                audit.write_version_audit(client, name, alias, entry)
                store.set_alias(client, name, alias, target)
            audit.append(client, name, alias, entry)
            reconcile(client, name, alias)
            d.after = store.alias_holder(client, name, alias)
            pages.refresh(client, name, policy, {v for v in (holder, target) if v})
    report = ModelReport(name, policy.ref, dry_run, 0, [d], [])
    print(report.table(), file=out or sys.stdout, flush=True)
    return d


def _log_to_launcher_run(text: str) -> None:
    """Under `mlflow run`, keep the table on the launcher's run (Artifacts tab)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        client = MlflowClient()
        client.log_text(run_id, text, "promotion.txt")
        client.set_tag(run_id, tracking.TAG_RUN_KIND, "promotion")
    except (MlflowException, OSError) as exc:
        print(f"warning: could not log the promotion table to run {run_id}: {exc}", file=sys.stderr)


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m registry.promote", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all", help="registered model name, or 'all' (every policy)")
    parser.add_argument("--dry-run", type=cli.str2bool, nargs="?", const=True, default=False,
                        help="show the table of what would move; change nothing")
    parser.add_argument("--rollback", nargs="*", default=[], metavar="[MODEL] ALIAS",
                        help="move ALIAS back to its previous holder (empty: promote)")
    parser.add_argument("--register", metavar="RUN_ID", default="",
                        help="register one finished run as a version (no alias moves)")
    args = parser.parse_args(argv)
    tracking.setup_tracking()
    rollback_args = [a for a in args.rollback if a.strip()]
    if args.register:
        mv = register_run(args.register, None if args.model == "all" else args.model)
        print(f"{mv.name} {vlabel(mv.version)} <- run {mv.run_id}")
        return 0
    if rollback_args:
        if len(rollback_args) == 2:
            model, alias = rollback_args
            if args.model not in ("all", model):
                raise InputError("--rollback", f"names model {model!r} but --model is {args.model!r}")
        elif len(rollback_args) == 1:
            model, alias = args.model, rollback_args[0]
            if model == "all":
                raise InputError("--rollback", "name the model: --model <name> --rollback <alias> "
                                               "(or --rollback <model> <alias>)")
        else:
            raise InputError("--rollback", f"expected [MODEL] ALIAS, got {' '.join(rollback_args)!r}")
        buffer = _Tee(sys.stdout)
        d = rollback(model, alias, dry_run=args.dry_run, out=buffer)
        _log_to_launcher_run(buffer.text())
        return 1 if d.status == REFUSED else 0
    buffer = _Tee(sys.stdout)
    if args.model == "all":
        summary = promote_all(args.dry_run, out=buffer)
    else:
        summary = promote_model(args.model, args.dry_run, out=buffer).summary()
    print(f"summary: {summary}", file=buffer)
    _log_to_launcher_run(buffer.text())
    return 0


class _Tee:
    """stdout that also remembers what was written (the table logged to the launcher run)."""

    def __init__(self, stream: TextIO):
        self.stream, self.parts = stream, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def text(self) -> str:
        return "".join(self.parts)


if __name__ == "__main__":
    sys.exit(main())
