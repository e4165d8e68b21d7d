"""What the dashboards and the main job show of the pathology study: Table V as a table,
paper-vs-ours per cell, the dashboard's sections (as data) and the summary lines."""
from __future__ import annotations

import pandas as pd

from projects.core import tracking
from projects.core.stats import summarise
from projects.core.specs.dashboard import CurveSpec, DashboardSpec, GallerySpec
from projects.pathology.paper import TABLE_V

JACCARD = tracking.test_metric("jaccard")
BASE_BACKGROUND = tracking.baseline_metric("jaccard_all_background")
BASE_TUMOR = tracking.baseline_metric("jaccard_all_tumor")


def paper_points() -> pd.DataFrame:
    """Table V: arch, filters, depth, params_count, test_jaccard, cpu_total_s, model_size_mb."""
    return pd.DataFrame([{
        "arch": c.arch, "filters": c.filters, "depth": c.depth, tracking.M_PARAMS: float(c.params),
        JACCARD: c.jaccard, tracking.M_CPU_TOTAL: c.cpu_s, tracking.M_SIZE_MB: c.size_mb} for c in TABLE_V])


def paper_vs_ours(table: pd.DataFrame) -> pd.DataFrame:
    """Per (arch, filters, depth) cell of Table V, plus any cell we ran that the paper has
    not: the paper's numbers beside the mean of our finished runs (search trials left out)."""
    paper = paper_points()
    ours = table[table["run_kind"].ne("trial")] if len(table) else table
    keys = ["arch", "filters", "depth"]
    cells = [tuple(r) for r in paper[keys].itertuples(index=False)]
    if len(ours):
        cells += [tuple(k) for k in ours[keys].dropna().drop_duplicates().itertuples(index=False)
                  if tuple(k) not in cells]
    rows = []
    for arch, n, d in cells:
        ref = paper[(paper["arch"] == arch) & (paper["filters"] == n) & (paper["depth"] == d)]
        mine = ours[(ours["arch"] == arch) & (ours["filters"] == n) & (ours["depth"] == d)] if len(ours) else ours
        row = {"arch": arch, "filters": int(n), "depth": int(d), "runs": len(mine)}
        for col, short in ((JACCARD, "jaccard"), (tracking.M_PARAMS, "params"),
                           (tracking.M_SIZE_MB, "size_mb"), (tracking.M_CPU_TOTAL, "cpu_s")):
            row[f"paper_{short}"] = float(ref[col].iloc[0]) if len(ref) else float("nan")
            mean, ci, _ = summarise(mine[col]) if len(mine) and col in mine else (float("nan"),) * 3
            row[f"ours_{short}"] = mean
            if short == "jaccard":
                row["ours_jaccard_ci95"] = ci
        if len(mine) and tracking.M_PARAMS_KERAS in mine:
            row["ours_params_keras"] = summarise(mine[tracking.M_PARAMS_KERAS])[0]
        row["jaccard_diff"] = row["ours_jaccard"] - row["paper_jaccard"]
        rows.append(row)
    return pd.DataFrame(rows)


def summary_lines(table: pd.DataFrame) -> list[str]:
    """The main job's lines for a grid's comparison table (the cells that ran)."""
    ran = table[table["status"] != "not run"] if len(table) else table
    if not len(ran):
        return []
    lines = ["pathology (per-tile test Jaccard [95% interval, bootstrap over the test images]; size = weights file):"]
    for _, r in ran.iterrows():
        lines.append(f"  {r['arch']:<7} n={r['filters']:<3} depth={r['depth']}  Jaccard {r['ours_jaccard']:.3f} "
                     f"[{r.get('ours_jaccard_boot_low', float('nan')):.2f}, {r.get('ours_jaccard_boot_high', float('nan')):.2f}; "
                     f"{r.get('test_images', float('nan')):.0f} images]  "
                     f"params {r['ours_params_keras']:,.0f}  {r['ours_size_mb']:.2f} MB  "
                     f"CPU load+predict {r['ours_cpu_total_s']:.2f} s  [{r['status']}]")
    return lines


DASHBOARD = DashboardSpec(
    title="Pathology (PAIP tiles)",
    metrics=(JACCARD, tracking.test_metric("jaccard_pooled"), tracking.test_metric("dice"), BASE_BACKGROUND, BASE_TUMOR),
    size_by="depth", size_label="depth",
    hover=("filters n={filters}, depth {depth}, tile {image_size} px",),
    run_columns=("filters", "depth", "image_size", "split", "augment"),
    curves=(CurveSpec(
        title="Jaccard against depth, per initial filter count",
        caption=("Solid: our runs (mean over seeds, 95% CI when repeated); dashed crosses: the paper's Table V "
                 "for the same architecture and n (cells we did not run are hidden: click their legend entry). "
                 "Flat lines: what predicting all background or all tumour scores."),
        x="depth", x_label="depth (levels of the contracting path)", groups=("arch", "filters"),
        paper_groups=("arch", "filters"),
        panels=((JACCARD, "test Jaccard (per tile)", ((BASE_BACKGROUND, "baseline: all background"),
                                                      (BASE_TUMOR, "baseline: all tumour"))),)),),
    galleries=(GallerySpec(
        title="Example test overlays of the champion",
        caption=("The run's own test_overlays.png artifact, laid out in rows: each test tile beside its overlay "
                 "(prediction in red, true tumour outlined in green)."),
        artifact="test_overlays.png", strip=True),),
    paper_on_tradeoff=True,
    paper_caption=("Every Table V cell beside the mean of our finished runs of the same cell (search trials left "
                   "out). The paper's parameter counts are Keras totals (comparable with params_count_keras), its "
                   "sizes Keras files with optimizer state, its CPU time loading plus predicting 57 tiles. "
                   "Crosses on the trade-off charts: Table V and its front (its sizes are Keras files with "
                   "optimizer state, about 12 bytes per parameter; ours are weights only)."),
    paper_columns=("arch", "filters", "depth", "runs", "paper_jaccard", "ours_jaccard", "ours_jaccard_ci95",
                   "jaccard_diff", "paper_params", "ours_params", "ours_params_keras", "paper_size_mb", "ours_size_mb",
                   "paper_cpu_s", "ours_cpu_s"),
    paper_headers={"paper_jaccard": "paper Jaccard", "ours_jaccard": "ours", "ours_jaccard_ci95": "± 95% CI",
                   "jaccard_diff": "ours − paper", "paper_params": "paper params", "ours_params": "ours (PyTorch)",
                   "ours_params_keras": "ours (Keras count)", "paper_size_mb": "paper MB", "ours_size_mb": "ours MB",
                   "paper_cpu_s": "paper CPU s", "ours_cpu_s": "ours CPU s"},
    paper_int_columns=("paper_params", "ours_params", "ours_params_keras"),
)
