"""CPU timings every trained model logs, with the pathology paper's protocol: time from
loading the saved model file to the end of predicting N images, on the CPU, in eager
PyTorch and (optionally) in ONNX Runtime. Wall-clock (`time.perf_counter`) is measured,
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

from projects.core import onnx_runtime
from projects.core.efficiency import load_weights


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
        metrics.update(onnx_runtime.time_onnx_inference(build, weights_path, images, batch_size=batch_size))
    return metrics
