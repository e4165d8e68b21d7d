"""Dashboard data layer and page build, on a store of known runs made with plain MLflow calls.

`populate_store()` is also used by the browser test (tests/test_dashboard_browser.py).
"""
from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from dashboards import build as dash_build
from dashboards import data as dd
from dashboards import pages
from projects.core import tracking
from projects.core.study import get_study, study_names

UI = "http://mlflow.example:5000"
JACCARD, ACC, F1 = tracking.test_metric("jaccard"), tracking.test_metric("accuracy"), tracking.test_metric("f1_macro")


@pytest.fixture(autouse=True)
def _registry_follows_store(monkeypatch):
    # mlflow.set_registry_uri() exports MLFLOW_REGISTRY_URI, and tracking.setup_tracking()
    # prefers that variable: without this, every test after the first would share the
    # first test's registry.
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


# --- a store with known runs ------------------------------------------------------------------
def png_bytes(width: int = 48, height: int = 32, seed: int = 0) -> bytes:
    """A small valid RGB PNG (a gradient), without any imaging library."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3)
    rows = []
    for y in range(height):
        line = bytearray([0])
        for x in range(width):
            line += bytes(((int(base[0]) + 4 * x) % 256, (int(base[1]) + 6 * y) % 256, int(base[2])))
        rows.append(bytes(line))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


# Pathology grid children: (name, arch, filters, depth, params, jaccard, size_mb, cpu_s).
# On (params, jaccard) the front is A, B, D: C costs more than B and scores less.
PATHOLOGY = [
    ("A", "elunet", 4, 4, 50_000, 0.80, 0.2, 1.0),
    ("B", "elunet", 8, 4, 200_000, 0.85, 0.8, 1.5),
    ("C", "elunet", 8, 5, 640_000, 0.84, 2.6, 2.5),
    ("D", "unet", 8, 4, 480_000, 0.90, 1.9, 1.2),
]
PATHOLOGY_FRONT = {"A", "B", "D"}
# Mammography grid children: (name, arch, task, split, augment, seed, accuracy, f1, params, image_size).
MAMMOGRAPHY = [
    ("m1", "resnet18", "7class", "80:20", False, 0, 0.70, 0.30, 11_000_000, 64),
    ("m2", "resnet18", "7class", "80:20", False, 1, 0.74, 0.36, 11_000_000, 64),
    ("m3", "resnet18", "7class", "80:20", True, 0, 0.78, 0.45, 11_000_000, 64),
    ("m4", "resnet18", "7class", "90:10", False, 0, 0.68, 0.20, 11_000_000, 64),
    ("m5", "resnet50", "7class", "80:20", False, 0, 0.72, 0.25, 23_000_000, 128),
    ("m6", "resnet18", "benign_malignant", "75:25", False, 0, 0.60, 0.55, 11_000_000, 64),
]


def _tags(study, task, arch, split, augment, seed, run_kind, **extra):
    return {tracking.TAG_STUDY: study, tracking.TAG_TASK: task, tracking.TAG_ARCH: arch, tracking.TAG_SPLIT: split,
            tracking.TAG_AUGMENT: str(augment).lower(), tracking.TAG_SEED: str(seed),
            tracking.TAG_RUN_KIND: run_kind, tracking.TAG_DATASET_DIGEST: "d1"} | {k: str(v) for k, v in extra.items()}


def populate_store(search: bool = True, registry: bool = True, mammography: bool = True) -> dict[str, str]:
    """Grid parents + children for both studies, a search with trials, registry aliases.

    Returns run name -> run id.
    """
    tracking.setup_tracking()
    ids: dict[str, str] = {}
    exp = tracking.ensure_experiment(get_study("pathology").experiment)
    with mlflow.start_run(experiment_id=exp, run_name="patho-grid",
                          tags={tracking.TAG_STUDY: "pathology", tracking.TAG_TASK: "tumor",
                                tracking.TAG_RUN_KIND: "grid_parent"}) as parent:
        ids["patho-grid"] = parent.info.run_id
        for name, arch, n, d, params, jac, size, cpu in PATHOLOGY:
            with mlflow.start_run(run_name=name, nested=True, experiment_id=exp,
                                  tags=_tags("pathology", "tumor", arch, "test0.2-val0.2", True, 0, "grid_child",
                                             depth=d, filters=n)) as run:
                ids[name] = run.info.run_id
                mlflow.log_params({"filters": n, "depth": d, "tile_size": 128})
                mlflow.log_metrics({JACCARD: jac, tracking.test_metric("dice"): jac + 0.03,
                                    tracking.baseline_metric("jaccard_all_background"): 0.30,
                                    tracking.baseline_metric("jaccard_all_tumor"): 0.55,
                                    tracking.M_PARAMS: params, tracking.M_PARAMS_KERAS: params + 100,
                                    tracking.M_SIZE_MB: size, tracking.M_CPU_TOTAL: cpu,
                                    tracking.M_LATENCY_P50: cpu * 10})
                _log_bytes(png_bytes(96, 64, seed=d), "test_overlays.png")
        pd_table = pd.DataFrame([{"arch": "elunet", "filters": 4, "depth": 4, "paper_jaccard": 0.867,
                                  "ours_jaccard": 0.80}])
        mlflow.log_text(pd_table.to_csv(index=False), "grid/paper_vs_ours.csv")
    if mammography:
        exp = tracking.ensure_experiment(get_study("mammography").experiment)
        with mlflow.start_run(experiment_id=exp, run_name="mammo-grid",
                              tags={tracking.TAG_STUDY: "mammography", tracking.TAG_TASK: "7class",
                                    tracking.TAG_RUN_KIND: "grid_parent"}) as parent:
            ids["mammo-grid"] = parent.info.run_id
            for name, arch, task, split, aug, seed, acc, f1, params, size in MAMMOGRAPHY:
                with mlflow.start_run(run_name=name, nested=True, experiment_id=exp,
                                      tags=_tags("mammography", task, arch, split, aug, seed, "grid_child")) as run:
                    ids[name] = run.info.run_id
                    mlflow.log_params({"image_size": size, "split": split, "epochs": 2})
                    mlflow.log_metrics({ACC: acc, F1: f1, tracking.test_metric("precision_macro"): f1,
                                        tracking.test_metric("recall_macro"): f1,
                                        tracking.baseline_metric("majority_accuracy"): 0.646,
                                        tracking.baseline_metric("majority_f1_macro"): 0.11,
                                        tracking.M_PARAMS: params, tracking.M_SIZE_MB: params * 4e-6,
                                        tracking.M_CPU_TOTAL: params * 1e-7})
                    _log_bytes(png_bytes(40, 40, seed=seed + 7), "confusion_matrix.png")
                    mlflow.log_text("c,pred_A,pred_B\ntrue_A,3,1\ntrue_B,0,4\n", "confusion_matrix.csv")
            mlflow.log_text("task,split,paper_accuracy,ours_accuracy\n7class,80:20,0.68,0.72\n",
                            "grid/paper_vs_ours.csv")
    if search:
        exp = tracking.ensure_experiment(tracking.EXPERIMENTS["search"])
        with mlflow.start_run(experiment_id=exp, run_name="search-1",
                              tags={tracking.TAG_STUDY: "pathology", tracking.TAG_RUN_KIND: "search_parent"}) as parent:
            ids["search-1"] = parent.info.run_id
            mlflow.log_params({"search.objectives": "val_jaccard,model_size_mb", "search.n_trials": 4})
            for number, (arch, n, d, jac, size, state) in enumerate([
                    ("elunet", 4, 3, 0.79, 0.1, "COMPLETE"), ("elunet", 8, 3, 0.86, 0.5, "COMPLETE"),
                    ("unet", 4, 4, None, None, "PRUNED"), ("elunet", 6, 4, 0.83, 0.4, "COMPLETE")]):
                with mlflow.start_run(run_name=f"trial-{number}", nested=True, experiment_id=exp,
                                      tags=_tags("pathology", "tumor", arch, "test0.2-val0.2", True, 0, "trial",
                                                 depth=d, filters=n, trial_number=number, trial_state=state)) as run:
                    ids[f"trial-{number}"] = run.info.run_id
                    mlflow.log_metric(tracking.val_metric("jaccard"), 0.5 + 0.05 * number)
                    if jac is None:
                        pruned = run.info.run_id
                    else:
                        mlflow.log_metrics({JACCARD: jac, tracking.M_SIZE_MB: size, tracking.M_PARAMS: size * 250_000,
                                            tracking.M_CPU_TOTAL: 1.0 + d / 10})
            MlflowClient().set_terminated(pruned, "KILLED")  # as the driver ends a pruned trial
    if registry:
        client = MlflowClient()
        for model, run_name, aliases in (("pathology-tumor", "D", ("champion",)),
                                         ("pathology-tumor", "A", ("efficient", "fastest")),
                                         ("mammography-7class", "m3", ("champion",))):
            if not client.search_registered_models(f"name = '{model}'"):
                client.create_registered_model(model)
            run_id = ids.get(run_name)
            if run_id is None:
                continue
            mv = client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id)
            for alias in aliases:
                client.set_registered_model_alias(model, alias, mv.version)
                client.set_model_version_tag(model, mv.version, f"promotion.{alias}.gate_beats_baseline", "passed")
                client.set_model_version_tag(model, mv.version, f"promotion.{alias}.gate_size", "passed")
            client.set_model_version_tag(model, mv.version, "source_study", model.split("-")[0])
    return ids


def _log_bytes(data: bytes, name: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        mlflow.log_artifact(str(path))


# --- data layer ---------------------------------------------------------------------------------
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
    assert dd.run_url("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc"
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
        assert row["url"] == f"{UI}/#/experiments/{row['experiment_id']}/runs/{ids[name]}"
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
