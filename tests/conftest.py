"""Shared fixtures: every test gets its own MLflow store and cache, never the user's."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import projects  # noqa: E402,F401  (runtime defaults + torchvision shim before torch work)
import torch  # noqa: E402

# The suite trains models in this process: every test gets the machine's cores. A test module
# that called torch.set_num_threads(1) at import (collection imports them all) once ran the
# whole suite's in-process training on one of two cores.
TORCH_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _torch_threads_unchanged(request):
    if torch.get_num_threads() != TORCH_THREADS:
        pytest.fail(f"torch threads {torch.get_num_threads()} != {TORCH_THREADS} before "
                    f"{request.node.nodeid}: something changed them for the whole process "
                    f"(a module-level torch.set_num_threads?)", pytrace=False)
    yield
    changed = torch.get_num_threads()
    if changed != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)
        pytest.fail(f"{request.node.nodeid} left torch at {changed} threads (restore {TORCH_THREADS})",
                    pytrace=False)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """After each test, collect its garbage, then freeze what survived (gc.freeze).

    A full collection walks every tracked object in the process, and this process holds what
    all earlier tests left (MLflow's per-URI stores, caches, imported modules: ~4 million
    objects by the search tests). Each search trial ends in a full collection (Optuna's
    `gc_after_trial`, which a real search process, holding ~0.7 million, pays in ~0.4 s), so
    in-suite search tests took 2-2.5x their stand-alone time; with the freeze they take about
    their stand-alone time (a duplicate-queue test 41 s before, 16 s after, 17 s alone). Frozen objects are still freed by reference counting; only cycles among them
    would never be collected, and each test's own cycles are collected here first.
    """
    import gc

    gc.collect()
    gc.freeze()


SHARED_DATA = Path(os.environ.get("MEDIMG_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    store = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MEDIMG_STORE", str(store))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # The registry is the test's store too, by environment: mlflow.set_registry_uri exports
    # MLFLOW_REGISTRY_URI for the whole process (and subprocesses), so it is set here, per
    # test, and restored after it.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    # The generated data sets are deterministic and slow-ish: share one cache per session.
    monkeypatch.setenv("MEDIMG_CACHE", str(_session_cache(tmp_path_factory)))
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
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


def wait_for_exit(pid: int, timeout: float = 30.0) -> None:
    """Return once `pid` is gone or a zombie. A SIGKILLed server can take a moment to die (its
    threads take the signal, or it waits on disk); a crash is over only when the process is."""
    import time

    state = "?"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive {timeout:.0f} s after SIGKILL (state {state})")


def running_runs() -> list:
    """Every run still RUNNING in the test's store (none may be left behind)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, "attributes.status = 'RUNNING'") if exps else []


def pytest_collection_modifyitems(config, items):
    """Tiers by folder: tests/unit (no MLflow, no training; seconds), tests/integration (real
    stores and tiny models), tests/e2e (real training, CLIs, the browser): every e2e test
    counts as slow, so `-m "not slow"` is unit + integration wherever it is run."""
    for item in items:
        if "e2e" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def policies_within_split(tmp_path_factory, monkeypatch):
    """The repository's policies, comparing candidates within one split (evaluation mode
    compare_within) instead of on the study's holdout: for tests of the alias rules, gates,
    rollback and races on candidates whose own test numbers are set by the test. Subprocesses
    see the same folder (MEDIMG_POLICY_DIR)."""
    import yaml

    from registry import policy

    folder = tmp_path_factory.mktemp("policies")
    for path in sorted(policy.POLICY_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        data["evaluation"] = {"mode": "compare_within", "compare_within": ["split"]}
        (folder / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv(policy.POLICY_DIR_ENV, str(folder))
    return folder


def _postgres_admin():
    psycopg = pytest.importorskip("psycopg")
    for user in ("postgres", "root"):
        try:
            return psycopg.connect(host="127.0.0.1", port=5432, dbname="test", user=user, connect_timeout=3,
                                   autocommit=True), user
        except psycopg.Error:
            continue
    pytest.skip("PostgreSQL on 127.0.0.1:5432 (database test) is not reachable")


@pytest.fixture
def postgres_store(monkeypatch):
    """A fresh PostgreSQL database (created and dropped here) as the tracking store and the
    registry; artifacts stay in the test's folder. MLflow enforces its column limits there
    (tag values: VARCHAR(5000)), SQLite does not."""
    import uuid

    import mlflow

    conn, user = _postgres_admin()
    name = f"medimg_t{uuid.uuid4().hex[:10]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    uri = f"postgresql://{user}@127.0.0.1:5432/{name}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield uri
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


@pytest.fixture
def toy_gate(monkeypatch):
    """A gate the registry has never seen, defined only in tests/toy_gate.py and added the way
    a plug-in user adds one (MEDIMG_GATES; subprocesses inherit it); removed afterwards."""
    import importlib

    from registry import gates as G

    monkeypatch.setenv(G.GATES_ENV, "toy_gate")
    module = importlib.import_module("toy_gate")
    G.register_gate(module.SizeCapGate)  # again, if an earlier test removed it
    yield module
    G.unregister_gate(module.SizeCapGate.name)
