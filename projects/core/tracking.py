"""Run conventions: the one place that names experiments, tags, metrics and models.

Search, registry and dashboards find runs by these names (through MLflow's API, never by
importing study code), so every name is defined here once and imported everywhere else.
"""
from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from projects.core import http_retry, runtime
from projects.core.errors import InputError

# --- experiments -----------------------------------------------------------------------
# The platform's own experiments; each study's runs go to the experiment named after the
# study (projects.core.study.Study.experiment), and its registered models are
# `<study>-<task>` (Study.model_name).
EXPERIMENTS = {
    "evaluation": "registry-evaluations",  # promotion: every candidate scored on the study's holdout
    "audit": "registry-audit",  # one run per alias move (registry/audit.py)
    "search": "search",
    "dashboard": "dashboards",
    "benchmark": "benchmarks",
    "main": "main",
}


# --- tags ---------------------------------------------------------------------------------
TAG_STUDY = "study"
TAG_TASK = "task"
TAG_ARCH = "arch"
TAG_SPLIT = "split"
TAG_AUGMENT = "augment"
TAG_SEED = "seed"
TAG_GIT_COMMIT = "git_commit"
TAG_DATASET_DIGEST = "dataset_digest"
TAG_RUN_KIND = "run_kind"  # one of the RUN_KIND_* values below
TAG_HOLDOUT_DIGEST = "holdout_digest"  # the held-out units the run never saw ("none": it saw everything)
TAG_DEVICE = "device"  # where the run trained (cpu, cuda:0, ...)
TAG_PRECISION = "precision"  # fp32 | bf16 | fp16 (mixed precision)
RUN_KIND_SINGLE = "single"
RUN_KIND_GRID_PARENT = "grid_parent"
RUN_KIND_GRID_CHILD = "grid_child"
RUN_KIND_SEARCH_PARENT = "search_parent"
RUN_KIND_TRIAL = "trial"
TRAINED_RUN_KINDS = (RUN_KIND_SINGLE, RUN_KIND_GRID_CHILD, RUN_KIND_TRIAL)  # runs that hold a model
PARENT_RUN_KINDS = (RUN_KIND_GRID_PARENT, RUN_KIND_SEARCH_PARENT)
TAG_PARENT_RUN = "mlflow.parentRunId"  # MLflow's own: nests children under the parent in the UI
# Search (the projects.search package writes them; dashboards and registry read them)
TAG_SEARCH_NAME = "search_name"
TAG_TRIAL_NUMBER = "trial_number"
TAG_TRIAL_STATE = "trial_state"  # RUNNING | COMPLETE | PRUNED | FAIL
TAG_SEARCH_BEST = "search_best"  # "true" on the best child (single objective)
TAG_PARETO = "pareto_optimal"  # "true"/"false" on every complete child (multi-objective)
TAG_CANDIDATE = "registry_candidate"  # "true" when a full MLflow model was logged
TAG_TORCH_THREADS = "torch_threads"
TAG_CPU_MODEL = "cpu_model"
REQUIRED_TAGS = (TAG_STUDY, TAG_TASK, TAG_ARCH, TAG_SPLIT, TAG_AUGMENT, TAG_SEED,
                 TAG_GIT_COMMIT, TAG_DATASET_DIGEST)

# --- metrics --------------------------------------------------------------------------------
# Efficiency, logged by every trained model (see projects/core/efficiency.py).
M_PARAMS = "params_count"  # trainable parameters (PyTorch)
M_PARAMS_KERAS = "params_count_keras"  # Keras total: + batch-norm moving statistics
M_SIZE_MB = "model_size_mb"  # bytes of the saved weights file / 1e6
M_SIZE_WITH_OPT_MB = "model_size_mb_with_optimizer"  # weights + Adam state (the Keras file)
M_CPU_LOAD = "cpu_load_s"
M_CPU_PREDICT = "cpu_predict_s"
M_CPU_TOTAL = "cpu_total_s"
M_LATENCY_P50 = "cpu_latency_ms_p50"
EFFICIENCY_METRICS = (M_PARAMS, M_SIZE_MB, M_CPU_LOAD, M_CPU_PREDICT, M_CPU_TOTAL, M_LATENCY_P50)
P_CPU_PREDICT_N = "cpu_predict_images"  # param: how many images the CPU timing predicted (N)

# Training throughput (projects/core/training.py): images per second of optimisation steps, and
# the median step time, on the run's device and precision (tags `device`, `precision`).
M_TRAIN_IMAGES_PER_S = "train_images_per_s"
M_TRAIN_STEP_MS_P50 = "train_step_ms_p50"

# Per-epoch curves
M_TRAIN_LOSS = "train_loss"
M_VAL_LOSS = "val_loss"

MODEL_ARTIFACT = "model"  # name of the logged MLflow model in a run
WEIGHTS_ARTIFACT_DIR = "weights"  # the plain state_dict file whose size is model_size_mb


def test_metric(name: str) -> str:
    return f"test_{name}"


def ci_low(metric: str) -> str:
    """The lower end of a held-out metric's 95% bootstrap interval: test_accuracy_ci95_low."""
    return f"{metric}_ci95_low"


def ci_high(metric: str) -> str:
    return f"{metric}_ci95_high"


M_TEST_UNITS = "test_n_units"  # independent units (patients, source images) the test numbers rest on


def val_metric(name: str) -> str:
    return f"val_{name}"


def baseline_metric(name: str) -> str:
    return f"baseline_{name}"


# --- links into the MLflow UI --------------------------------------------------------------
# MLflow 3.17's UI opens an experiment on its GenAI overview unless the address asks for the
# model-training view (`workflowType=machine_learning`, read from the query string; the
# `mlflow.experimentKind` experiment tag did not change it). Every link the platform prints
# or writes is made here, with that parameter.
DEFAULT_UI_URL = "http://127.0.0.1:5000"  # `make ui`
ML_VIEW = "workflowType=machine_learning"


IN_UI = ""  # as ui_url: a link relative to the page it is on (descriptions shown inside the UI)


def _ui(ui_url: str) -> str:
    return f"{ui_url.rstrip('/')}/#" if ui_url else "#"


def ui_experiment_url(experiment_id: str, ui_url: str = DEFAULT_UI_URL) -> str:
    """The experiment's runs table in the model-training view."""
    return f"{_ui(ui_url)}/experiments/{experiment_id}/runs?{ML_VIEW}"


def ui_run_url(experiment_id: str, run_id: str, ui_url: str = DEFAULT_UI_URL) -> str:
    return f"{_ui(ui_url)}/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW}"


def ui_model_url(name: str, ui_url: str = DEFAULT_UI_URL, version: str | None = None) -> str:
    base = f"{_ui(ui_url)}/models/{name}"
    return f"{base}/versions/{version}" if version else base


# --- store --------------------------------------------------------------------------------
def setup_tracking() -> str:
    """Point MLflow at the configured store (env var or the embedded default)."""
    uri = runtime.tracking_uri()
    mlflow.set_tracking_uri(uri)
    http_retry.install_http_body_retry()
    # The registry follows the tracking URI unless the user set MLFLOW_REGISTRY_URI. Calling
    # mlflow.set_registry_uri here would export that variable and pin the registry to the
    # first store for the rest of the process.
    return uri


def ensure_experiment(name: str) -> str:
    """Experiment id, creating it with an artifact location that does not depend on cwd."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if runtime.tracking_uri().startswith(("sqlite:", "postgresql", "mysql", "mssql")):
        # A database store keeps no artifacts: without a location MLflow would write them
        # under the current directory. (A tracking server decides for itself.)
        location = (runtime.artifact_root() / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another worker created it between our lookup and create.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=runtime.REPO_ROOT,
                             capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip()
        if commit:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=runtime.REPO_ROOT, capture_output=True, text=True,
                                   timeout=5).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def standard_tags(*, study: str, task: str, arch: str, split: str, augment: Any, seed: int,
                  dataset_digest: str, run_kind: str) -> dict[str, str]:
    tags = {
        TAG_STUDY: study,
        TAG_TASK: task,
        TAG_ARCH: arch,
        TAG_SPLIT: split,
        TAG_AUGMENT: str(augment).lower(),
        TAG_SEED: str(seed),
        TAG_GIT_COMMIT: git_commit(),
        TAG_DATASET_DIGEST: dataset_digest,
        TAG_RUN_KIND: run_kind,
    }
    threads = runtime.thread_settings()
    tags[TAG_TORCH_THREADS] = threads["torch_threads"]
    tags[TAG_CPU_MODEL] = threads["cpu_model"]
    tags["omp_wait_policy"] = threads["omp_wait_policy"]
    return tags


def log_metrics_finite(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log metrics, refusing NaN/inf: a NaN Jaccard silently wins or loses comparisons."""
    clean = {}
    for key, value in metrics.items():
        value = float(value)
        if not math.isfinite(value):
            print(f"warning: metric {key} is {value}; not logged", file=sys.stderr)
            continue
        clean[key] = value
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_intervals(scores, metrics: tuple[str, ...] | None = None) -> dict[str, float]:
    """The 95% bootstrap interval of each held-out metric (resampled by independent unit:
    projects.core.uncertainty) and the number of units: test_<m>_ci95_low/_high, test_n_units."""
    values = {M_TEST_UNITS: float(scores.n_units)}
    for name, (low, high) in scores.intervals().items():
        if metrics is None or name in metrics:
            values[ci_low(test_metric(name))], values[ci_high(test_metric(name))] = low, high
    log_metrics_finite(values)
    return values


def log_config(config: Any, prefix: str = "") -> None:
    """Log a config's settings as params, by their flat names (the CLI and MLproject names):
    everything a run decided is written down.

    Keys the run already has are left alone: `mlflow run` logs the entry point's -P values
    first (as typed strings), and MLflow refuses to change a param.
    """
    flat = config.flat() if hasattr(config, "flat") else vars(config)
    params = {}
    for key, value in flat.items():
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        elif value is None:
            value = ""
        elif not isinstance(value, (int, float, str)):
            value = str(value)
        params[f"{prefix}.{key}" if prefix else key] = value
    log_params_once(params)


def log_params_once(params: Mapping[str, Any]) -> None:
    """Log the params the active run does not have yet: `mlflow run` logs the entry point's -P
    values first (as given), and MLflow refuses to change a param."""
    existing = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})


# --- run lifecycle ----------------------------------------------------------------------------
@contextlib.contextmanager
def study_run(experiment: str, run_name: str | None = None, nested: bool = False,
              tags: Mapping[str, str] | None = None, adopt: bool = True,
              system_metrics: bool = False) -> Iterator[mlflow.ActiveRun]:
    """Start (or adopt) a run; on bad input or a crash end it FAILED, never left RUNNING.

    A run created by `mlflow run` (MLFLOW_RUN_ID in the environment) is adopted, so the
    launcher's run and ours are the same; otherwise the run goes to the study's experiment.
    system_metrics: sample CPU and memory while it runs (training runs).
    """
    setup_tracking()
    if not nested:
        _close_stale_quietly(experiment)
    adopt = adopt and not nested and os.environ.get("MLFLOW_RUN_ID") and mlflow.active_run() is None
    launcher = None
    if adopt:
        run = mlflow.start_run(run_id=os.environ["MLFLOW_RUN_ID"], tags=dict(tags or {}),
                               log_system_metrics=system_metrics or None)
        # MLflow forgets MLFLOW_RUN_ID once a start_run has consumed it; adopted by id, it stays,
        # and the next nested start_run resumed the launcher's run instead of starting a child
        # (under `mlflow run`, a grid's first cell and the benchmark's first section were logged
        # into their parent). Hidden while ours is active; restored after, for what reads the
        # launcher's id once the run has ended (cli._tell_launcher).
        launcher = os.environ.pop("MLFLOW_RUN_ID")
        if run_name:
            mlflow.set_tag("mlflow.runName", run_name)
    else:
        exp_id = ensure_experiment(experiment)
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, nested=nested,
                               tags=dict(tags or {}), log_system_metrics=system_metrics or None)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException as exc:
        if isinstance(exc, (InputError, OSError)):
            with contextlib.suppress(Exception):  # the store may be what failed
                mlflow.set_tag("error", str(exc)[:5000])
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        mlflow.end_run()
    finally:
        if launcher is not None:
            os.environ["MLFLOW_RUN_ID"] = launcher


def close_stale_runs(experiment: str, older_than_s: float = 0.0, filter_string: str = "") -> list[str]:
    """Mark RUNNING runs whose process is gone as FAILED (a killed job must not look alive).

    A run is stale when its `pid`/`host` tags name a process on this host that no longer
    exists. Runs from other hosts are left alone unless older_than_s says otherwise.
    """
    import socket
    import time

    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = "attributes.status = 'RUNNING'" + (f" and {filter_string}" if filter_string else "")
    running = client.search_runs([exp.experiment_id], query, max_results=1000)
    stale: list = []
    for run in running:
        tags = run.data.tags
        same_host = tags.get("host") == socket.gethostname()
        pid = int(tags.get("pid", "0") or 0)
        alive = same_host and pid > 0 and pid_alive(pid)
        age = time.time() - run.info.start_time / 1000
        if (same_host and pid and not alive) or (not same_host and older_than_s and age > older_than_s):
            stale.append(run)
    # Children without a pid of their own (grid cells) died with their parent.
    ids = {run.info.run_id for run in stale}
    grew = True
    while grew:
        grew = False
        for run in running:
            if (run.info.run_id not in ids and "pid" not in run.data.tags
                    and run.data.tags.get("mlflow.parentRunId") in ids):
                stale.append(run)
                ids.add(run.info.run_id)
                grew = True
    closed = []
    for run in stale:
        client.set_tag(run.info.run_id, "closed_as_stale", "true")
        client.set_terminated(run.info.run_id, status="FAILED")
        closed.append(run.info.run_id)
    return closed


def _close_stale_quietly(experiment: str) -> None:
    """What every new top-level run does first: a killed job's run must not look alive."""
    try:
        closed = close_stale_runs(experiment)
    except Exception as exc:  # never block a new run over the bookkeeping of an old one
        print(f"warning: could not check for stale runs in {experiment!r}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return
    if closed:
        print(f"closed {len(closed)} stale run(s) of dead processes as FAILED in {experiment!r}: "
              + ", ".join(r[:8] for r in closed), file=sys.stderr)


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie or a reused pid: compare the process start with nothing better available.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists() and ") Z " in stat.read_text():
        return False
    return True


def process_tags() -> dict[str, str]:
    import socket

    return {"host": socket.gethostname(), "pid": str(os.getpid())}
