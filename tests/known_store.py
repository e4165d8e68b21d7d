"""A tracking store of known runs, made with plain MLflow calls: the dashboard tests
(tests/integration/test_dashboards.py) and the browser test (tests/e2e) read it."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from projects.core import tracking
from projects.core.study import get_study

UI = "http://mlflow.example:5000"
JACCARD, ACC, F1 = tracking.test_metric("jaccard"), tracking.test_metric("accuracy"), tracking.test_metric("f1_macro")


# --- a store with known runs ------------------------------------------------------------------
def png_bytes(width: int = 48, height: int = 32, seed: int = 0) -> bytes:
    """A small valid RGB PNG (a gradient), without any imaging library."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3)
    rows = []
    for y in range(height):
        line = bytearray([0])
        for x in range(width):
            line += bytes(((int(base[0]) + 4 * x) % 256, (int(base[1]) + 6 * y) % 256, int(base[2])))
        rows.append(bytes(line))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


# Pathology grid children: (name, arch, filters, depth, params, jaccard, size_mb, cpu_s).
# On (params, jaccard) the front is A, B, D: C costs more than B and scores less.
PATHOLOGY = [
    ("A", "elunet", 4, 4, 50_000, 0.80, 0.2, 1.0),
    ("B", "elunet", 8, 4, 200_000, 0.85, 0.8, 1.5),
    ("C", "elunet", 8, 5, 640_000, 0.84, 2.6, 2.5),
    ("D", "unet", 8, 4, 480_000, 0.90, 1.9, 1.2),
]
PATHOLOGY_FRONT = {"A", "B", "D"}
# Mammography grid children: (name, arch, task, split, augment, seed, accuracy, f1, params, image_size).
MAMMOGRAPHY = [
    ("m1", "resnet18", "7class", "80:20", False, 0, 0.70, 0.30, 11_000_000, 64),
    ("m2", "resnet18", "7class", "80:20", False, 1, 0.74, 0.36, 11_000_000, 64),
    ("m3", "resnet18", "7class", "80:20", True, 0, 0.78, 0.45, 11_000_000, 64),
    ("m4", "resnet18", "7class", "90:10", False, 0, 0.68, 0.20, 11_000_000, 64),
    ("m5", "resnet50", "7class", "80:20", False, 0, 0.72, 0.25, 23_000_000, 128),
    ("m6", "resnet18", "benign_malignant", "75:25", False, 0, 0.60, 0.55, 11_000_000, 64),
]


def _tags(study, task, arch, split, augment, seed, run_kind, **extra):
    return {tracking.TAG_STUDY: study, tracking.TAG_TASK: task, tracking.TAG_ARCH: arch, tracking.TAG_SPLIT: split,
            tracking.TAG_AUGMENT: str(augment).lower(), tracking.TAG_SEED: str(seed),
            tracking.TAG_RUN_KIND: run_kind, tracking.TAG_DATASET_DIGEST: "d1"} | {k: str(v) for k, v in extra.items()}


def populate_store(search: bool = True, registry: bool = True, mammography: bool = True) -> dict[str, str]:
    """Grid parents + children for both studies, a search with trials, registry aliases.

    Returns run name -> run id.
    """
    tracking.setup_tracking()
    ids: dict[str, str] = {}
    exp = tracking.ensure_experiment(get_study("pathology").experiment)
    with mlflow.start_run(experiment_id=exp, run_name="patho-grid",
                          tags={tracking.TAG_STUDY: "pathology", tracking.TAG_TASK: "tumor",
                                tracking.TAG_RUN_KIND: "grid_parent"}) as parent:
        ids["patho-grid"] = parent.info.run_id
        for name, arch, n, d, params, jac, size, cpu in PATHOLOGY:
            with mlflow.start_run(run_name=name, nested=True, experiment_id=exp,
                                  tags=_tags("pathology", "tumor", arch, "test0.2-val0.2", True, 0, "grid_child",
                                             depth=d, filters=n)) as run:
                ids[name] = run.info.run_id
                mlflow.log_params({"filters": n, "depth": d, "tile_size": 128})
                mlflow.log_metrics({JACCARD: jac, tracking.test_metric("dice"): jac + 0.03,
                                    tracking.baseline_metric("jaccard_all_background"): 0.30,
                                    tracking.baseline_metric("jaccard_all_tumor"): 0.55,
                                    tracking.M_PARAMS: params, tracking.M_PARAMS_KERAS: params + 100,
                                    tracking.M_SIZE_MB: size, tracking.M_CPU_TOTAL: cpu,
                                    tracking.M_LATENCY_P50: cpu * 10})
                _log_bytes(png_bytes(96, 64, seed=d), "test_overlays.png")
        pd_table = pd.DataFrame([{"arch": "elunet", "filters": 4, "depth": 4, "paper_jaccard": 0.867,
                                  "ours_jaccard": 0.80}])
        mlflow.log_text(pd_table.to_csv(index=False), "grid/paper_vs_ours.csv")
    if mammography:
        exp = tracking.ensure_experiment(get_study("mammography").experiment)
        with mlflow.start_run(experiment_id=exp, run_name="mammo-grid",
                              tags={tracking.TAG_STUDY: "mammography", tracking.TAG_TASK: "7class",
                                    tracking.TAG_RUN_KIND: "grid_parent"}) as parent:
            ids["mammo-grid"] = parent.info.run_id
            for name, arch, task, split, aug, seed, acc, f1, params, size in MAMMOGRAPHY:
                with mlflow.start_run(run_name=name, nested=True, experiment_id=exp,
                                      tags=_tags("mammography", task, arch, split, aug, seed, "grid_child")) as run:
                    ids[name] = run.info.run_id
                    mlflow.log_params({"image_size": size, "split": split, "epochs": 2})
                    mlflow.log_metrics({ACC: acc, F1: f1, tracking.test_metric("precision_macro"): f1,
                                        tracking.test_metric("recall_macro"): f1,
                                        tracking.baseline_metric("majority_accuracy"): 0.646,
                                        tracking.baseline_metric("majority_f1_macro"): 0.11,
                                        tracking.M_PARAMS: params, tracking.M_SIZE_MB: params * 4e-6,
                                        tracking.M_CPU_TOTAL: params * 1e-7})
                    _log_bytes(png_bytes(40, 40, seed=seed + 7), "confusion_matrix.png")
                    mlflow.log_text("c,pred_A,pred_B\ntrue_A,3,1\ntrue_B,0,4\n", "confusion_matrix.csv")
            mlflow.log_text("task,split,paper_accuracy,ours_accuracy\n7class,80:20,0.68,0.72\n",
                            "grid/paper_vs_ours.csv")
    if search:
        exp = tracking.ensure_experiment(tracking.EXPERIMENTS["search"])
        with mlflow.start_run(experiment_id=exp, run_name="search-1",
                              tags={tracking.TAG_STUDY: "pathology", tracking.TAG_RUN_KIND: "search_parent"}) as parent:
            ids["search-1"] = parent.info.run_id
            mlflow.log_params({"search.objectives": "val_jaccard,model_size_mb", "search.n_trials": 4})
            for number, (arch, n, d, jac, size, state) in enumerate([
                    ("elunet", 4, 3, 0.79, 0.1, "COMPLETE"), ("elunet", 8, 3, 0.86, 0.5, "COMPLETE"),
                    ("unet", 4, 4, None, None, "PRUNED"), ("elunet", 6, 4, 0.83, 0.4, "COMPLETE")]):
                with mlflow.start_run(run_name=f"trial-{number}", nested=True, experiment_id=exp,
                                      tags=_tags("pathology", "tumor", arch, "test0.2-val0.2", True, 0, "trial",
                                                 depth=d, filters=n, trial_number=number, trial_state=state)) as run:
                    ids[f"trial-{number}"] = run.info.run_id
                    mlflow.log_metric(tracking.val_metric("jaccard"), 0.5 + 0.05 * number)
                    if jac is None:
                        pruned = run.info.run_id
                    else:
                        mlflow.log_metrics({JACCARD: jac, tracking.M_SIZE_MB: size, tracking.M_PARAMS: size * 250_000,
                                            tracking.M_CPU_TOTAL: 1.0 + d / 10})
            MlflowClient().set_terminated(pruned, "KILLED")  # as the driver ends a pruned trial
    if registry:
        client = MlflowClient()
        for model, run_name, aliases in (("pathology-tumor", "D", ("champion",)),
                                         ("pathology-tumor", "A", ("efficient", "fastest")),
                                         ("mammography-7class", "m3", ("champion",))):
            if not client.search_registered_models(f"name = '{model}'"):
                client.create_registered_model(model)
            run_id = ids.get(run_name)
            if run_id is None:
                continue
            mv = client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id)
            for alias in aliases:
                client.set_registered_model_alias(model, alias, mv.version)
                client.set_model_version_tag(model, mv.version, f"promotion.{alias}.gate_beats_baseline", "passed")
                client.set_model_version_tag(model, mv.version, f"promotion.{alias}.gate_size", "passed")
            client.set_model_version_tag(model, mv.version, "source_study", model.split("-")[0])
    return ids


def _log_bytes(data: bytes, name: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        mlflow.log_artifact(str(path))


# --- data layer ---------------------------------------------------------------------------------
