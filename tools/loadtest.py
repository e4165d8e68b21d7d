"""Load test of a (team) tracking server: K worker processes log short runs and Optuna trials
for a bounded time, then everything is read back and checked to have arrived exactly once.

    python -m tools.loadtest --workers 4 --seconds 30 --tracking-uri http://127.0.0.1:5000 \
        --optuna-storage postgresql://postgres@127.0.0.1:5432/medimg_optuna

What one worker does, until its deadline (all workers start together, after their imports):

    ask Optuna for a trial (when --optuna-storage is given)
    create a run (tags: session, worker, key, trial number)   1 request
    log N params                                               1 request
    per step (an "epoch" of a tiny synthetic regression):
        log M metrics at that step                             1 request each
    upload one artifact (bytes derived from the run's key)     1 request
    end the run FINISHED; tell Optuna the final loss           1 request
    append {key, run_id, trial} to its manifest (fsync'd)

Every value a run logs is a pure function of its key, so the verifier recomputes what must be
on the server instead of trusting what the worker says it sent. `verify` then checks, through
the same tracking API: exactly one active run per manifest key and no run outside the manifest,
every run FINISHED with its params, each metric's history has every step exactly once with the
right value, the artifact's bytes match, and each Optuna trial is COMPLETE exactly once with
the run's key and final loss.

Exactly once across server crashes. MLflow's client retries every request (connection
refused, reset, 5xx) with exponential backoff (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7;
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, default 2: ~4 minutes in all), and the platform adds the
retry of an answer cut off mid-body (projects.core.http_retry.install_http_body_retry). Retried
metric, param, tag, artifact and end-run writes are idempotent on the server (a metric is
keyed by name, step, timestamp and value). Creating a run is not: when the server commits a
new run and dies before its answer is through, the retry creates a second, empty one. Each
worker therefore tags runs with their key and, at the end, deletes runs of its keys that it
never received (counted as `duplicates_removed` in the report); the verifier then requires
exactly one.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TAG_SESSION = "loadtest_session"
TAG_WORKER = "loadtest_worker"
TAG_KEY = "loadtest_key"
TAG_TRIAL = "loadtest_trial"
ATTR_KEY = "run_key"
ATTR_RUN_ID = "mlflow_run_id"
ARTIFACT_DIR = "loadtest"
METRIC_NAMES = ("train_loss", "val_loss", "val_accuracy", "lr", "grad_norm", "epoch_seconds")
EXPERIMENT = "loadtest"


@dataclass
class LoadSettings:
    tracking_uri: str
    workers: int = 4
    seconds: float = 30.0  # each worker starts no new run after this
    steps: int = 10  # metric steps ("epochs") per run
    metrics_per_step: int = 3  # up to len(METRIC_NAMES)
    params: int = 5
    artifact_bytes: int = 4096
    optuna_storage: str = ""  # "" = runs only; an RDB URL adds one Optuna trial per run
    experiment: str = EXPERIMENT
    session: str = ""  # tags every run of this load test; generated when empty
    out_dir: str = ""  # manifests; a temporary folder when empty
    max_runs: int = 0  # per worker; 0 = until the deadline
    step_sleep: float = 0.0  # seconds of simulated training per step

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadSettings:
        return cls(**json.loads(text))

    @property
    def metric_names(self) -> tuple[str, ...]:
        return METRIC_NAMES[: self.metrics_per_step]

    @property
    def study_name(self) -> str:
        return f"loadtest-{self.session}"


def _check_settings(s: LoadSettings) -> None:
    from projects.core.errors import InputError

    if s.workers < 1:
        raise InputError("--workers", f"must be at least 1, got {s.workers}")
    if not s.seconds > 0:
        raise InputError("--seconds", f"must be positive, got {s.seconds}")
    if s.steps < 1:
        raise InputError("--steps", f"must be at least 1, got {s.steps}")
    if not 1 <= s.metrics_per_step <= len(METRIC_NAMES):
        raise InputError("--metrics", f"must be 1 to {len(METRIC_NAMES)}, got {s.metrics_per_step}")
    if s.params < 0 or s.artifact_bytes < 0 or s.max_runs < 0 or s.step_sleep < 0:
        raise InputError(None, "params, artifact bytes, max runs and step sleep cannot be negative")
    if not s.tracking_uri:
        raise InputError("--tracking-uri", "no tracking URI (pass --tracking-uri or set MLFLOW_TRACKING_URI)")


# --- what a run logs: a pure function of its key ------------------------------------------
def _seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def expected_params(key: str, n: int) -> dict[str, str]:
    rng = np.random.default_rng(_seed(key) ^ 0x5EED)
    return {f"p{j}": repr(float(rng.random())) for j in range(n)}


def expected_metrics(key: str, steps: int, names: tuple[str, ...]) -> dict[str, list[float]]:
    """A tiny least-squares regression trained by gradient descent: `steps` epochs of it."""
    rng = np.random.default_rng(_seed(key))
    x = rng.normal(size=(64, 8))
    w_true = rng.normal(size=8)
    y = x @ w_true + 0.1 * rng.normal(size=64)
    xt, yt, xv, yv = x[:48], y[:48], x[48:], y[48:]
    w = np.zeros(8)
    lr = 0.05
    out: dict[str, list[float]] = {name: [] for name in names}
    for step in range(steps):
        grad = 2 * xt.T @ (xt @ w - yt) / len(yt)
        w -= lr * grad
        values = {
            "train_loss": float(np.mean((xt @ w - yt) ** 2)),
            "val_loss": float(np.mean((xv @ w - yv) ** 2)),
            "val_accuracy": float(np.mean(np.abs(xv @ w - yv) < 0.5)),
            "lr": lr,
            "grad_norm": float(np.linalg.norm(grad)),
            "epoch_seconds": float(step + 1),
        }
        for name in names:
            out[name].append(values[name])
    return out


def expected_artifact(key: str, n: int) -> bytes:
    head = f"loadtest artifact for {key}\n".encode()
    body = np.random.default_rng(_seed(key) ^ 0xA57).integers(0, 256, size=max(0, n - len(head)), dtype=np.uint8)
    return (head + body.tobytes())[: max(n, len(head))]


def artifact_name(key: str) -> str:
    return f"{key}.bin"


def final_loss(key: str, steps: int) -> float:
    return expected_metrics(key, steps, ("val_loss",))["val_loss"][-1]


# --- the worker ---------------------------------------------------------------------------
def _storage_url(url: str) -> str:
    """postgres:// as postgresql:// (SQLAlchemy's name; psycopg 3 is its default driver)."""
    return "postgresql://" + url[len("postgres://"):] if url.startswith("postgres://") else url


def _open_study(settings: LoadSettings, create: bool):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(_storage_url(settings.optuna_storage),
                                         engine_kwargs={"pool_pre_ping": True})
    if create:
        return optuna.create_study(storage=storage, study_name=settings.study_name,
                                   direction="minimize", load_if_exists=True)
    return optuna.load_study(storage=storage, study_name=settings.study_name)


def _experiment_id(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    uri = str(client.tracking_uri)
    if uri.startswith("sqlite:///"):  # MLflow's default would be ./mlruns under the cwd
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def _append(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass
class _WorkerContext:
    client: object
    exp_id: str
    study: object | None


def prepare_worker(settings: LoadSettings) -> _WorkerContext:
    """Connections and lookups, done before the start signal so they do not count."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from projects.core.http_retry import install_http_body_retry

    install_http_body_retry()  # the platform's client behaviour, as every entry point has it
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    mlflow.set_tracking_uri(settings.tracking_uri)
    exp_id = _experiment_id(client, settings.experiment)
    study = _open_study(settings, create=False) if settings.optuna_storage else None
    return _WorkerContext(client, exp_id, study)


def run_worker(settings: LoadSettings, index: int, deadline: float | None = None,
               ctx: _WorkerContext | None = None) -> dict:
    """Log runs until the deadline; returns the worker's summary (also the manifest's last line)."""
    from mlflow.entities import Metric, Param, RunStatus

    out = Path(settings.out_dir)
    manifest = out / f"worker-{index}.jsonl"
    ctx = ctx or prepare_worker(settings)
    client, exp_id, study = ctx.client, ctx.exp_id, ctx.study
    names = settings.metric_names
    if deadline is None:
        deadline = time.time() + settings.seconds
    tmp = Path(tempfile.mkdtemp(prefix=f"loadtest-w{index}-"))
    summary = {"worker": index, "runs": 0, "errors": [], "duplicates_removed": 0}
    seq = 0
    try:
        while time.time() < deadline and not (settings.max_runs and seq >= settings.max_runs):
            key = f"{settings.session}-w{index}-{seq:05d}"
            seq += 1
            t0 = time.time()
            trial = study.ask() if study is not None else None
            run_id = None
            try:
                tags = {TAG_SESSION: settings.session, TAG_WORKER: str(index), TAG_KEY: key,
                        "mlflow.runName": key}
                if trial is not None:
                    tags[TAG_TRIAL] = str(trial.number)
                run = client.create_run(exp_id, tags=tags, run_name=key)
                run_id = run.info.run_id
                if trial is not None:
                    trial.set_user_attr(ATTR_KEY, key)
                    trial.set_user_attr(ATTR_RUN_ID, run_id)
                params = expected_params(key, settings.params)
                if params:
                    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
                history = expected_metrics(key, settings.steps, names)
                for step in range(settings.steps):
                    if settings.step_sleep:
                        time.sleep(settings.step_sleep)
                    ts = int(time.time() * 1000)
                    client.log_batch(run_id, metrics=[Metric(n, history[n][step], ts, step) for n in names])
                if settings.artifact_bytes:
                    path = tmp / artifact_name(key)
                    path.write_bytes(expected_artifact(key, settings.artifact_bytes))
                    client.log_artifact(run_id, str(path), ARTIFACT_DIR)
                    path.unlink()
                client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
                if trial is not None:
                    study.tell(trial, final_loss(key, settings.steps))
            except Exception as exc:  # recorded and reported as lost by verify
                summary["errors"].append(f"{key}: {type(exc).__name__}: {str(exc)[:300]}")
                for action in (lambda: run_id and client.set_terminated(run_id, "FAILED"),
                               lambda: trial is not None and study.tell(trial, state=_fail_state())):
                    try:
                        action()
                    except Exception:
                        pass
                continue
            _append(manifest, {"key": key, "run_id": run_id, "trial": None if trial is None else trial.number,
                               "t0": t0, "t1": time.time()})
            summary["runs"] += 1
        summary["duplicates_removed"] = _remove_duplicates(client, exp_id, settings, index, manifest)
    except Exception as exc:
        summary["errors"].append(f"worker {index}: {type(exc).__name__}: {str(exc)[:300]}")
        summary["traceback"] = traceback.format_exc()[-2000:]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _append(manifest, {"done": True, **summary})
    return summary


def _fail_state():
    import optuna

    return optuna.trial.TrialState.FAIL


def _read_manifest(path: Path) -> tuple[list[dict], dict | None]:
    records, done = [], None
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("done"):
                done = rec
            else:
                records.append(rec)
    return records, done


def _search_all(client, exp_id: str, filter_string: str, view=None):
    from mlflow.entities import ViewType

    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], filter_string, run_view_type=view or ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _remove_duplicates(client, exp_id: str, settings: LoadSettings, index: int, manifest: Path) -> int:
    """Delete this worker's runs that a retried create_run made but never returned to it."""
    records, _ = _read_manifest(manifest)
    mine = {r["key"]: r["run_id"] for r in records}
    runs = _search_all(client, exp_id, f"tags.{TAG_SESSION} = '{settings.session}' and tags.{TAG_WORKER} = '{index}'")
    removed = 0
    for run in runs:
        key = run.data.tags.get(TAG_KEY)
        if key in mine and run.info.run_id != mine[key]:
            client.delete_run(run.info.run_id)
            removed += 1
    return removed


# --- the driver -----------------------------------------------------------------------------
@dataclass
class Report:
    settings: dict
    runs: int = 0
    metric_values: int = 0
    artifacts: int = 0
    trials: int = 0
    window_s: float = 0.0  # first run started -> last run ended
    runs_per_s: float = 0.0
    metrics_per_s: float = 0.0
    requests_per_s: float = 0.0  # tracking-server requests (Optuna's go to PostgreSQL directly)
    run_latency_p50_s: float = 0.0
    run_latency_p95_s: float = 0.0
    run_latency_max_s: float = 0.0
    duplicates_removed: int = 0
    cut_off_answers_resent: int = 0  # from the workers' logs (projects.core.http_retry.install_http_body_retry)
    per_worker: dict[str, int] = field(default_factory=dict)
    worker_errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    verify_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.worker_errors

    def text(self) -> str:
        s = self.settings
        lines = [
            f"load test: {s['workers']} workers x {s['seconds']:g} s against {s['tracking_uri']}"
            + (" + Optuna" if s.get("optuna_storage") else ""),
            f"  runs {self.runs} ({self.runs_per_s:.2f}/s), metric values {self.metric_values} "
            f"({self.metrics_per_s:.1f}/s), artifacts {self.artifacts}, trials {self.trials}, "
            f"~{self.requests_per_s:.1f} requests/s over {self.window_s:.1f} s",
            f"  run wall time p50 {self.run_latency_p50_s:.3f} s, p95 {self.run_latency_p95_s:.3f} s, "
            f"max {self.run_latency_max_s:.2f} s; duplicates removed {self.duplicates_removed}; "
            f"cut-off answers re-sent {self.cut_off_answers_resent}; runs per worker {self.per_worker}",
        ]
        if self.ok:
            lines.append(f"  verified: every run, metric step, artifact and trial arrived exactly once "
                         f"({self.verify_s:.1f} s to check)")
        for problem in (self.worker_errors + self.problems)[:20]:
            lines.append(f"  PROBLEM: {problem}")
        extra = len(self.worker_errors) + len(self.problems) - 20
        if extra > 0:
            lines.append(f"  ... and {extra} more problems")
        return "\n".join(lines)


class LoadTest:
    """Start K worker processes, let them run, then verify what arrived.

        lt = LoadTest(settings); lt.start()   # returns once every worker is logging
        ...                                    # e.g. restart the server here
        lt.wait(); report = lt.verify()
    """

    def __init__(self, settings: LoadSettings, env: dict[str, str] | None = None):
        _check_settings(settings)
        self.settings = settings
        if not settings.session:
            settings.session = uuid.uuid4().hex[:10]
        self._own_out = not settings.out_dir
        if self._own_out:
            settings.out_dir = tempfile.mkdtemp(prefix="loadtest-")
        Path(settings.out_dir).mkdir(parents=True, exist_ok=True)
        self.env = env
        self.procs: list[subprocess.Popen] = []
        self.go_at: float | None = None

    def start(self, ready_timeout: float = 180.0) -> None:
        from mlflow.tracking import MlflowClient

        s = self.settings
        _experiment_id(MlflowClient(tracking_uri=s.tracking_uri), s.experiment)
        if s.optuna_storage:
            _open_study(s, create=True)
        out = Path(s.out_dir)
        (out / "settings.json").write_text(s.to_json())
        env = dict(os.environ if self.env is None else self.env)
        env["MLFLOW_TRACKING_URI"] = s.tracking_uri
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        repo = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for i in range(s.workers):
            log = open(out / f"worker-{i}.log", "w")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "tools.loadtest", "--worker-index", str(i),
                 "--worker-settings", str(out / "settings.json")],
                cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        deadline = time.time() + ready_timeout
        while time.time() < deadline:
            ready = [i for i in range(s.workers) if (out / f"ready-{i}").exists()]
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                self.stop()
                tail = (out / f"worker-{self.procs.index(dead[0])}.log").read_text()[-1500:]
                raise RuntimeError(f"a load-test worker exited before starting:\n{tail}")
            if len(ready) == s.workers:
                break
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"load-test workers not ready after {ready_timeout:g} s")
        self.go_at = time.time()
        tmp = out / "go.tmp"
        tmp.write_text(repr(self.go_at + s.seconds))
        tmp.rename(out / "go")

    def wait(self, timeout: float = 600.0) -> list[int]:
        deadline = time.time() + timeout
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        return codes

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()

    def cleanup(self) -> None:
        if self._own_out:
            shutil.rmtree(self.settings.out_dir, ignore_errors=True)

    def verify(self) -> Report:
        return verify(self.settings, [p.returncode for p in self.procs])


def verify(settings: LoadSettings, returncodes: list[int | None] | None = None) -> Report:
    """Read everything back through the tracking API (and Optuna's storage) and compare."""
    from mlflow.entities import RunStatus, ViewType
    from mlflow.tracking import MlflowClient

    started = time.time()
    s = settings
    rep = Report(settings=dataclasses.asdict(s))
    out = Path(s.out_dir)
    records: list[dict] = []
    for i in range(s.workers):
        recs, done = _read_manifest(out / f"worker-{i}.jsonl")
        records.extend(recs)
        rep.per_worker[str(i)] = len(recs)
        code = returncodes[i] if returncodes else 0
        if done is None:
            rep.worker_errors.append(f"worker {i} did not finish (exit code {code})")
        else:
            rep.duplicates_removed += done.get("duplicates_removed", 0)
            rep.worker_errors.extend(done.get("errors", []))
        if code not in (0, None):
            rep.worker_errors.append(f"worker {i} exited with code {code}")
        log = out / f"worker-{i}.log"
        if log.is_file():
            from projects.core.http_retry import BODY_RETRY_WARNING

            rep.cut_off_answers_resent += log.read_text(errors="replace").count(BODY_RETRY_WARNING)

    client = MlflowClient(tracking_uri=s.tracking_uri)
    exp = client.get_experiment_by_name(s.experiment)
    runs = _search_all(client, exp.experiment_id, f"tags.{TAG_SESSION} = '{s.session}'") if exp else []
    by_key: dict[str, list] = defaultdict(list)
    for run in runs:
        by_key[run.data.tags.get(TAG_KEY, "")].append(run)
    expected = {r["key"]: r for r in records}
    dup_keys = [k for k, n in Counter(r["key"] for r in records).items() if n > 1]
    for key in dup_keys:
        rep.problems.append(f"{key}: recorded twice in the manifests")
    for key, found in by_key.items():
        if key not in expected:
            ids = ", ".join(r.info.run_id[:8] for r in found)
            status = ", ".join(r.info.status for r in found)
            rep.problems.append(f"{key}: {len(found)} run(s) on the server that no worker completed ({ids}; {status})")
    names = s.metric_names

    def check_run(key: str) -> list[str]:
        problems = []
        found = by_key.get(key, [])
        if len(found) != 1:
            return [f"{key}: {len(found)} active runs on the server (expected exactly 1)"]
        run = found[0]
        rid = run.info.run_id
        if rid != expected[key]["run_id"]:
            problems.append(f"{key}: server run {rid[:8]} is not the one the worker logged to")
        if run.info.status != RunStatus.to_string(RunStatus.FINISHED):
            problems.append(f"{key}: status {run.info.status}")
        want_params = expected_params(key, s.params)
        if run.data.params != want_params:
            problems.append(f"{key}: params differ ({len(run.data.params)} on the server, {len(want_params)} logged)")
        history = expected_metrics(key, s.steps, names)
        for name in names:
            got = client.get_metric_history(rid, name)
            steps = Counter(m.step for m in got)
            missing = [st for st in range(s.steps) if steps[st] == 0]
            doubled = sorted(st for st, n in steps.items() if n > 1)
            extra = sorted(st for st in steps if not 0 <= st < s.steps)
            if missing or doubled or extra:
                problems.append(f"{key}: {name} steps missing {missing[:5]}, duplicated {doubled[:5]}, unexpected {extra[:5]}")
                continue
            bad = [m.step for m in got if not math.isclose(m.value, history[name][m.step], rel_tol=1e-12, abs_tol=1e-15)]
            if bad:
                problems.append(f"{key}: {name} wrong value at steps {bad[:5]}")
        if s.artifact_bytes:
            listed = [a.path for a in client.list_artifacts(rid, ARTIFACT_DIR)]
            want = f"{ARTIFACT_DIR}/{artifact_name(key)}"
            if listed != [want]:
                problems.append(f"{key}: artifacts {listed} (expected [{want}])")
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    local = client.download_artifacts(rid, want, tmp)
                    if Path(local).read_bytes() != expected_artifact(key, s.artifact_bytes):
                        problems.append(f"{key}: artifact bytes differ")
        if s.optuna_storage and run.data.tags.get(TAG_TRIAL) != str(expected[key]["trial"]):
            problems.append(f"{key}: trial tag {run.data.tags.get(TAG_TRIAL)} != {expected[key]['trial']}")
        return problems

    with ThreadPoolExecutor(max_workers=4) as pool:
        for problems in pool.map(check_run, sorted(expected)):
            rep.problems.extend(problems)

    if s.optuna_storage:
        rep.problems.extend(_verify_trials(s, expected))

    # the duplicates a retried create_run made were deleted, not left active
    deleted = _search_all(client, exp.experiment_id, f"tags.{TAG_SESSION} = '{s.session}'",
                          view=ViewType.DELETED_ONLY) if exp else []
    if len(deleted) != rep.duplicates_removed:
        rep.problems.append(f"{len(deleted)} deleted runs but workers report {rep.duplicates_removed} duplicates removed")

    rep.runs = len(expected)
    rep.metric_values = rep.runs * s.steps * len(names)
    rep.artifacts = rep.runs if s.artifact_bytes else 0
    rep.trials = sum(1 for r in records if r.get("trial") is not None)
    if records:
        t0 = min(r["t0"] for r in records)
        t1 = max(r["t1"] for r in records)
        rep.window_s = max(t1 - t0, 1e-9)
        requests_per_run = 2 + (1 if s.params else 0) + s.steps + (1 if s.artifact_bytes else 0)
        rep.runs_per_s = rep.runs / rep.window_s
        rep.metrics_per_s = rep.metric_values / rep.window_s
        rep.requests_per_s = rep.runs * requests_per_run / rep.window_s
        lat = sorted(r["t1"] - r["t0"] for r in records)
        rep.run_latency_p50_s = statistics.median(lat)
        rep.run_latency_p95_s = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
        rep.run_latency_max_s = lat[-1]
    else:
        rep.problems.append("no run completed")
    rep.verify_s = time.time() - started
    return rep


def _verify_trials(s: LoadSettings, expected: dict[str, dict]) -> list[str]:
    import optuna

    problems = []
    study = _open_study(s, create=False)
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    wanted = {r["trial"]: key for key, r in expected.items()}
    keys_seen = Counter(t.user_attrs.get(ATTR_KEY) for t in trials)
    for number, key in sorted(wanted.items()):
        t = by_number.get(number)
        if t is None:
            problems.append(f"{key}: Optuna trial {number} missing")
            continue
        if t.state != optuna.trial.TrialState.COMPLETE:
            problems.append(f"{key}: trial {number} is {t.state.name}")
        if t.user_attrs.get(ATTR_KEY) != key or t.user_attrs.get(ATTR_RUN_ID) != expected[key]["run_id"]:
            problems.append(f"{key}: trial {number} records {t.user_attrs}")
        if keys_seen[key] != 1:
            problems.append(f"{key}: {keys_seen[key]} trials carry this key")
        if t.value is None or not math.isclose(t.value, final_loss(key, s.steps), rel_tol=1e-12):
            problems.append(f"{key}: trial {number} value {t.value}")
    for t in trials:
        if t.number not in wanted:
            problems.append(f"Optuna trial {t.number} ({t.state.name}) belongs to no completed run")
    return problems


def run_load(settings: LoadSettings, during=None, timeout: float = 600.0) -> Report:
    """Start, optionally call `during(loadtest)` while the workers log, wait, verify."""
    lt = LoadTest(settings)
    try:
        lt.start()
        if during is not None:
            during(lt)
        lt.wait(timeout)
        report = lt.verify()
    finally:
        lt.stop()
    if report.ok:
        lt.cleanup()
    else:
        report.problems.append(f"worker manifests and logs kept in {settings.out_dir}")
    return report


# --- CLI --------------------------------------------------------------------------------------
def _check_server(uri: str) -> None:
    """Fail in seconds, not after MLflow's ~4 minutes of retries, when nothing answers."""
    from projects.core.errors import InputError

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as resp:
            if resp.status != 200:
                raise InputError("--tracking-uri", f"{uri}/health answered {resp.status}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError("--tracking-uri", f"no MLflow server answers at {uri} ({reason})") from None


def build_parser() -> argparse.ArgumentParser:
    from projects.core import cli

    d = LoadSettings(tracking_uri="")
    p = argparse.ArgumentParser(prog="loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""),
                   help="the server to load (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--workers", type=cli.positive_int, default=d.workers)
    p.add_argument("--seconds", type=float, default=d.seconds)
    p.add_argument("--steps", type=cli.positive_int, default=d.steps, help="metric steps per run")
    p.add_argument("--metrics", type=cli.positive_int, default=d.metrics_per_step, help="metrics per step")
    p.add_argument("--params", type=cli.integer, default=d.params)
    p.add_argument("--artifact-bytes", type=cli.integer, default=d.artifact_bytes)
    p.add_argument("--optuna-storage", default="", help="RDB URL: one Optuna trial per run (e.g. postgresql://...)")
    p.add_argument("--experiment", default=d.experiment)
    p.add_argument("--step-sleep", type=float, default=0.0, help="simulated training seconds per step")
    p.add_argument("--json", default="", help="also write the report as JSON to this file")
    p.add_argument("--worker-index", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--worker-settings", default="", help=argparse.SUPPRESS)
    return p


def _worker_main(args: argparse.Namespace) -> int:
    settings = LoadSettings.from_json(Path(args.worker_settings).read_text())
    out = Path(settings.out_dir)
    ctx = prepare_worker(settings)
    (out / f"ready-{args.worker_index}").touch()
    while not (out / "go").exists():
        time.sleep(0.02)
    deadline = float((out / "go").read_text())
    summary = run_worker(settings, args.worker_index, deadline, ctx)
    return 1 if summary.get("traceback") else 0


def main(argv: list[str] | None = None) -> int:
    from projects.core import cli

    args = build_parser().parse_args(argv)
    if args.worker_settings:
        return _worker_main(args)

    @cli.entry_point
    def _driver(_argv):
        settings = LoadSettings(tracking_uri=args.tracking_uri, workers=args.workers, seconds=args.seconds,
                                steps=args.steps, metrics_per_step=args.metrics, params=args.params,
                                artifact_bytes=args.artifact_bytes, optuna_storage=args.optuna_storage,
                                experiment=args.experiment, step_sleep=args.step_sleep)
        _check_settings(settings)
        _check_server(settings.tracking_uri)
        report = run_load(settings)
        print(report.text())
        if args.json:
            Path(args.json).write_text(json.dumps(dataclasses.asdict(report), indent=2))
        return 0 if report.ok else 1

    return _driver(None)


if __name__ == "__main__":
    sys.exit(main())
