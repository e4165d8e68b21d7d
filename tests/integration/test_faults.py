"""Faults (issue 10): what the platform does when a process, the server or the disk fails.

(a) a training run SIGKILLed mid-epoch stays RUNNING until the next invocation on the host,
    which closes it FAILED (tag closed_as_stale) and changes nothing in the registry;
(b) the tracking server killed and restarted while a run logs: the client retries with
    backoff (MLFLOW_HTTP_REQUEST_MAX_RETRIES / MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR) and the run
    completes with every metric step exactly once;
(c) an unwritable artifact location, or a full disk: one `error:` line naming the file and
    the cause, exit code 1, the run FAILED with the error as its tag;
(d) a promotion interrupted before any of its registry writes leaves every alias on a version
    that passed its gates, and the next promotion finishes the job consistently.
"""
from __future__ import annotations

from functools import partial
import errno
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from projects.core import artifacts, http_retry, tracking
from projects.core.entry import main_for
from projects.core.study import get_study, study_names

from conftest import running_runs, wait_for_exit
from test_bad_inputs import mias_set, store_from_template  # noqa: F401 (autouse fixture)

mammography_main = partial(main_for, get_study("mammography"))  # `python -m projects.mammography ...`

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "team_server.sh"
FAST = ["--arch", "resnet18", "--image-size", "32", "--batch-size", "8", "--log-model", "false",
        "--cpu-predict-n", "2"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        env.pop(key, None)
    if "MLFLOW_TRACKING_URI" in extra:  # another store: the registry follows it
        env.pop("MLFLOW_REGISTRY_URI", None)
    env.update(OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO), **extra)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "projects.mammography", *args]


def _wait_for_steps(client: MlflowClient, experiment: str, steps: int, proc: subprocess.Popen,
                    timeout: float = 300) -> str:
    """The RUNNING run's id once it has logged `steps` epochs of train_loss."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            for run in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'"):
                if len(client.get_metric_history(run.info.run_id, tracking.M_TRAIN_LOSS)) >= steps:
                    return run.info.run_id
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no run logged {steps} epochs within {timeout} s")


def registry_snapshot(client: MlflowClient) -> dict:
    out = {}
    for model in client.search_registered_models():
        versions = {mv.version: (mv.run_id, mv.status, mv.source, dict(mv.tags), mv.current_stage)
                    for mv in client.search_model_versions(f"name = '{model.name}'")}
        out[model.name] = (dict(model.tags), dict(model.aliases), versions)
    return out


def _register_something(client: MlflowClient) -> None:
    """A registered model with a version and an alias (what a kill must not touch)."""
    tracking.setup_tracking()
    exp = tracking.ensure_experiment("registry-fixture")
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_text("flavors: {}\n", "model/MLmodel")
    name = get_study("mammography").model_name("7class")
    client.create_registered_model(name, tags={"policy": "fixture"})
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", mv.version)


# --- (a) SIGKILL mid-epoch -------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_mid_epoch_then_the_next_invocation_closes_the_stale_run(tmp_path, capsys):
    data = mias_set(tmp_path / "mias")
    client = MlflowClient()
    _register_something(client)
    before = registry_snapshot(client)

    proc = subprocess.Popen(_cli("--data", str(data), *FAST, "--epochs", "500"), cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stale = _wait_for_steps(client, "mammography", 2, proc)
    proc.send_signal(signal.SIGKILL)  # mid-training: epoch 3 of 500 is under way
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed = client.get_run(stale)
    assert killed.info.status == "RUNNING"  # nobody was left to close it
    assert killed.data.tags["pid"] == str(proc.pid) and killed.data.tags["host"] == socket.gethostname()
    last_step = max(m.step for m in client.get_metric_history(stale, tracking.M_TRAIN_LOSS))
    assert 2 <= last_step < 500

    # the next invocation on this host closes it before starting its own run
    assert mammography_main(["--data", str(data), *FAST, "--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert f"closed 1 stale run(s) of dead processes as FAILED in 'mammography': {stale[:8]}" in err
    closed = client.get_run(stale)
    assert closed.info.status == "FAILED" and closed.data.tags["closed_as_stale"] == "true"
    assert closed.info.end_time is not None
    assert [m.step for m in client.get_metric_history(stale, tracking.M_TRAIN_LOSS)] == list(range(1, last_step + 1))
    assert running_runs() == []
    assert registry_snapshot(client) == before  # the registry is untouched by the kill and the clean-up


def test_children_of_a_dead_parent_are_closed_with_it_and_live_runs_are_left_alone():
    client = MlflowClient()
    host = socket.gethostname()
    dead_pid = "4194303"  # above the default pid_max: never a live process
    with tracking.study_run("stale-tree", "parent", tags={"host": host, "pid": dead_pid}) as parent:
        with tracking.study_run("stale-tree", "cell", nested=True) as child:
            pass
    with tracking.study_run("stale-tree", "alive", tags=tracking.process_tags()) as alive:
        pass
    with tracking.study_run("stale-tree", "elsewhere", tags={"host": "another-machine", "pid": dead_pid}) as remote:
        pass
    for run in (parent, child, alive, remote):
        client.update_run(run.info.run_id, status="RUNNING")  # as a kill leaves them
    closed = tracking.close_stale_runs("stale-tree")
    assert sorted(closed) == sorted([parent.info.run_id, child.info.run_id])
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"  # this process is alive
    assert client.get_run(remote.info.run_id).info.status == "RUNNING"  # another host's: not ours to judge
    for run in (alive, remote):
        client.set_terminated(run.info.run_id)


# --- (b) server restart while a run logs -------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """scripts/team_server.sh with a SQLite backend (no PostgreSQL needed for this fault)."""

    def __init__(self, home: Path):
        self.home, self.port = home, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.args = ["--port", str(self.port), "--home", str(home), "--db", f"sqlite:///{home / 'server.db'}",
                     "--artifacts", str(home / "artifacts"), "--workers", "1", "--timeout", "240"]

    def start(self) -> None:
        done = subprocess.run([str(SCRIPT), "start", *self.args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr

    def crash(self) -> None:
        pid = int((self.home / f"server-{self.port}.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        wait_for_exit(pid)  # the restart then tests the recovery, not a race with the teardown

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop", *self.args], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_server_restart_while_a_run_logs_loses_no_metric_step(tmp_path):
    data = mias_set(tmp_path / "mias")
    server = LocalServer(tmp_path / "server")
    server.start()
    epochs = 40
    try:
        client = MlflowClient(tracking_uri=server.uri)
        # 7 retries with backoff factor 1 wait 0+2+4+8+16+32+64 s: enough for a restart that
        # takes ~10-30 s here. MLflow's defaults (7, factor 2) wait ~4 minutes.
        env = _env(MLFLOW_TRACKING_URI=server.uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="7",
                   MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1")
        proc = subprocess.Popen(_cli("--data", str(data), *FAST, "--image-size", "48", "--epochs", str(epochs)),
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_id = _wait_for_steps(client, "mammography", 2, proc)
        server.crash()
        down = time.time()
        time.sleep(2)
        server.start()
        up = time.time()
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.info.end_time / 1000 > up, "the run finished before the restart: nothing was tested"
        for key in (tracking.M_TRAIN_LOSS, tracking.M_VAL_LOSS, "val_accuracy"):
            steps = sorted(m.step for m in client.get_metric_history(run_id, key))
            assert steps == list(range(1, epochs + 1)), (key, steps)  # none missing, none twice
        logged_while_down = [m for m in client.get_metric_history(run_id, tracking.M_TRAIN_LOSS)
                             if down * 1000 <= m.timestamp <= up * 1000]
        stamps = [(m.step, round(m.timestamp / 1000 - down, 2))
                  for m in client.get_metric_history(run_id, tracking.M_TRAIN_LOSS)]
        print(f"server down {up - down:.1f} s; {len(logged_while_down)} epoch(s) logged while it was down "
              f"(held and retried by the client); (step, s after the kill): {sorted(stamps)[:12]}")
        # the run stalled while the server was away (its requests were being retried), then went on
        times = [t for _, t in sorted(stamps)]
        assert max(b - a for a, b in zip(times, times[1:])) >= 0.5 * (up - down), stamps
        arts = {a.path for a in client.list_artifacts(run_id)}
        assert {"split", "weights", "confusion_matrix.csv"} <= arts
        assert any(p.name == "model_weights.pt" for p in (server.home / "artifacts").rglob("*"))
    finally:
        server.stop()


class _CutOffServer:
    """HTTP on loopback whose first answer dies mid-body (headers sent, then the socket closes),
    as a tracking server SIGKILLed while answering does; later answers are whole."""

    def __init__(self):
        import http.server
        import threading

        self.bodies: list[bytes] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self._answer()

            do_PUT = do_POST

            def _answer(self):
                outer.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if len(outer.bodies) == 1:
                    self.send_header("Content-Length", "929")
                    self.end_headers()
                    self.wfile.write(b'{"run": {')
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.uri = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_answer_cut_off_mid_body_is_sent_again_with_the_whole_upload(tmp_path):
    """MLflow itself gives up at once on a truncated answer (the load test lost runs to it when
    the server was killed); projects.core.http_retry.install_http_body_retry sends the request again,
    rewinding an upload so the server gets the whole file the second time too."""
    import requests

    from projects.core.private_api import private_attr

    # The request function http_retry wraps, called directly (see http_retry for the reason).
    rest_utils = private_attr("mlflow.utils.rest_utils", "", dist="mlflow",
                              reason="drives MLflow's private HTTP client that http_retry patches",
                              waits_for="mlflow/mlflow#8004, #7732 (as projects/core/http_retry.py)")
    MlflowHostCreds = rest_utils.MlflowHostCreds
    http_retry.install_http_body_retry()
    payload = tmp_path / "weights.bin"
    payload.write_bytes(bytes(range(256)) * 40)

    server = _CutOffServer()
    try:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):  # MLflow's own behaviour
            rest_utils._get_http_response_with_retries.__wrapped__(
                "POST", server.uri + "/api/2.0/mlflow/runs/log-batch", 0, 0, 0, (500,), json={"run_id": "r"})
        server.bodies.clear()
        host = MlflowHostCreds(server.uri)
        with payload.open("rb") as f:
            resp = rest_utils.http_request(host, "/api/2.0/mlflow-artifacts/artifacts/0/r/weights.bin", "PUT",
                                           data=f, max_retries=0, backoff_factor=0)
        assert resp.status_code == 200
        assert server.bodies == [payload.read_bytes()] * 2  # sent again, whole
    finally:
        server.close()


# --- (c) unwritable artifact location, full disk --------------------------------------------
@pytest.mark.parametrize("where", ["sysfs", "file_in_the_way"])
def test_unwritable_artifact_location_is_one_clear_error_and_a_failed_run(where, tmp_path, capsys):
    data = mias_set(tmp_path / "mias")
    if where == "sysfs":
        location = Path("/sys/medimg-unwritable") / uuid.uuid4().hex  # read-only, even for root
    else:
        (tmp_path / "blocker").write_text("a file where the artifact folder should be")
        location = tmp_path / "blocker" / "artifacts"
    tracking.setup_tracking()
    MlflowClient().create_experiment("mammography", artifact_location=location.as_uri())

    code = mammography_main(["--data", str(data), *FAST, "--epochs", "1"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 1 and "Traceback" not in err
    assert len(lines) == 1, err
    line = lines[0]
    named = "/sys/medimg-unwritable" if where == "sysfs" else str(location)  # the folder that cannot be made
    assert line.startswith(f"error: {named}"), line
    assert ("operation not permitted" in line or "permission denied" in line) if where == "sysfs" \
        else "not a folder" in line
    (run,) = mlflow.search_runs(experiment_names=["mammography"], output_format="list")
    assert run.info.status == "FAILED"
    assert run.data.tags["error"]
    assert running_runs() == []


def test_a_full_disk_while_saving_weights_is_one_clear_error_and_a_failed_run(tmp_path, capsys, monkeypatch):
    """ENOSPC where the study writes its weights file (in-process: no real disk is filled)."""
    import builtins

    data = mias_set(tmp_path / "mias")
    real_open = builtins.open

    def full_disk_open(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).endswith(".tmp") and "model_weights" in str(file):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk_open)
    code = mammography_main(["--data", str(data), *FAST, "--epochs", "1"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 1 and "Traceback" not in err and len(lines) == 1, err
    assert "model_weights.pt: no space left on the device (disk full?)" in lines[0]
    (run,) = mlflow.search_runs(experiment_names=["mammography"], output_format="list")
    assert run.info.status == "FAILED" and "No space left" in run.data.tags["error"]
    assert running_runs() == []


@pytest.mark.slow
def test_a_real_file_size_limit_mid_run_is_one_clear_error_and_a_failed_run(tmp_path):
    """RLIMIT_FSIZE makes every write past 8 MB fail with EFBIG, as a full disk fails writes:
    the resnet18 weights (~45 MB) cannot be written, the store (a few hundred kB) can."""
    data = mias_set(tmp_path / "mias")
    limit = 8 * 1024 * 1024

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a fatal signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(_cli("--data", str(data), *FAST, "--epochs", "1"), cwd=REPO, env=_env(),
                          preexec_fn=limit_file_size, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines) == 1 and "model_weights.pt: file too large" in lines[0], lines
    (run,) = mlflow.search_runs(experiment_names=["mammography"], output_format="list")
    assert run.info.status == "FAILED" and "File too large" in run.data.tags["error"]
    assert running_runs() == []


# --- (d) interrupted promotion ------------------------------------------------------------------
class _Killed(BaseException):
    """The process died here (not an Exception: nothing may catch it and carry on)."""


REGISTRY_WRITES = ("create_registered_model", "create_model_version", "set_model_version_tag",
                   "set_registered_model_alias", "delete_registered_model_alias", "set_registered_model_tag",
                   "delete_model_version", "update_model_version")


def _tiny_candidate(jaccard: float, size_mb: float, seed: int, background: float = 0.30) -> str:
    """A FINISHED pathology candidate with a real pt2 model (as tests/test_registry.py makes them)."""
    import torch
    from mlflow.models import infer_signature
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), nn.Sigmoid()).eval()
    example = np.random.default_rng(seed).random((2, 3, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        output = model(torch.from_numpy(example)).numpy()
    exp = tracking.ensure_experiment(get_study("pathology").experiment)
    metrics = {tracking.test_metric("jaccard"): jaccard, tracking.baseline_metric("jaccard_all_background"): background,
               tracking.baseline_metric("jaccard_all_tumor"): 0.10,
               tracking.test_metric("jaccard_minus_baseline"): jaccard - background,
               tracking.M_SIZE_MB: size_mb, tracking.M_CPU_TOTAL: size_mb, tracking.M_LATENCY_P50: size_mb * 10,
               tracking.M_PARAMS: 28.0}
    with mlflow.start_run(experiment_id=exp, run_name=f"tiny-{seed}") as run:
        mlflow.set_tags({tracking.TAG_STUDY: "pathology", tracking.TAG_TASK: "tumor", tracking.TAG_ARCH: "tiny",
                         tracking.TAG_SPLIT: "80:20", tracking.TAG_AUGMENT: "false", tracking.TAG_SEED: str(seed),
                         tracking.TAG_GIT_COMMIT: "test", tracking.TAG_DATASET_DIGEST: "digest-1",
                         tracking.TAG_RUN_KIND: "single"})
        mlflow.log_params({"image_shape": "3x8x8", "data_root": "embedded-test"})
        mlflow.log_metrics(metrics)
        mlflow.pytorch.log_model(model, name=tracking.MODEL_ARTIFACT, input_example=example,
                                 signature=infer_signature(example, output),
                                 pip_requirements=artifacts.model_pip_requirements())
        mlflow.set_tag(tracking.TAG_CANDIDATE, "true")
    time.sleep(0.01)
    return run.info.run_id


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}


def _db_path() -> Path:
    return Path(os.environ["MLFLOW_TRACKING_URI"][len("sqlite:///"):])


def _copy_db(src: Path, dst: Path) -> None:
    """SQLite's online backup: a consistent copy, safe while other connections are open."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


@pytest.mark.slow
def test_interrupted_promotion_leaves_every_alias_on_a_gated_version(tmp_path, monkeypatch, policies_within_split):
    from registry import promote as P
    from registry import store

    tracking.setup_tracking()
    name = get_study("pathology").model_name("tumor")
    client = MlflowClient()

    first = _tiny_candidate(0.50, 0.50, seed=1)
    P.promote_model(name)
    v_first = aliases(client, name)
    assert v_first and set(v_first.values()) == {str(store.versions_for_run(client, name, first)[0].version)}
    better = _tiny_candidate(0.70, 0.10, seed=2)  # should take every alias
    _tiny_candidate(0.25, 0.01, seed=3)  # below the all-background baseline: never gated
    # The most accurate, but its model file is garbage: refused by the smoke gate (and left
    # out of the Pareto front, tests/test_registry.py checks that separately).
    broken = _tiny_candidate(0.95, 0.90, seed=4)
    model_id = client.get_run(broken).outputs.model_outputs[0].model_id
    root = Path(client.get_logged_model(model_id).artifact_location.replace("file://", ""))
    (root / "data" / "model.pt2").write_bytes(b"not a model" * 100)

    snapshot = tmp_path / "before.db"
    _copy_db(_db_path(), snapshot)

    # Count the registry writes of one uninterrupted promotion, then replay it dying before each.
    calls: list[str] = []
    real = {m: getattr(MlflowClient, m) for m in REGISTRY_WRITES}

    def install(die_at: int | None):
        def wrap(method):
            def write(self, *args, **kwargs):
                calls.append(method)
                if die_at is not None and len(calls) == die_at:
                    raise _Killed(f"killed before write {die_at} ({method})")
                return real[method](self, *args, **kwargs)
            return write
        for m in REGISTRY_WRITES:
            monkeypatch.setattr(MlflowClient, m, wrap(m))

    install(None)
    P.promote_model(name)
    total = len(calls)
    gated_versions = {str(store.versions_for_run(client, name, r)[0].version) for r in (first, better)}
    final = aliases(client, name)
    assert set(final.values()) == {str(store.versions_for_run(client, name, better)[0].version)}
    assert total >= 5, calls

    # every write boundary would be thorough but slow (each promotion smoke-tests models):
    # the first write, each alias move and the writes right around it, and the last write.
    seen = list(calls)
    points = {1, total}
    for i, m in enumerate(seen, start=1):
        if m in ("create_model_version", "set_registered_model_alias"):
            points |= {i, i + 1}
    for die_at in sorted(p for p in points if 1 <= p <= total):
        _copy_db(snapshot, _db_path())
        calls.clear()
        install(die_at)
        with pytest.raises(_Killed):
            P.promote_model(name)
        held = aliases(client, name)
        for alias, version in held.items():
            assert version in gated_versions, (die_at, alias, version)
            tags = client.get_model_version(name, version).tags
            assert tags.get(P.promotion_key(alias, "gates"), "").startswith("passed"), (die_at, alias, tags)
        assert set(held) == set(v_first), (die_at, held)  # no alias lost
        # the next promotion finishes the job and leaves alias, audit and tags consistent
        install(None)
        P.promote_model(name)
        after = aliases(client, name)
        assert after == final, (die_at, after)
        for alias in after:
            assert P.reconcile(client, name, alias, attempts=1), (die_at, alias)
            assert str(P.history(name, alias, client)[-1]["version"]) == after[alias]
    assert not store.versions_for_run(client, name, broken)
