"""Segmentation metrics, named by how they average.

`jaccard` is the paper's: Jaccard (TP / (TP + FP + FN)) of each test tile, then the mean
over tiles; a tile where prediction and mask are both empty scores 1. `jaccard_pooled`
sums TP, FP and FN over every pixel first. Padded pixels (valid == False) never count.
"""
from __future__ import annotations

import numpy as np

from projects.core.uncertainty import UnitScores, segmentation_scores


def confusion_counts(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """Per-tile TP/FP/FN/TN over valid pixels; arrays are (N, H, W) bool/0-1."""
    pred, truth, valid = pred.astype(bool), truth.astype(bool), valid.astype(bool)
    axes = tuple(range(1, pred.ndim))
    return {
        "tp": (pred & truth & valid).sum(axes),
        "fp": (pred & ~truth & valid).sum(axes),
        "fn": (~pred & truth & valid).sum(axes),
        "tn": (~pred & ~truth & valid).sum(axes),
    }


def per_tile_scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Each tile's Jaccard and Dice (1 when prediction and mask are both empty) and counts."""
    c = confusion_counts(pred, truth, valid)
    union = c["tp"] + c["fp"] + c["fn"]
    dice_den = 2 * c["tp"] + c["fp"] + c["fn"]
    return (np.where(union > 0, c["tp"] / np.maximum(union, 1), 1.0),
            np.where(dice_den > 0, 2 * c["tp"] / np.maximum(dice_den, 1), 1.0), c)


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    per_tile_jaccard, per_tile_dice, c = per_tile_scores(pred, truth, valid)
    union = c["tp"] + c["fp"] + c["fn"]
    total = sum(int(v.sum()) for v in c.values())
    return {
        "jaccard": float(per_tile_jaccard.mean()),
        "jaccard_pooled": float(c["tp"].sum() / max(int(union.sum()), 1)),
        "dice": float(per_tile_dice.mean()),
        "pixel_accuracy": float((c["tp"].sum() + c["tn"].sum()) / max(total, 1)),
    }


def per_tile_jaccard(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return per_tile_scores(pred, truth, valid)[0]


def unit_scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray, sources) -> UnitScores:
    """The tiles' scores by source image (the independent unit of a held-out number)."""
    jaccard, dice, counts = per_tile_scores(pred, truth, valid)
    return segmentation_scores(jaccard, dice, counts, [str(s) for s in sources])


def trivial_baselines(truth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """What a model must beat: predicting no tumour anywhere, or tumour everywhere."""
    empty = np.zeros_like(truth, dtype=bool)
    full = np.ones_like(truth, dtype=bool)
    return {
        "jaccard_all_background": segmentation_metrics(empty, truth, valid)["jaccard"],
        "jaccard_all_tumor": segmentation_metrics(full, truth, valid)["jaccard"],
        "jaccard_pooled_all_tumor": segmentation_metrics(full, truth, valid)["jaccard_pooled"],
    }
