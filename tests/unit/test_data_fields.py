"""A study's `data_fields` and `holdout_fields` name every setting its data preparation and its
holdout read. A setting missing from them makes a grid share one prepared data set, or the
registry reuse one prepared holdout, across configs that prepare it differently (`downsample`
and `roi_crop_px` once were). Found by recording which settings the code reads."""
from __future__ import annotations

import importlib

import pytest

from projects.core.config import Config
from projects.core.study import get_study

CASES = {
    "pathology": dict(embedded_images=8, embedded_size=256, tile_size=64),
    "mammography-film": dict(image_size=32),
    "mammography-roi": dict(input="roi", image_size=32),
}


def settings_read(monkeypatch, config, call) -> set[str]:
    seen: set[str] = set()
    original = Config.__getattr__

    def spy(self, name):  # every flat read of a setting goes through Config.__getattr__
        seen.add(name)
        return original(self, name)

    monkeypatch.setattr(Config, "__getattr__", spy)
    call(config)
    monkeypatch.setattr(Config, "__getattr__", original)
    return seen & set(type(config).settings())


@pytest.mark.parametrize("case", CASES)
def test_preparation_and_holdout_read_only_their_declared_settings(case, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path))
    study = get_study(case.split("-")[0])
    # Preparing first checks the whole config (model settings included: a bad one fails before
    # any run); those reads change no data, so the check is left out here.
    monkeypatch.setattr(importlib.import_module(f"projects.{study.name}.trainer"), "check_config", lambda config: None)
    config = study.config_cls.of(**CASES[case])
    prepared = settings_read(monkeypatch, config, study.prepare)
    assert prepared - set(study.data_fields) == set(), f"{study.name}.data_fields lacks them"
    holdout = settings_read(monkeypatch, config, study.holdout)
    assert holdout - set(study.holdout_fields) == set(), f"{study.name}.holdout_fields lacks them"
