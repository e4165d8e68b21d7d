"""Uncertainty of held-out numbers: bootstrap over the independent unit, not the sample.

A test set of 64 films from 32 patients is 32 independent observations, not 64: films of one
patient (and tiles of one source image) are alike. So a held-out result is kept broken down
by unit - additive statistics per unit (a confusion matrix, or tile sums) - and every
resample draws whole units with replacement and recomputes the metric from the summed
statistics. Same units, same draws for two models: the paired difference and its p-value.

    scores = classification_scores(truth, pred, patient_of_each_film, n_classes=7)
    scores.point()["accuracy"], scores.intervals()["accuracy"]     # (low, high), 95%
    paired_difference(newcomer, champion, "accuracy")              # diff, interval, p

Percentile intervals from 2000 resamples (seeded: the same data gives the same interval).
The unit count is part of every result: a 95% interval over 6 units is wide, and says so.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
LEVEL = 0.95

MetricsFn = Callable[[np.ndarray], dict[str, np.ndarray]]  # (B, S) summed stats -> metric name -> (B,)


@dataclass
class UnitScores:
    """A held-out result by independent unit: additive statistics per unit and how the metrics
    follow from their sum."""
    units: list[str]
    stats: np.ndarray  # (U, S)
    metrics: MetricsFn
    kind: str = ""  # "segmentation" | "classification:<K>": how `from_dict` rebuilds `metrics`

    @property
    def n_units(self) -> int:
        return len(self.units)

    def as_dict(self) -> dict:
        """What a record keeps (JSON): enough to bootstrap or pair this result again later."""
        return {"kind": self.kind, "units": list(self.units), "stats": self.stats.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> UnitScores:
        kind = data["kind"]
        if kind == "segmentation":
            metrics = segmentation_metrics_from_stats
        elif kind.startswith("classification:"):
            n_classes = int(kind.split(":")[1])
            metrics = lambda s: classification_metrics_from_confusion(s, n_classes)  # noqa: E731
        else:
            raise ValueError(f"unknown kind of unit scores {kind!r}")
        return cls(list(data["units"]), np.asarray(data["stats"], dtype=float), metrics, kind)

    def point(self) -> dict[str, float]:
        return {k: float(v[0]) for k, v in self.metrics(self.stats.sum(0, keepdims=True)).items()}

    def resampled(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics of each resample; weights (B, U): how often each unit was drawn."""
        return self.metrics(weights @ self.stats)

    def intervals(self, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> dict[str, tuple[float, float]]:
        if self.n_units == 0:
            return {}
        draws = self.resampled(resample_weights(self.n_units, n_boot, seed))
        q = (1 - level) / 2
        return {k: (float(np.nanquantile(v, q)), float(np.nanquantile(v, 1 - q))) for k, v in draws.items()}

    def per_unit(self) -> dict[str, dict[str, float]]:
        """Each unit's own metrics (the per-unit table a run or an evaluation logs)."""
        values = self.metrics(self.stats)
        return {u: {k: float(v[i]) for k, v in values.items()} for i, u in enumerate(self.units)}

    def subset(self, units: Sequence[str]) -> UnitScores:
        index = {u: i for i, u in enumerate(self.units)}
        rows = [index[u] for u in units]
        return UnitScores(list(units), self.stats[rows], self.metrics, self.kind)


def resample_weights(n_units: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n_units): how many times each unit is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    weights = np.zeros((n_boot, n_units))
    np.add.at(weights, (np.arange(n_boot)[:, None], draws), 1.0)
    return weights


def scores_by_unit(sample_stats: np.ndarray, sample_units: Sequence[str], metrics: MetricsFn,
                   kind: str = "") -> UnitScores:
    """Sum per-sample statistics (N, S) into per-unit rows, units in sorted order."""
    units = sorted(set(map(str, sample_units)))
    index = {u: i for i, u in enumerate(units)}
    stats = np.zeros((len(units), sample_stats.shape[1]))
    np.add.at(stats, [index[str(u)] for u in sample_units], sample_stats)
    return UnitScores(units, stats, metrics, kind)


@dataclass(frozen=True)
class PairedResult:
    metric: str
    difference: float  # a - b on the same units
    low: float
    high: float
    p_value: float  # one-sided: the chance of a difference this large when a is not better than b
    n_units: int

    def describe(self) -> str:
        return (f"{self.metric} difference {self.difference:+.4f} (95% CI {self.low:+.4f} to {self.high:+.4f}, "
                f"p = {self.p_value:.3g}, {self.n_units} units)")


def paired_difference(a: UnitScores, b: UnitScores, metric: str, n_boot: int = N_BOOT, seed: int = 0,
                      level: float = LEVEL, higher_is_better: bool = True) -> PairedResult:
    """a minus b on the units they share, by a paired bootstrap: each resample draws the same
    units for both. p: share of resamples where a is not better than b (+1 smoothing)."""
    shared = sorted(set(a.units) & set(b.units))
    if not shared:
        raise ValueError("the two results share no unit: a paired comparison needs the same held-out data")
    a, b = a.subset(shared), b.subset(shared)
    weights = resample_weights(len(shared), n_boot, seed)
    diff = a.resampled(weights)[metric] - b.resampled(weights)[metric]
    sign = 1.0 if higher_is_better else -1.0
    point = a.point()[metric] - b.point()[metric]
    q = (1 - level) / 2
    p = (1 + np.sum(sign * diff <= 0)) / (1 + len(diff))
    return PairedResult(metric, float(point), float(np.nanquantile(diff, q)), float(np.nanquantile(diff, 1 - q)),
                        float(p), len(shared))


# --- the platform's two kinds of held-out result --------------------------------------------
def classification_metrics_from_confusion(stats: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """sklearn's definitions, vectorised over resamples: (B, K*K) confusion counts (rows:
    true class) -> accuracy, balanced accuracy (mean recall of the classes present), macro
    precision / recall / F1 over every class (0 where undefined, zero_division=0)."""
    c = stats.reshape(-1, n_classes, n_classes)
    tp = np.diagonal(c, axis1=1, axis2=2)
    true, pred = c.sum(2), c.sum(1)
    total = np.maximum(c.sum((1, 2)), 1e-12)
    recall = np.divide(tp, true, out=np.zeros_like(tp, dtype=float), where=true > 0)
    precision = np.divide(tp, pred, out=np.zeros_like(tp, dtype=float), where=pred > 0)
    f1 = np.divide(2 * tp, true + pred, out=np.zeros_like(tp, dtype=float), where=(true + pred) > 0)
    present = true > 0
    balanced = np.divide((recall * present).sum(1), present.sum(1), out=np.full(len(c), np.nan),
                         where=present.sum(1) > 0)
    return {"accuracy": tp.sum(1) / total, "balanced_accuracy": balanced, "precision_macro": precision.mean(1),
            "recall_macro": recall.mean(1), "f1_macro": f1.mean(1)}


def classification_scores(truth: np.ndarray, pred: np.ndarray, units: Sequence[str], n_classes: int) -> UnitScores:
    """Per-unit confusion matrices of a classifier's predictions (one row per sample)."""
    one_hot = np.zeros((len(truth), n_classes * n_classes))
    one_hot[np.arange(len(truth)), np.asarray(truth) * n_classes + np.asarray(pred)] = 1.0
    return scores_by_unit(one_hot, units, lambda s: classification_metrics_from_confusion(s, n_classes),
                          f"classification:{n_classes}")


# Per-tile statistics of a segmentation: tile Jaccard, tile Dice, tile count, pixel counts.
SEGMENTATION_STATS = ("jaccard_sum", "dice_sum", "tiles", "tp", "fp", "fn", "tn")


def segmentation_metrics_from_stats(stats: np.ndarray) -> dict[str, np.ndarray]:
    """(B, 7) summed SEGMENTATION_STATS -> per-tile Jaccard and Dice (the means over tiles),
    pooled Jaccard and pixel accuracy, as projects.pathology.metrics defines them."""
    jac, dice, tiles, tp, fp, fn, tn = (stats[:, i] for i in range(len(SEGMENTATION_STATS)))
    n = np.maximum(tiles, 1e-12)
    union = tp + fp + fn
    return {"jaccard": jac / n, "dice": dice / n,
            "jaccard_pooled": np.divide(tp, union, out=np.zeros_like(tp), where=union > 0),
            "pixel_accuracy": (tp + tn) / np.maximum(tp + fp + fn + tn, 1e-12)}


def segmentation_scores(tile_jaccard: np.ndarray, tile_dice: np.ndarray, counts: dict[str, np.ndarray],
                        units: Sequence[str]) -> UnitScores:
    """Per-unit sums of per-tile scores and pixel counts (one row per tile)."""
    per_tile = np.stack([tile_jaccard, tile_dice, np.ones(len(tile_jaccard)), counts["tp"], counts["fp"],
                         counts["fn"], counts["tn"]], axis=1).astype(float)
    return scores_by_unit(per_tile, units, segmentation_metrics_from_stats, "segmentation")
