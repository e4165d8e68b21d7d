"""What a trained model costs, logged the same way by every study's run: parameters (PyTorch
and Keras counting), weights size (and with the optimizer state, when the study passes the
optimizer it trained with), the CPU timings of the papers' protocol (eager and ONNX Runtime),
how many inputs were timed, and the input shape the logged model takes (`image_shape`, which
the registry's holdout check reads)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import torch
from torch import nn

from projects.core import efficiency, timing, tracking


def log_costs(model: nn.Module, build: Callable[[], nn.Module], timed_inputs: torch.Tensor, batch_size: int,
              folder: Path, *, onnx: bool = True, optimizer: torch.optim.Optimizer | None = None) -> None:
    """`build` makes an untrained model of the same architecture (the timing loads the saved
    weights into it: the load is part of the paper's protocol); `timed_inputs` (N, C, H, W) are
    what the CPU timing predicts. The weights are logged under tracking.WEIGHTS_ARTIFACT_DIR."""
    model.eval()
    weights = folder / "model_weights.pt"
    metrics = {tracking.M_PARAMS: efficiency.count_params(model),
               tracking.M_PARAMS_KERAS: efficiency.count_params_keras(model),
               tracking.M_SIZE_MB: efficiency.save_weights(model, weights) / 1e6}
    if optimizer is not None:
        with_opt = efficiency.save_weights_with_optimizer(model, optimizer, folder / "with_optimizer.pt")
        metrics[tracking.M_SIZE_WITH_OPT_MB] = with_opt / 1e6
    mlflow.log_artifact(str(weights), tracking.WEIGHTS_ARTIFACT_DIR)
    metrics |= timing.time_cpu_runtimes(build, weights, timed_inputs, batch_size, onnx=onnx)
    tracking.log_metrics_finite(metrics)
    mlflow.log_param(tracking.P_CPU_PREDICT_N, len(timed_inputs))
    mlflow.log_param("image_shape", "x".join(map(str, timed_inputs.shape[1:])))
