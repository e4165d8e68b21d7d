"""Every command the docs show, run as written: the `mlflow run`, `python -m` and `make` lines
of the code blocks of README.md and docs/*.md, one after the other into one store (plus each
entry point the README names only in the text, e.g. the main job's `mlflow run .`); then the
MLflow UI itself on that store, in headless Chromium (the last test here).

Each command must exit 0 and leave no run RUNNING. A command runs literally except for the
size overrides of SIZE (fewer epochs, smaller images and models, fewer trials and grid cells),
which replace the command's own value of that parameter or are appended; a command that is
the same run as one before (the same entry point and non-default parameters) runs once.
Commands that need what a test machine lacks are in NOT_RUN with the reason.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import _session_cache, running_runs

REPO = Path(__file__).resolve().parents[2]
MLFLOW = str(Path(sys.executable).parent / "mlflow")
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(mlflow run|python -m|make)\b")

NOT_RUN: list[tuple[str, str]] = [
    (r"\.\./shared/data|data=data/|data/paip2023|--data-root data", "needs a real data set the repository does "
                                                                     "not ship"),
    (r"path/to/", "a placeholder for the user's own images (tests/e2e/test_use_the_champion.py runs -e predict "
                  "on a folder of images)"),
    (r"--backend kubernetes", "needs a Kubernetes cluster (docs/team.md)"),
    (r"postgresql://|--tracking-uri http", "needs a shared database or tracking server (docs/team.md)"),
    (r"tools\.team_users|# as alice", "needs the authenticated team server the same code block starts "
                                     "(tests/integration/test_team_auth.py runs these against one)"),
    (r"^make (demo|test|test-fast|install|lock)\b", "installs the environment or runs the test suite itself"),
    (r"^make (ui|optuna-dashboard)\b", "a server that runs until stopped (the UI is tested below on this store)"),
]
TINY_PATHOLOGY = {"tile_size": "64", "epochs": "1", "patience": "0", "filters": "2", "depth": "2",
                  "cpu_predict_n": "4"}
TINY_SEARCH = {"n_trials": "2", "epochs": "1",
               "base": "tile_size=64,embedded_images=8,embedded_size=128,cpu_predict_n=4",
               "space": "arch=unet|elunet,depth=2,filters=2"}
# Size overrides by MLflow entry point (-P name=value) and by `python -m` module (flags).
SIZE: dict[str, dict[str, str]] = {
    "main": {"profile": "smoke"},
    "mammography": {"epochs": "1", "image_size": "32", "batch_size": "16"},
    "mammography_grid": {"archs": "resnet10t", "splits": "80:20", "benign_malignant": "false", "repeats": "1",
                         "epochs": "1", "image_size": "32", "batch_size": "16"},
    "pathology": TINY_PATHOLOGY,
    "pathology_grid": {"archs": "unet", "filters_list": "2", "depths": "2", "tile_size": "64", "epochs": "1",
                       "patience": "0"},
    "search": TINY_SEARCH,
    "projects.search": TINY_SEARCH,
    "pipeline": {"profile": "smoke"},
}


def _entry_points() -> dict:
    return yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]


def documented_commands() -> list[str]:
    """The command lines of every code block of the docs, continuations joined, in order."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"^```[^\n]*\n(.*?)^```", doc.read_text(), re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"^\$\s+", "", line.strip())
                if COMMAND.match(line) and line not in found:
                    found.append(line)
    return found


def readme_entry_points() -> set[str]:
    """Entry points the README names anywhere, code blocks or text."""
    text = (REPO / "README.md").read_text()
    entries = set(re.findall(r"mlflow run \. -e (\w+)", text))
    if re.search(r"mlflow run \. --env-manager local", text):
        entries.add("main")  # `mlflow run .` without -e is the main entry point
    return entries


def not_run_reason(command: str) -> str | None:
    return next((why for pattern, why in NOT_RUN if re.search(pattern, command)), None)


def _mlflow_entry(argv: list[str]) -> str:
    return argv[argv.index("-e") + 1] if "-e" in argv else "main"


def sized(command: str) -> list[str]:
    """The command's argv with the size overrides applied (MLflow refuses a repeated -P, so an
    override replaces the command's own value)."""
    argv = shlex.split(command, comments=True)
    if argv[:2] == ["mlflow", "run"]:
        size = SIZE.get(_mlflow_entry(argv), {})
        out, i = [], 0
        while i < len(argv):
            if argv[i] == "-P" and argv[i + 1].split("=", 1)[0] in size:
                i += 2
                continue
            out.append(argv[i])
            i += 1
        return out + [a for k, v in size.items() for a in ("-P", f"{k}={v}")]
    if argv[:2] == ["python", "-m"] and "--help" not in argv and "--show-space" not in argv:
        flags = {f"--{k.replace('_', '-')}": v for k, v in SIZE.get(argv[2], {}).items()}
        kept = [a for i, a in enumerate(argv) if a not in flags and (i == 0 or argv[i - 1] not in flags)]
        return kept + [a for f, v in flags.items() for a in (f, v)]
    return argv


def same_run_key(argv: list[str]) -> tuple:
    """Two `mlflow run` commands with the same entry point and non-default parameters are one run."""
    if argv[:2] != ["mlflow", "run"]:
        return tuple(argv)
    entry = _mlflow_entry(argv)
    defaults = {k: str(v.get("default", "")) for k, v in _entry_points()[entry]["parameters"].items()}
    params = {k: argv[i + 1].split("=", 1)[1] for i, a in enumerate(argv) if a == "-P"
              for k in [argv[i + 1].split("=", 1)[0]]}
    return ("mlflow run", entry, frozenset((k, v) for k, v in params.items() if defaults.get(k) != v))


def plan() -> list[tuple[str, list[str]]]:
    """(what the docs show, what runs): first each README entry point no code block runs, as
    `mlflow run . [-e <entry>] --env-manager local` (the main job first, into the empty store,
    as a new user runs it), then every runnable documented command in the docs' order."""
    documented, seen = [], set()
    for command in documented_commands():
        if not_run_reason(command) is None:
            argv = sized(command)
            if same_run_key(argv) not in seen:
                seen.add(same_run_key(argv))
                documented.append((command, argv))
    ran = {_mlflow_entry(argv) for _, argv in documented if argv[:2] == ["mlflow", "run"]}
    first = []
    for entry in sorted(readme_entry_points() - ran, key=lambda e: (e != "main", e)):
        command = f"mlflow run . -e {entry} --env-manager local"
        command = command.replace(" -e main", "") if entry == "main" else command
        first.append((command, sized(command)))
    return first + documented


@pytest.fixture(scope="module")
def readme_store(tmp_path_factory):
    """One store that every documented command ran into, in order; per command its result,
    and per entry point the result of its (last) `mlflow run`."""
    store = tmp_path_factory.mktemp("readme-store")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, MLFLOW_REGISTRY_URI=uri, MEDIMG_STORE=str(store),
               MEDIMG_CACHE=str(_session_cache(tmp_path_factory)), OMP_WAIT_POLICY="PASSIVE",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("MLFLOW_RUN_ID", None)
    results, by_entry = {}, {}
    for command, argv in plan():
        t0 = time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
        print(f"[{time.perf_counter() - t0:.0f} s] {shlex.join(argv)}", file=sys.stderr)
        results[command] = done
        if argv[:2] == ["mlflow", "run"]:
            by_entry[_mlflow_entry(argv)] = done
    return uri, results, by_entry


def test_every_readme_entry_point_runs_and_every_command_is_run_or_excused():
    planned = plan()
    assert readme_entry_points() <= {_mlflow_entry(a) for _, a in planned if a[:2] == ["mlflow", "run"]}
    points = _entry_points()
    assert set(SIZE) - set(points) <= {"projects.search", "pipeline"}, "SIZE names an unknown entry point"
    for entry in set(SIZE) & set(points):  # MLflow passes an undeclared -P on as an unknown flag
        assert set(SIZE[entry]) <= set(points[entry]["parameters"]), (entry, set(SIZE[entry]) - set(points[entry]["parameters"]))
    for command in documented_commands():  # run, the same run as one planned, or excused
        argv = sized(command)
        assert not_run_reason(command) or same_run_key(argv) in {same_run_key(a) for _, a in planned}, command


def test_the_command_extraction_and_the_size_overrides():
    """On a made-up doc line: continuation joined, comment dropped, an override replaces."""
    argv = sized("mlflow run . -e pathology --env-manager local -P epochs=30 -P arch=unet   # train")
    assert argv.count("-P") == len(TINY_PATHOLOGY) + 1 and "epochs=1" in argv and "epochs=30" not in argv
    assert "arch=unet" in argv and "#" not in argv
    argv = sized("python -m projects.search --study pathology --n-trials 20 --name x")
    assert argv.count("--n-trials") == 1 and argv[argv.index("--n-trials") + 1] == "2" and "x" in argv
    assert not_run_reason("python -m pipeline.real_data --data-root ../shared/data")
    assert same_run_key(sized("mlflow run . -e promote --env-manager local")) == \
        same_run_key(sized("mlflow run . -e promote   --env-manager local -P model=all"))


@pytest.mark.timeout(5400)
@pytest.mark.parametrize("command", [c for c, _ in plan()])
def test_documented_command_runs_as_written(readme_store, command, monkeypatch):
    uri, results, by_entry = readme_store
    done = results[command]
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr[-4000:]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    assert running_runs() == []
    argv = sized(command)
    entry = _mlflow_entry(argv) if argv[:2] == ["mlflow", "run"] else None
    if entry == "main":
        check_main_job(done)
    if entry == "benchmark":
        check_quick_benchmark(done)
    if entry == "dashboard":  # its default out folder, resolved against the checkout
        assert (REPO / "dashboards" / "out" / "index.html").is_file()
        client = MlflowClient()
        launched = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
                    if r.data.tags.get("mlflow.project.entryPoint") == "dashboard"]
        assert launched and all(r.data.params.get("out") == "dashboards/out" for r in launched)


def check_quick_benchmark(done: subprocess.CompletedProcess) -> None:
    """The quick benchmark (every section) logged into the launcher's run, with a child run per
    section; the launcher's `sections` param is the README's (empty: all), the run's own list
    is `sections_run` (MLflow params cannot change: logging `sections` again failed)."""
    import mlflow

    out = done.stdout
    for title in ("Fastest correct runtime vs PyTorch eager", "matrix-multiply rate", "Tracking overhead",
                  "Pathology preprocessing", "Share of training time waiting for data", "x protocol"):
        assert title in out, title
    assert "Search vs grid" in out or "Pruned Optuna search" in out
    (parent,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                   filter_string="tags.`mlflow.project.entryPoint` = 'benchmark'")
    assert parent.info.status == "FINISHED"
    assert {"runtimes", "flops", "search_vs_grid"} <= set(parent.data.params["sections_run"].split(","))
    children = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    sections = {r.data.tags.get("benchmark") for r in children}
    assert {"runtimes", "flops", "tracking_overhead", "data_pipeline", "search_vs_grid"} <= sections, sections
    runtimes = next(r for r in children if r.data.tags.get("benchmark") == "runtimes")
    assert any(k.endswith("speedup_protocol") for k in runtimes.data.metrics)


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

    uri, _, _ = readme_store
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

    uri, _, results = readme_store
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
