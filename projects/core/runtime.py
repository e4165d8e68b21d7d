"""Process-wide defaults every entry point shares: where the embedded store lives, the
environment variables that keep CPU work fast and offline, and thread settings.

Imported (via `projects/__init__.py`) before torch does any work, so the variables take
effect for OpenMP and the hub clients. Every default is overridable by setting the variable.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Why each default:
# - OMP_WAIT_POLICY=PASSIVE: OpenMP's busy-waiting made a 2-thread resnet101 forward pass
#   5.2 s instead of 0.13 s whenever another process held a core (search workers, pytest).
# - HF_HUB_OFFLINE=1: every attempt at pretrained weights otherwise stalls ~45 s offline.
# - MLFLOW_DISABLE_TELEMETRY: no network calls from a training job.
ENV_DEFAULTS = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "HF_HUB_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "TORCHVISION_DISABLE_VIDEO_API_WARNING": "1",
    "GIT_PYTHON_REFRESH": "quiet",
    # pip-requirement inference fails offline and costs seconds per logged model; we pass
    # pip_requirements explicitly, and this keeps a forgotten call from stalling.
    "MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT": "5",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # Figures are only ever written to files (no display on a training machine).
    "MPLBACKEND": "Agg",
    # System metrics (CPU, memory) of training runs, when a run asks for them: a sample every
    # 2 s costs ~11 ms of CPU, 0.3% of a 2-thread training run (benchmarks/system_metrics.py,
    # RESULTS.md), and gives a run of a few seconds its curves too.
    "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "2",
}


def store_dir() -> Path:
    """Folder of the embedded store: `MEDIMG_STORE`, else the repository root.

    The repository root matches MLflow's own default (`sqlite:///mlflow.db` + `./mlruns`)
    when commands run from the checkout, so `mlflow ui` there shows the same runs.
    """
    return Path(os.environ.get("MEDIMG_STORE", REPO_ROOT)).resolve()


def default_tracking_uri() -> str:
    return f"sqlite:///{store_dir() / 'mlflow.db'}"


def artifact_root() -> Path:
    return store_dir() / "mlruns"


def cache_dir() -> Path:
    """Generated embedded data and preprocessed arrays (safe to delete)."""
    return Path(os.environ.get("MEDIMG_CACHE", store_dir() / ".cache")).resolve()


def apply_env_defaults() -> None:
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_TRACKING_URI", default_tracking_uri())


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def thread_settings() -> dict[str, str]:
    """What decides CPU timings; logged beside every timing."""
    import torch

    return {
        "torch_threads": str(torch.get_num_threads()),
        "torch_interop_threads": str(torch.get_num_interop_threads()),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "cpu_count": str(os.cpu_count()),
        "cpu_model": cpu_model(),
    }
