"""Every entry point the README shows, run as the README runs it: `mlflow run . -e <entry>
--env-manager local`, smoke-sized, one after the other into one store; then the MLflow UI
itself on that store, in headless Chromium (the last test here).

Each run must exit 0 and leave no run RUNNING. The parameters below only shrink the work
(sizes, epochs, trials); an entry point the README gains without a line here fails the
first test, so the README cannot advertise a command no test runs.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import running_runs

REPO = Path(__file__).resolve().parents[2]
MLFLOW = str(Path(sys.executable).parent / "mlflow")

TINY_PATHOLOGY = ["-P", "tile_size=64", "-P", "epochs=1", "-P", "patience=0"]
# In the order a new user would run them; (entry, smoke parameters). `dashboard` and
# `promote` run with their defaults, as the README writes them.
SMOKE: list[tuple[str, list[str]]] = [
    ("data", []),
    ("mammography", ["-P", "arch=resnet10t", "-P", "epochs=1", "-P", "image_size=32", "-P", "batch_size=16"]),
    ("mammography_grid", ["-P", "archs=resnet10t", "-P", "splits=80:20", "-P", "epochs=1", "-P", "image_size=32",
                          "-P", "batch_size=16"]),
    ("pathology", ["-P", "arch=elunet", "-P", "filters=2", "-P", "depth=2", "-P", "cpu_predict_n=4", *TINY_PATHOLOGY]),
    ("pathology_grid", ["-P", "archs=unet", "-P", "filters_list=2", "-P", "depths=2", *TINY_PATHOLOGY]),
    ("search", ["-P", "study=pathology", "-P", "n_trials=2", "-P", "epochs=1",
                "-P", "base=tile_size=64,embedded_images=8,embedded_size=128,cpu_predict_n=4",
                "-P", "space=arch=unet|elunet,depth=2,filters=2"]),
    ("main", ["-P", "profile=smoke"]),
    ("promote", []),
    ("dashboard", []),
    ("benchmark", ["-P", "quick=true", "-P", "sections=flops"]),
]


def readme_entry_points() -> set[str]:
    text = (REPO / "README.md").read_text()
    entries = set(re.findall(r"mlflow run \. -e (\w+)", text))
    if re.search(r"mlflow run \. --env-manager local", text):
        entries.add("main")  # `mlflow run .` without -e is the main entry point
    return entries


def mlflow_run(entry: str, params: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([MLFLOW, "run", str(REPO), "-e", entry, "--env-manager", "local", *params],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def readme_store(tmp_path_factory):
    """One store that every README entry point ran into, in order; per entry its result."""
    store = tmp_path_factory.mktemp("readme-store")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, MLFLOW_REGISTRY_URI=uri, MEDIMG_STORE=str(store),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("MLFLOW_RUN_ID", None)
    results = {entry: mlflow_run(entry, params, env) for entry, params in SMOKE}
    return uri, results


def test_every_readme_entry_point_has_a_smoke_run():
    assert readme_entry_points() == {entry for entry, _ in SMOKE}


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("entry", [entry for entry, _ in SMOKE])
def test_readme_entry_point_runs_through_mlflow_run(readme_store, entry, monkeypatch):
    uri, results = readme_store
    done = results[entry]
    assert done.returncode == 0, f"mlflow run -e {entry} exited {done.returncode}:\n{done.stderr[-4000:]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    assert running_runs() == []
    if entry == "main":
        check_main_job(done)
    if entry == "dashboard":  # its default out folder, resolved against the checkout
        assert (REPO / "dashboards" / "out" / "index.html").is_file()
        client = MlflowClient()
        launched = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
                    if r.data.tags.get("mlflow.project.entryPoint") == "dashboard"]
        assert launched and all(r.data.params.get("out") == "dashboards/out" for r in launched)


# --- the MLflow UI on that store, in a browser ------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_ui(readme_store, tmp_path_factory):
    """`mlflow ui` (what `make ui` runs) on the README store; its address."""
    import time
    import urllib.request

    uri, _ = readme_store
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-ui") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([MLFLOW, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "1"], stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "mlflow ui did not answer within 180 s"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):
                    break
            except OSError:
                time.sleep(1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def printed_links(summary: str, base: str) -> dict[str, str]:
    """The main job's `  <what>: <url>` lines, pointed at this test's UI instead of :5000."""
    links = {}
    for line in summary.splitlines():
        match = re.match(r"^  ([\w -]+): (http://127\.0\.0\.1:5000(/#/\S+))$", line)
        if match:
            links[match.group(1)] = base + match.group(3)
    return links


@pytest.fixture(scope="module")
def browser():
    from browser import chromium

    with chromium() as b:
        yield b


def _page(browser, url: str, wait_text: str):
    page = browser.new_page(viewport={"width": 1800, "height": 1100})
    page.goto(url, wait_until="load", timeout=90_000)
    page.get_by_text(wait_text, exact=True).first.wait_for(timeout=90_000)
    return page


@pytest.mark.browser
@pytest.mark.timeout(3600)
def test_mlflow_ui_shows_what_the_platform_logged(readme_store, mlflow_ui, browser, tmp_path, monkeypatch):
    import mlflow
    from browser import screenshot_dir

    from projects.core import tracking

    uri, results = readme_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    shots = screenshot_dir(tmp_path, "mlflow-ui")
    links = printed_links(results["main"].stdout, mlflow_ui)
    assert {"pathology grid", "pathology runs", "mammography grid", "mammography runs",
            "model pathology-tumor"} <= set(links), results["main"].stdout[-3000:]
    grid_id = re.search(r"/runs/(\w+)\?", links["pathology grid"]).group(1)
    grid = client.get_run(grid_id)
    (child,) = client.search_runs([grid.info.experiment_id], f"tags.mlflow.parentRunId = '{grid_id}'")
    jaccard = child.data.metrics["test_jaccard"]

    # 1. The printed experiment link opens the model-training runs table (not the GenAI
    # overview); expanded, the grid parent lists its child, and the metric columns show the
    # child's held-out Jaccard and the parent's summary of it.
    page = _page(browser, links["pathology runs"], grid.info.run_name)
    assert page.get_by_role("columnheader", name="Run Name").count() > 0
    page.locator("[role=row]", has_text=grid.info.run_name).first.locator("button").first.click()
    page.get_by_text(child.info.run_name, exact=True).first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Columns").click()
    page.get_by_text("test_jaccard", exact=True).first.click()
    page.get_by_text("best_test_jaccard", exact=True).first.click()
    page.keyboard.press("Escape")
    page.get_by_role("columnheader", name="best_test_jaccard").first.wait_for(timeout=30_000)
    rows = page.locator("[role=row]").all_inner_texts()
    page.screenshot(path=str(shots / "1-runs-table.png"))
    assert any(str(jaccard)[:6] in row for row in rows), rows  # the child's value, in its row
    assert sum(str(jaccard)[:6] in row for row in rows) >= 2, rows  # ... and the parent's best_test_jaccard
    page.close()

    # 2. The grid parent's page: its description and summary metrics; the chart view has them.
    page = _page(browser, links["pathology grid"], grid.info.run_name)
    body = page.inner_text("main")
    assert "grid of 1 runs" in body and "Best test Jaccard" in body
    assert re.search(r"Metrics \((\d+)\)", body) and "best_test_jaccard" in body
    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_text("best_test_jaccard", exact=True).first.wait_for(timeout=30_000)
    assert "Model metrics\n(0)" not in page.inner_text("main")
    page.screenshot(path=str(shots / "2-grid-parent-charts.png"))
    # ... and its tables among the artifacts (MLflow tables: paper-vs-ours, the runs)
    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("grid", exact=True).first.click()
    page.get_by_text("paper_vs_ours.json", exact=True).first.wait_for(timeout=30_000)
    assert "grid_runs.json" in page.inner_text("main")
    page.screenshot(path=str(shots / "3-grid-parent-artifacts.png"))
    page.close()

    # 3. A segmentation run: its per-epoch overlays (an image grid with a step slider over the
    # epochs), the images among its artifacts, and system metrics.
    url = tracking.ui_run_url(child.info.experiment_id, child.info.run_id, mlflow_ui)
    page = _page(browser, url, child.info.run_name)
    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_role("button", name="Add chart").first.click()
    page.get_by_test_id("experiment-view-compare-runs-chart-type-image").click()
    page.get_by_role("combobox").last.click()
    page.get_by_role("option", name="val_overlays").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Add new chart").click()  # closes the key list, keeps the dialog
    assert dialog.get_by_role("slider").count() >= 1
    last_epoch = max(m.step for m in client.get_metric_history(child.info.run_id, "val_jaccard"))
    slider = dialog.get_by_role("slider").first
    assert (slider.get_attribute("aria-valuemin"), slider.get_attribute("aria-valuemax")) == ("1", str(last_epoch))
    shown = []
    slider.focus()
    for _ in range(last_epoch):  # epoch by epoch along the slider: each has its overlay
        page.keyboard.press("ArrowRight")
        step = int(slider.get_attribute("aria-valuenow"))
        dialog.locator("img").first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / f"4-overlays-epoch-{step}.png"))
        shown.append(step)
    assert shown == list(range(1, last_epoch + 1)), shown
    page.close()
    page = _page(browser, url, child.info.run_name)
    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("images", exact=True).first.click()
    page.get_by_text(re.compile(r"^val_overlays\+step\+\d+\+")).first.wait_for(timeout=30_000)
    page.get_by_role("tab", name="System metrics").click()
    page.get_by_text(re.compile(r"cpu_utilization_percentage")).first.wait_for(timeout=30_000)
    assert "System metrics\n(0)" not in page.inner_text("main")
    page.screenshot(path=str(shots / "5-system-metrics.png"))
    page.close()

    # 4. The registered model: who holds which alias, and the history as a table.
    page = _page(browser, links["model pathology-tumor"], "pathology-tumor")
    page.get_by_text("@ champion").first.wait_for(timeout=30_000)
    body = page.inner_text("main")
    assert "champion: latest moves" in body and "registry-audit runs" in body
    page.screenshot(path=str(shots / "6-registered-model.png"))
    page.close()


def check_main_job(done: subprocess.CompletedProcess) -> None:
    """The main job (smoke profile): every stage ran, the summary says what it found and where
    to look (links into the model-training view), every trained model logged its costs."""
    import mlflow

    from projects.core import tracking
    from projects.core.study import get_study

    for stage in ("1/5 mammography grid", "2/5 pathology grid", "3/5 architecture search",
                  "4/5 registry promotion", "5/5 dashboard"):
        assert f"=== {stage} ===" in done.stderr, stage
    summary = done.stdout
    assert "main (smoke) finished in" in summary and "baseline" in summary and "Jaccard" in summary
    assert "search: " in summary and "registry: " in summary and "mlflow ui --backend-store-uri" in summary
    assert "pathology-tumor@champion = v1" in summary  # the smoke cell beats its baselines
    links = [line for line in summary.splitlines() if "http://127.0.0.1:5000/#/" in line]
    assert len(links) >= 5 and all("workflowType=machine_learning" in line for line in links if "/experiments/" in line)
    dashboard = Path(re.search(r"^dashboard: (.+)$", summary, re.M).group(1))
    assert dashboard.name == "index.html" and {"mammography.html", "pathology.html"} <= {p.name for p in dashboard.parent.iterdir()}
    client = MlflowClient()
    # under `mlflow run` the main run is the launcher's run (experiment Default), adopted
    (main_run,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                     filter_string=f"tags.{tracking.TAG_RUN_KIND} = 'main'")
    assert main_run.info.status == "FINISHED" and main_run.data.metrics["total_s"] > 0
    assert "mammography_s" in main_run.data.metrics and "](http://127.0.0.1:5000/#/" in main_run.data.tags[
        "mlflow.note.content"]
    dash_runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                   filter_string=f"tags.{tracking.TAG_RUN_KIND} = 'dashboard'")
    assert any("dashboard/index.html" in {a.path for a in client.list_artifacts(r.info.run_id, "dashboard")}
               for r in dash_runs)
    patho = client.search_runs([client.get_experiment_by_name(get_study("pathology").experiment).experiment_id],
                               "attributes.status = 'FINISHED' and metrics.test_jaccard >= 0")
    assert patho and all("cpu_total_s_onnx" in r.data.metrics or r.data.params.get("onnx_timing") == "false"
                         for r in patho)
