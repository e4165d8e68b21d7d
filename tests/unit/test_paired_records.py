"""Records keep their holdout result by unit, and the page pairs a block's models on it
(pipeline/paired.py)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import paired
from projects.core.records import Record
from projects.core.uncertainty import UnitScores, classification_scores, segmentation_scores

IMAGES = [f"img{i}" for i in range(8)]


def _seg(level: float, spread: float = 0.05, seed: int = 0) -> UnitScores:
    """Two tiles per image; tile Jaccard around `level`, varying from image to image."""
    rng = np.random.default_rng(seed)
    per_image = np.clip(level + spread * np.linspace(-1, 1, len(IMAGES)) + rng.normal(0, 0.01, len(IMAGES)), 0, 1)
    jac = np.repeat(per_image, 2)
    counts = {k: np.full(len(jac), 10.0) for k in ("tp", "fp", "fn", "tn")}
    return segmentation_scores(jac, 2 * jac / (1 + jac), counts, np.repeat(IMAGES, 2))


def _record(unit: str, scores: UnitScores | None, digest: str = "h1") -> Record:
    point = (scores or _seg(0.5)).point()
    return Record(block="b", unit=unit, key=unit, settings={}, data_digest="d",
                  holdout=dict(point), holdout_digest=digest,
                  holdout_units=scores.as_dict() if scores else {})


def test_unit_scores_survive_the_record_round_trip():
    seg = _seg(0.6)
    cls = classification_scores(np.array([0, 1, 2, 1, 0, 2]), np.array([0, 1, 1, 1, 2, 2]),
                                ["p1", "p1", "p2", "p2", "p3", "p3"], n_classes=3)
    for scores in (seg, cls):
        back = UnitScores.from_dict(Record.from_json(_record("x", scores).to_json()).holdout_units)
        assert back.units == scores.units and back.point() == pytest.approx(scores.point())
        assert {k: pytest.approx(v) for k, v in scores.intervals().items()} == back.intervals()
    with pytest.raises(ValueError, match="kind"):
        UnitScores.from_dict({"kind": "", "units": [], "stats": []})


def test_the_best_model_is_paired_with_each_other_on_the_same_units():
    # b is 0.02 below a on every image: the separate intervals overlap, the paired one does not
    a, b, c = _seg(0.62), _seg(0.60), _seg(0.40, seed=1)
    assert a.intervals()["jaccard"][0] < b.intervals()["jaccard"][1]
    got = paired.lines([_record("b", b), _record("a", a), _record("c", c)], "jaccard", "source image")
    assert "the same 8 source images" in got[0] and "**a**" in got[0]
    rows = {line.split(":")[0]: line for line in got if line.startswith("- minus")}
    assert set(rows) == {"- minus b", "- minus c"}
    low = float(rows["- minus b"].split("[")[1].split(",")[0])
    assert low > 0 and "+0.020" in rows["- minus b"]  # paired: a is better than b on these images


def test_records_without_units_or_on_another_holdout_are_not_paired():
    recs = [_record("a", _seg(0.62)), _record("old", None), _record("other", _seg(0.7), digest="h2")]
    assert paired.lines(recs, "jaccard", "source image") == []  # no two records share a holdout with units
    recs.append(_record("b", _seg(0.6)))
    got = paired.lines(recs, "jaccard", "source image")
    assert "2 record(s) from before" not in got[0] and "1 record(s) from before per-unit results" in got[0]
    assert [line for line in got if line.startswith("- ")] == [line for line in got if "minus b" in line]


def test_records_of_a_block_paired_with_this_one_are_named_with_their_block():
    import dataclasses

    base = dataclasses.replace(_record("elunet-s0", _seg(0.60)), block="winner")
    got = paired.lines([_record("elunet-rot-s0", _seg(0.62)), base], "jaccard", "source image", block="b")
    assert "**elunet-rot-s0**" in got[0]
    assert any(line.startswith("- minus elunet-s0 (winner): +0.020") for line in got)


def test_the_holdout_by_image_averages_each_configurations_seeds_hardest_image_first():
    import dataclasses

    from pipeline import holdout_images

    def rec(unit: str, level: float, block: str = "b", seed: int = 0) -> Record:
        return dataclasses.replace(_record(unit, _seg(level, seed=seed)), block=block)

    recs = [rec("elunet-rot-s0", 0.60), rec("elunet-rot-s1", 0.64, seed=1), rec("elunet-s0", 0.50, block="winner"),
            rec("old-s0", 0.9, block="b")]
    recs[-1] = dataclasses.replace(recs[-1], holdout_units={})  # before per-unit results: left out
    got = holdout_images.lines(recs, "jaccard", block="b")
    assert got[2] == "| holdout image | elunet (winner) (1 seed) | elunet-rot (2 seeds) |"
    rows = [line.split(" | ") for line in got[4:] if line.startswith("| img")]
    assert [r[0] for r in rows] == [f"| img{i}" for i in range(8)]  # _seg rises with the image index
    first = {r.unit: UnitScores.from_dict(r.holdout_units) for r in recs[:3]}
    mean0 = np.mean([first[u].metrics(first[u].stats)["jaccard"][0] for u in ("elunet-rot-s0", "elunet-rot-s1")])
    assert rows[0][2].rstrip(" |") == f"{mean0:.3f}"
    assert holdout_images.lines(recs[-1:], "jaccard") == []
