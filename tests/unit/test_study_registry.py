"""How studies are found and what a study must implement: the checkout's pyproject.toml names
the platform's studies even when an editable install's metadata is stale, and optional
capabilities (a paper, a holdout, benchmarks) are checked where they are read."""
from __future__ import annotations

import importlib.metadata
from types import SimpleNamespace

import pytest

from projects.core import study as registry


def _entry_point(value: str, dist: str):
    return SimpleNamespace(value=value, dist=SimpleNamespace(name=dist))


def test_a_checkout_reads_its_own_pyproject_not_the_stale_installed_metadata(monkeypatch, tmp_path):
    """An editable install wrote its entry points when it was installed; a study module renamed
    since must still be found, and another package's studies still come from its metadata."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "medimg_platform"\n\n[project.entry-points."medimg.studies"]\n'
                         'mammography = "projects.mammography.study"\n')
    installed = [_entry_point("projects.mammography.plugin", "medimg-platform"),
                 _entry_point("their_pkg.study:STUDY", "their-pkg")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: installed)
    monkeypatch.setattr(registry, "PYPROJECT", pyproject)
    registry._entry_point_modules.cache_clear()
    try:
        assert registry._entry_point_modules() == ("projects.mammography.study", "their_pkg.study")
        monkeypatch.setattr(registry, "PYPROJECT", tmp_path / "absent.toml")  # an installed wheel
        registry._entry_point_modules.cache_clear()
        assert registry._entry_point_modules() == ("projects.mammography.plugin", "their_pkg.study")
    finally:
        registry._entry_point_modules.cache_clear()


def test_the_built_in_studies_are_declared_by_their_study_module():
    assert {s.name: type(s).__module__ for s in registry.all_studies()} == {
        "mammography": "projects.mammography.study", "pathology": "projects.pathology.study"}


def test_a_study_must_say_how_its_grid_expands_and_nothing_about_papers():
    class Minimal(registry.Study):
        name = "minimal"

    with pytest.raises(TypeError, match="grid_configs"):
        Minimal()

    class WithGrid(Minimal):
        def grid_configs(self, grid):
            return []

    from dashboards.paper import PaperStudy
    from projects.core.specs.holdout import HoldoutStudy

    study = WithGrid()
    assert not isinstance(study, PaperStudy) and not isinstance(study, HoldoutStudy)
    assert study.holdout(None) is None
    assert all(isinstance(s, PaperStudy) and isinstance(s, HoldoutStudy) for s in registry.all_studies())
