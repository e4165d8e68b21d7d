"""The paper's scenarios as child runs of one parent: 4 splits x {original, augmented} for
the chosen task, plus benign/malignant at 75:25, each repeated over seeds; the parent gets a
table comparing every scenario with the paper and with the majority baseline."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from projects.core import tracking
from projects.core.config import setting
from projects.core.stats import mean_ci95
from projects.mammography import paper
from projects.mammography.config import MammographyConfig


@dataclass
class MammographyGridConfig:
    base: MammographyConfig = setting(MammographyConfig(), "every cell's settings", cli_flag=False)
    archs: list[str] = setting([], "comma-separated timm architectures (default: --arch)")
    splits: list[str] = setting(list(paper.SPLITS), "comma-separated train:test ratios")
    augment_options: list[bool] = setting([False, True], "original and/or augmented data", cli_flag=False)
    benign_malignant: bool = setting(True, "add the paper's benign/malignant scenario at 75:25")
    repeats: int = setting(1, "seeds per scenario (mean and 95% CI in the parent's table)", min=1)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            from projects.core.errors import InputError

            raise InputError("repeats", f"must be at least 1, got {self.repeats}")


def scenarios(grid: MammographyGridConfig) -> list[MammographyConfig]:
    out = []
    for arch in grid.archs or [grid.base.arch]:
        # the paper's augmented scenario is film augmentation; ROI crops are always augmented
        augments = grid.augment_options if grid.base.input == "film" else [False]
        cells = [(grid.base.task, split, aug) for split in grid.splits for aug in augments]
        if grid.benign_malignant and grid.base.task != "benign_malignant":
            cells.append(("benign_malignant", "75:25", False))
        for task, split, aug in cells:
            for rep in range(grid.repeats):
                out.append(grid.base.replace(arch=arch, task=task, split=split, augment=aug,
                                             seed=grid.base.seed + rep))
    return out


def cell(cfg: MammographyConfig) -> tuple[str, dict]:
    name = f"{cfg.arch}-{cfg.registry_task}-{cfg.split.replace(':', '-')}-{'aug' if cfg.augment else 'orig'}-s{cfg.seed}"
    return name, {"arch": cfg.arch, "task": cfg.task, "input": cfg.input, "split": cfg.split, "augment": cfg.augment,
                  "seed": cfg.seed}


METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")


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
            row[f"ours_{metric}_ci95"] = ci  # over seeds
            for bound in ("low", "high"):  # bootstrap over the test patients (mean over seeds)
                key = f"{col}_ci95_{bound}"
                row[f"ours_{metric}_boot_{bound}"] = float(done[key].mean()) if key in done and len(done) else float("nan")
        row["test_patients"] = float(done[tracking.M_TEST_UNITS].mean()) if tracking.M_TEST_UNITS in done and len(done) else float("nan")
        base = tracking.baseline_metric("majority_accuracy")
        row["baseline_majority_accuracy"] = float(done[base].mean()) if base in done and len(done) else float("nan")
        ref = paper.paper_row(task, split)
        for metric, attr in zip(METRICS, ("accuracy", "precision", "recall", "f1")):
            row[f"paper_{metric}"] = getattr(ref, attr) if ref else float("nan")
        out.append(row)
    return pd.DataFrame(out)
