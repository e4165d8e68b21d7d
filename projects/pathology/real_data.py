"""The MoNuSeg block of the real-data results page (pipeline/real_data.py): Table V cells
that fit this machine's time (2 cores), with the paper's settings. MoNuSeg's test/ folder is
the holdout (the registry's); the runs split train/ by image."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from projects.core.study import RealDataBlock
from projects.pathology.config import PathologyConfig
from projects.pathology.grid import PathologyGridConfig
from projects.pathology.paper import TABLE_V

# The smallest ELU-Nets and the smallest U-Net of Table V; the paper's settings: Adam 1e-4,
# batch 8, 256-px tiles, up to 40 epochs with early stopping after 5 without improvement.
CELLS = [("elunet", 4, 4), ("elunet", 8, 5), ("unet", 32, 4)]
PAPER = dict(tile_size=256, epochs=40, patience=5, batch_size=8, lr=1e-4, cpu_predict_n=57, progress=False)
METRICS = ("jaccard", "dice")


def blocks(root: Path, quick: bool) -> list[RealDataBlock]:
    monuseg = root / "monuseg"
    if not monuseg.is_dir():
        return []
    base = PathologyConfig.of(data=str(monuseg), **(PAPER | ({"epochs": 2} if quick else {})))
    return [RealDataBlock("monuseg", [PathologyGridConfig(base=base, cells=CELLS)], METRICS, table)]


def _cell(value, ci) -> str:
    low, high = ci
    return "-" if value is None or pd.isna(value) else (f"{value:.3f} [{low:.3f}, {high:.3f}]" if low is not None
                                                         else f"{value:.3f}")


def table(rows: pd.DataFrame) -> list[str]:
    paper = {(c.arch, str(c.filters), str(c.depth)): c for c in TABLE_V}
    lines = ["| model | filters | depth | per-tile Jaccard [95% CI] | paper (PAIP) | Dice [95% CI] | all-background "
             "| epochs | size MB (paper) | CPU s, 57 tiles (paper) | test images |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in rows.sort_values(["arch", "filters", "depth"]).iterrows():
        ref = paper.get((r["arch"], str(r["filters"]), str(r["depth"])))
        lines.append(f"| {r['arch']} | {r['filters']} | {r['depth']} | {_cell(r['jaccard'], r['jaccard_ci'])} | "
                     f"{ref.jaccard if ref else '-'} | {_cell(r['dice'], r['dice_ci'])} | "
                     f"{r.get('baseline_jaccard_all_background', float('nan')):.3f} | {r['epochs_run']:.0f} | "
                     f"{r['size_mb']:.2f} ({ref.size_mb if ref else '-'}) | {r['cpu_total_s']:.2f} "
                     f"({ref.cpu_s if ref else '-'}) | {r['units']:.0f} |")
    return lines
