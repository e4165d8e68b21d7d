"""A third study that touches no platform code: is the bar in a small grey image vertical or
horizontal? Generated data, a tiny CNN, the platform's own training loop, tracking, efficiency
and registry conventions. It registers itself like the built-in studies (importing this
module, e.g. through MEDIMG_STUDIES=shapes_study) and brings its registry policy
(policies/), so grid, search, promotion and dashboards handle it end to end.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from projects.core import artifacts, efficiency, timing, tracking
from projects.core.config import Config, Section, section, setting
from projects.core.errors import InputError
from projects.core.study import CurveSpec, DashboardSpec, Headline, Study, register_study
from projects.core.training import TrainConfig, fit, seed_everything

NAME, TASK = "shapes", "bars"
ACC, BASE = tracking.test_metric("accuracy"), tracking.baseline_metric("majority_accuracy")


# --- configuration ---------------------------------------------------------------------------
@dataclass
class ShapesData(Section):
    data: str = setting("embedded", "'embedded' (generated; the only source)")
    n_images: int = setting(240, "generated images", min=20)
    image_size: int = setting(24, "image size in px", min=12, max=128)
    noise: float = setting(0.15, "Gaussian noise on the images", min=0)

    def validate(self) -> None:
        if self.data != "embedded":
            raise InputError("data", f"only 'embedded' exists for this study, got {self.data!r}")


@dataclass
class ShapesModel(Section):
    arch: str = setting("cnn", "cnn | linear", choices=("cnn", "linear"))
    width: int = setting(8, "channels of the first conv", min=1)


@dataclass
class ShapesTrain(TrainConfig):
    epochs: int = setting(4, "training epochs", min=1)
    batch_size: int = setting(16, "batch size", min=2)
    lr: float = setting(1e-2, "Adam learning rate", positive=True)


@dataclass(init=False)
class ShapesConfig(Config):
    dataset: ShapesData = section(ShapesData)
    model: ShapesModel = section(ShapesModel)
    train: ShapesTrain = section(ShapesTrain)


@dataclass
class ShapesGrid:
    base: ShapesConfig = setting(ShapesConfig(), "every cell's settings", cli_flag=False)
    widths: list[int] = setting([4, 8], "first-conv widths to compare")
    repeats: int = setting(1, "seeds per cell", min=1)


# --- data, model, run --------------------------------------------------------------------------
@dataclass
class Prepared:
    images: dict[str, np.ndarray]  # split -> (N, 1, S, S) float32
    labels: dict[str, np.ndarray]
    digest: str


def generate(cfg: ShapesConfig) -> tuple[np.ndarray, np.ndarray]:
    """Vertical (0) and horizontal (1) bars of random length, width and place, with noise;
    seeded by nothing but the settings, so every run of a config sees the same images."""
    rng = np.random.default_rng(cfg.n_images * 1000 + cfg.image_size)
    s = cfg.image_size
    images, labels = [], []
    for i in range(cfg.n_images):
        label = i % 2
        length, width = int(rng.integers(s // 2, s)), int(rng.integers(2, max(3, s // 6)))
        a, b = int(rng.integers(0, s - length + 1)), int(rng.integers(0, s - width + 1))
        bar = np.zeros((s, s), np.float32)
        bar[a:a + length, b:b + width] = 1.0
        shape = bar.T if label else bar
        images.append(np.clip(shape + rng.normal(0, cfg.noise, (s, s)), 0, 1).astype(np.float32))
        labels.append(label)
    return np.stack(images)[:, None], np.asarray(labels, np.int64)


def prepare(cfg: ShapesConfig) -> Prepared:
    images, labels = generate(cfg)
    order = np.random.default_rng(cfg.seed).permutation(len(labels))
    cut = [int(0.6 * len(order)), int(0.8 * len(order))]
    parts = dict(zip(("train", "val", "test"), np.split(order, cut)))
    digest = f"shapes-{cfg.n_images}-{cfg.image_size}-{cfg.noise}"
    return Prepared({k: images[v] for k, v in parts.items()}, {k: labels[v] for k, v in parts.items()}, digest)


def build(cfg: ShapesConfig) -> nn.Module:
    s = cfg.image_size
    if cfg.arch == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(s * s, 2))
    w = cfg.width
    return nn.Sequential(nn.Conv2d(1, w, 5, padding=2), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(2 * w, 2))


class Probabilities(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), dim=1)


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.inference_mode():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


@dataclass
class Result:
    run_id: str
    metrics: dict[str, float]


def run(cfg: ShapesConfig, prepared: Prepared | None, run_kind: str, on_epoch) -> Result:
    prepared = prepared or prepare(cfg)
    mlflow.set_tags(tracking.standard_tags(study=NAME, task=TASK, arch=cfg.arch, split="60:20:20", augment=False,
                                           seed=cfg.seed, dataset_digest=prepared.digest, run_kind=run_kind))
    mlflow.set_tag("width", str(cfg.width))
    tracking.log_config(cfg)
    x, y = prepared.images, prepared.labels
    majority = np.bincount(y["train"], minlength=2).argmax()
    base = float((y["test"] == majority).mean())
    tracking.log_metrics_finite({BASE: base})
    gen = seed_everything(cfg.seed)
    model = build(cfg)
    loader = DataLoader(TensorDataset(torch.from_numpy(x["train"]), torch.from_numpy(y["train"])),
                        batch_size=cfg.batch_size, shuffle=True, generator=gen)
    val = DataLoader(TensorDataset(torch.from_numpy(x["val"]), torch.from_numpy(y["val"])), batch_size=64)
    loss_fn = nn.CrossEntropyLoss()

    def evaluate(m, batches):
        loss, right, n = 0.0, 0, 0
        for inputs, targets in batches:  # on the run's device
            out = m(inputs)
            loss += float(loss_fn(out, targets)) * len(inputs)
            right += int((out.argmax(1) == targets).sum())
            n += len(inputs)
        return {"loss": loss / n, "accuracy": right / n}

    fit(model, loader, val, loss_fn, cfg.train, evaluate, on_epoch=on_epoch)
    test = {ACC: _accuracy(model, x["test"], y["test"])}
    test[tracking.test_metric("accuracy_minus_baseline")] = test[ACC] - base
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model_weights.pt"
        size = efficiency.save_weights(model, weights)
        timings = timing.time_cpu_runtimes(lambda: build(cfg), weights, torch.from_numpy(x["test"][:8]), 8,
                                              onnx=False)
    tracking.log_metrics_finite(test | timings | {tracking.M_SIZE_MB: size / 1e6,
                                                 tracking.M_PARAMS: efficiency.count_params(model)})
    mlflow.log_param("image_shape", f"1x{cfg.image_size}x{cfg.image_size}")
    artifacts.log_candidate_model(Probabilities(model), x["test"][:2])
    print(f"[shapes] {cfg.arch} w={cfg.width}: test accuracy {test[ACC]:.3f} (baseline {base:.3f})", file=sys.stderr)
    return Result(mlflow.active_run().info.run_id, test | {BASE: base})


# --- the study ---------------------------------------------------------------------------------
class ShapesStudy(Study):
    name = NAME
    config_cls = ShapesConfig
    grid_cls = ShapesGrid
    tasks = (TASK,)
    headline = Headline("accuracy", "test accuracy", baselines=(BASE,), selection=tracking.val_metric("accuracy"))
    data_fields = ("data", "n_images", "image_size", "noise", "seed")
    grid_data_fields = data_fields
    default_space = "arch=cnn|linear,width=2|4|8"
    summary_metrics = ((ACC, "acc"), (BASE, "baseline"))
    policy_dirs = (str(Path(__file__).resolve().parent / "policies"),)
    dashboard = DashboardSpec(
        title="Shapes (generated)", metrics=(ACC, BASE), size_by="width", size_label="first-conv width",
        hover=("width {width}",), run_columns=("image_size",),
        curves=(CurveSpec(title="Accuracy against width", caption="Mean over seeds; dashed: the majority baseline.",
                          x="width", x_label="first-conv width", groups=("arch",),
                          panels=((ACC, "test accuracy", ((BASE, "majority baseline"),)),)),),
        paper_caption="This study has no paper: the table lists our runs only.",
        paper_columns=("arch", "width", "runs", "ours_accuracy"))

    def prepare(self, config):
        return prepare(config)

    def run(self, config, prepared=None, run_kind=tracking.RUN_KIND_SINGLE, on_epoch=None):
        return run(config, prepared, run_kind, on_epoch)

    def count_params(self, config, prepared) -> int:
        return efficiency.count_params(build(config))

    def grid_configs(self, grid) -> list:
        return [grid.base.replace(width=w, seed=grid.base.seed + r) for w in grid.widths for r in range(grid.repeats)]

    def grid_cell(self, config):
        return f"{config.arch}-w{config.width}-s{config.seed}", {"arch": config.arch, "width": config.width,
                                                                 "seed": config.seed}

    def comparison_table(self, runs: pd.DataFrame) -> pd.DataFrame:
        done = runs[runs["status"] == "FINISHED"]
        return done.groupby(["arch", "width"], as_index=False).agg(runs=(ACC, "size"), ours_accuracy=(ACC, "mean"))

    def paper_points(self) -> pd.DataFrame:
        return pd.DataFrame(columns=["arch", "width", ACC])

    def paper_vs_ours(self, table: pd.DataFrame) -> pd.DataFrame:
        if table.empty:
            return pd.DataFrame(columns=["arch", "width", "runs", "ours_accuracy"])
        table = table.assign(width=pd.to_numeric(table.get("width"), errors="coerce"))
        return table.groupby(["arch", "width"], as_index=False).agg(runs=(ACC, "size"), ours_accuracy=(ACC, "mean"))

    def summary_lines(self, table) -> list[str]:
        return [f"shapes: {r.arch} w={r.width} acc {r.ours_accuracy:.3f}" for r in table.itertuples()]


STUDY = register_study(ShapesStudy())
