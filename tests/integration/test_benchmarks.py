"""Benchmarks: the correctness parts only (never speed).

- ONNX export of the pathology models matches eager PyTorch within 1e-4, and a mismatch is
  caught, through the same helper the platform's CPU timing uses (projects/core/onnx_runtime.py);
- FLOP counting agrees with the hand formula 2 * Cin * Cout * k * k * Hout * Wout;
- the runtime variants' building blocks (batch-norm folding, selection of the fastest
  correct runtime, interleaved timing order) do what they claim;
- the quick benchmark end to end is the README's command, run as written by
  tests/e2e/test_readme_entry_points.py (check_quick_benchmark).
"""
from __future__ import annotations

import math

import numpy as np

import pytest
import torch
from torch import nn

from projects.core.bench import interleaved, percentile
from benchmarks.flops import conv2d_flops, count_flops
from projects.core import onnx_runtime
from projects.pathology.models import build_model



@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics, so folding and export are really exercised."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


# --- ONNX export matches eager -------------------------------------------------------------------------
@pytest.mark.parametrize("arch,filters,depth", [("unet", 4, 3), ("elunet", 4, 3), ("elunet", 4, 4)])
def test_onnx_export_matches_eager(tmp_path, arch, filters, depth):
    model = _trained_like(build_model(arch, filters, depth))
    images = torch.rand(3, 3, 64, 64)
    path = onnx_runtime.export_onnx(model, images[:1], tmp_path / "m.onnx")
    diff = onnx_runtime.check_onnx(path, model, images.numpy(), atol=1e-4)
    assert diff <= 1e-4
    # dynamic batch: a batch size other than the export's works and matches too
    session = onnx_runtime.make_session(path)
    out = onnx_runtime.predict(session, images.numpy(), batch_size=2)
    with torch.no_grad():
        ref = model(images).numpy()
    assert out.shape == ref.shape == (3, 1, 64, 64)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_onnx_check_catches_a_mismatch(tmp_path):
    model = _trained_like(build_model("elunet", 4, 3))
    images = torch.rand(2, 3, 32, 32)
    path = onnx_runtime.export_onnx(model, images[:1], tmp_path / "m.onnx")
    other = _trained_like(build_model("elunet", 4, 3))  # different weights
    with pytest.raises(onnx_runtime.OnnxMismatchError):
        onnx_runtime.check_onnx(path, other, images.numpy(), atol=1e-4)


def test_time_onnx_inference_platform_metrics(tmp_path):
    """The call the studies make: keys, positive times, the eager check, the evaluate hook."""
    build = lambda: build_model("elunet", 4, 3)  # noqa: E731
    weights = tmp_path / "w.pt"
    torch.save(_trained_like(build()).state_dict(), weights)
    images = torch.rand(5, 3, 32, 32)
    seen = {}

    def evaluate(outputs):
        seen["shape"] = outputs.shape
        return {"test_fraction_positive": float((outputs > 0).mean())}

    out = onnx_runtime.time_onnx_inference(build, weights, images, batch_size=2, evaluate=evaluate, strict=True)
    assert {"cpu_load_s_onnx", "cpu_predict_s_onnx", "cpu_total_s_onnx", "cpu_latency_ms_p50_onnx",
            "onnx_max_abs_diff", "test_fraction_positive_onnx"} <= set(out)
    assert out["onnx_max_abs_diff"] <= 1e-4
    assert out["cpu_total_s_onnx"] == pytest.approx(out["cpu_load_s_onnx"] + out["cpu_predict_s_onnx"])
    assert seen["shape"] == (5, 1, 32, 32)  # every timed image was predicted


def test_time_onnx_inference_int8_and_failure_is_not_fatal(tmp_path, capsys):
    build = lambda: build_model("elunet", 4, 3)  # noqa: E731
    weights = tmp_path / "w.pt"
    torch.save(_trained_like(build()).state_dict(), weights)
    images = torch.rand(4, 3, 32, 32)
    out = onnx_runtime.time_onnx_inference(build, weights, images, batch_size=2, quantize="int8",
                                           calibration=torch.rand(4, 3, 32, 32), strict=True)
    assert "cpu_total_s_onnx_int8" in out and np.isfinite(out["onnx_int8_max_abs_diff"])
    # the platform's non-strict mode: a broken model costs one warning line, not the run
    assert onnx_runtime.time_onnx_inference(build, tmp_path / "missing.pt", images) == {}
    assert "ONNX Runtime timing" in capsys.readouterr().err


def test_time_torch_bf16_inference_platform_metrics(tmp_path):
    build = lambda: build_model("elunet", 4, 3)  # noqa: E731
    weights = tmp_path / "w.pt"
    torch.save(_trained_like(build()).state_dict(), weights)
    images = torch.rand(3, 3, 32, 32)
    out = onnx_runtime.time_torch_bf16_inference(build, weights, images, batch_size=2, strict=True,
                                                 evaluate=lambda o: {"test_n": float(len(o))})
    assert {"cpu_total_s_bf16", "cpu_load_s_bf16", "cpu_predict_s_bf16", "cpu_latency_ms_p50_bf16",
            "bf16_max_abs_diff"} <= set(out)
    assert out["test_n_bf16"] == 3.0
    assert out["bf16_max_abs_diff"] < 0.5  # bf16: close to eager, not exact


# --- FLOPs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c_in,c_out,k,stride,padding,size", [(3, 16, 3, 1, 1, 32), (8, 4, 3, 1, 0, 20),
                                                              (16, 32, 1, 1, 0, 17), (4, 8, 5, 2, 2, 32)])
def test_flop_count_of_a_conv_layer_matches_the_hand_formula(c_in, c_out, k, stride, padding, size):
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding)
    h_out = (size + 2 * padding - k) // stride + 1
    assert count_flops(conv, torch.rand(1, c_in, size, size)) == 2 * c_in * c_out * k * k * h_out * h_out
    assert conv2d_flops(c_in, c_out, k, h_out, h_out) == 2 * c_in * c_out * k * k * h_out * h_out
    assert count_flops(conv, torch.rand(3, c_in, size, size)) == 3 * conv2d_flops(c_in, c_out, k, h_out, h_out)


def test_flop_count_of_a_model_is_the_sum_of_its_convs():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 1))
    expected = conv2d_flops(3, 8, 3, 16, 16) + conv2d_flops(8, 4, 1, 8, 8)
    assert count_flops(model, torch.rand(1, 3, 16, 16)) == expected


# --- runtime building blocks --------------------------------------------------------------------------
def test_fold_batchnorm_keeps_outputs():
    from projects.core.onnx_runtime import fold_batchnorm

    model = _trained_like(build_model("elunet", 4, 3))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        folded = build_model("elunet", 4, 3)
        folded.load_state_dict(model.state_dict())
        folded = fold_batchnorm(folded.eval())
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), ref, atol=1e-4, rtol=0)


def test_fastest_runtime_only_picks_correct_variants():
    from benchmarks.runtimes import fastest_runtime

    results = {"variants": {
        "eager": {"protocol_total_s": 10.0, "correct": True, "max_abs_diff": 0.0},
        "fast_but_wrong": {"protocol_total_s": 1.0, "correct": False, "max_abs_diff": 3.0},
        "failed": {"error": "boom"},
        "ort": {"protocol_total_s": 4.0, "correct": True, "max_abs_diff": 2e-5},
        "bf16": {"protocol_total_s": 5.0, "correct": True, "max_abs_diff": 0.2},
        "int8": {"protocol_total_s": 2.0, "correct": True, "max_abs_diff": 0.9},  # metric within tolerance
    }}
    assert fastest_runtime(results) == ("int8", 5.0)
    assert fastest_runtime(results, exact_only=True) == ("ort", 2.5)


def test_approximate_variant_needs_an_informative_model():
    """bf16 / int8 count as correct only when eager beats the trivial baseline: a model that
    predicts one class everywhere keeps its metric under any runtime, which proves nothing."""
    from benchmarks.runtimes import approximate_correct, baseline_metric, reference_models, CaseData
    MODELS = reference_models()

    assert approximate_correct(0.70, 0.27, -0.003) is True
    assert approximate_correct(0.70, 0.27, -0.006) is False
    assert approximate_correct(0.013, 0.11, 0.0) is None  # below the majority baseline: unverified
    assert approximate_correct(0.27, 0.27, 0.0) is None
    # The classifier's baseline is the majority TRAINING class's macro-F1 on the test labels.
    data = CaseData(train=np.zeros((4, 1, 2, 2)), train_targets=np.array([0, 0, 0, 1]), test=np.zeros((4, 1, 2, 2)),
                    test_targets=np.array([0, 1, 0, 1]), class_names=("a", "b"))
    assert baseline_metric(MODELS["resnet101"], data, 4) == pytest.approx((2 / 3 + 0) / 2)
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2] = True  # tile 0 half tumour, tile 1 empty
    seg = CaseData(train=np.zeros((1, 3, 4, 4)), train_targets=masks[:1], test=np.zeros((2, 3, 4, 4)),
                   test_targets=masks, test_valid=np.ones_like(masks))
    # all-background: tiles score 0 and 1 (empty/empty) -> 0.5; all-tumour: 0.5 and 0 -> 0.25
    assert baseline_metric(MODELS["unet"], seg, 2) == pytest.approx(0.5)


def test_interleaved_runs_variants_in_rounds():
    calls = []
    samples = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert [len(v) for v in samples.values()] == [3, 3]
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == 10


def test_bf16_is_measured_only_where_the_cpu_has_it(monkeypatch):
    """Emulated bf16 (a CPU without bf16 instructions) is tens of times slower: the rate probes,
    the training variants and the default runtimes leave it out there, and say so."""
    from benchmarks import flops, runtimes, training
    from projects.core import device

    for kind, native in (("cpu", False), ("cpu-bf16", True), ("cpu-amx", True)):
        monkeypatch.setattr(device, "cpu_kind", lambda kind=kind: kind)
        assert device.native_bf16() is native
        assert any("bf16" in name for name in flops.rate_probes()) is native
        assert any(p == "bf16" for _, p in training.measured_variants().values()) is native
        assert ("channels_last" in training.measured_variants()) and ("fp32" in training.measured_variants())
        assert ("torch_bf16" in runtimes.settings(quick=True).variants) is native
        # named on the command line, it is measured anyway
        assert "torch_bf16" in runtimes.settings(quick=True, variants=("eager", "torch_bf16")).variants
    monkeypatch.setattr(device, "cpu_kind", lambda: "cpu")
    peaks = flops.summarise_probes({"mm_fp32": [0.1], "gemm_fp32_onednn": [0.05]},
                                   {"mm_fp32": 2e10, "gemm_fp32_onednn": 1e10})
    sec = flops.section({"peak": peaks, "size": 64, "threads": 2, "models": {}}, quick=True)
    assert sec.metrics["flops.machine_fp32_gflops"] == pytest.approx(200)
    assert "flops.machine_bf16_gflops" not in sec.metrics
    assert any("bf16 not measured" in note for table in sec.tables for note in table.notes)


# --- the CLI end to end ------------------------------------------------------------------------------
def test_training_section_takes_a_device(monkeypatch, capsys):
    """`--device` moves the training section's steps and parity runs to a GPU; a device this
    machine lacks is one line before anything runs; the steps run on the device given."""
    from benchmarks import __main__ as cli
    from benchmarks import training

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--sections", "training", "--device", "cuda:1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "argument --device: cuda:1 was asked for, but this machine has no CUDA GPU (use auto or cpu)")
    assert cli.parse_args(["--device", "cpu"]).device == "cpu"
    # bf16 variants where the GPU has bf16, none where it has not
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert ("cl+bf16" in training.measured_variants(torch.device("cuda"))) is supported
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    inputs, targets = torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
    model(inputs)  # materialise the lazy layer
    step = training.step_fn(model, torch.nn.CrossEntropyLoss(), inputs, targets, True, "fp32", torch.device("cpu"))
    assert math.isfinite(step()) and step() != step()  # it trains: the loss moves
