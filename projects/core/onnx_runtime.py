"""Fast CPU runtimes for the platform's timing: ONNX Runtime (export, check against eager,
time, quantise) and PyTorch bfloat16 - the runtimes benchmarks/ found fastest.

    from projects.core import onnx_runtime
    metrics = onnx_runtime.time_onnx_inference(build, weights_path, images, batch_size=8)
    # {"cpu_load_s_onnx", "cpu_predict_s_onnx", "cpu_total_s_onnx", "cpu_latency_ms_p50_onnx",
    #  "onnx_max_abs_diff"}; with quantize="int8" the keys end in _onnx_int8 instead.

The protocol mirrors `projects.core.efficiency.time_cpu_inference` (the pathology paper's: time
from loading the saved model to the end of predicting N images): the model is first exported
to an .onnx file (not timed, as saving the PyTorch weights is not timed), its outputs are
checked against eager PyTorch on the same images (max |difference| <= `atol`, 1e-4 by
default; fp32 only), then the clock covers creating the ONNX Runtime session from the file
(parse + graph optimisation = "load") and predicting every image in batches.

Session settings, and why (measured in benchmarks/, see benchmarks/RESULTS.md):
- intra-op threads = torch.get_num_threads(): the same CPU budget as the eager timing;
- inter-op threads 1, sequential execution: these are chains of convolutions;
- `session.intra_op.allow_spinning = 0`: ORT's thread pool busy-waits by default, the same
  failure as OpenMP's ACTIVE wait policy (projects/core/runtime.py): on a machine where another
  process holds a core, spinning threads steal its time slices;
- graph optimisation level ALL (constant folding, conv+activation fusion, NCHWc layouts).

Static int8 quantisation (`quantize="int8"`): QDQ format, per-channel int8 weights, uint8
activations (the VNNI fast path on x86), min-max calibration on `calibration` images. It is
not exact; callers log the accuracy change beside the speed-up (the benchmark does).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from projects.core import tracking
from projects.core.efficiency import load_weights

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_ATOL = 1e-4
OPSET = 17
# Metric names: the platform's CPU timing names (projects.core.tracking) + a runtime suffix.
SUFFIXES = {"none": "_onnx", "int8": "_onnx_int8"}


def metric_names(quantize: str = "none") -> dict[str, str]:
    """{"load"|"predict"|"total"|"latency"|"diff": metric name} for one ONNX runtime."""
    suffix = SUFFIXES[quantize]
    return {"load": tracking.M_CPU_LOAD + suffix, "predict": tracking.M_CPU_PREDICT + suffix,
            "total": tracking.M_CPU_TOTAL + suffix, "latency": tracking.M_LATENCY_P50 + suffix,
            "diff": suffix.lstrip("_") + "_max_abs_diff"}


class OnnxMismatchError(RuntimeError):
    """The exported model's outputs differ from eager PyTorch's by more than the tolerance."""


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path | str, opset: int = OPSET) -> Path:
    """Export `model` (eval mode) to one self-contained .onnx file with a dynamic batch size.

    Uses the TorchScript-based exporter (`dynamo=False`): 2 s for ELU-Net against 15 s for
    the dynamo exporter here, with identical outputs (both checked to 1e-7); falls back to
    the dynamo exporter when the first one fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = example.contiguous().float()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True)
    except Exception as first:  # noqa: BLE001 - any exporter failure: try the other one
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], dynamo=True, external_data=False,
                                  dynamic_shapes=({0: batch},), optimize=True)
        except Exception as second:
            raise RuntimeError(f"ONNX export failed (TorchScript exporter: {first}; "
                               f"dynamo exporter: {second})") from second
    return path


def session_options(threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def make_session(path: Path | str, threads: int | None = None):
    """An ONNX Runtime CPU session with the settings above (threads: torch's by default)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def run_session(session, batch: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(batch, np.float32)})[0]


def predict(session, images: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([run_session(session, images[i:i + batch_size])
                           for i in range(0, len(images), batch_size)])


def max_abs_diff(session, model: nn.Module, images: np.ndarray, batch_size: int = 8) -> float:
    """max |ORT - eager| over `images` (the eager model in eval mode, no grad)."""
    model = model.eval()
    worst = 0.0
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            batch = np.ascontiguousarray(images[i:i + batch_size], np.float32)
            ref = model(torch.from_numpy(batch)).float().numpy()
            worst = max(worst, float(np.max(np.abs(run_session(session, batch) - ref))))
    return worst


def check_onnx(path: Path | str, model: nn.Module, images: np.ndarray, atol: float = DEFAULT_ATOL,
               batch_size: int = 8) -> float:
    """Max |difference| of the .onnx file's outputs from eager's; raises OnnxMismatchError above atol."""
    diff = max_abs_diff(make_session(path), model, images, batch_size)
    if not diff <= atol:  # also catches NaN
        raise OnnxMismatchError(f"ONNX outputs differ from eager PyTorch by {diff:.3g} (> {atol:g}) on "
                                f"{len(images)} images")
    return diff


class _Calibration:
    """onnxruntime.quantization.CalibrationDataReader over a stack of images."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int = 1):
        self._batches = iter([{input_name: np.ascontiguousarray(images[i:i + batch_size], np.float32)}
                              for i in range(0, len(images), batch_size)])

    def get_next(self):
        return next(self._batches, None)


def end_layers(path: Path | str) -> list[str]:
    """Names of the first Conv and of the nodes producing the graph's outputs (the head)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    outputs = {o.name for o in graph.output}
    names = [n.name for n in graph.node if set(n.output) & outputs and n.op_type in ("Conv", "Gemm", "MatMul")]
    first = next((n.name for n in graph.node if n.op_type == "Conv"), None)
    return ([first] if first else []) + [n for n in names if n != first]


def quantize_int8(fp32_path: Path | str, out_path: Path | str, calibration: np.ndarray,
                  keep_ends_fp32: bool = True) -> Path:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations, min-max
    calibration on `calibration` images: training images, never the ones evaluated).

    keep_ends_fp32: the first convolution (3 or 1 input channels) and the output layer stay
    in float32 - little of the compute, much of the error: on the benchmark's ELU-Net this
    halved the largest logit change and kept the test Jaccard within 0.004 of eager, where
    min-max / percentile / entropy calibration of every layer moved it by 0.005-0.006."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Calibration, CalibrationDataReader):
        pass

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if len(calibration) == 0:
        raise ValueError("int8 quantisation needs at least one calibration image")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = Path(tmp) / "pre.onnx"
        try:
            # Shape inference + graph clean-up recommended before quantisation; symbolic shape
            # inference fails on dynamic-batch resize graphs, the ONNX one suffices.
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation only
            source = fp32_path
        quantize_static(str(source), str(out_path), Reader(calibration, INPUT_NAME),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=end_layers(source) if keep_ends_fp32 else None,
                        extra_options={"CalibTensorRangeSymmetric": False})
    return out_path


def _as_numpy(images) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        return images.detach().float().contiguous().numpy()
    return np.ascontiguousarray(images, np.float32)


def time_onnx_inference(build: Callable[[], nn.Module], weights_path: Path | str, images,
                        batch_size: int = 8, *, quantize: str = "none", calibration=None,
                        atol: float = DEFAULT_ATOL, latency_repeats: int = 10, check_images: int = 8,
                        threads: int | None = None, workdir: Path | str | None = None,
                        evaluate: Callable[[np.ndarray], dict[str, float]] | None = None,
                        strict: bool = False) -> dict[str, float]:
    """The paper's CPU protocol with ONNX Runtime: metrics to log beside `cpu_total_s`.

    build, weights_path, images, batch_size: as `projects.core.efficiency.time_cpu_inference`
    (images: (N, C, H, W) float in the model's input range, tensor or array).
    quantize: "none" (fp32; outputs must match eager within `atol` or no timing is returned)
    or "int8" (static quantisation calibrated on `calibration`, default: the timed images;
    its difference from eager is reported, not required to be under atol).

    Returns, for fp32: cpu_load_s_onnx, cpu_predict_s_onnx, cpu_total_s_onnx,
    cpu_latency_ms_p50_onnx, onnx_max_abs_diff (suffix `_onnx_int8` / `onnx_int8_max_abs_diff`
    for int8). evaluate: optional, called with the runtime's outputs for `images` (the
    predictions the timed protocol made, so no extra cost); the metrics it returns are added
    with the same suffix (e.g. {"test_jaccard_sample57": ...} -> test_jaccard_sample57_onnx_int8),
    so a quantised runtime's accuracy is logged beside its speed. With strict=False (the platform's use) an export failure or a mismatch prints one
    warning line and returns what is known (possibly {}): the run's other metrics are not
    lost over an optional runtime. strict=True raises instead.
    """
    if quantize not in SUFFIXES:
        raise ValueError(f"quantize must be one of {', '.join(SUFFIXES)}, got {quantize!r}")
    suffix = SUFFIXES[quantize]
    names = metric_names(quantize)
    diff_key = names["diff"]
    data = _as_numpy(images)
    if len(data) == 0:
        raise ValueError("no images to time")
    out: dict[str, float] = {}
    own_dir = tempfile.TemporaryDirectory() if workdir is None else None
    folder = Path(own_dir.name if own_dir else workdir)
    try:
        model = load_weights(build(), Path(weights_path)).eval()
        path = export_onnx(model, torch.from_numpy(data[:1]), folder / "model.onnx")
        if quantize == "int8":
            calib = _as_numpy(calibration) if calibration is not None else data
            path = quantize_int8(path, folder / "model.int8.onnx", calib)
        diff = max_abs_diff(make_session(path, threads), model, data[:check_images], batch_size)
        out[diff_key] = diff
        del model
        if quantize == "none" and not diff <= atol:
            raise OnnxMismatchError(f"ONNX outputs differ from eager by {diff:.3g} (> {atol:g})")
        timed, outputs = _timed_protocol(path, data, batch_size, latency_repeats, threads)
        out.update({names[k]: v for k, v in timed.items()})
        if evaluate is not None:
            out.update({f"{k}{suffix}": float(v) for k, v in evaluate(np.concatenate(outputs)).items()})
    except Exception as exc:  # noqa: BLE001 - see strict
        if strict:
            raise
        print(f"warning: ONNX Runtime timing ({quantize}) skipped: {type(exc).__name__}: {exc}",
              file=sys.stderr)
    finally:
        if own_dir is not None:
            own_dir.cleanup()
    return out


def _timed_protocol(path: Path, data: np.ndarray, batch_size: int, latency_repeats: int,
                    threads: int | None) -> tuple[dict[str, float], list[np.ndarray]]:
    """The timed protocol: load the saved file, predict every image; then warm latency."""
    start = time.perf_counter()
    session = make_session(path, threads)
    loaded = time.perf_counter()
    outputs = [run_session(session, data[i:i + batch_size]) for i in range(0, len(data), batch_size)]
    done = time.perf_counter()
    single = data[:1]
    run_session(session, single)  # warm
    samples = []
    for _ in range(max(1, latency_repeats)):
        t0 = time.perf_counter()
        run_session(session, single)
        samples.append((time.perf_counter() - t0) * 1000)
    return {"load": loaded - start, "predict": done - loaded, "total": done - start,
            "latency": statistics.median(samples)}, outputs


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d (consecutive children of one
    module) into the conv and replace it with Identity. Eval mode only. A module whose
    forward does not use such a pair in order would change its outputs: callers compare
    with eager (the benchmark does, on every model it times)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    for parent in model.modules():
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and conv.out_channels == bn.num_features):
                parent._modules[first] = fuse_conv_bn_eval(conv, bn)
                parent._modules[second] = nn.Identity()
    return model


def bf16_model(model: nn.Module) -> nn.Module:
    """The benchmark's `torch_bf16` runtime: batch norm folded, channels-last, bfloat16."""
    return fold_batchnorm(model.eval()).to(memory_format=torch.channels_last).to(torch.bfloat16)


def bf16_predict(model: nn.Module, batch: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        x = batch.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        return model(x).float().numpy()


def time_torch_bf16_inference(build: Callable[[], nn.Module], weights_path: Path | str, images,
                              batch_size: int = 8, *, latency_repeats: int = 10,
                              evaluate: Callable[[np.ndarray], dict[str, float]] | None = None,
                              strict: bool = False) -> dict[str, float]:
    """The paper's protocol with PyTorch in bfloat16 (BN folded, channels-last): the other
    runtime the benchmark found fast (benchmarks/RESULTS.md). Not exact (bf16 keeps 8
    mantissa bits): pass `evaluate` to log the accuracy beside the time. Keys: cpu_load_s_bf16,
    cpu_predict_s_bf16, cpu_total_s_bf16, cpu_latency_ms_p50_bf16, bf16_max_abs_diff (+ the
    evaluate metrics with suffix _bf16). On a CPU without native bf16 (no AVX512-BF16 / AMX)
    this runs but is slower than fp32: the benchmark measures it before anyone relies on it."""
    suffix = "_bf16"
    data = torch.from_numpy(_as_numpy(images))
    out: dict[str, float] = {}
    try:
        with torch.inference_mode():
            eager = load_weights(build(), Path(weights_path)).eval()
            ref = eager(data[:batch_size]).float().numpy()
            del eager
        start = time.perf_counter()
        model = bf16_model(load_weights(build(), Path(weights_path)))
        loaded = time.perf_counter()
        outputs = [bf16_predict(model, data[i:i + batch_size]) for i in range(0, len(data), batch_size)]
        done = time.perf_counter()
        bf16_predict(model, data[:1])
        samples = []
        for _ in range(max(1, latency_repeats)):
            t0 = time.perf_counter()
            bf16_predict(model, data[:1])
            samples.append((time.perf_counter() - t0) * 1000)
        out.update({
            tracking.M_CPU_LOAD + suffix: loaded - start,
            tracking.M_CPU_PREDICT + suffix: done - loaded,
            tracking.M_CPU_TOTAL + suffix: done - start,
            tracking.M_LATENCY_P50 + suffix: statistics.median(samples),
            "bf16_max_abs_diff": float(np.max(np.abs(outputs[0] - ref))),
        })
        if evaluate is not None:
            out.update({f"{k}{suffix}": float(v) for k, v in evaluate(np.concatenate(outputs)).items()})
    except Exception as exc:  # noqa: BLE001 - see time_onnx_inference
        if strict:
            raise
        print(f"warning: bf16 timing skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    return out


__all__ = [
    "DEFAULT_ATOL",
    "OnnxMismatchError",
    "check_onnx",
    "bf16_model",
    "export_onnx",
    "fold_batchnorm",
    "make_session",
    "metric_names",
    "max_abs_diff",
    "predict",
    "quantize_int8",
    "run_session",
    "session_options",
    "time_onnx_inference",
    "time_torch_bf16_inference",
]

if __name__ == "__main__":  # pragma: no cover - a smoke check: python -m projects.core.onnx_runtime
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    def _tiny() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))

    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp) / "w.pt"
        torch.save(_tiny().state_dict(), w)
        print(time_onnx_inference(_tiny, w, torch.rand(4, 3, 64, 64), batch_size=2, strict=True))
