"""Named recipes (projects/mammography/presets.py): one parameter gives every setting of a
recipe, a value the user gives wins, and the real-data page trains exactly the presets."""
from __future__ import annotations

from pathlib import Path

import pytest

from projects.core.errors import InputError
from projects.core.study import get_study
from projects.mammography.config import MammographyConfig
from projects.mammography.presets import PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_sets_every_value_it_names(name):
    cfg = MammographyConfig.of(preset=name)
    assert {k: getattr(cfg, k) for k in PRESETS[name]} == PRESETS[name]
    # a run logs the preset and the values: its params give the same config back
    assert MammographyConfig.from_params({k: str(v) for k, v in cfg.flat().items()}) == cfg


def test_a_value_the_user_gives_wins_over_the_preset():
    cfg = MammographyConfig.of(preset="roi-7class", epochs=5, arch="resnet10t")
    assert (cfg.epochs, cfg.arch, cfg.input, cfg.sampling) == (5, "resnet10t", "roi", "balanced")
    assert MammographyConfig.of().input == "film"  # no preset: the paper's defaults
    # replace() after construction changes one setting and keeps the rest of the recipe
    assert MammographyConfig.of(preset="roi-7class").replace(seed=2).lr == PRESETS["roi-7class"]["lr"]


def test_an_unknown_preset_is_one_line_naming_the_choices():
    with pytest.raises(InputError, match="preset: unknown value 'nope'; choose from '' \\(none\\), roi-"):
        MammographyConfig.of(preset="nope")


def test_the_real_data_page_trains_the_presets():
    study = get_study("mammography")
    blocks = {b.name: b for b in study.real_data(Path("data"), quick=False)}
    for block, names in (("mias-roi", ["roi-normal-abnormal", "roi-7class", "roi-benign-malignant"]),
                         ("mias-film", ["film-7class", "film-normal-abnormal"])):
        bases = [g.base for g in blocks[block].grids]
        assert [b.preset for b in bases] == names
        for base, name in zip(bases, names):
            assert all(getattr(base, k) == v for k, v in PRESETS[name].items())


def test_a_grid_of_roi_presets_has_no_film_augmentation_scenario():
    from projects.mammography.grid import MammographyGridConfig, scenarios

    roi = scenarios(MammographyGridConfig(base=MammographyConfig.of(preset="roi-7class"), splits=["80:20"],
                                          benign_malignant=False))
    assert [c.augment for c in roi] == [False] and roi[0].input == "roi"
    film = scenarios(MammographyGridConfig(base=MammographyConfig.of(), splits=["80:20"], benign_malignant=False))
    assert [c.augment for c in film] == [False, True]  # the paper's original and augmented
