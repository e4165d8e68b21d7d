"""The pathology study end to end on the embedded data, its Table V grid, and bad inputs."""
from __future__ import annotations

from functools import partial
import shutil
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest

from projects.core.entry import main_for
from projects.core import tracking
from projects.core.grid import run_grid
from projects.core.study import get_study
from projects.core.errors import InputError
from projects.pathology import grid as grid_mod
from projects.pathology import trainer
from projects.pathology.config import PathologyConfig

from conftest import running_runs

pathology_main = partial(main_for, get_study("pathology"))  # `python -m projects.pathology ...`

SMALL = dict(embedded_images=8, embedded_size=128, tile_size=64, batch_size=8, cpu_predict_n=6,
             progress=False, log_model=False)


def _run(config: PathologyConfig):
    with tracking.study_run("pathology", "t") as run:
        result = trainer.run(config)
    return mlflow.get_run(run.info.run_id), result


@pytest.mark.slow
def test_trained_model_beats_trivial_predictors_and_logs_a_mask_model():
    # Measured: ~300 optimizer steps take per-tile Jaccard from ~0.5 to ~0.9 on this data.
    cfg = PathologyConfig(arch="elunet", filters=8, depth=3, epochs=4, lr=1e-3, patience=0,
                          embedded_images=16, embedded_size=256, tile_size=64, batch_size=8,
                          cpu_predict_n=57, progress=False)
    run, _ = _run(cfg)
    m = run.data.metrics
    best_trivial = max(m["baseline_jaccard_all_background"], m["baseline_jaccard_all_tumor"])
    assert m["test_jaccard"] > best_trivial + 0.1, m
    assert m["test_jaccard_pooled"] > m["baseline_jaccard_pooled_all_tumor"] + 0.1, m
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    mask = model.predict(np.random.rand(2, 3, 64, 64).astype(np.float32))
    assert mask.shape == (2, 1, 64, 64) and 0 <= mask.min() and mask.max() <= 1


def test_run_logs_everything_the_issue_lists():
    run, _ = _run(PathologyConfig(arch="unet", filters=4, depth=3, epochs=1, **SMALL))
    m, tags, params = run.data.metrics, run.data.tags, run.data.params
    for key in ("test_jaccard", "test_jaccard_pooled", "test_dice", "test_pixel_accuracy",
                "baseline_jaccard_all_background", "baseline_jaccard_all_tumor", "train_loss", "val_loss",
                "val_jaccard", "params_count", "params_count_keras", "model_size_mb",
                "model_size_mb_with_optimizer", "cpu_load_s", "cpu_predict_s", "cpu_total_s",
                "cpu_latency_ms_p50"):
        assert key in m, key
    assert m["model_size_mb_with_optimizer"] > 2 * m["model_size_mb"]  # Adam keeps two moments
    # ONNX Runtime timed with the same protocol, after its outputs matched eager's
    assert m["onnx_max_abs_diff"] <= 1e-4 and m["cpu_total_s_onnx"] > 0, m
    assert m["cpu_total_s_onnx"] == pytest.approx(m["cpu_load_s_onnx"] + m["cpu_predict_s_onnx"])
    for tag in tracking.REQUIRED_TAGS:
        assert tags.get(tag), tag
    assert int(params["cpu_predict_images"]) <= 6
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"test_overlays.png", "split", "weights"} <= arts
    split = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/split/assignment.csv").splitlines()
    assert len(split) == 1 + 8


def test_the_searched_recipe_settings_train_time_and_log_a_model_that_reads_an_image():
    """loss=bce_dice and tta=true (projects/pathology/real_data.py RECIPE_SPACE): the run trains
    on the Dice term and online-augmented tiles, evaluates the 8-view mean, exports it to ONNX
    like any model, and the logged model rebuilds the wrapper from its settings and applies it
    to an image file."""
    import pandas as pd

    from projects.core import serving

    run, _ = _run(PathologyConfig(arch="elunet", filters=4, depth=3, epochs=1, loss="bce_dice", tta=True,
                                  rotate=True, stain_jitter=0.05, **(SMALL | {"log_model": True})))
    m, params = run.data.metrics, run.data.params
    assert (params["loss"], params["tta"], params["rotate"], params["stain_jitter"]) == ("bce_dice", "true", "true",
                                                                                       "0.05")
    assert m["onnx_max_abs_diff"] <= 1e-4 and m["cpu_total_s"] > 0, m
    settings = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/model/artifacts/settings.json")
    assert settings["tta"] is True
    image = (np.random.default_rng(0).random((100, 90, 3)) * 255).astype(np.uint8)
    out = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(
        pd.DataFrame({"image": [serving.encode_png(image)]}))
    assert np.asarray(out["mask"][0]).shape == (100, 90)


def test_second_run_reuses_the_preprocessing_cache():
    cfg = PathologyConfig(arch="unet", filters=2, depth=2, epochs=1, seed=11, **SMALL)
    first = trainer.prepare_data(cfg)
    second = trainer.prepare_data(cfg)
    assert second.cache_hit and second.cache_path == first.cache_path


def test_jaccard_is_per_tile_mean_with_empty_tiles_scoring_one():
    from projects.pathology.metrics import segmentation_metrics

    truth = np.zeros((2, 4, 4), np.uint8)
    truth[0, :2, :2] = 1  # 4 tumour pixels in tile 0; tile 1 empty
    pred = np.zeros_like(truth)
    pred[0, :2, :] = 1  # 8 predicted, 4 correct -> 0.5
    valid = np.ones_like(truth, bool)
    m = segmentation_metrics(pred, truth, valid)
    assert m["jaccard"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["jaccard_pooled"] == pytest.approx(4 / 8)
    valid[0, :, 2:] = False  # padding is excluded: the 4 false positives vanish
    assert segmentation_metrics(pred, truth, valid)["jaccard"] == pytest.approx(1.0)


def test_impossible_depth_is_rejected_before_training(capsys):
    code = pathology_main(["--arch", "unet", "--depth", "6", "--tile-size", "48", "--epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: tile_size") and "multiple of 32" in err
    assert running_runs() == []


@pytest.mark.slow
def test_table_v_grid_as_children_with_paper_table():
    base = PathologyConfig(epochs=1, **SMALL)
    grid = grid_mod.PathologyGridConfig(base=base, cells=[("elunet", 2, 3), ("unet", 2, 3)])
    with tracking.study_run("pathology", "grid") as parent:
        table = run_grid(get_study("pathology"), grid)
    children = mlflow.MlflowClient().search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    # every Table V cell is listed (13) plus the two cells we ran
    assert len(table) == 15
    cell = table[(table.arch == "unet") & (table.filters == 32) & (table.depth == 4)].iloc[0]
    assert cell.paper_params == 1926149 and cell.status == "not run"
    ran = table[(table.arch == "unet") & (table.filters == 2)].iloc[0]
    assert ran.status == "ok" and ran.ours_params_keras > 0


def test_default_grid_is_table_v():
    assert len(grid_mod.PathologyGridConfig().resolved_cells()) == 13


# --- bad input -------------------------------------------------------------------------------

def _paip_copy(tmp_path: Path) -> Path:
    src = trainer.resolve_data_root(PathologyConfig(**SMALL))
    dst = tmp_path / "paip"
    shutil.copytree(src, dst)
    return dst


def _fails(capsys, root: Path) -> str:
    code = pathology_main(["--data", str(root), "--epochs", "1", "--tile-size", "64", "--arch", "unet",
                           "--filters", "2", "--depth", "2"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ")
    assert running_runs() == []
    return err


def _first_mask(root: Path) -> Path:
    return sorted((root / "mask" / "tumor").glob("*.png"))[0]


def test_mismatched_mask_size(tmp_path, capsys):
    root = _paip_copy(tmp_path)
    mask = _first_mask(root)
    cv2.imwrite(str(mask), np.zeros((50, 60), np.uint8))
    msg = _fails(capsys, root)
    assert mask.name in msg and "size" in msg


def test_missing_mask(tmp_path, capsys):
    root = _paip_copy(tmp_path)
    mask = _first_mask(root)
    mask.unlink()
    msg = _fails(capsys, root)
    assert mask.name.replace("_tumor.png", "") in msg and "mask" in msg


def test_non_binary_mask(tmp_path, capsys):
    root = _paip_copy(tmp_path)
    mask = _first_mask(root)
    img = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    img[:4, :4] = 128
    cv2.imwrite(str(mask), img)
    msg = _fails(capsys, root)
    assert mask.name in msg and "128" in msg


def test_corrupt_png(tmp_path, capsys):
    root = _paip_copy(tmp_path)
    image = sorted((root / "img").glob("*.png"))[0]
    image.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    msg = _fails(capsys, root)
    assert image.name in msg


def test_monuseg_real_layout(shared_data):
    cfg = PathologyConfig(data=str(shared_data / "monuseg"), tile_size=256, equalization="none")
    from projects.pathology import data as seg_data

    samples = seg_data.discover(Path(cfg.data))
    assert sum(s.subset == "test" for s in samples) == 14 and len(samples) == 44


def _mlflow_run_pathology(*params: str):
    import os
    import subprocess
    import sys

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    repo = Path(__file__).resolve().parents[2]
    return subprocess.run([str(Path(sys.executable).parent / "mlflow"), "run", str(repo), "-e", "pathology",
                           "--env-manager", "local", "--experiment-name", "pathology",
                           "-P", "arch=elunet", "-P", "filters=2", "-P", "depth=2", "-P", "tile_size=128",
                           "-P", "epochs=1", "-P", "patience=0", "-P", "cpu_predict_n=4", "-P", "onnx_timing=false",
                           *params], capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
def test_device_and_precision_through_mlflow_run():
    """`-P device=cpu -P precision=bf16|fp32` train (the tags say which); `-P device=cuda`
    without a GPU is one line and no run of ours (the launcher's own run ends FAILED, saying why)."""
    import torch

    for precision in ("bf16", "fp32"):
        done = _mlflow_run_pathology("-P", "device=cpu", "-P", f"precision={precision}")
        assert done.returncode == 0, done.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=["pathology"], output_format="list")
    assert sorted(r.data.tags["precision"] for r in runs) == ["bf16", "fp32"]
    assert all(r.info.status == "FINISHED" and r.data.tags["device"] == "cpu" for r in runs)
    assert all(r.data.metrics["train_images_per_s"] > 0 for r in runs)
    if torch.cuda.is_available():
        return
    failed = _mlflow_run_pathology("-P", "device=cuda")
    assert failed.returncode != 0
    lines = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: device: cuda was asked for, but this machine has no CUDA GPU (use auto or cpu)"], \
        failed.stderr[-2000:]
    after = mlflow.search_runs(experiment_names=["pathology"], output_format="list")
    assert len(after) == 3 and running_runs() == []
    (launcher,) = [r for r in after if r.info.run_id not in {r.info.run_id for r in runs}]
    assert launcher.info.status == "FAILED" and launcher.data.tags["error"] == lines[0]
    assert not launcher.data.metrics  # nothing trained, nothing half-logged
