"""Rank stability from records' validation curves (pipeline/rank_stability.py)."""
from __future__ import annotations

import numpy as np

from pipeline.rank_stability import RHO_MIN, curves, min_resource, section, stability
from projects.core.records import Record, RecordStore


def _record(i: int, curve: list[float]) -> Record:
    return Record(block="rank-embedded", unit=f"u{i}", key=f"k{i}", data_digest="d", status="FINISHED",
                  settings={"arch": "unet", "depth": 3, "filters": 4 + i, "lr": 1e-3, "seed": 0},
                  history={"val_jaccard": curve}, wall_s=60, commit="c0ffee", machine={"cpu": "test cpu"})


def _curves(n: int = 10, epochs: int = 6, seed: int = 0) -> list[list[float]]:
    """Noisy early epochs that converge to each configuration's own final level."""
    rng = np.random.default_rng(seed)
    final = np.linspace(0.3, 0.8, n)
    noise = [0.1, 0.06, 0.03, 0.02, 0.01, 0.0]
    return [[float(f * (e + 1) / epochs + rng.normal(0, noise[e])) for e in range(epochs)] for f in final]


def test_the_minimum_resource_is_the_first_epoch_that_ranks_like_the_last():
    table = curves([_record(i, c) for i, c in enumerate(_curves())])
    assert table.shape == (10, 6)
    result = stability(table, resamples=200)
    assert abs(result["rho"].iloc[-1] - 1.0) < 1e-9 and result["winner_in_top_quarter"].iloc[-1]
    assert result["rho"].iloc[0] < RHO_MIN <= result["rho"].iloc[2]  # epoch 1 is noise, epoch 3 ranks
    assert (result["rho_low"] <= result["rho"] + 1e-9).all() and (result["rho"] <= result["rho_high"] + 1e-9).all()
    assert min_resource(result, "rho") in (2, 3)
    # the best score so far carries a lucky early epoch forward (epoch 1's noise is larger than the
    # signal here), so judged on it the pruner waits at least as long
    assert min_resource(result) >= min_resource(result, "rho")


def test_one_noisy_epoch_moves_the_raw_resource_but_not_the_best_so_far_one():
    """A dip of every curve at one late epoch (as MoNuSeg's epoch 8): the epoch-k score ranks
    nothing there, the best score up to k still does."""
    rng = np.random.default_rng(1)
    finals = np.linspace(0.3, 0.8, 12)
    curves_ = [[f * min(1.0, (e + 2) / 4) for e in range(8)] for f in finals]
    for c in curves_:
        c[5] = float(rng.uniform(0.0, 0.3))  # epoch 6: noise
    result = stability(curves([_record(i, c) for i, c in enumerate(curves_)]), resamples=100)
    assert result["rho"].iloc[5] < RHO_MIN <= result["rho_best"].iloc[5]
    assert min_resource(result, "rho") == 7 and min_resource(result) == 1


def test_unfinished_or_partial_curves_are_left_out_and_the_section_renders(tmp_path):
    store = RecordStore(tmp_path / "rank-embedded")
    for i, c in enumerate(_curves(8)):
        store.write(_record(i, c))
    store.write(Record(block="rank-embedded", unit="bad", key="bad", settings={}, data_digest="d",
                       status="FAILED: MemoryError", history={"val_jaccard": [0.1]}))
    assert len(curves(store.all())) == 8
    text = section(tmp_path)
    assert "8 of 16 configurations" in text and "| 6 | 1.00" in text and "Minimum resource" in text
