"""Every entry point the README shows, run as the README runs it: `mlflow run . -e <entry>
--env-manager local`, smoke-sized, one after the other into one store; then the MLflow UI
itself on that store, in headless Chromium (tests/e2e/test_mlflow_ui_browser.py).

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
        assert "workflowType=machine_learning" in done.stdout  # the summary's links open the runs table
        assert "main (smoke) finished in" in done.stdout
    if entry == "dashboard":  # its default out folder, resolved against the checkout
        assert (REPO / "dashboards" / "out" / "index.html").is_file()
        client = MlflowClient()
        launched = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
                    if r.data.tags.get("mlflow.project.entryPoint") == "dashboard"]
        assert launched and all(r.data.params.get("out") == "dashboards/out" for r in launched)
