"""The champion's ONNX model, logged beside its PyTorch one when promotion moves `champion`.

The network inside the version's image model (projects.core.serving) is exported with
projects.core.onnx_runtime.export_onnx, run by ONNX Runtime on the study's holdout inputs
and compared with eager PyTorch on the same inputs; only a model within TOLERANCE is logged
(mlflow.onnx, a logged model of the version's run) and the version tagged with its URI
(`onnx_model_uri`, what `-e predict -P runtime=onnx` loads) and the measured difference.
The pre- and postprocessing stay the image model's: only the network changes runtime.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from projects.core import serving
from projects.core.onnx_runtime import export_onnx, make_session, run_session
from projects.core.study import get_study

CHAMPION = "champion"
TOLERANCE = 1e-4  # max |ONNX - eager| over the holdout's probabilities
ONNX_TAG = "onnx_model_uri"
DIFF_TAG = "onnx_max_abs_diff"
ONNX_NAME = "model_onnx"
MAX_INPUTS = 64  # holdout inputs compared (the whole holdout of the embedded data)
BATCH = 16


def after_promotion(client: MlflowClient, name: str, decisions, out=None) -> None:
    """The hook promote calls: export the new champion when `champion` moved to it."""
    import sys

    for d in decisions:
        if d.alias == CHAMPION and d.after and d.after != d.before and d.after.isdigit():
            try:
                line = export_champion(client, name, d.after)
            except Exception as exc:  # noqa: BLE001 - the alias has moved; a failed export is reported
                line = f"v{d.after}: ONNX export failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            print(f"[export] {name} {line}", file=out or sys.stdout, flush=True)


def export_champion(client: MlflowClient, name: str, version: str) -> str:
    """Export, check and log version `version`'s ONNX model; returns one line saying what
    happened (a refused or impossible export is reported, never raised: the alias stays)."""
    mv = client.get_model_version(name, version)
    if mv.tags.get(ONNX_TAG):
        return f"v{version} already has its ONNX model ({mv.tags[ONNX_TAG]})"
    uri = f"models:/{name}/{version}"
    if serving.PREPARED_INPUT not in (mlflow.models.get_model_info(uri).metadata or {}):  # MLmodel only: cheap
        return f"v{version}: no ONNX export (the model predates image models)"
    model = mlflow.pyfunc.load_model(uri, suppress_warnings=True)
    inner = serving.image_model(model)
    if inner is None or getattr(inner, "module", None) is None:
        return f"v{version}: no ONNX export (the model predates image models)"
    run = client.get_run(mv.run_id)
    study = get_study(run.data.tags["study"])
    holdout = study.holdout(study.config_cls.from_params(run.data.params))
    if holdout is None or not len(holdout.inputs):
        return f"v{version}: no ONNX export (the study's data has no holdout to check it on)"
    inputs = np.asarray(holdout.inputs[:MAX_INPUTS], np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(inner.module, torch.from_numpy(inputs[:2]), Path(tmp) / "model.onnx")
        diff = max_difference(inner.module, make_session(path), inputs)
        if not diff <= TOLERANCE:
            return f"v{version}: ONNX export refused: outputs differ from eager by {diff:.3g} > {TOLERANCE:g}"
        import onnx

        # Created in the run's experiment: with no active run MLflow would put it in Default,
        # whose artifact root can be relative to the working directory.
        logged = mlflow.initialize_logged_model(name=ONNX_NAME, source_run_id=mv.run_id,
                                                experiment_id=run.info.experiment_id, model_type="onnx")
        info = mlflow.models.Model.log(
            None, name=ONNX_NAME, flavor=mlflow.onnx, onnx_model=onnx.load(str(path)), run_id=mv.run_id,
            model_id=logged.model_id,
            metadata={"intended_use": serving.INTENDED_USE, "max_abs_diff_vs_eager": diff,
                      "checked_on": f"{len(inputs)} holdout inputs", "pytorch_version": f"models:/{name}/{version}"},
            pip_requirements=["onnx", "onnxruntime"])
    client.set_model_version_tag(name, version, ONNX_TAG, info.model_uri)
    client.set_model_version_tag(name, version, DIFF_TAG, f"{diff:.3g}")
    return f"v{version}: ONNX model logged ({info.model_uri}), max |ONNX - eager| {diff:.3g} on {len(inputs)} holdout inputs"


def max_difference(module: torch.nn.Module, session, inputs: np.ndarray) -> float:
    worst = 0.0
    with torch.inference_mode():
        for i in range(0, len(inputs), BATCH):
            batch = inputs[i:i + BATCH]
            eager = module(torch.from_numpy(batch)).numpy()
            worst = max(worst, float(np.abs(run_session(session, batch) - eager).max()))
    return worst
