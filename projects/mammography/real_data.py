"""mini-MIAS blocks of the real-data results page (pipeline/real_data.py): the ROI recipe
and the whole-film recipe, each task on the patient-level 80:20 split over 3 seeds."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from projects.core import space as spaces
from projects.core.specs.pipeline import RealDataBlock, RealSearch
from projects.mammography.config import MammographyConfig
from projects.mammography.grid import MammographyGridConfig

SEEDS = 3
METRICS = ("balanced_accuracy", "f1_macro", "accuracy")
# Each cell is a named preset (projects/mammography/presets.py): what the page shows is what
# `-P preset=<name>` gives a user on their own films.
MEASURED = dict(onnx_timing=False, progress=False)
BLOCKS = {
    "roi": ["roi-normal-abnormal", "roi-7class", "roi-benign-malignant"],
    "film": ["film-7class", "film-normal-abnormal"],
}


def blocks(root: Path, quick: bool) -> list[RealDataBlock]:
    mias = root / "mias"
    out = []
    for name, cells in BLOCKS.items():
        grids = [MammographyGridConfig(base=MammographyConfig.of(data=str(mias), preset=preset, **MEASURED)
                                       .replace(**({"epochs": 2} if quick else {})),
                                       splits=["80:20"], augment_options=[False], benign_malignant=False,
                                       repeats=1 if quick else SEEDS) for preset in cells]
        out.append(RealDataBlock(f"mias-{name}", grids, METRICS, table, source=mias))
    return out


# The platform's own search on the ROI recipes (pipeline/real_search.py): every trial starts
# from the preset and the search varies what the hand-picked recipe fixed (architecture, crop,
# input size, learning rate and schedule, sampling, weight decay); validation decides, the
# test split and the holdout stay untouched. Its winner becomes the preset when it is better.
ROI_SPACE = ("arch=resnet18|resnet10t|resnet14t,image_size=32|48|64,roi_crop_px=128|192|256,"
             "lr=0.0003:0.003:log,lr_schedule=constant|cosine,sampling=shuffle|balanced,"
             "weight_decay=0|0.0001|0.001,augment=false")  # the film augmentation is for input=film
SEARCHES = {"roi-normal-abnormal": "val_balanced_accuracy", "roi-7class": "val_f1_macro"}
N_TRIALS = 24


def searches(root: Path, quick: bool = False) -> list[RealSearch]:
    """quick: 2 trials of 1 epoch and one seed of the winner (the wiring only)."""
    mias = root / "mias"
    out = []
    for preset, objective in SEARCHES.items():
        base = MammographyConfig.of(data=str(mias), preset=preset, **MEASURED).replace(**({"epochs": 1} if quick else {}))

        def winner(params: dict, base=base, preset=preset) -> RealDataBlock:
            grid = MammographyGridConfig(base=spaces.config_for(base, params), splits=["80:20"],
                                         augment_options=[False], benign_malignant=False, repeats=1 if quick else SEEDS)
            return RealDataBlock(f"search-{preset}-winner", [grid], METRICS, table, source=mias)

        out.append(RealSearch(f"search-{preset}", mias, base=f"preset={preset},onnx_timing=false", space=ROI_SPACE,
                              epochs=base.epochs, n_trials=2 if quick else N_TRIALS, objective=objective,
                              winner_block=winner))
    return out


def _cell(value, ci) -> str:
    if value is None or pd.isna(value):
        return "-"
    low, high = ci if isinstance(ci, (tuple, list)) else (None, None)
    ok = low is not None and high is not None and not pd.isna(low)
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if ok else f"{value:.3f}"


def table(rows: pd.DataFrame) -> list[str]:
    """One row per trained model: the run's own test split (by patient) with intervals and the
    majority baseline, then the fixed holdout's balanced accuracy and macro-F1."""
    lines = ["| task | seed | balanced accuracy [95% CI] | macro-F1 [95% CI] | accuracy [95% CI] | "
             "majority: acc / bal. acc / macro-F1 | test patients | holdout balanced accuracy [95% CI] "
             "| holdout macro-F1 [95% CI] | holdout patients |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in rows.sort_values(["task", "seed"]).iterrows():
        lines.append(f"| {r['task']} | {r['seed']} | {_cell(r['balanced_accuracy'], r['balanced_accuracy_ci'])} | "
                     f"{_cell(r['f1_macro'], r['f1_macro_ci'])} | {_cell(r['accuracy'], r['accuracy_ci'])} | "
                     f"{r.get('baseline_majority_accuracy', float('nan')):.3f} / "
                     f"{r.get('baseline_majority_balanced_accuracy', float('nan')):.3f} / "
                     f"{r.get('baseline_majority_f1_macro', float('nan')):.3f} | {r['units']:.0f} "
                     f"| {_cell(r['holdout_balanced_accuracy'], r['holdout_balanced_accuracy_ci'])} "
                     f"| {_cell(r['holdout_f1_macro'], r['holdout_f1_macro_ci'])} "
                     f"| {'-' if pd.isna(r['holdout_units']) else format(r['holdout_units'], '.0f')} |")
    cols = ["balanced_accuracy", "f1_macro", "holdout_balanced_accuracy", "holdout_f1_macro"]
    stats = rows.groupby("task")[cols].agg(["mean", "std", "count"])

    def mean(task, col):
        return f"{stats.loc[task, (col, 'mean')]:.3f} (sd {stats.loc[task, (col, 'std')]:.3f})"

    lines += [""] + [f"- {task}: mean over {stats.loc[task, ('f1_macro', 'count')]:.0f} seeds: balanced accuracy "
                     f"{mean(task, 'balanced_accuracy')}, macro-F1 {mean(task, 'f1_macro')}"
                     + (f"; holdout balanced accuracy {mean(task, 'holdout_balanced_accuracy')}, macro-F1 {mean(task, 'holdout_f1_macro')}"
                        if stats.loc[task, ("holdout_balanced_accuracy", "count")] else "")
                     for task in stats.index]
    return lines
