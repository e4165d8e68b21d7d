"""Results on the real public data sets, measured in resumable pieces: each study's real-data
blocks (a RealDataStudy's real_data: its cells on the public sets under the data root) run unit by unit
(one cell and seed), each finished unit written as a record under `results/records/<block>/`
(projects/core/records.py) and followed by `promote` (a killed job keeps the decisions of the units
it finished); then results/REAL_DATA.md, rendered from the records alone.

    python -m pipeline.real_data --data-root data                      # every block (hours on 2 cores)
    python -m pipeline.real_data --data-root data --blocks monuseg --budget-min 120
    python -m pipeline.real_data --render                                         # the page from the records, no training

A rerun skips every unit whose record has the same settings and data digest, so a job that is
killed, or stopped by `--budget-min`, goes on where it ended; inside a unit, from its last
epoch when the same machine still has the unit's checkpoint (under the cache: weights stay out
of the repository, so a unit is the smallest piece of a measurement that moves between
machines). Each unit is also an MLflow run
(children of `real-<block>-<task>` parents) that the UI, the dashboards and the registry see;
its record adds the scores of its logged model on the study's holdout (MoNuSeg's 14 official
test images; mini-MIAS's held-out patients) with 95% intervals over the holdout's units.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from pipeline import holdout_images, paired, registry_records
from projects.core import cli, records, runtime, tracking, training
from projects.core.errors import InputError
from projects.core.grid import GridCell, plan_grid, run_cells
from projects.core.records import Budget, Record, RecordStore
from projects.core.specs.pipeline import RealDataBlock
from projects.core.study import Study, all_studies

OUT = runtime.REPO_ROOT / "results" / "REAL_DATA.md"
# Settings that do not change what a unit measures: not part of its key. `data` is a path on
# one machine; the data's identity is the digest beside it.
NOT_IN_KEY = ("data", "progress", "preset")  # a preset's name: its values are in the settings


@runtime_checkable
class RealDataStudy(Protocol):
    """A study with blocks on this page: its cells on public data sets under the data root."""

    def real_data(self, root: Path, quick: bool) -> Sequence[RealDataBlock]: ...


def unit_settings(config) -> dict:
    later = type(config).ADDED_LATER  # each study's own: another study may have had the setting all along
    return {k: v for k, v in config.flat().items() if k not in NOT_IN_KEY and not (k in later and v == later[k])}


def checkpoint_dir(block: str) -> Path:
    """Where the units in progress of a block keep their last epoch's checkpoint."""
    return runtime.cache_dir() / "checkpoints" / block


def holdout_scores(study: Study, run) -> tuple[dict[str, float], str, dict]:
    """The run's logged model on the study's holdout, scored as the registry scores it:
    {metric, metric_ci95_low/high, baseline_<name>_<metric>}, the holdout's digest and the
    result by unit (for paired tests between records)."""
    from registry.evaluation import HoldoutEvaluation
    from registry.store import candidate_from_run

    candidate = candidate_from_run(run)
    evaluation = HoldoutEvaluation(study.name, study.model_name(study.task_of(evaluation_config(study, run))))
    holdout = evaluation.holdout_for(candidate)
    if holdout is None:
        return {}, "none", {}
    scored = evaluation.score(candidate, candidate.model_uri)
    if scored.error:
        raise RuntimeError(f"holdout scoring failed: {scored.error}")
    out: dict[str, float] = {"units": float(holdout.n_units)}
    for name, value in scored.point.items():
        low, high = scored.intervals.get(name, (math.nan, math.nan))
        out |= {name: value, f"{name}_ci95_low": low, f"{name}_ci95_high": high}
    for base, scores in scored.baselines.items():
        out |= {f"baseline_{base}_{name}": value for name, value in scores.point().items()}
    return out, holdout.digest, scored.scores.as_dict()


def evaluation_config(study: Study, run):
    return study.config_cls.from_params(run.data.params)


def histories(client: MlflowClient, run) -> dict[str, list[float]]:
    """Every per-epoch validation curve of the run (rank stability reads them)."""
    out = {}
    for name in sorted(k for k in run.data.metrics if k.startswith("val_")):
        points = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        out[name] = [m.value for m in points]
    return out


@dataclasses.dataclass
class Unit:
    study: Study
    block: RealDataBlock
    config: object
    prepared: object
    key: str
    name: str


def plan_units(study: Study, block: RealDataBlock) -> list[Unit]:
    """Every unit of a block, data checked and prepared first (bad input fails before any run)."""
    units = []
    for grid in block.grids:
        plan = plan_grid(study, grid)
        for cfg in plan.configs:
            prepared = plan.data_for(study, cfg)
            key = records.unit_key(unit_settings(cfg), prepared.digest)
            units.append(Unit(study, block, cfg, prepared, key, study.grid_cell(cfg)[0]))
    return units


def run_unit(unit: Unit, store: RecordStore) -> dict[str, float]:
    """Inside its child run: train (resuming from the unit's checkpoint, if any), score on the
    holdout, write the record. Returns the run's metrics for the grid table."""
    started, load = time.perf_counter(), records.load_1min()
    checkpoint = checkpoint_dir(unit.block.name) / f"{unit.key}.pt"
    with training.resumable(checkpoint):
        result = unit.study.run(unit.config, unit.prepared, run_kind=tracking.RUN_KIND_GRID_CHILD)
    client = MlflowClient()
    run = client.get_run(result.run_id)
    # without a logged model (log_model=false: a measurement of training curves) nothing is scored
    holdout, holdout_digest, by_unit = (holdout_scores(unit.study, run) if getattr(unit.config, "log_model", True)
                                        else ({}, "", {}))
    store.write(Record(
        block=unit.block.name, unit=unit.name, key=unit.key, settings=unit_settings(unit.config),
        data_digest=unit.prepared.digest, holdout_digest=holdout_digest, holdout_units=by_unit,
        metrics=dict(run.data.metrics), holdout=holdout, history=histories(client, run),
        wall_s=round(time.perf_counter() - started, 1), run_id=result.run_id, machine=records.machine(load),
        commit=records.commit(), finished=records.now()))
    checkpoint.unlink(missing_ok=True)
    print(f"[{unit.block.name}] {unit.name} recorded after {(time.perf_counter() - started) / 60:.1f} min"
          f"{holdout_line(holdout, unit.block.metrics)}", file=sys.stderr, flush=True)
    return dict(result.metrics)


def holdout_line(holdout: dict, metrics: Iterable[str]) -> str:
    """A finished unit's holdout numbers (the block's metrics) for the job's log, e.g.
    ': holdout jaccard 0.617 [0.583, 0.648]'."""
    shown = [f"{k} {holdout[k]:.3f} [{holdout[k + '_ci95_low']:.3f}, {holdout[k + '_ci95_high']:.3f}]"
             for k in metrics if holdout.get(k) is not None and holdout.get(k + "_ci95_low") is not None]
    return f": holdout {', '.join(shown)}" if shown else ""


def run_block(study: Study, block: RealDataBlock, store: RecordStore, budget: Budget,
              after_unit: Callable[[], object] | None = None) -> tuple[int, int, int]:
    """The block's units without a record, in order, until the budget is spent; `after_unit` runs
    after each one that finished (promote: a job killed later keeps what its units decided).
    Returns (measured now, skipped as already recorded, left for a later run)."""
    units = plan_units(study, block)
    todo = [u for u in units if store.get(u.key) is None]
    done_before = len(units) - len(todo)
    print(f"[{block.name}] {len(units)} units: {done_before} already recorded, {len(todo)} to measure",
          file=sys.stderr, flush=True)
    measured = 0
    by_task: dict[str, list[Unit]] = {}
    for u in todo:
        by_task.setdefault(study.task_of(u.config), []).append(u)
    for task, group in by_task.items():
        if budget.spent():
            break
        name = f"real-{block.name}-{task}"
        with tracking.study_run(study.experiment, name, tags=tracking.process_tags()
                                | {tracking.TAG_STUDY: study.name, "real_data_block": block.name}, adopt=False):
            for u in group:
                if budget.spent():
                    print(f"[{block.name}] budget of {budget.minutes:g} min spent: stopping before {u.name}",
                          file=sys.stderr, flush=True)
                    break
                rows = run_cells([GridCell(u.name, {"unit": u.name}, lambda u=u: run_unit(u, store))])
                if rows["status"].iloc[0] == "FINISHED":
                    measured += 1
                    if after_unit is not None:
                        after_unit()
    return measured, done_before, len(todo) - measured


# --- the page ---------------------------------------------------------------------------------
HEADER = ["# Results on the real public data sets", "",
          "Every number is a held-out number of one trained model, with its 95% bootstrap interval over "
          "independent units (patients for mini-MIAS, source images for MoNuSeg); a seed changes the split and "
          "the initialisation. *Holdout* columns score every model on the same fixed holdout (the registry's: "
          "MoNuSeg's 14 official test images, mini-MIAS's held-out patients); *test* columns on the run's own "
          "test split. Settings: `projects/<study>/real_data.py`. The page is rendered from the records under "
          "`results/records/` (one per trained model: settings, data digest, metrics, machine, commit) by "
          "`python -m pipeline.real_data --render`; a measurement resumes where its records end.", ""]


def record_rows(recs: Iterable[Record], study: Study, block: RealDataBlock) -> pd.DataFrame:
    """One row per record in the shape the block's table reads: settings, the run's test metrics
    with intervals, baselines, costs, and the holdout's numbers as holdout_<metric>."""
    rows = []
    for r in recs:
        m = {k: (math.nan if v is None else v) for k, v in r.metrics.items()}
        cfg = study.config_cls.from_flat({k: v for k, v in r.settings.items() if k in study.config_cls.settings()})
        row = dict(r.settings) | {"task": study.task_of(cfg), "status": r.status, "run_id": r.run_id,
                                  "units": m.get(tracking.M_TEST_UNITS, math.nan),
                                  "size_mb": m.get(tracking.M_SIZE_MB, math.nan),
                                  "cpu_total_s": m.get(tracking.M_CPU_TOTAL, math.nan),
                                  "epochs_run": m.get("epochs_run", math.nan), "wall_s": r.wall_s,
                                  "commit": r.commit, "cpu": r.machine.get("cpu", "")}
        for metric in block.metrics:
            key = tracking.test_metric(metric)
            row[metric] = m.get(key, math.nan)
            row[f"{metric}_ci"] = (m.get(tracking.ci_low(key)), m.get(tracking.ci_high(key)))
            h = {k: (math.nan if v is None else v) for k, v in r.holdout.items()}
            row[f"holdout_{metric}"] = h.get(metric, math.nan)
            row[f"holdout_{metric}_ci"] = (h.get(f"{metric}_ci95_low"), h.get(f"{metric}_ci95_high"))
        row["holdout_units"] = (r.holdout or {}).get("units") or math.nan
        row |= {k: v for k, v in m.items() if k.startswith("baseline_")}
        row |= {f"holdout_{k}": (math.nan if v is None else v) for k, v in r.holdout.items() if k.startswith("baseline_")}
        rows.append(row)
    return pd.DataFrame(rows)


def provenance(recs: list[Record]) -> str:
    commits = sorted({r.commit for r in recs if r.commit})
    cpus = sorted({f"{r.machine.get('cpu', '?')}{', ' + r.machine['cpu_kind'] if r.machine.get('cpu_kind') else ''} "
                   f"({r.machine.get('cores', '?')} cores)" for r in recs})
    days = sorted({r.finished[:10] for r in recs if r.finished})
    loads = [v for r in recs for k, v in r.machine.items() if k.startswith("load_1min") and v is not None]
    hours = sum(r.wall_s for r in recs) / 3600
    span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}" if days else "?"
    models = f"{len(recs)} trained model{'' if len(recs) == 1 else 's'}"
    return (f"{models}, {hours:.1f} h of wall time, measured {span} on {'; '.join(cpus)} "
            f"at commit{'s' if len(commits) > 1 else ''} {', '.join(commits) or '?'}"
            + (f"; 1-minute load average {min(loads):.1f}-{max(loads):.1f} when units started and ended (CPU "
               "times are only as good as the machine was idle; between those moments it may have been busier)."
               if loads else ".")
            + (f" CPU times come from {len(cpus)} kinds of machine: compare them within one kind only."
               if len(cpus) > 1 else ""))


def block_section(study: Study, block: RealDataBlock, store: RecordStore, expected: int | None = None,
                  rest: str | None = None) -> str:
    """rest: the command that measures the block's missing units (default: this runner's --blocks)."""
    recs = store.all()
    rest = rest or f"python -m pipeline.real_data --data-root data --blocks {block.name}"
    lines = [f"## {block.name}", ""] + ([block.about, ""] if block.about else [])
    if not recs:
        return "\n".join(lines + ["Not measured yet: no records under "
                                  f"`{_shown(store.root)}`.", ""])
    verb = "is" if len(recs) == 1 else "are"
    lines += [provenance(recs) + (f" {len(recs)} of the block's {expected} units {verb} recorded; "
                                  f"`{rest}` measures the rest."
                                  if expected and len(recs) < expected else ""), ""]
    others = [r for name in block.paired_with for r in RecordStore(store.root.parent / name).all()]
    return "\n".join(lines + [*block.table(record_rows(recs, study, block)), "",
                              *paired.lines(recs + others, block.metrics[0], study.unit, block=block.name),
                              *holdout_images.lines(recs + others, block.metrics[0], block=block.name)])


def render(root: Path, blocks: list[tuple[Study, RealDataBlock]], old: str = "", quick: bool = False) -> str:
    """The page from the records. A block or registry without records keeps the section the
    page already had (measured before records existed), marked as such, until it is measured."""
    kept = sections(old)
    body = []
    for s, b in blocks:
        store = RecordStore(root / b.name)
        if not store.all() and b.name in kept and "Not measured yet" not in kept[b.name]:
            body.append(_legacy(kept[b.name], "measured before records existed; `python -m pipeline.real_data --data-root data "
                                              f"--blocks {b.name}` re-measures it as records"))
        else:
            body.append(block_section(s, b, store, sum(len(s.grid_configs(g)) for g in b.grids)))
    from pipeline import real_search  # its sections: the platform's searches and their winners

    body += [real_search.section(root, search, study)
             for study, search in real_search.searches(Path("data"), quick).values()]
    registry = registry_records.section(root)
    if registry is None and "Registry" in kept:
        registry = _legacy(kept["Registry"], "from before records and before the registry's holdout-baseline gate; "
                                             "the next measurement's `promote` replaces it")
    return "\n".join(HEADER + body + ([registry] if registry else []))


LEGACY = "*Kept from an earlier page: "


def _legacy(section: str, why: str) -> str:
    """The section with one note saying why it was kept (an older note is replaced)."""
    head, _, rest = section.partition("\n")
    rest = "\n".join(line for line in rest.split("\n") if not line.startswith(LEGACY)).lstrip("\n")
    return f"{head}\n\n{LEGACY}{why}.*\n\n{rest}"


def sections(text: str) -> dict[str, str]:
    """A page's `## <name>` sections by name (what comes before the first is the header)."""
    out: dict[str, str] = {}
    for chunk in ("\n" + text).split("\n## ")[1:]:
        name = chunk.split("\n", 1)[0].strip()
        out[name] = ("## " + chunk).rstrip() + "\n"
    return out


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(runtime.REPO_ROOT))
    except ValueError:
        return str(path)


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.real_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, help="folder of the public data sets (not needed with --render)")
    parser.add_argument("--blocks", type=cli.str_list, default=[], help="a subset of the blocks (default: all)")
    parser.add_argument("--quick", type=cli.str2bool, default=False,
                        help="2 epochs, 1 seed: wiring only (its records go under the cache, not results/)")
    parser.add_argument("--budget-min", type=float, default=0,
                        help="start no new unit after this many minutes (0: no limit); the unit in progress "
                             "finishes and is recorded")
    parser.add_argument("--render", action="store_true", help="only re-render the page from the records")
    parser.add_argument("--promote", type=cli.str2bool, default=True, help="run promote after every unit measured")
    parser.add_argument("--records", type=Path, default=None,
                        help=f"folder of the records (default: {_shown(records.RECORDS)})")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.budget_min < 0:
        raise InputError("--budget-min", f"must be >= 0, got {args.budget_min:g}")
    root = args.records or (runtime.cache_dir() / "records-quick" if args.quick else records.RECORDS)
    if args.data_root is None and not args.render:
        raise InputError("--data-root", "required unless --render")
    if args.data_root is not None and not args.data_root.is_dir():
        raise InputError(args.data_root, "data root does not exist")
    data_root = (args.data_root or Path("data")).resolve()
    every = [(s, b) for s in all_studies() if isinstance(s, RealDataStudy) for b in s.real_data(data_root, args.quick)]
    known = [b.name for _, b in every]
    unknown = [b for b in args.blocks if b not in known]
    if unknown:
        raise InputError("--blocks", f"unknown block(s) {', '.join(unknown)}; here: {', '.join(known)}")
    chosen = [(s, b) for s, b in every if not args.blocks or b.name in args.blocks]
    old = args.out.read_text() if args.out.is_file() else ""
    if not args.render:
        present = [(s, b) for s, b in chosen if b.source is None or b.source.is_dir()]
        if not present:
            raise InputError(args.data_root, "no study found its public data set here "
                                             f"(looked for {', '.join(str(b.source) for _, b in chosen)})")
        tracking.setup_tracking()
        budget = Budget(args.budget_min)
        promote = (lambda: registry_records.promote(root)) if args.promote else None
        for study, block in present:
            print(f"=== real data: {block.name} ===", file=sys.stderr, flush=True)
            measured, skipped, left = run_block(study, block, RecordStore(root / block.name), budget, promote)
            print(f"[{block.name}] measured {measured}, already recorded {skipped}, left {left}",
                  file=sys.stderr, flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(render(root, every, old, args.quick))  # after every block
    text = render(root, every, old, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
