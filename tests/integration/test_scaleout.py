"""Team set-up (issue 10): a tracking server on PostgreSQL on loopback, K load-test workers,
a server crash and restart mid-run, every entry point through MLFLOW_TRACKING_URI, and the
files a team or a Kubernetes cluster starts from.

The PostgreSQL tests need a server on 127.0.0.1:5432 that lets `MEDIMG_TEST_PG`'s role
(default postgres, trust auth) create databases; each test module creates its own uniquely
named databases and drops them at the end. Without PostgreSQL they are skipped.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from tools import loadtest as LT

from conftest import running_runs, wait_for_exit
from test_bad_inputs import store_from_template  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "team_server.sh"
PG_URL = os.environ.get("MEDIMG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


# --- PostgreSQL and a team server ----------------------------------------------------------
def _admin_connection():
    psycopg = pytest.importorskip("psycopg")
    url = urlsplit(PG_URL)
    try:
        conn = psycopg.connect(host=url.hostname or "127.0.0.1", port=url.port or 5432,
                               user=url.username or "postgres", password=url.password,
                               dbname=url.path.lstrip("/") or "postgres", connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        pytest.skip(f"PostgreSQL unreachable at {url.hostname}:{url.port or 5432}: {first[:200]}")
    return conn


def _db_url(name: str, password: str = "") -> str:
    url = urlsplit(PG_URL)
    auth = (url.username or "postgres") + (f":{password}" if password else "")
    return f"postgresql://{auth}@{url.hostname or '127.0.0.1'}:{url.port or 5432}/{name}"


@pytest.fixture(scope="module")
def pg_databases():
    """(mlflow database URL, Optuna database URL): this module's own, dropped afterwards."""
    yield from _databases()


@pytest.fixture(scope="module")
def auth_pg_databases():
    """A second pair, for the server with authentication (its own users database beside)."""
    yield from _databases()


def _databases():
    conn = _admin_connection()
    base = f"medimg_scaleout_{uuid.uuid4().hex[:10]}"
    names = [base, base + "_optuna"]  # the script's convention: <name>_optuna beside it
    made_by_the_script = [base + "_auth"]  # `start --auth`: the users, <name>_auth
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f"CREATE DATABASE {name}")
    except Exception as exc:
        conn.close()
        pytest.skip(f"cannot create a PostgreSQL database: {exc}")
    try:
        yield _db_url(names[0]), _db_url(names[1])
    finally:
        with conn.cursor() as cur:
            for name in names + made_by_the_script:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TeamServer:
    """scripts/team_server.sh driven from a test: start, crash (SIGKILL), start again, stop."""

    def __init__(self, db: str, home: Path, workers: int = 1, auth: bool = False):
        self.db, self.home, self.workers, self.auth = db, home, workers, auth
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = home / "artifacts"

    def script(self, command: str, *extra: str, timeout: float = 300,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        args = [str(SCRIPT), command, "--port", str(self.port), "--home", str(self.home),
                "--db", self.db, "--workers", str(self.workers), "--artifacts", str(self.artifacts), *extra]
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})

    def start(self, env: dict[str, str] | None = None) -> str:
        """`env`: the admin password's variable on the first start with --auth (later starts
        find the admin in the user store)."""
        done = self.script("start", "--timeout", "240", *(["--auth"] if self.auth else []), env=env)
        assert done.returncode == 0, done.stdout + done.stderr + self.log()
        return done.stdout

    def pid(self) -> int:
        return int((self.home / f"server-{self.port}.pid").read_text())

    def crash(self) -> None:
        """SIGKILL the whole server (its process group), as a power cut or the OOM killer would."""
        pid = self.pid()
        os.killpg(pid, signal.SIGKILL)
        wait_for_exit(pid)  # the restart then tests the recovery, not a race with the teardown

    def stop(self) -> None:
        self.script("stop", timeout=60)

    def log(self) -> str:
        path = self.home / f"server-{self.port}.log"
        return path.read_text()[-3000:] if path.exists() else ""


@pytest.fixture(scope="module")
def team_server(pg_databases, tmp_path_factory):
    server = TeamServer(pg_databases[0], tmp_path_factory.mktemp("team"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def auth_team_server(auth_pg_databases, tmp_path_factory):
    """`start --auth` (admin password from the environment), with a trainer made by
    tools.team_users; `server.client_env` signs clients in as that trainer."""
    import secrets

    server = TeamServer(auth_pg_databases[0], tmp_path_factory.mktemp("team-auth"), auth=True)
    admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "Adm-" + secrets.token_hex(8)}
    server.start(env={"MLFLOW_AUTH_ADMIN_PASSWORD": admin["MLFLOW_TRACKING_PASSWORD"]})
    trainer = {"MLFLOW_TRACKING_USERNAME": "loadtester", "MLFLOW_TRACKING_PASSWORD": "Tr-" + secrets.token_hex(8)}
    try:
        done = subprocess.run([sys.executable, "-m", "tools.team_users", "add", "loadtester", "--role", "trainer"],
                              cwd=REPO, capture_output=True, text=True, timeout=120,
                              env=_env(server.uri, **admin, MEDIMG_USER_PASSWORD=trainer["MLFLOW_TRACKING_PASSWORD"]))
        assert done.returncode == 0, done.stdout + done.stderr
        server.client_env = trainer
        server.optuna = auth_pg_databases[1]
        yield server
    finally:
        server.stop()


def _env(uri: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_REGISTRY_URI"):
        env.pop(key, None)
    env.update(MLFLOW_TRACKING_URI=uri, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO), **extra)
    return env


# --- the Done-when test ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("auth", [False, True], ids=["open", "auth"])
def test_four_workers_lose_nothing_when_the_server_is_killed_and_restarted(auth, request, tmp_path, monkeypatch):
    """4 worker processes log runs (10 metric steps, params, an artifact) and Optuna trials on
    the same PostgreSQL; the server is SIGKILLed mid-run and started again. Every run, metric
    step, artifact and trial must be there exactly once, and runs must have spanned the outage.
    With `auth`, the server runs MLflow's basic-auth app and every client signs in as a trainer."""
    if auth:
        team_server = request.getfixturevalue("auth_team_server")
        optuna, signed_in = team_server.optuna, team_server.client_env
        for key, value in signed_in.items():  # the verifier reads through this process's client
            monkeypatch.setenv(key, value)
    else:
        team_server = request.getfixturevalue("team_server")
        optuna, signed_in = request.getfixturevalue("pg_databases")[1], {}
    # 40 s: the restart takes 10-20 s on a busy machine, and runs must also start after it
    settings = LT.LoadSettings(tracking_uri=team_server.uri, workers=4, seconds=40, steps=10,
                               optuna_storage=optuna, out_dir=str(tmp_path / "load"))
    # Default MLflow retry policy (7 retries, backoff factor 2: ~4 minutes) rides out a restart.
    lt = LT.LoadTest(settings, env=_env(team_server.uri, **signed_in))
    try:
        lt.start()
        time.sleep(5)
        team_server.crash()
        killed = time.time()
        time.sleep(1)
        team_server.start()
        restarted = time.time()
        codes = lt.wait(timeout=600)
        report = lt.verify()
    finally:
        lt.stop()
    print(report.text())
    print(f"server down for {restarted - killed:.1f} s")
    assert codes == [0, 0, 0, 0], [(tmp_path / "load" / f"worker-{i}.log").read_text()[-1500:] for i in range(4)]
    assert report.ok, report.text()
    records = [json.loads(line) for i in range(4)
               for line in (tmp_path / "load" / f"worker-{i}.jsonl").read_text().splitlines() if '"key"' in line]
    assert all(report.per_worker[str(i)] > 0 for i in range(4)), report.per_worker
    spanning = [r for r in records if r["t0"] < killed < r["t1"]]
    assert spanning, "no run was in flight when the server died: the test proved nothing"
    assert any(r["t0"] > restarted for r in records), "no run started after the restart"
    assert report.trials == report.runs


@pytest.mark.slow
@pytest.mark.postgres
def test_every_entry_point_works_against_the_team_server(team_server, pg_databases, tmp_path):
    """mammography, pathology, search (Optuna on the same PostgreSQL), promote and dashboard
    through MLFLOW_TRACKING_URI=http://127.0.0.1:PORT; artifacts land in the served folder; no
    run is left RUNNING; no credential appears in a logged param or tag."""
    from mlflow.tracking import MlflowClient

    secret = "S3cretPw-" + uuid.uuid4().hex[:6]
    env = _env(team_server.uri, MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=secret,
               MEDIMG_STORE=str(tmp_path / "unused-local-store"))
    seg = _tiny_segmentation_set(tmp_path / "seg")
    # trust auth ignores the password; the URL carries one so that its masking is tested
    storage = _db_url(urlsplit(pg_databases[1]).path.lstrip("/"), password=secret)
    commands = {
        "mammography": ["-m", "projects.mammography", "--arch", "resnet18", "--image-size", "32", "--epochs", "1",
                        "--batch-size", "16", "--log-model", "false"],
        "pathology": ["-m", "projects.pathology", "--data", str(seg), "--arch", "unet", "--filters", "2",
                      "--depth", "3", "--tile-size", "64", "--epochs", "1", "--batch-size", "4",
                      "--cpu-predict-n", "2", "--patience", "0", "--log-model", "true"],
        "search": ["-m", "projects.search", "--study", "pathology", "--n-trials", "2", "--epochs", "1",
                   "--data", str(seg), "--storage", storage, "--name", "team-" + uuid.uuid4().hex[:6],
                   "--base", "tile_size=64,batch_size=4,cpu_predict_n=2,log_model=false,progress=false",
                   "--space", "arch=unet,depth=2:3,filters=2:3", "--pruner", "none", "--plots", "false",
                   "--seed", "0"],
        "promote": ["-m", "registry.promote"],
        "dashboard": ["-m", "dashboards", "--out", str(tmp_path / "dash")],
    }
    for name, args in commands.items():
        done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{name}: {done.stdout[-1500:]}\n{done.stderr[-3000:]}"

    client = MlflowClient(tracking_uri=team_server.uri)
    exps = [e.experiment_id for e in client.search_experiments() if e.name != LT.EXPERIMENT]
    runs = client.search_runs(exps, max_results=1000)  # the load test's runs are its own business
    names = {e.name for e in client.search_experiments()}
    assert {"mammography", "pathology", "search"} <= names, names
    assert runs and not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    for run in runs:
        blob = json.dumps([run.data.params, run.data.tags])
        assert secret not in blob, f"credential logged in run {run.info.run_id}"
    # artifacts went through the server into its --artifacts-destination folder
    assert any(p.name == "model_weights.pt" for p in team_server.artifacts.rglob("*")), "no served artifact"
    assert not (tmp_path / "unused-local-store" / "mlflow.db").exists()


def _tiny_segmentation_set(root: Path, n: int = 8, size: int = 128) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        cy, cx, r = rng.integers(30, size - 30, 2).tolist() + [int(rng.integers(10, 25))]
        cv2.circle(mask, (cx, cy), r, 255, -1)
        image = rng.integers(150, 230, (size, size, 3), dtype=np.uint8)
        image[mask > 0] = rng.integers(40, 120, (int((mask > 0).sum()), 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"s{i:02d}.png"), image)
        cv2.imwrite(str(root / "masks" / f"s{i:02d}.png"), mask)
    return root


# --- fast checks: the verifier, the script, the Kubernetes files ------------------------------
def _local_settings(tmp_path: Path, **kw) -> LT.LoadSettings:
    return LT.LoadSettings(tracking_uri=os.environ["MLFLOW_TRACKING_URI"], workers=1, seconds=60, steps=4,
                           session="s" + uuid.uuid4().hex[:6], out_dir=str(tmp_path), max_runs=3,
                           artifact_bytes=256, **kw)


def test_verifier_passes_a_clean_run_and_catches_loss_and_duplication(tmp_path):
    """A verifier that cannot fail proves nothing: tamper with the store in each way it must catch."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    settings = _local_settings(tmp_path)
    summary = LT.run_worker(settings, 0)
    assert summary["runs"] == 3 and not summary["errors"]
    clean = LT.verify(settings)
    assert clean.ok, clean.text()
    assert (clean.runs, clean.metric_values, clean.artifacts) == (3, 3 * 4 * 3, 3)

    client = MlflowClient()
    records, _ = LT._read_manifest(tmp_path / "worker-0.jsonl")
    first, second, third = records
    exp_id = client.get_experiment_by_name(settings.experiment).experiment_id
    # a duplicated run (what a retried create_run makes), a doubled metric step, a missing artifact
    client.create_run(exp_id, tags={LT.TAG_SESSION: settings.session, LT.TAG_KEY: first["key"]})
    client.log_batch(second["run_id"], metrics=[Metric("train_loss", 0.5, int(time.time() * 1000) + 7, 2)])
    artifact = Path(client.get_run(third["run_id"]).info.artifact_uri.replace("file://", ""))
    for path in artifact.rglob("*.bin"):
        path.write_bytes(b"changed")
    report = LT.verify(settings)
    text = "\n".join(report.problems)
    assert f"{first['key']}: 2 active runs" in text
    assert f"{second['key']}: train_loss steps missing [], duplicated [2]" in text
    assert f"{third['key']}: artifact bytes differ" in text
    assert not report.ok


def test_worker_removes_the_duplicate_a_retried_create_run_leaves(tmp_path):
    from mlflow.tracking import MlflowClient

    settings = _local_settings(tmp_path, params=0)
    settings.max_runs = 1
    client = MlflowClient()
    real_create = client.create_run
    calls = []

    def create_twice(*args, **kwargs):  # the server committed the first, its answer was lost
        calls.append(real_create(*args, **kwargs))
        return real_create(*args, **kwargs)

    ctx = LT.prepare_worker(settings)
    ctx.client.create_run = create_twice
    summary = LT.run_worker(settings, 0, ctx=ctx)
    assert summary["duplicates_removed"] == 1
    report = LT.verify(settings)
    assert report.ok and report.duplicates_removed == 1, report.text()
    assert client.get_run(calls[0].info.run_id).info.lifecycle_stage == "deleted"
    assert running_runs() == []


def test_loadtest_cli_rejects_bad_input_in_one_line(capsys):
    assert LT.main(["--tracking-uri", "http://127.0.0.1:9", "--seconds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --tracking-uri: no MLflow server answers"), err
    assert LT.main(["--tracking-uri", "http://127.0.0.1:9", "--seconds", "0"]) == 2
    assert "--seconds: must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        LT.main(["--workers", "0"])


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def test_team_server_script_binds_loopback_and_prints_no_password():
    done = _script("command", "--db", "postgresql://alice:hunter2@127.0.0.1:5432/medimg", "--port", "5123")
    assert done.returncode == 0, done.stderr
    cmd = done.stdout.split()
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "5123" and cmd[cmd.index("--workers") + 1] == "1"
    assert "--artifacts-destination" in cmd and "--serve-artifacts" in cmd
    assert "postgresql://alice:***@127.0.0.1:5432/medimg" in cmd
    assert "hunter2" not in done.stdout + done.stderr
    uri = _script("uri", "--port", "5123", "--db", "postgresql://alice:hunter2@127.0.0.1:5432/medimg")
    assert uri.stdout.splitlines()[0] == "export MLFLOW_TRACKING_URI=http://127.0.0.1:5123"
    assert "--storage postgresql://alice:***@127.0.0.1:5432/medimg_optuna" in uri.stdout
    assert "hunter2" not in uri.stdout
    auth = _script("command", "--auth", "--port", "5123").stdout.split()
    assert auth[auth.index("--app-name") + 1] == "basic-auth"
    assert "--app-name" not in cmd
    refused = _script("start", "--auth", "--admin-password", "hunter2")  # never on a command line
    assert refused.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in refused.stderr and "hunter2" not in refused.stderr
    for bad, problem in ((["--port", "http"], "--port"), (["--workers", "0"], "--workers"), (["--bogus"], "unknown option")):
        done = _script("command", *bad)
        assert done.returncode == 2 and done.stderr.startswith("error: ") and problem in done.stderr, done.stderr


def test_a_stale_pid_file_does_not_count_as_a_running_server(tmp_path):
    """`start` refuses only while the recorded server lives. A pid file outlives a crash: its pid
    may be dead, a zombie, or handed to another program since; none of those is a server."""
    port = str(_free_port())
    pidfile = tmp_path / f"server-{port}.pid"
    other = subprocess.Popen(["sleep", "60"])  # a live process that is not an mlflow server
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        for pid in (other.pid, dead.pid, "garbage"):
            pidfile.write_text(f"{pid}\n")
            done = _script("status", "--port", port, "--home", str(tmp_path))
            assert done.returncode == 3 and "not running" in done.stdout, (pid, done.stdout, done.stderr)
    finally:
        other.kill()
        other.wait()


def test_kubernetes_backend_config_and_job_template_are_what_mlflow_run_reads(monkeypatch):
    import copy

    import yaml

    from projects.core.private_api import private_attr

    # The parser `mlflow run --backend kubernetes` reads the config with: the test checks the
    # config the way MLflow will read it, which only that private function does.
    _parse_kubernetes_config = private_attr(
        "mlflow.projects", "_parse_kubernetes_config", dist="mlflow",
        reason="MLflow has no public validator of a kubernetes backend config",
        waits_for="no upstream issue yet: a public config check for `mlflow run --backend kubernetes`")
    monkeypatch.chdir(REPO)  # the config names the template relative to the checkout, as `mlflow run .` runs
    config = json.loads((REPO / "deploy/kubernetes/backend-config.json").read_text())
    parsed = _parse_kubernetes_config(config)
    template = parsed["kube-job-template"]
    assert template["kind"] == "Job" and template["apiVersion"] == "batch/v1"
    container = template["spec"]["template"]["spec"]["containers"][0]
    assert template["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert container["resources"]["limits"]["memory"]
    # what mlflow.projects.kubernetes._get_kubernetes_job_definition does with it
    job = copy.deepcopy(template)
    job["metadata"]["name"] = "medimg-platform-x"
    job["spec"]["template"]["spec"]["containers"][0].update(name="medimg-platform", image="img@sha256:0",
                                                             command=["python", "-m", "projects.pathology"])
    job["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append(
        {"name": "MLFLOW_RUN_ID", "value": "0"})
    yaml.safe_dump(job)
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "OMP_WAIT_POLICY" in names and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in names
    text = (REPO / "deploy/kubernetes/job-template.yaml").read_text().lower()
    assert "password" not in text or "secretkeyref" in text
