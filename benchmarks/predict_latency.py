"""Latency of using a champion: one image file in, the answer out (decoding, the study's
preprocessing, the network, stitching), eager PyTorch vs ONNX Runtime behind the same model.

Every registered model of the store (MEDIMG_STORE) whose `champion` is an image model
(projects.core.serving) is timed on the input its study names for this
(`ImageModel.benchmark_input`: a 1000 x 1000 H&E image, a 1024-px film, a region of one).
The two runtimes alternate call by call in one process (eager, onnx, eager, ...), and each
is summarised by its median (p50) over the repeats: only their ratio is comparable across
a shared, noisy machine. The ONNX network is the one promotion logged, else exported here.

    python -m pipeline --profile quick            # a store with champions first
    python -m benchmarks --sections predict_latency --quick true
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from projects.core import serving, tracking
from projects.core.bench import Section, Table, median, metric_key
from projects.core.onnx_runtime import export_onnx


def champions(client: MlflowClient) -> list[tuple[str, str]]:
    out = []
    for model in client.search_registered_models(max_results=1000):
        version = (model.aliases or {}).get("champion")
        if version:
            out.append((model.name, str(version)))
    return sorted(out)


def onnx_twin(inner: serving.ImageModel, example: np.ndarray, folder: Path) -> serving.ImageModel:
    """The same image model with its network exported to ONNX Runtime."""
    path = export_onnx(inner.module, torch.from_numpy(example), folder / "model.onnx")
    return type(inner)().use(inner.config, serving.onnx_network(path))


def time_pair(eager: serving.ImageModel, onnx: serving.ImageModel, frame, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"eager": [], "onnx": []}
    for model in (eager, onnx):  # warm-up: first calls allocate
        model.predict_rows(frame, {})
    for _ in range(repeats):
        for label, model in (("eager", eager), ("onnx", onnx)):
            start = time.perf_counter()
            model.predict_rows(frame, {})
            times[label].append(time.perf_counter() - start)
    return times


def run(quick: bool, experiment_id: str | None = None, log=print) -> Section:
    tracking.setup_tracking()
    client, repeats = MlflowClient(), 5 if quick else 20
    sec = Section("predict_latency")
    table = Table("Predict one image with the champion: p50 seconds per call (eager PyTorch vs ONNX Runtime)",
                  ["model", "version", "input", "eager p50 s", "onnx p50 s", "eager / onnx", "repeats"])
    for name, version in champions(client):
        inner = serving.image_model(mlflow.pyfunc.load_model(f"models:/{name}/{version}", suppress_warnings=True))
        if inner is None:
            log(f"[predict_latency] {name} v{version}: not an image model, skipped")
            continue
        frame, what = inner.benchmark_input()
        example = np.random.default_rng(0).random((2, *inner.prepared_shape()), dtype=np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            times = time_pair(inner, onnx_twin(inner, example, Path(tmp)), frame, repeats)
        eager, onnx = median(times["eager"]), median(times["onnx"])
        table.add(name, version, what, eager, onnx, eager / onnx, repeats)
        sec.metrics |= {metric_key(f"{name}_eager_p50_s"): eager, metric_key(f"{name}_onnx_p50_s"): onnx}
        sec.headline.append(f"{name}: {what}, eager {eager:.3g} s vs ONNX Runtime {onnx:.3g} s p50 "
                            f"(x{eager / onnx:.2f})")
    if not table.rows:
        table.notes.append("no champion in this store: run `python -m pipeline --profile quick` first")
    table.notes.append(f"torch threads {torch.get_num_threads()}; calls alternate eager/onnx; a call includes "
                       "decoding the file, preprocessing and postprocessing (the same code for both)")
    sec.tables.append(table)
    return sec
