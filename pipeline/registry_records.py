"""What `promote` decided for the real-data page (results/REAL_DATA.md): one record per registered
model under results/records/registry/, and the page's Registry section rendered from them.

Each session measures in its own MLflow store, and its promote sees that store's candidates only;
the records carry the decisions from store to store (aliases name versions of the store that
made them, so a record also names the champion's run).
"""
from __future__ import annotations

import sys
from pathlib import Path

from projects.core import records, tracking
from projects.core.records import Record, RecordStore
from registry.policy_types import CHAMPION

REGISTRY = "registry"  # the records' block: records/registry/<model>.json


def section(root: Path) -> str | None:
    """Each model's aliases as its last promotion with candidates left them. A store holds the
    runs of the blocks measured in it (a session measures some blocks), so a promotion that saw
    no candidate of a model leaves that model's earlier record standing."""
    recs = sorted(RecordStore(root / REGISTRY).all(), key=lambda r: r.key)
    if not recs:
        return None
    lines = ["## Registry", "", "Each model as `promote` left it after the last measurement whose store held its "
             "candidates, unless an earlier store's champion scored higher on the same holdout (the policies' "
             "gates of that commit; aliases name versions of that store):", ""]
    for rec in recs:
        held = rec.settings.get("champion_run")  # versions are per store: the run says which model it is
        lines += [f"- {rec.settings['summary']} (commit {rec.commit}, {rec.finished[:10]})"
                  + (f"; the champion is run `{held}`" if held else ""), "",
                  "  ```", *[f"  {line}" for line in rec.settings.get("table", [])], "  ```", ""]
    return "\n".join(lines)


def promote(root: Path) -> None:
    """The registry's promote on this store, its decisions recorded under `root`."""
    from registry import promote as registry_promote  # the registry imports the studies: load it when used

    write(root, registry_promote.promote_reports(dry_run=False))


def write(root: Path, reports) -> None:
    """One record per model that had candidates in this store (or an alias to keep or remove).

    Each session measures in its own store, and its promote sees that store's candidates only. A
    store whose champion scores worse on the same holdout than the recorded one leaves the record
    standing: the page names the best model measured, not the last store's best."""
    store = RecordStore(root / REGISTRY)
    for report in reports:
        if not report.n_candidates and not any(d.before for d in report.decisions):
            continue
        champion = next((d for d in report.decisions if d.alias == CHAMPION and d.target is not None
                         and d.value is not None), None)
        digest = champion.target.tags.get(tracking.TAG_HOLDOUT_DIGEST, "none") if champion else "none"
        metrics = {CHAMPION: float(champion.value)} if champion else {}
        earlier = store.get(report.model)
        if champion and earlier is not None and _better(earlier, champion.value, champion.goal, digest):
            print(f"[real-data] registry record {report.model} kept: its champion scored "
                  f"{earlier.metrics[CHAMPION]:.4f} on holdout {digest}, this store's {champion.value:.4f} "
                  f"({champion.rule})", file=sys.stderr)
            continue
        test = _paired_test(root, report.model, earlier, champion, digest) if champion and earlier else None
        if test is not None and not test[1]:
            print(f"[real-data] registry record {report.model} kept: {test[0]}", file=sys.stderr)
            continue
        store.write(Record(
            block=REGISTRY, unit=report.model, key=report.model, data_digest="",
            settings={"summary": report.summary(), "table": report.table().split("\n") + ([f"  {test[0]}"] if test else []),
                      "champion_goal": champion.goal if champion else "",
                      "champion_run": f"{champion.target.run_name} ({champion.target.run_id[:8]})" if champion else ""},
            metrics=metrics, holdout_digest=digest,
            machine=records.machine(), commit=records.commit(), finished=records.now()))


def _better(earlier: Record, value: float, goal: str, digest: str) -> bool:
    """The recorded champion beats this one: same holdout (never rank across test sets), same
    direction, a strictly better value."""
    old = earlier.metrics.get(CHAMPION)
    if old is None or digest == "none" or earlier.holdout_digest != digest \
            or earlier.settings.get("champion_goal") != goal or goal not in ("max", "min"):
        return False
    return old > value if goal == "max" else old < value


def _paired_test(root: Path, model: str, earlier: Record, champion, digest: str) -> tuple[str, bool] | None:
    """The champion's significance rule (its policy's level) across stores: this store's champion
    against the recorded one by a paired bootstrap over their records' holdout units, as promote
    tests a newcomer against the holder within a store. (text, whether the newcomer may replace
    it); None when there is nothing to test: another holdout, the same run, a policy without the
    rule, or a run without a record by unit (then the value alone decides, as before)."""
    from projects.core.uncertainty import UnitScores, paired_difference
    from registry.policy import find_policy

    held = earlier.settings.get("champion_run", "")
    old_id = held.rsplit("(", 1)[-1].rstrip(")") if held else ""
    rule = next((a for a in find_policy(model).aliases if a.alias == CHAMPION), None)
    if (earlier.holdout_digest != digest or not old_id or champion.target.run_id.startswith(old_id)
            or rule is None or rule.significance is None):
        return None
    old, new = _unit_record(root, old_id), _unit_record(root, champion.target.run_id)
    metric = rule.metric.split("_", 1)[1]  # test_jaccard -> the records' jaccard by unit
    if old is None or new is None or not old.holdout_units or not new.holdout_units:
        return None
    d = paired_difference(UnitScores.from_dict(new.holdout_units), UnitScores.from_dict(old.holdout_units), metric,
                          higher_is_better=rule.goal == "max")
    better = d.difference > 0 and d.p_value < rule.significance
    return (f"across stores: {champion.target.run_name} ({champion.target.run_id[:8]}) vs the recorded champion "
            f"{held} on the holdout, from their records: {d.describe()}; "
            + (f"better at level {rule.significance:g}" if better else
               f"not better beyond chance at level {rule.significance:g}: the recorded champion stays"), better)


def _unit_record(root: Path, run_id: str) -> Record | None:
    """The real-data record of the unit whose run this is (any block; a run id's prefix will do)."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != REGISTRY):
        found = next((r for r in RecordStore(folder).all() if r.run_id and r.run_id.startswith(run_id)), None)
        if found is not None:
            return found
    return None
