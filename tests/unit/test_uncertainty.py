"""Bootstrap intervals and the paired test, on small real inputs: metrics from per-unit
statistics equal the studies' own definitions, intervals cover the point and narrow with
more units, resampling is by unit (patient / source image), and a newcomer better by one
film does not win a paired test while a clearly better one does."""
from __future__ import annotations

import numpy as np
import pytest

from projects.core import uncertainty as U
from projects.mammography.metrics import classification_metrics
from projects.pathology.metrics import confusion_counts, per_tile_jaccard, segmentation_metrics


def _films(n_patients: int, accuracy: float, seed: int, n_classes: int = 3):
    """Two films per patient; each patient's films right with probability `accuracy`."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, 2 * n_patients)
    right = np.repeat(rng.random(n_patients) < accuracy, 2)
    pred = np.where(right, truth, (truth + 1) % n_classes)
    units = [f"p{i // 2:03d}" for i in range(2 * n_patients)]
    return truth, pred, units


def test_classification_metrics_from_confusion_match_sklearn():
    rng = np.random.default_rng(0)
    for n_classes in (2, 3, 7):
        truth = rng.integers(0, n_classes, 90)
        truth[truth == n_classes - 1] = 0  # a class absent from the truth: macro averages still count it
        pred = rng.integers(0, n_classes, 90)
        units = [f"u{i % 17}" for i in range(90)]
        got = U.classification_scores(truth, pred, units, n_classes).point()
        want = classification_metrics(truth, pred, [str(k) for k in range(n_classes)])
        for name in ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro"):
            assert got[name] == pytest.approx(want[name], abs=1e-12), (n_classes, name)


def test_segmentation_metrics_from_stats_match_the_study():
    rng = np.random.default_rng(1)
    pred, truth = rng.random((12, 8, 8)) > 0.6, rng.random((12, 8, 8)) > 0.7
    truth[3] = pred[3] = False  # an empty tile scores 1
    valid = np.ones_like(pred)
    valid[:, :, -2:] = False  # padding never counts
    c = confusion_counts(pred, truth, valid)
    dice_den = 2 * c["tp"] + c["fp"] + c["fn"]
    dice = np.where(dice_den > 0, 2 * c["tp"] / np.maximum(dice_den, 1), 1.0)
    scores = U.segmentation_scores(per_tile_jaccard(pred, truth, valid), dice, c, [f"img{i % 4}" for i in range(12)])
    want = segmentation_metrics(pred, truth, valid)
    for name in ("jaccard", "dice", "jaccard_pooled", "pixel_accuracy"):
        assert scores.point()[name] == pytest.approx(want[name], abs=1e-12), name
    assert scores.n_units == 4


def test_intervals_cover_the_point_and_narrow_with_more_units():
    widths = []
    for n in (15, 60, 240):
        scores = U.classification_scores(*_films(n, 0.7, seed=n), n_classes=3)
        point, (low, high) = scores.point()["accuracy"], scores.intervals()["accuracy"]
        assert low <= point <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < widths[0] / 2.5  # ~1/sqrt(n): 16x the units, about a quarter the width


def test_resampling_draws_whole_units_not_samples():
    """Two patients of 100 films each, one all right, one all wrong: by patient the interval
    spans 0..1 (resamples AA, AB, BB); a by-film bootstrap would claim about 0.43..0.57."""
    truth = np.zeros(200, dtype=int)
    pred = np.r_[np.zeros(100, int), np.ones(100, int)]
    units = ["A"] * 100 + ["B"] * 100
    scores = U.classification_scores(truth, pred, units, n_classes=2)
    assert scores.point()["accuracy"] == 0.5 and scores.n_units == 2
    assert scores.intervals()["accuracy"] == (0.0, 1.0)


def test_the_same_seed_gives_the_same_interval():
    scores = U.classification_scores(*_films(30, 0.6, seed=3), n_classes=3)
    assert scores.intervals(seed=5) == scores.intervals(seed=5)


def test_paired_test_refuses_a_one_film_win_and_accepts_a_clear_one():
    truth, pred, units = _films(32, 0.7, seed=4)
    champion = U.classification_scores(truth, pred, units, 3)
    one_more = pred.copy()
    wrong = np.flatnonzero(one_more != truth)[0]
    one_more[wrong] = truth[wrong]  # better by exactly one film
    small = U.paired_difference(U.classification_scores(truth, one_more, units, 3), champion, "accuracy")
    assert small.difference == pytest.approx(1 / 64)
    assert small.p_value > 0.05 and small.low <= 0 <= small.high
    better = np.where(np.arange(len(pred)) % 4 == 0, pred, truth)  # right on 3 of 4 of its mistakes
    clear = U.paired_difference(U.classification_scores(truth, better, units, 3), champion, "accuracy")
    assert clear.difference > 0.15 and clear.p_value < 0.01 and clear.low > 0
    same = U.paired_difference(champion, champion, "accuracy")
    assert same.difference == 0 and same.p_value == 1.0


def test_a_paired_test_needs_shared_units():
    a = U.classification_scores(*_films(5, 0.5, seed=1), n_classes=3)
    b = U.UnitScores([f"x{i}" for i in range(5)], a.stats, a.metrics)
    with pytest.raises(ValueError, match="share no unit"):
        U.paired_difference(a, b, "accuracy")
