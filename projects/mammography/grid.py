"""The paper's scenarios as child runs of one parent: 4 splits x {original, augmented} for
the chosen task, plus benign/malignant at 75:25, each repeated over seeds; the parent gets a
table comparing every scenario with the paper and with the majority baseline."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import mlflow
import pandas as pd

from projects.core import tracking
from projects.core.grid import GridCell, log_tables, run_cells
from projects.core.errors import InputError
from projects.mammography import paper, study
from projects.mammography.config import MammographyConfig
from projects.core.stats import mean_ci95


@dataclass
class MammographyGridConfig:
    base: MammographyConfig = field(default_factory=MammographyConfig)
    archs: list[str] = field(default_factory=lambda: ["resnet101"])
    splits: list[str] = field(default_factory=lambda: list(paper.SPLITS))
    augment_options: list[bool] = field(default_factory=lambda: [False, True])
    benign_malignant: bool = True  # the paper's benign/malignant scenario at 75:25
    repeats: int = 1


def scenarios(grid: MammographyGridConfig) -> list[MammographyConfig]:
    if grid.repeats < 1:
        raise InputError("repeats", f"must be at least 1, got {grid.repeats}")
    out = []
    for arch in grid.archs:
        cells = [(grid.base.task, split, aug) for split in grid.splits for aug in grid.augment_options]
        if grid.benign_malignant and grid.base.task != "benign_malignant":
            cells.append(("benign_malignant", "75:25", False))
        for task, split, aug in cells:
            for rep in range(grid.repeats):
                out.append(dataclasses.replace(grid.base, arch=arch, task=task, split=split,
                                               augment=aug, seed=grid.base.seed + rep))
    return out


METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")


def run_grid(grid: MammographyGridConfig) -> pd.DataFrame:
    """Inside the active (parent) run: one child per scenario and seed; returns the table."""
    configs = scenarios(grid)
    for cfg in configs:  # bad input fails before anything trains
        study._check_config(cfg)
    mlflow.set_tags({tracking.TAG_STUDY: study.STUDY, tracking.TAG_RUN_KIND: tracking.RUN_KIND_GRID_PARENT,
                     tracking.TAG_TASK: grid.base.task})
    mlflow.log_params({"grid.archs": ",".join(grid.archs), "grid.splits": ",".join(grid.splits),
                       "grid.augment_options": ",".join(map(str, grid.augment_options)),
                       "grid.repeats": grid.repeats, "grid.n_runs": len(configs)})
    tracking.log_config(grid.base, prefix="base")
    cells = [GridCell(f"{cfg.arch}-{cfg.task}-{cfg.split.replace(':', '-')}-{'aug' if cfg.augment else 'orig'}-s{cfg.seed}",
                      {"arch": cfg.arch, "task": cfg.task, "split": cfg.split, "augment": cfg.augment, "seed": cfg.seed},
                      functools.partial(_train, cfg))
             for cfg in configs]
    runs = run_cells(cells)
    table = comparison_table(runs)
    log_tables(runs, table)
    return table


def _train(cfg: MammographyConfig) -> dict[str, float]:
    return study.run(cfg, run_kind=tracking.RUN_KIND_GRID_CHILD).metrics


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario (task, split, augment, arch): ours (mean +- 95% CI over seeds),
    the majority baseline, and the paper's number for the same split."""
    out = []
    ok = runs[runs["status"] == "FINISHED"] if "status" in runs else runs
    for (arch, task, split, augment), group in runs.groupby(["arch", "task", "split", "augment"], sort=False):
        done = ok[(ok["arch"] == arch) & (ok["task"] == task) & (ok["split"] == split) & (ok["augment"] == augment)]
        row = {"arch": arch, "task": task, "split": split, "augment": augment,
               "runs": len(group), "finished": len(done)}
        for metric in METRICS:
            col = tracking.test_metric(metric)
            mean, ci = mean_ci95(done[col]) if col in done and len(done) else (float("nan"), float("nan"))
            row[f"ours_{metric}"] = mean
            row[f"ours_{metric}_ci95"] = ci
        base = tracking.baseline_metric("majority_accuracy")
        row["baseline_majority_accuracy"] = float(done[base].mean()) if base in done and len(done) else float("nan")
        ref = paper.paper_row(task, split)
        for metric, attr in zip(METRICS, ("accuracy", "precision", "recall", "f1")):
            row[f"paper_{metric}"] = getattr(ref, attr) if ref else float("nan")
        out.append(row)
    return pd.DataFrame(out)
