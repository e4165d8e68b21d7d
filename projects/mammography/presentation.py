"""What the dashboards and the main job show of the mammography study: the paper's numbers
as a table, paper-vs-ours, the dashboard's sections (as data) and the summary lines."""
from __future__ import annotations

import pandas as pd

from projects.core import tracking
from projects.core.stats import summarise
from projects.core.specs.dashboard import CurveSpec, DashboardSpec, GallerySpec
from projects.mammography.paper import SCENARIOS
from projects.mammography.splits import parse_ratio

ACC, F1 = tracking.test_metric("accuracy"), tracking.test_metric("f1_macro")
BASE_ACC, BASE_F1 = tracking.baseline_metric("majority_accuracy"), tracking.baseline_metric("majority_f1_macro")


def paper_points() -> pd.DataFrame:
    """The paper's scenarios (task, split, test_fraction, test_accuracy, ...)."""
    return pd.DataFrame([{
        "task": s.task, "split": s.split, "test_fraction": parse_ratio(s.split),
        ACC: s.accuracy, tracking.test_metric("precision_macro"): s.precision,
        tracking.test_metric("recall_macro"): s.recall, F1: s.f1} for s in SCENARIOS])


def _ours_row(group: pd.DataFrame) -> dict:
    row = {}
    for col, short in ((ACC, "accuracy"), (F1, "f1_macro")):
        mean, ci, _ = summarise(group[col]) if len(group) and col in group else (float("nan"),) * 3
        row[f"ours_{short}"], row[f"ours_{short}_ci95"] = mean, ci
    row["baseline_majority_accuracy"] = summarise(group[BASE_ACC])[0] if len(group) and BASE_ACC in group else float("nan")
    return row


def paper_vs_ours(table: pd.DataFrame) -> pd.DataFrame:
    """Per scenario (task, split) of the paper and our (arch, augment) variants: mean, CI and
    runs; then our scenarios the paper does not report. Search trials are left out."""
    paper = paper_points()
    ours = table[table["run_kind"].ne("trial")] if len(table) else table
    rows = []
    for ref in paper.itertuples(index=False):
        mine = ours[(ours["task"] == ref.task) & (ours["split"] == ref.split)] if len(ours) else ours
        groups = list(mine.groupby(["arch", "augment"], sort=True)) if len(mine) else [((None, None), mine)]
        for (arch, augment), group in groups:
            row = {"task": ref.task, "split": ref.split, "arch": arch or "", "augment": augment or "",
                   "runs": len(group), "paper_accuracy": getattr(ref, ACC), "paper_f1_macro": getattr(ref, F1)}
            row |= _ours_row(group)
            row["accuracy_diff"] = row["ours_accuracy"] - row["paper_accuracy"]
            rows.append(row)
    if len(ours):
        known = {(r.task, r.split) for r in paper.itertuples(index=False)}
        for (task, split, arch, augment), group in ours.groupby(["task", "split", "arch", "augment"], sort=True):
            if (task, split) in known:
                continue
            row = {"task": task, "split": split, "arch": arch, "augment": augment, "runs": len(group),
                   "paper_accuracy": float("nan"), "paper_f1_macro": float("nan")} | _ours_row(group)
            row["accuracy_diff"] = float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def summary_lines(table: pd.DataFrame) -> list[str]:
    """The main job's lines for a grid's comparison table."""
    if not len(table):
        return []
    lines = ["mammography (test set; [95% interval, bootstrap over the test patients]; baseline = always the "
             "majority class):"]
    for _, r in table.iterrows():
        lines.append(f"  {r['arch']:<10} {r['task']:<17} {r['split']:<6} augment={str(r['augment']):<5} "
                     f"acc {r['ours_accuracy']:.3f} [{r.get('ours_accuracy_boot_low', float('nan')):.2f}, "
                     f"{r.get('ours_accuracy_boot_high', float('nan')):.2f}] (baseline {r['baseline_majority_accuracy']:.3f}, "
                     f"paper {r['paper_accuracy']:.2f})  F1-macro {r['ours_f1_macro']:.3f} "
                     f"[{r.get('ours_f1_macro_boot_low', float('nan')):.2f}, {r.get('ours_f1_macro_boot_high', float('nan')):.2f}] "
                     f"(paper {r['paper_f1_macro']:.2f}); {r.get('test_patients', float('nan')):.0f} test patients")
    return lines


DASHBOARD = DashboardSpec(
    title="Mammography (mini-MIAS)",
    metrics=(ACC, F1, tracking.test_metric("precision_macro"), tracking.test_metric("recall_macro"), BASE_ACC, BASE_F1),
    size_by="image_size", size_label="input image size",
    hover=("task {task}, image {image_size} px",
           "macro-F1 {test_f1_macro}, majority baseline {baseline_majority_accuracy}"),
    run_columns=("task", "image_size", "split", "augment"),
    curves=(CurveSpec(
        title="Metrics against the split ratio",
        caption=("Lines: mean over seeds, with 95% confidence intervals when a setting was repeated; faint dots: "
                 "single runs. Dashed: the majority baseline (always predicting the commonest class; NORM is 64% "
                 "of the films). Stars: the paper. An accuracy near the baseline with a low macro-F1 is the "
                 "all-NORM collapse."),
        x="test_fraction", x_label="test share of the films (train:test)", x_scale=100.0, x_ticks="split",
        groups=("arch", "augment"), per_task=True,
        panels=((ACC, "test accuracy", ((BASE_ACC, "majority baseline (always the commonest class)"),)),
                (F1, "test macro-F1", ((BASE_F1, "majority baseline (always the commonest class)"),)))),),
    galleries=(GallerySpec(
        title="Confusion matrices: best run per scenario",
        caption=("Best = highest test macro-F1 (accuracy alone rewards predicting NORM for every film). "
                 "Read from each run's confusion_matrix artifact."),
        artifact="confusion_matrix.png", group_by=("task", "split", "augment"), csv_fallback="confusion_matrix.csv"),),
    paper_on_tradeoff=False,
    paper_caption=("Each of the paper's scenarios beside the mean (± 95% CI half-width) of our runs of the same task "
                   "and split, per architecture and augmentation; the majority baseline is what always predicting "
                   "the commonest class scores on the same test films. The paper reports no efficiency numbers for "
                   "this study; its accuracies are drawn against the split."),
    paper_columns=("task", "split", "arch", "augment", "runs", "paper_accuracy", "ours_accuracy", "ours_accuracy_ci95",
                   "accuracy_diff", "baseline_majority_accuracy", "paper_f1_macro", "ours_f1_macro",
                   "ours_f1_macro_ci95"),
    paper_headers={"paper_accuracy": "paper accuracy", "ours_accuracy": "ours", "ours_accuracy_ci95": "± 95% CI",
                   "accuracy_diff": "ours − paper", "baseline_majority_accuracy": "majority baseline",
                   "paper_f1_macro": "paper macro-F1", "ours_f1_macro": "ours", "ours_f1_macro_ci95": "± 95% CI"},
)
