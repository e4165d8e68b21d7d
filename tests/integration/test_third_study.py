"""A study the platform has never seen, defined only under tests/shapes_study/ (with its own
registry policy), runs grid -> search -> promote -> dashboard through the same code paths
as the built-in studies: the proof that a study is one folder."""
from __future__ import annotations

import importlib

import pytest
from mlflow.tracking import MlflowClient

from dashboards import build as dashboard_build
from projects.core import tracking
from projects.core.grid import plan_grid, run_grid
from projects.core.study import get_study, register_study, study_names, unregister_study
from projects.search import driver
from registry import promote
from conftest import running_runs


@pytest.fixture
def shapes(monkeypatch):
    monkeypatch.setenv("MEDIMG_STUDIES", "shapes_study")  # what a plug-in user sets (subprocesses inherit it)
    module = importlib.import_module("shapes_study")
    register_study(module.STUDY)
    yield module.STUDY
    unregister_study(module.STUDY.name)


def test_a_third_study_runs_grid_search_promotion_and_dashboard(shapes, tmp_path):
    assert "shapes" in study_names() and get_study("shapes") is shapes
    grid = shapes.grid_cls(base=shapes.config_cls(epochs=4), widths=[4, 8])
    plan = plan_grid(shapes, grid)
    with tracking.study_run(shapes.experiment, "grid", adopt=False) as parent:
        table = run_grid(shapes, grid, plan)
    assert set(table["width"]) == {4, 8} and (table["runs"] == 1).all()
    children = MlflowClient().search_runs([parent.info.experiment_id],
                                          f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2 and all(r.data.metrics["test_accuracy"] > 0.5 for r in children)

    summary = driver.run_search(driver.SearchSettings(study="shapes", base=shapes.config_cls(), name="shapes-s",
                                                      n_trials=2, epochs=2, pruner="none", seed=0,
                                                      space="arch=cnn,width=2|4"))
    assert summary.n_complete == 2 and summary.best_trial is not None

    report = promote.promote_model(shapes.model_name("bars"))  # its policy comes from the study's folder
    champion = next(d for d in report.decisions if d.alias == "champion")
    assert champion.status == promote.MOVED, report.table()
    assert MlflowClient().get_model_version_by_alias("shapes-bars", "champion")

    index = dashboard_build.build(tmp_path / "dash")
    page = (tmp_path / "dash" / "shapes.html").read_text()
    assert "Shapes (generated)" in page and "Accuracy against width" in page and "champion" in page
    assert "shapes.html" in index.read_text()
    assert running_runs() == []
