"""The holdout image by image (results/REAL_DATA.md): where a block's segmentation models fail.

A holdout mean over 14 images hides that one unusual image can move it by several points (on
MoNuSeg, a brain section whose neuropil the models call nuclei). Each record keeps its holdout
result by image (`Record.holdout_units`), so the page shows every image's score for each
configuration of the block, the seeds' mean, hardest image first, from the records alone.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from projects.core.records import Record
from projects.core.uncertainty import UnitScores

KIND = "segmentation"  # classification units (patients) hold too few images for a score of their own


def configuration(r: Record, block: str | None) -> str:
    """A record's configuration: its unit name without the seed, with its block when another."""
    name = re.sub(r"-s\d+$", "", r.unit)
    return name if block is None or r.block == block else f"{name} ({r.block})"


def lines(recs: Sequence[Record], metric: str, block: str | None = None) -> list[str]:
    """Markdown: one row per holdout image, one column per configuration (mean over its seeds);
    [] when no record kept its segmentation holdout by image."""
    usable = [r for r in recs if r.holdout_units.get("kind") == KIND and r.holdout_digest != "none"]
    if not usable:
        return []
    digest = Counter(r.holdout_digest for r in usable).most_common(1)[0][0]  # one holdout: never mixed
    by_config: dict[str, list[dict[str, float]]] = {}
    for r in (r for r in usable if r.holdout_digest == digest):
        scores = UnitScores.from_dict(r.holdout_units)
        values = scores.metrics(scores.stats)[metric]
        by_config.setdefault(configuration(r, block), []).append(dict(zip(scores.units, map(float, values))))
    images = sorted({u for runs in by_config.values() for run in runs for u in run})
    table = {c: {u: float(np.mean([run[u] for run in runs if u in run])) for u in images}
             for c, runs in by_config.items()}
    order = sorted(images, key=lambda u: np.mean([table[c][u] for c in table]))
    configs = sorted(table)
    seeds = {c: len(by_config[c]) for c in configs}
    out = [f"Holdout {metric} by image (mean over each configuration's seeds; hardest first):", "",
           "| holdout image | " + " | ".join(f"{c} ({seeds[c]} seed{'s' if seeds[c] > 1 else ''})" for c in configs)
           + " |", "|---|" + "---|" * len(configs)]
    out += [f"| {u} | " + " | ".join(f"{table[c][u]:.3f}" for c in configs) + " |" for u in order]
    return out + [""]
