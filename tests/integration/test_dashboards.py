"""Dashboard data layer and page build, on a store of known runs made with plain MLflow calls.

The store is tests/known_store.py's (the browser test reads the same one).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from dashboards import build as dash_build
from dashboards import data as dd
from dashboards import pages
from projects.core import tracking
from projects.core.study import study_names
from known_store import JACCARD, MAMMOGRAPHY, PATHOLOGY, PATHOLOGY_FRONT, UI, populate_store

def test_pareto_mask_on_known_points():
    cost = [1, 2, 3, 4, 2, np.nan, 5, 2]
    score = [0.5, 0.7, 0.6, 0.9, 0.7, 0.99, 0.9, 0.65]
    # 0: cheapest. 1 and 4: identical, both on it. 2: dominated by 1. 3: best score.
    # 5: no cost, never. 6: same score as 3 but dearer. 7: same cost as 1, lower score.
    assert dd.pareto_mask(cost, score).tolist() == [True, True, False, True, True, False, False, False]
    assert dd.pareto_mask([], []).tolist() == []
    assert dd.pareto_mask([3.0], [0.1]).tolist() == [True]


def test_pareto_front_sorted_by_cost():
    frame = pd.DataFrame({"c": [4, 1, 2, 3], "s": [0.9, 0.5, 0.4, 0.8], "id": list("wxyz")})
    front = dd.pareto_front(frame, "c", "s")
    assert front["id"].tolist() == ["x", "z", "w"]
    assert dd.pareto_front(frame.iloc[0:0], "c", "s").empty
    assert dd.pareto_front(frame, "missing", "s").empty


def test_split_fraction_and_urls():
    assert dd.split_test_fraction("80:20") == pytest.approx(0.2)
    assert dd.split_test_fraction("75:25") == pytest.approx(0.25)
    assert np.isnan(dd.split_test_fraction("test0.2-val0.2"))
    # the model-training view: MLflow 3.17 opens its GenAI overview without the parameter
    assert dd.run_url("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert dd.redact_uri("postgresql://u:secret@db:5432/m") == "postgresql://u:***@db:5432/m"


def test_study_tables_from_known_runs():
    ids = populate_store()
    info = dd.collect(UI)

    patho = info.studies["pathology"]
    grid = patho[patho["run_kind"] == "grid_child"].set_index("run_name")
    assert set(grid.index) == {"A", "B", "C", "D"}
    for name, arch, n, d, params, jac, size, cpu in PATHOLOGY:
        row = grid.loc[name]
        assert (row["arch"], row["filters"], row["depth"], row["image_size"]) == (arch, n, d, 128)
        assert row[JACCARD] == pytest.approx(jac)
        assert row[tracking.M_PARAMS] == params
        assert row[tracking.M_SIZE_MB] == pytest.approx(size)
        assert row[tracking.M_CPU_TOTAL] == pytest.approx(cpu)
        assert row["study"] == "pathology" and row["run_id"] == ids[name]
        assert row["url"] == f"{UI}/#/experiments/{row['experiment_id']}/runs/{ids[name]}?workflowType=machine_learning"
    # Parents and the pruned trial (no test result) are not rows; the finished trials are.
    assert set(patho["run_name"]) == {"A", "B", "C", "D", "trial-0", "trial-1", "trial-3"}
    assert str(patho["depth"].dtype) == "Int64"
    assert grid.loc["D", "aliases"] == "champion"
    assert grid.loc["A", "aliases"] == "efficient, fastest"
    assert grid.loc["B", "aliases"] == ""
    front = dd.pareto_front(patho[patho["run_kind"] == "grid_child"], tracking.M_PARAMS, JACCARD)
    assert set(front["run_name"]) == PATHOLOGY_FRONT
    assert front["run_name"].tolist() == ["A", "B", "D"]

    mammo = info.studies["mammography"].set_index("run_name")
    assert set(mammo.index) == {m[0] for m in MAMMOGRAPHY}
    assert mammo.loc["m3", "augment"] == "true" and mammo.loc["m3", "split"] == "80:20"
    assert mammo.loc["m3", "test_fraction"] == pytest.approx(0.2)
    assert mammo.loc["m5", "image_size"] == 128 and mammo.loc["m2", "seed"] == 1
    assert mammo.loc["m6", "task"] == "benign_malignant"
    assert mammo.loc["m3", "aliases"] == "champion"
    assert np.isnan(mammo.loc["m1", tracking.M_LATENCY_P50])  # named but not logged: NaN
    for col in dd.SETTING_COLUMNS:
        assert col in mammo.reset_index()


def test_registry_search_and_paper_tables():
    populate_store()
    info = dd.collect(UI)
    aliases = dd.alias_table(info.registry, "pathology").set_index("alias")
    assert set(aliases.index) == {"champion", "efficient", "fastest"}
    assert aliases.loc["champion", "gates"] == {"gate_beats_baseline": "passed", "gate_size": "passed"}
    assert aliases.loc["champion", "other_tags"] == {"source_study": "pathology"}
    assert set(dd.alias_table(info.registry, "mammography")["model"]) == {"mammography-7class"}

    (search,) = info.searches
    assert search.study == "pathology" and search.cost == tracking.M_SIZE_MB
    assert search.trials["trial_number"].tolist() == [0, 1, 2, 3]
    assert search.trials["trial_state"].tolist() == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]

    table = dd.paper_vs_ours("pathology", info.studies["pathology"]).set_index(["arch", "filters", "depth"])
    assert len(table) == 13 + 1  # Table V and our unet n=8 depth 4
    assert table.loc[("elunet", 8, 4), "ours_jaccard"] == pytest.approx(0.85)
    assert table.loc[("elunet", 8, 4), "paper_jaccard"] == pytest.approx(0.854)
    assert table.loc[("unet", 8, 4), "runs"] == 1 and np.isnan(table.loc[("unet", 8, 4), "paper_jaccard"])
    mammo = dd.paper_vs_ours("mammography", info.studies["mammography"])
    row = mammo[(mammo["split"] == "80:20") & (mammo["arch"] == "resnet18") & (mammo["augment"] == "false")].iloc[0]
    assert row["runs"] == 2 and row["ours_accuracy"] == pytest.approx(0.72)
    assert row["ours_accuracy_ci95"] > 0  # two seeds: an interval
    assert row["paper_accuracy"] == pytest.approx(0.68)
    grid, parent = dd.grid_comparison(info.runs, "pathology")
    assert parent["run_name"] == "patho-grid" and grid["paper_jaccard"].iloc[0] == pytest.approx(0.867)


def test_empty_store_gives_empty_tables():
    info = dd.collect(UI)
    assert info.runs.empty and info.registry.empty and info.searches == []
    for study in study_names():
        assert info.studies[study].empty
        assert dd.primary_metric(study) in info.studies[study]


# --- pages ----------------------------------------------------------------------------------------
PLOTLY_BUNDLE = "window.PlotlyConfig = {MathJaxConfig: 'local'};"
CDN_SCRIPT = re.compile(r"<script[^>]+src=[\"']https?://", re.I)


def _check_page(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert not CDN_SCRIPT.search(text), f"{path.name} loads a script from the network"
    return text


def test_build_writes_self_contained_pages(tmp_path):
    populate_store()
    index = dash_build.build(tmp_path / "out", ui_url=UI)
    assert index == tmp_path / "out" / "index.html"
    for key, name in pages.page_files().items():
        text = _check_page(tmp_path / "out" / name)
        # plotly.js embedded exactly once per page (every page has charts here)
        assert text.count(PLOTLY_BUNDLE) == 1, name
        assert pages.FRONT_SEARCH in text if key == "search" else pages.FRONT_OURS in text
        assert f"{UI}/#/experiments/" in text
        assert len(text) < 8_000_000
    mammo = (tmp_path / "out" / "mammography.html").read_text()
    assert mammo.count('alt="confusion matrix" src="data:image/png;base64,') == 4  # one per scenario (task, split, augment)
    assert "majority baseline" in mammo and "benign_malignant" in mammo
    patho = (tmp_path / "out" / "pathology.html").read_text()
    assert "champion: pathology-tumor version" in patho and 'src="data:image/png;base64,' in patho
    assert "gate_beats_baseline" in patho and pages.FRONT_PAPER in patho
    search = (tmp_path / "out" / "search.html").read_text()
    assert pages.FRONT_GRID in search and "best so far" in search
    # The overview's search table names the metric its "best" column is (the trials' test metric).
    index_text = index.read_text()
    searches_table = index_text[index_text.index(">Searches<"):][:4000]
    assert '<th class="t">metric</th>' in searches_table and "test_jaccard" in searches_table


def test_build_with_missing_data_shows_notes(tmp_path):
    populate_store(search=False, registry=False, mammography=False)
    dash_build.build(tmp_path, ui_url=UI)
    mammo = _check_page(tmp_path / "mammography.html")
    assert "No mammography runs yet" in mammo and "mlflow run . -e mammography_grid" in mammo
    assert PLOTLY_BUNDLE not in mammo
    assert "No registry aliases yet" in _check_page(tmp_path / "pathology.html")
    assert "No architecture search yet" in _check_page(tmp_path / "search.html")
    index = _check_page(tmp_path / "index.html")
    assert "No mammography runs yet" in index and pages.FRONT_OURS in index


def test_build_on_empty_store(tmp_path):
    index = dash_build.build(tmp_path, ui_url=UI)
    for name in pages.page_files().values():
        text = _check_page(tmp_path / name)
        assert PLOTLY_BUNDLE not in text  # no chart, no 4.8 MB of plotly.js
    assert "No pathology runs yet" in index.read_text()


def test_build_and_log_logs_pages(tmp_path):
    populate_store(search=False)
    index = dash_build.build_and_log(tmp_path, ui_url=UI)
    assert index.is_file()
    client = MlflowClient()
    exp = client.get_experiment_by_name(tracking.EXPERIMENTS["dashboard"])
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_RUN_KIND] == "dashboard"
    assert run.data.metrics["runs_pathology"] == 4 and run.data.metrics["runs_mammography"] == 6
    logged = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, dash_build.ARTIFACT_DIR)}
    assert logged == set(pages.page_files().values())
    # A second build does not count the dashboard run among the models.
    info = dd.collect(UI)
    assert tracking.EXPERIMENTS["dashboard"] not in set(info.runs["experiment"])


def test_cli_no_log(tmp_path, capsys):
    from dashboards.__main__ import main

    assert main(["--out", str(tmp_path / "d"), "--ui-url", UI, "--no-log"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "d" / "index.html")
    assert MlflowClient().get_experiment_by_name(tracking.EXPERIMENTS["dashboard"]) is None


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_direct_store_read_equals_search_runs(backend, request, monkeypatch, capsys):
    """projects/core/store_read.py reads the SQL tables MLflow's API reads: the same runs, values
    (NaN metrics included) and order as search_runs, deleted runs left out, and the same
    tidy table; a server is read through its database only when MEDIMG_STORE_DB names it; an
    unreadable store falls back to search_runs with one line."""
    import math

    import mlflow

    if backend == "postgresql":
        request.getfixturevalue("postgres_store")

    from benchmarks import store_scale
    from projects.core import store_read

    uri = mlflow.get_tracking_uri()
    populate_store()
    store_scale.fill(uri, 30)
    mlc = MlflowClient()
    with mlflow.start_run(run_name="nan-run"):
        mlflow.log_metric("test_jaccard", float("nan"))
    gone = mlc.search_runs([e.experiment_id for e in mlc.search_experiments()], max_results=1)[0].info.run_id
    mlc.delete_run(gone)
    experiments = list(dd._experiments(mlc))
    direct = store_read.read_runs(uri, experiments)
    api = dd._search_all(mlc, experiments)
    assert len(direct) == len(api) > 30 and gone not in {r.info.run_id for r in direct}
    assert [r.info.run_id for r in direct] == [r.info.run_id for r in api]
    for d, a in zip(direct, api):
        assert (d.info.run_name, d.info.status, d.info.start_time, d.info.end_time, d.info.experiment_id) == \
               (a.info.run_name, a.info.status, a.info.start_time, a.info.end_time, a.info.experiment_id)
        assert d.data.params == a.data.params and d.data.tags == a.data.tags
        assert d.data.metrics.keys() == a.data.metrics.keys()
        assert all(d.data.metrics[k] == a.data.metrics[k] or (math.isnan(d.data.metrics[k])
                                                              and math.isnan(a.data.metrics[k])) for k in d.data.metrics)
    assert store_read.read_runs("http://127.0.0.1:1", experiments) is None  # a server: its API
    monkeypatch.setenv(store_read.STORE_DB_ENV, uri)  # ... unless its database is named
    assert [r.info.run_id for r in store_read.read_runs("http://127.0.0.1:1", experiments)] == \
           [r.info.run_id for r in api]
    monkeypatch.delenv(store_read.STORE_DB_ENV)
    capsys.readouterr()
    assert store_read.read_runs("sqlite:////nonexistent/dir/x.db", experiments) is None
    assert "reading through search_runs" in capsys.readouterr().err
    fast = dd.load_runs(mlc)
    monkeypatch.setattr(store_read, "read_runs", lambda *a: None)
    slow = dd.load_runs(mlc)
    pd.testing.assert_frame_equal(fast, slow)


def test_runs_on_different_data_sets_are_never_ranked_together(tmp_path):
    """Two MoNuSeg runs (shrunk 4x) that beat every embedded run and cost less: each data set
    gets its own sections and its own Pareto front, and the runs table groups by data set."""
    import mlflow

    from known_store import _tags

    populate_store(search=False, registry=False, mammography=False)
    exp = tracking.ensure_experiment("pathology")
    for name, jac in (("M1", 0.95), ("M2", 0.97)):
        with mlflow.start_run(run_name=name, experiment_id=exp,
                              tags=_tags("pathology", "tumor", "elunet", "test0.2-val0.2", True, 0, "grid_child")):
            mlflow.log_params({"data": "/somewhere/monuseg", "downsample": 4, "filters": 4, "depth": 4, "tile_size": 64})
            mlflow.log_metrics({JACCARD: jac, tracking.M_PARAMS: 1_000, tracking.M_SIZE_MB: 0.01,
                                tracking.M_CPU_TOTAL: 0.1, tracking.M_LATENCY_P50: 1.0})
    table = dd.collect(UI).studies["pathology"]
    assert sorted(table["data_set"].unique()) == ["", "monuseg, shrunk 4x"]
    dash_build.build(tmp_path / "out", ui_url=UI)
    page = (tmp_path / "out" / "pathology.html").read_text()
    assert "Data set: unnamed (4 runs)" in page and "Data set: monuseg, shrunk 4x (2 runs)" in page
    assert page.count("Accuracy against cost (") == 2 and "Accuracy against cost (6 runs)" not in page
    runs = page[page.index("<h2>All runs</h2>"):]
    rows = re.findall(r"<tr>(.*?)</tr>", runs, flags=re.S)[1:]
    names = [re.search(r">([A-Z]\d?)</a>", r).group(1) for r in rows]
    assert names == ["D", "B", "C", "A", "M2", "M1"]  # grouped by data set, best first within each
    front = {n for n, r in zip(names, rows) if "✓" in r}
    # M2 dominates A, B and D, but on another test set; M1 (same costs, lower score) is off its front
    assert front == PATHOLOGY_FRONT | {"M2"}
