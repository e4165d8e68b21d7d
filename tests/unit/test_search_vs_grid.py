"""Search vs grid replayed on a grid's records (pipeline/search_vs_grid.py)."""
from __future__ import annotations

import itertools

import numpy as np

from pipeline import search_vs_grid as svg
from projects.core.records import Record, RecordStore


def _grid_records(epochs: int = 6, seed: int = 0) -> list[Record]:
    """36 configurations whose final score grows with filters and depth and peaks at lr 1e-3,
    with noisy early epochs; bigger models train slower and predict slower."""
    rng = np.random.default_rng(seed)
    out = []
    space = itertools.product(["unet", "elunet"], [3, 4], [4, 8, 16], [3e-4, 1e-3, 3e-3])
    for i, (arch, depth, filters, lr) in enumerate(space):
        final = 0.4 + 0.05 * depth + 0.01 * filters + (0.05 if lr == 1e-3 else 0) + (0.02 if arch == "unet" else 0)
        curve = [float(final * (e + 1) / epochs + rng.normal(0, 0.02 * (epochs - e))) for e in range(epochs)]
        out.append(Record(block=svg.GRID, unit=f"u{i}", key=f"k{i}", data_digest="d", status="FINISHED",
                          settings={"arch": arch, "depth": depth, "filters": filters, "lr": lr, "seed": 0},
                          history={"val_jaccard": curve}, wall_s=100,
                          metrics={"train_seconds": 10.0 * filters * epochs, "test_jaccard": final - 0.01,
                                   "cpu_total_s": 0.1 * filters * depth}))
    return out


def test_the_replayed_search_stays_in_budget_and_counts_what_it_trained():
    grid = svg.cells(_grid_records())
    assert len(grid) == 36
    total = sum(c.epoch_s * len(c.curve) for c in grid)
    for seed, sampler in ((0, "auto"), (1, "tpe")):
        o = svg.replay(grid, seed, warmup=3, budget_s=0.4 * total, sampler=sampler)
        assert 0 < o.spent_s <= 0.4 * total
        assert len(o.completed) >= 3 and o.pick in o.completed
        assert o.pick.curve[-1] == max(c.curve[-1] for c in o.completed)
        # every trained configuration is a distinct cell: re-proposals never cost training
        assert len({c.params for c in o.completed}) == len(o.completed)
        assert 0 < o.found_s <= o.spent_s
    # a budget of the whole grid without pruning trains every cell and finds the grid's pick
    full = svg.replay(grid, 0, warmup=6, budget_s=total)
    assert len(full.completed) == 36 and full.pick == svg.grid_pick(grid)


def test_hypervolume_is_the_area_dominated_up_to_the_reference():
    c = lambda jac, cpu: svg.Cell((), (jac,), 1.0, jac, cpu)  # noqa: E731
    assert svg.hypervolume([c(0.5, 1.0)], 3.0) == 0.5 * 2.0
    # a dominated point adds nothing; a faster, worse one adds its own strip
    assert svg.hypervolume([c(0.5, 1.0), c(0.4, 2.0)], 3.0) == 1.0
    assert abs(svg.hypervolume([c(0.5, 1.0), c(0.3, 0.5)], 3.0) - (0.3 * 0.5 + 0.5 * 2.0)) < 1e-12
    assert svg.hypervolume([], 3.0) == 0.0


def test_section_renders_from_records_alone(tmp_path):
    store = RecordStore(tmp_path / svg.GRID)
    assert "Not measured yet: 0 of 36" in svg.section(tmp_path)
    for r in _grid_records():
        store.write(r)
    text = svg.section(tmp_path)
    assert text.startswith(svg.SECTION)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "seed" not in line]
    assert len(rows) == 2 * len(svg.SAMPLERS) * len(svg.SEEDS)  # each sampler and rule, each seed
    assert "hindsight: median" in text and "a priori: median" in text


def test_the_searched_monuseg_block_trains_what_the_committed_grid_records_pick():
    from projects.core import records
    from projects.pathology.real_data import SEARCHED

    pick = svg.search_pick(records.RECORDS)
    assert pick is not None, "the rank-monuseg grid records are committed (36 configurations)"
    assert dict(pick.params) == SEARCHED
