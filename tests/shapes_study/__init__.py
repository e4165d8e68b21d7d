"""A third study that touches no platform code: is the bar in a small grey image vertical or
horizontal? Generated data, a tiny CNN, the platform's own training loop, tracking, efficiency
and registry conventions. It registers itself like the built-in studies (importing this
module, e.g. through MEDIMG_STUDIES=shapes_study) and brings its registry policy
(policies/), so grid, search, promotion and dashboards handle it end to end.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from projects.core import artifacts, efficiency, tracking
from projects.core.config import Config, Section, section, setting
from projects.core.errors import InputError
from projects.core.study import CurveSpec, DashboardSpec, Headline, Study, register_study
from projects.core.trainer import TestOutcome, Trainer
from projects.core.training import TrainConfig

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


class ShapesTrainer(Trainer):
    """The hooks of a shapes run; the platform's trainer does the rest."""
    study = NAME
    minus_baseline = {"accuracy": ("majority_accuracy",)}
    summary = ("{config.arch} w={config.width}: test accuracy {test[accuracy]:.3f} "
               "(baseline {base[majority_accuracy]:.3f})")

    def prepare(self, cfg):
        return prepare(cfg)

    def describe(self, cfg, prepared):
        return dict(task=TASK, arch=cfg.arch, split="60:20:20", augment=False)

    def extra_tags(self, cfg, prepared):
        return {"width": str(cfg.width)}

    def baselines(self, cfg, prepared):
        y = prepared.labels
        return {"majority_accuracy": float((y["test"] == np.bincount(y["train"], minlength=2).argmax()).mean())}

    def build_model(self, cfg, prepared):
        return build(cfg)

    def loss(self, cfg, prepared):
        return nn.CrossEntropyLoss()

    def loaders(self, cfg, prepared, generator):
        x, y = prepared.images, prepared.labels
        data = {k: TensorDataset(torch.from_numpy(x[k]), torch.from_numpy(y[k])) for k in ("train", "val")}
        return (DataLoader(data["train"], batch_size=cfg.batch_size, shuffle=True, generator=generator),
                DataLoader(data["val"], batch_size=64))

    def evaluator(self, cfg, prepared):
        def evaluate(model, batches):  # batches on the run's device
            out, targets = zip(*((model(x), y) for x, y in batches))
            out, targets = torch.cat(out), torch.cat(targets)
            return {"loss": float(nn.functional.cross_entropy(out, targets)),
                    "accuracy": float((out.argmax(1) == targets).float().mean())}
        return evaluate

    def test(self, cfg, prepared, model):
        with torch.inference_mode():
            pred = model.eval()(torch.from_numpy(prepared.images["test"])).argmax(1).numpy()
        return TestOutcome({"accuracy": float((pred == prepared.labels["test"]).mean())})

    def timed_inputs(self, cfg, prepared, outcome):
        return torch.from_numpy(prepared.images["test"][:8])

    def log_candidate(self, cfg, prepared, model, outcome):
        artifacts.log_candidate_model(Probabilities(model), prepared.images["test"][:2])


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
        return ShapesTrainer().run_training(config, prepared, run_kind, on_epoch)

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
