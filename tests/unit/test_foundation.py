"""The install, the torchvision shim, runtime defaults, efficiency helpers, run conventions."""
from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from torch import nn

from projects.core import efficiency, runtime, timing, tracking
from projects.core.errors import InputError


def test_cpu_torch_and_no_cuda_packages():
    assert torch.__version__.startswith("2.13.0")
    assert not torch.cuda.is_available()
    nvidia = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia-")]
    assert nvidia == []


def test_libraries_import_on_cpu_torch():
    # A fresh interpreter: the shim must work from `import projects` alone.
    code = ("import projects, torchvision, timm, segmentation_models_pytorch, mlflow, optuna;"
            "m = timm.create_model('resnet18', pretrained=False, num_classes=3, in_chans=1).eval();"
            "import torch; print(m(torch.zeros(1, 1, 32, 32)).shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch.Size([1, 3])" in out.stdout


def test_torchvision_import_fails_without_the_shim():
    # Guards the reason the shim exists; if a CPU torchvision ever lands, this tells us.
    out = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": ""})
    if out.returncode == 0:
        pytest.skip("this torchvision imports on its own; the shim is inactive")
    assert "torchvision::nms" in out.stderr


def test_shim_nms_matches_greedy_reference():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 9, 9]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    keep = torch.ops.torchvision.nms(boxes, scores, 0.5)
    # box 3 (0.95) suppresses 0 (IoU 0.81) and 1 (IoU 0.53); box 2 is disjoint
    assert keep.tolist() == [3, 2]


def test_runtime_defaults(monkeypatch):
    for key in ("OMP_WAIT_POLICY", "HF_HUB_OFFLINE", "MLFLOW_DISABLE_TELEMETRY"):
        assert os.environ.get(key), key
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("MEDIMG_STORE", "/tmp/somewhere")
    assert runtime.tracking_uri() == "sqlite:////tmp/somewhere/mlflow.db"
    assert runtime.artifact_root() == Path("/tmp/somewhere/mlruns")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert runtime.tracking_uri() == "http://127.0.0.1:5999"


def test_default_store_does_not_depend_on_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDIMG_STORE")
    monkeypatch.chdir(tmp_path)
    assert runtime.default_tracking_uri() == f"sqlite:///{runtime.REPO_ROOT / 'mlflow.db'}"


def test_count_params_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    # conv 3*8*3*3 + 8 = 224; BN gamma+beta 16; linear 8*2 + 2 = 18
    assert efficiency.count_params(model) == 224 + 16 + 18
    # Keras adds the two moving statistics per BN channel
    assert efficiency.count_params_keras(model) == 224 + 16 + 18 + 16
    model[0].weight.requires_grad_(False)
    assert efficiency.count_params(model) == 8 + 16 + 18


def test_saved_weights_size_and_load_roundtrip(tmp_path):
    model = nn.Linear(100, 10)
    size = efficiency.save_weights(model, tmp_path / "w.pt")
    assert size == (tmp_path / "w.pt").stat().st_size
    assert size > 1010 * 4  # at least the float32 payload
    fresh = efficiency.load_weights(nn.Linear(100, 10), tmp_path / "w.pt")
    assert torch.equal(fresh.weight, model.weight)


def test_weights_load_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": object()}, path)  # not a tensor-only file
    with pytest.raises(Exception):
        efficiency.load_weights(nn.Linear(1, 1), path)


def test_cpu_timing_protocol(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    efficiency.save_weights(model, tmp_path / "w.pt")
    built = []

    def build():
        built.append(1)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())

    measured = timing.time_cpu_inference(build, tmp_path / "w.pt", torch.rand(5, 1, 16, 16), batch_size=2)
    assert built == [1]  # the model is loaded from disk once, inside the timed span
    assert measured.n_images == 5
    assert 0 < measured.cpu_load_s <= measured.cpu_total_s
    assert measured.cpu_total_s == pytest.approx(measured.cpu_load_s + measured.cpu_predict_s)
    assert measured.cpu_latency_ms_p50 > 0 and measured.cpu_latency_ms_p95 >= measured.cpu_latency_ms_p50


def test_run_conventions_log_tags_and_metrics():
    with tracking.study_run("conventions", "t", tags=tracking.process_tags()) as run:
        mlflow.set_tags(tracking.standard_tags(study="pathology", task="tumor", arch="elunet", split="x",
                                               augment=True, seed=3, dataset_digest="abc", run_kind="single"))
        tracking.log_metrics_finite({tracking.M_PARAMS: 10, tracking.M_SIZE_MB: 0.5, "bad": float("nan")})
    got = mlflow.get_run(run.info.run_id)
    for tag in tracking.REQUIRED_TAGS + (tracking.TAG_TORCH_THREADS, tracking.TAG_CPU_MODEL):
        assert got.data.tags.get(tag), tag
    assert got.data.tags["augment"] == "true" and got.data.tags["seed"] == "3"
    assert got.data.metrics[tracking.M_PARAMS] == 10
    assert "bad" not in got.data.metrics  # NaN is refused, not logged
    assert got.info.status == "FINISHED"
    exp = mlflow.get_experiment(got.info.experiment_id)
    assert exp.artifact_location.startswith("file://") and "mlruns" in exp.artifact_location


def test_study_run_marks_failed_on_bad_input():
    with pytest.raises(InputError):
        with tracking.study_run("conventions", "bad") as run:
            raise InputError("some/file.txt", "broken")
    got = mlflow.get_run(run.info.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["error"] == "some/file.txt: broken"


def test_close_stale_runs_marks_dead_process_failed():
    with tracking.study_run("stale", "dead", tags={"host": __import__("socket").gethostname(), "pid": "999999"}) as run:
        run_id = run.info.run_id
    # simulate a kill: the run stays RUNNING after the process is gone
    mlflow.MlflowClient().update_run(run_id, status="RUNNING")
    closed = tracking.close_stale_runs("stale")
    assert run_id in closed
    assert mlflow.get_run(run_id).info.status == "FAILED"
