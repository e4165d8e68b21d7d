"""Shared fixtures: every test gets its own MLflow store and cache, never the user's."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import projects  # noqa: E402,F401  (runtime defaults + torchvision shim before torch work)

SHARED_DATA = Path(os.environ.get("MEDIMG_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    store = tmp_path_factory.mktemp("store")
    monkeypatch.setenv("MEDIMG_STORE", str(store))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    # The generated data sets are deterministic and slow-ish: share one cache per session.
    monkeypatch.setenv("MEDIMG_CACHE", str(_session_cache(tmp_path_factory)))
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    # The registry URI is process-wide state too: a test that set it must not leak its store.
    mlflow.set_registry_uri(f"sqlite:///{store / 'mlflow.db'}")
    yield store
    while mlflow.active_run() is not None:
        mlflow.end_run()


_CACHE: list[Path] = []


def _session_cache(factory) -> Path:
    if not _CACHE:
        _CACHE.append(Path(os.environ.get("MEDIMG_TEST_CACHE") or factory.mktemp("cache")))
    return _CACHE[0]


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not present at {SHARED_DATA}")
    return SHARED_DATA


def running_runs() -> list:
    """Every run still RUNNING in the test's store (none may be left behind)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, "attributes.status = 'RUNNING'") if exps else []
