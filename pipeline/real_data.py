"""Results on the real public data sets: each study's real-data blocks (Study.real_data: its
grids on the public sets under the data root), then `promote`, then results/REAL_DATA.md with
every number: per run, its 95% bootstrap interval over the test patients or images, the
baseline it must beat, and the paper's value where it has one.

    python -m pipeline.real_data --data-root ../shared/data                  # every block (hours on 2 cores)
    python -m pipeline.real_data --data-root ../shared/data --blocks mias-roi --quick true

Runs go to the configured tracking store like any other (grid parents named
`real-<block>-<task>`), so the MLflow UI, the dashboards and the registry see them. The
settings of every block are in the studies' `real_data.py`, once.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from projects.core import cli, runtime, tracking
from projects.core.errors import InputError
from projects.core.grid import plan_grid, run_grid
from projects.core.study import RealDataBlock, Study, all_studies
from registry import promote

OUT = runtime.REPO_ROOT / "results" / "REAL_DATA.md"


def run_block(study: Study, block: RealDataBlock) -> None:
    for grid in block.grids:
        plan = plan_grid(study, grid)  # data checked before any run
        name = f"real-{block.name}-{study.task_of(grid.base)}"
        with tracking.study_run(study.experiment, name, tags=tracking.process_tags(), adopt=False) as run:
            run_grid(study, grid, plan)
            block.parents.append(run.info.run_id)


def child_rows(block: RealDataBlock) -> pd.DataFrame:
    """One row per child run: settings, held-out metrics with intervals, baselines, costs."""
    client, rows = MlflowClient(), []
    for parent in block.parents:
        exp = client.get_run(parent).info.experiment_id
        for run in client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'"):
            m, p, t = run.data.metrics, run.data.params, run.data.tags
            row = {"task": t.get(tracking.TAG_TASK), "arch": t.get(tracking.TAG_ARCH), "seed": int(p.get("seed", 0)),
                   "filters": p.get("filters"), "depth": p.get("depth"), "status": run.info.status,
                   "run_id": run.info.run_id, "units": m.get(tracking.M_TEST_UNITS, float("nan")),
                   "size_mb": m.get(tracking.M_SIZE_MB), "cpu_total_s": m.get(tracking.M_CPU_TOTAL),
                   "epochs_run": m.get("epochs_run")}
            for metric in block.metrics:
                key = tracking.test_metric(metric)
                row[metric] = m.get(key)
                row[f"{metric}_ci"] = (m.get(tracking.ci_low(key)), m.get(tracking.ci_high(key)))
            row |= {k: v for k, v in m.items() if k.startswith("baseline_")}
            rows.append(row)
    return pd.DataFrame(rows)


HEADER = ["# Results on the real public data sets", "",
          "Every number is the held-out test number of one run, with its 95% bootstrap interval over the test "
          "patients (mini-MIAS) or source images (MoNuSeg); a seed changes the split and the initialisation. "
          "Settings: `projects/<study>/real_data.py`. Each section says the command, machine and date that "
          "produced it: a run of some blocks (`--blocks`) rewrites their sections and keeps the others.", ""]


def block_section(block: RealDataBlock, command: str, seconds: float) -> str:
    return "\n".join([f"## {block.name}", "",
                      f"Produced by `{command}` on {dt.date.today().isoformat()}, {runtime.cpu_model()} "
                      f"({os.cpu_count()} cores); this block took {seconds / 60:.1f} min.", "",
                      *block.table(child_rows(block)), ""])


def sections(text: str) -> dict[str, str]:
    """A page's `## <name>` sections by name (what comes before the first is the header)."""
    out: dict[str, str] = {}
    for chunk in ("\n" + text).split("\n## ")[1:]:
        name = chunk.split("\n", 1)[0].strip()
        out[name] = ("## " + chunk).rstrip() + "\n"
    return out


def page(new: dict[str, str], old_text: str, order: list[str]) -> str:
    """The page with this run's sections, the earlier run's sections of the other blocks kept,
    in the blocks' order, the registry last."""
    merged = sections(old_text) | new
    names = [n for n in order if n in merged] + sorted(n for n in merged if n not in order and n != "Registry")
    return "\n".join(HEADER + [merged[n] for n in names + ["Registry"] if n in merged])


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.real_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, required=True, help="folder of the public data sets")
    parser.add_argument("--blocks", type=cli.str_list, default=[], help="a subset of the blocks (default: all)")
    parser.add_argument("--quick", type=cli.str2bool, default=False, help="2 epochs, 1 seed: wiring only")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.data_root.is_dir():
        raise InputError(args.data_root, "data root does not exist")
    tracking.setup_tracking()
    todo = [(s, b) for s in all_studies() for b in s.real_data(args.data_root.resolve(), args.quick)]
    known = [b.name for _, b in todo]
    unknown = [b for b in args.blocks if b not in known]
    if unknown or not todo:
        raise InputError("--blocks" if unknown else args.data_root,
                         f"unknown block(s) {', '.join(unknown)}; here: {', '.join(known)}" if unknown
                         else "no study found its public data set here")
    todo = [(s, b) for s, b in todo if not args.blocks or b.name in args.blocks]
    command = "python -m pipeline.real_data " + " ".join(argv if argv is not None else sys.argv[1:])
    old = args.out.read_text() if args.out.is_file() else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new = {}
    for study, block in todo:
        print(f"=== real data: {block.name} ===", file=sys.stderr, flush=True)
        started = time.perf_counter()
        run_block(study, block)
        new[block.name] = block_section(block, command, time.perf_counter() - started)
        args.out.write_text(page(new, old, known))  # after every block: hours of work survive a later failure
    promotion = promote.promote_all(dry_run=False)
    moves = "\n".join(f"- {line}" for line in promotion.split("; "))
    new["Registry"] = f"## Registry\n\n`promote` after `{command}`:\n\n{moves}\n"
    text = page(new, old, known)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
