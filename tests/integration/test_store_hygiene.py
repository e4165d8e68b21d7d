"""The user's store stays clean and long reads say how far they are: the promotion lock of a
local store gives one promotion of a model at a time across processes and leaves nothing
beside the store (its file lies in the system's temporary folder); the dashboards report
progress while they read a store of more than one page of runs."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest

from registry import store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch):
    db = tmp_path / "mlflow.db"
    monkeypatch.delenv(store.LOCK_ENV, raising=False)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    mlflow.set_registry_uri(f"sqlite:///{db}")
    yield db
    mlflow.set_tracking_uri(previous)
    mlflow.set_registry_uri(previous)


def _contender(db: Path, name: str, out: Path) -> subprocess.Popen:
    """Another process taking `name`'s lock: it writes when it asked and when it got it."""
    code = textwrap.dedent(f"""
        import time, mlflow
        from registry import store
        mlflow.set_registry_uri({f"sqlite:///{db}"!r})
        asked = time.time()
        with store.promotion_lock({name!r}):
            got = time.time()
        open({str(out)!r}, "w").write(f"{{asked}} {{got}}")
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO)


def _times(out: Path, proc: subprocess.Popen) -> tuple[float, float]:
    assert proc.wait(timeout=120) == 0
    asked, got = map(float, out.read_text().split())
    return asked, got


def test_a_second_process_waits_for_the_lock_and_another_model_does_not(sqlite_store, tmp_path):
    waited, free = tmp_path / "waited.txt", tmp_path / "free.txt"
    with store.promotion_lock("model-a"):
        same = _contender(sqlite_store, "model-a", waited)
        other = _contender(sqlite_store, "model-b", free)
        asked_other, got_other = _times(free, other)  # another model's lock is free meanwhile
        deadline = time.time() + 60
        while time.time() < deadline and same.poll() is None and not waited.exists():
            time.sleep(0.2)
            if time.time() - asked_other > 1.5:  # the contender has long asked by now
                break
        assert not waited.exists() and same.poll() is None  # still waiting for this holder
        released = time.time()
    asked, got = _times(waited, same)
    assert got >= released > asked
    assert got_other - asked_other < 5


def test_promotion_leaves_no_file_beside_the_store(sqlite_store):
    sqlite_store.write_bytes(b"")  # the store's folder holds the database only
    before = sorted(p.name for p in sqlite_store.parent.iterdir())
    for name in ("model-a", "model-b"):
        with store.promotion_lock(name):
            pass
    assert sorted(p.name for p in sqlite_store.parent.iterdir()) == before
    lock = store._local_lock_path("model-a")
    assert lock is not None and sqlite_store.parent not in lock.parents
    assert store._local_lock_path("model-a") != store._local_lock_path("model-b")


def test_a_server_store_has_no_file_lock(monkeypatch):
    monkeypatch.setattr(mlflow, "get_registry_uri", lambda: "http://127.0.0.1:5000")
    assert store._local_lock_path("model-a") is None


def test_the_dashboards_say_how_far_they_are_in_a_store_of_several_pages(sqlite_store, monkeypatch, capsys):
    from dashboards import data

    experiment = mlflow.create_experiment("progress")
    client = mlflow.MlflowClient()
    for i in range(5):
        client.create_run(experiment, run_name=f"r{i}")
    monkeypatch.setattr(data, "PAGE_SIZE", 2)  # five runs: three pages
    capsys.readouterr()
    runs = data._search_all(client, [experiment])
    assert len({r.info.run_id for r in runs}) == 5
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[dashboards]")]
    assert [line.split(" (")[0] for line in lines[:2]] == [
        "[dashboards] reading the store: 2 runs so far", "[dashboards] reading the store: 4 runs so far"]
    assert lines[2].startswith("[dashboards] read 5 runs in ") and len(lines) == 3

    monkeypatch.setattr(data, "PAGE_SIZE", 1000)  # one page: nothing to report
    assert len(data._search_all(client, [experiment])) == 5
    assert "[dashboards]" not in capsys.readouterr().err
