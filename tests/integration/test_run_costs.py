"""The costs every study's run logs, written once (projects/core/run_costs.py): on a tiny conv
net, the counts, sizes, CPU timings, the timed count, the input shape and the weights file."""
from __future__ import annotations

import mlflow
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from projects.core import efficiency, run_costs, tracking


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))


def test_log_costs_logs_sizes_timings_shape_and_weights(tmp_path):
    model = _net()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 3, 8, 8)).sum().backward()
    optimizer.step()  # Adam's two moments now exist: the size with them is about 3x the weights
    with mlflow.start_run() as run:
        run_costs.log_costs(model, _net, torch.rand(5, 3, 16, 16), 2, tmp_path, onnx=False, optimizer=optimizer)
    logged = MlflowClient().get_run(run.info.run_id).data
    assert logged.metrics[tracking.M_PARAMS] == efficiency.count_params(model) == 3 * 4 * 9 + 4 + 4 + 1
    assert logged.metrics[tracking.M_SIZE_WITH_OPT_MB] > 2 * logged.metrics[tracking.M_SIZE_MB] > 0
    assert logged.metrics["cpu_total_s"] > 0 and "cpu_total_s_onnx" not in logged.metrics
    assert logged.params[tracking.P_CPU_PREDICT_N] == "5" and logged.params["image_shape"] == "3x16x16"
    weights = [a.path for a in MlflowClient().list_artifacts(run.info.run_id, tracking.WEIGHTS_ARTIFACT_DIR)]
    assert weights == [f"{tracking.WEIGHTS_ARTIFACT_DIR}/model_weights.pt"]


def test_without_an_optimizer_no_size_with_optimizer_is_logged(tmp_path):
    with mlflow.start_run() as run:
        run_costs.log_costs(_net(), _net, torch.rand(1, 3, 8, 8), 1, tmp_path, onnx=False)
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    assert tracking.M_SIZE_MB in metrics and tracking.M_SIZE_WITH_OPT_MB not in metrics
