"""Every committed record still names a unit its block plans today: a setting added to a
study (at its neutral value) must not orphan the records measured before it, or the next
`python -m pipeline.real_data` would train hours of finished units again."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import real_data, real_search, registry_records
from projects.core import records
from projects.core.records import RecordStore
from projects.core.study import all_studies

ROOT = Path("/data")  # where the data lies is not part of a unit's key


def _blocks():
    for study in all_studies():
        blocks = list(study.real_data(ROOT, False)) if isinstance(study, real_data.RealDataStudy) else []
        blocks += list(study.rank_blocks(ROOT)) if hasattr(study, "rank_blocks") else []
        for name, (owner, search) in real_search.searches(ROOT).items():
            params = real_search.winner(records.RECORDS, search) if owner is study else None
            blocks += [search.winner_block(params)] if params is not None else []
        yield from ((study, b) for b in blocks)


BLOCKS = list(_blocks())


@pytest.mark.parametrize(("study", "block"), BLOCKS, ids=[b.name for _, b in BLOCKS])
def test_each_committed_record_is_a_unit_its_block_plans(study, block):
    recs = RecordStore(records.RECORDS / block.name).all()
    planned = [real_data.unit_settings(c) for g in block.grids for c in study.grid_configs(g)]
    orphans = [r.unit for r in recs if r.settings not in planned]
    assert not orphans, f"{block.name}: records no planned unit matches (settings changed?): {orphans}"


def test_the_blocks_with_committed_records_are_all_checked():
    on_disk = {p.name for p in records.RECORDS.iterdir() if p.is_dir() and any(p.glob("*.json"))}
    checked = {b.name for _, b in BLOCKS}
    assert on_disk - checked <= {registry_records.REGISTRY, real_search.SEARCHES}
