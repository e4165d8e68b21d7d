"""Efficiency measurements every trained model logs: size, parameters, CPU timings.

The CPU protocol follows the pathology paper: time from loading the saved model file to
the end of predicting N images, on the CPU. Wall-clock (`time.perf_counter`) is measured,
because that is what a user waits for; the thread settings that decide it are logged
beside it (projects.core.runtime.thread_settings).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Trainable parameters, as PyTorch counts them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_params_keras(model: nn.Module) -> int:
    """Parameters as Keras' `model.count_params()` reports them.

    Keras counts a BatchNormalization layer as 4 per channel (gamma, beta and the two
    moving statistics); PyTorch keeps the statistics as buffers, not parameters.
    """
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            total += module.running_mean.numel() + module.running_var.numel()
    return total


def _save(obj, path: Path) -> int:
    """torch.save through Python's file I/O, written whole or not at all.

    torch.save straight to a path reports a full disk as a RuntimeError ("[enforce fail at
    inline_container.cc] unexpected pos ...") and leaves a truncated file; serialising to
    memory first turns it into an OSError naming the file (ENOSPC, EFBIG, EACCES...), which
    the entry points report in one line, and the rename never exposes a partial file.
    """
    import io
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None or Path(exc.filename) == tmp:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    return len(buffer.getbuffer())


def save_weights(model: nn.Module, path: Path) -> int:
    """Write the state_dict (tensors only: loads with weights_only=True); returns bytes."""
    return _save(model.state_dict(), path)


def save_weights_with_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> int:
    """Weights plus optimizer state: what a Keras HDF5 checkpoint holds (the paper's sizes)."""
    return _save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    # weights_only: a weights file never executes pickled code, even one the user downloaded.
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


@dataclass(frozen=True)
class CpuTiming:
    cpu_load_s: float
    cpu_predict_s: float
    cpu_total_s: float
    cpu_latency_ms_p50: float
    cpu_latency_ms_p95: float
    n_images: int
    batch_size: int

    def metrics(self) -> dict[str, float]:
        data = asdict(self)
        data.pop("n_images")
        data.pop("batch_size")
        return data


def time_cpu_inference(build: Callable[[], nn.Module], weights_path: Path, images: torch.Tensor,
                       batch_size: int = 8, latency_repeats: int = 10) -> CpuTiming:
    """The paper's protocol (load the saved model, predict every image) plus warm latency.

    `build` constructs the architecture (untrained); loading means build + read weights,
    as loading a Keras file rebuilds the graph and reads the weights.
    """
    with torch.inference_mode():
        start = time.perf_counter()
        model = load_weights(build(), weights_path).eval()
        loaded = time.perf_counter()
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
        done = time.perf_counter()
        single = images[:1]
        model(single)  # warm-up: first call allocates
        samples = []
        for _ in range(max(1, latency_repeats)):
            t0 = time.perf_counter()
            model(single)
            samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    return CpuTiming(
        cpu_load_s=loaded - start,
        cpu_predict_s=done - loaded,
        cpu_total_s=done - start,
        cpu_latency_ms_p50=statistics.median(samples),
        cpu_latency_ms_p95=p95,
        n_images=len(images),
        batch_size=batch_size,
    )


def time_cpu_runtimes(build: Callable[[], nn.Module], weights_path: Path, images: torch.Tensor,
                      batch_size: int, onnx: bool = True) -> dict[str, float]:
    """Every CPU timing a trained model logs: the paper's protocol in eager PyTorch and, with
    `onnx`, the same protocol in ONNX Runtime (`cpu_total_s_onnx` ..., outputs checked against
    eager to 1e-4 first; an export that fails or mismatches is one warning line, never a lost
    run). ONNX Runtime is measured rather than assumed faster: benchmarks/RESULTS.md."""
    metrics = time_cpu_inference(build, weights_path, images, batch_size=batch_size).metrics()
    if onnx:
        from projects.core import onnx_runtime

        metrics.update(onnx_runtime.time_onnx_inference(build, weights_path, images, batch_size=batch_size))
    return metrics
