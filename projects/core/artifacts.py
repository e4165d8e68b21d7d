"""What a run logs besides metrics and params: the registry candidate model, the data sets of
its Inputs tab, and tables the MLflow UI renders as tables (not files to download)."""
from __future__ import annotations

import mlflow
import pandas as pd

from projects.core.tracking import MODEL_ARTIFACT, TAG_CANDIDATE


def log_table(frame: pd.DataFrame, artifact_file: str, run_id: str | None = None) -> None:
    """`frame` as an MLflow table (artifact_file ends in .json) on the active run or `run_id`.
    MLflow's table view keeps numbers as numbers; flags, times and mixed columns go as text
    (otherwise JSON serialisation fails or NaN-holding object columns render empty)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == bool or out[col].dtype == object or "datetime" in str(out[col].dtype):
            out[col] = out[col].astype(str)
    if run_id is None:
        mlflow.log_table(out, artifact_file)
    else:
        mlflow.MlflowClient().log_table(run_id, out, artifact_file)


def log_candidate_model(wrapped, example) -> None:
    """Log a registry candidate: the MLflow model (pt2, no pickled code) of `wrapped` (a
    module returning probabilities), with its signature and a batch-2 `example` (keeps the
    batch dimension dynamic in torch.export), and tag the run as a candidate.

    validate_serving_input=False: by default MLflow reloads the model it just saved and
    predicts the example, ~40% of log_model's time here (benchmarks/tracking_overhead.py);
    the registry's smoke gate (registry/gates/smoke.py) makes that check before any promotion.
    """
    import mlflow
    import torch
    from mlflow.models import infer_signature

    wrapped = wrapped.eval()
    with torch.inference_mode():
        output = wrapped(torch.from_numpy(example)).numpy()
    mlflow.pytorch.log_model(wrapped, name=MODEL_ARTIFACT, input_example=example,
                             signature=infer_signature(example, output),
                             pip_requirements=model_pip_requirements(), validate_serving_input=False)
    mlflow.set_tag(TAG_CANDIDATE, "true")


# PyTorch's wheel indexes (one per build: cpu, cu128, ...); scripts/torch_build.sh installs from them.
TORCH_INDEX_BASE = "https://download.pytorch.org/whl"


def model_pip_requirements() -> list[str]:
    """Explicit requirements for logged models (inferring them fails offline and costs seconds),
    each installable by a plain pip: torch's local build label (+cpu) is served only by
    PyTorch's own index, so the pin drops it and names that index (`torch==2.13.0` matches
    2.13.0+cpu there, and pip prefers it over PyPI's CUDA build of the same version)."""
    import importlib.metadata as md

    reqs = []
    for pkg in ("torch", "mlflow", "numpy"):
        try:
            version, _, build = md.version(pkg).partition("+")
        except md.PackageNotFoundError:
            continue
        if build:
            reqs.insert(0, f"--extra-index-url {TORCH_INDEX_BASE}/{build}")
        reqs.append(f"{pkg}=={version}")
    return reqs


def dataset_from_table(table, source: str, name: str, digest: str):
    """An mlflow.data dataset for the runs' Inputs tab (the split table of one context)."""
    import warnings

    with warnings.catch_warnings():
        # A local path resolves to two equivalent source types; MLflow warns on each call.
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.data.from_pandas(table, source=source, name=name, digest=digest)
