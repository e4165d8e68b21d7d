"""A third study that touches no platform code: is the bar in a small grey image vertical or
horizontal? Generated data, a tiny CNN and the trainer's hooks; it registers itself like the
built-in studies (imported through MEDIMG_STUDIES=shapes_study) and brings its registry policy
(policies/), so grid, search, promotion and dashboards handle it end to end. It has no paper."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from projects.core import artifacts, tracking
from projects.core.config import Config, section, setting
from projects.core.specs.dashboard import CurveSpec, DashboardSpec
from projects.core.specs.headline import Headline
from projects.core.study import Study, register_study
from projects.core.trainer import TestOutcome, Trainer
from projects.core.training import TrainConfig

NAME, TASK = "shapes", "bars"
ACC, BASE = tracking.test_metric("accuracy"), tracking.baseline_metric("majority_accuracy")


@dataclass
class ShapesSettings(TrainConfig):  # one section: the generated data, the CNN and its training
    data: str = setting("embedded", "'embedded' (generated; the only source)", choices=("embedded",))
    n_images: int = setting(240, "generated images", min=20)
    image_size: int = setting(24, "image size in px", min=12, max=128)
    arch: str = setting("cnn", "the one architecture: a two-layer CNN", choices=("cnn",))
    width: int = setting(8, "channels of the first conv", min=1)
    epochs: int = setting(4, "training epochs", min=1)
    batch_size: int = setting(16, "batch size", min=2)
    lr: float = setting(1e-2, "Adam learning rate", positive=True)


@dataclass(init=False)
class ShapesConfig(Config):
    train: ShapesSettings = section(ShapesSettings)


@dataclass
class ShapesGrid:
    base: ShapesConfig = setting(ShapesConfig(), "every cell's settings", cli_flag=False)
    widths: list[int] = setting([4, 8], "first-conv widths to compare")


def generate(cfg: ShapesConfig) -> tuple[np.ndarray, np.ndarray]:
    """Vertical (label 0) and horizontal (1) bars in Gaussian noise, the same for every run of the settings."""
    rng, s = np.random.default_rng(cfg.image_size), cfg.image_size
    images = rng.normal(0, 0.15, (cfg.n_images, 1, s, s)).astype(np.float32)
    for i, image in enumerate(images):
        r, c = rng.integers(0, s // 2, 2)
        (image[0].T if i % 2 else image[0])[r:r + s // 2, c:c + 2] += 1.0  # .T is a view: the bar lies across
    return images, np.arange(cfg.n_images) % 2


@torch.inference_mode()
def evaluate(model, batches) -> dict[str, float]:
    out, targets = (torch.cat(t) for t in zip(*((model(x), y) for x, y in batches)))
    return {"loss": float(nn.functional.cross_entropy(out, targets)),
            "accuracy": float((out.argmax(1) == targets).double().mean())}


class ShapesTrainer(Trainer):
    """The hooks of a shapes run; the platform's trainer does the rest."""
    study = NAME
    minus_baseline = {"accuracy": ("majority_accuracy",)}

    def prepare(self, cfg):  # (images, labels) of train, val and test: 60:20:20
        (images, labels), n = map(torch.from_numpy, generate(cfg)), cfg.n_images
        parts = np.split(np.random.default_rng(cfg.seed).permutation(n), [int(0.6 * n), int(0.8 * n)])
        return SimpleNamespace(digest=f"shapes-{n}-{cfg.image_size}",
                               **{k: (images[v], labels[v]) for k, v in zip(("train", "val", "test"), parts)})

    def describe(self, cfg, prepared):
        return dict(task=TASK, arch=cfg.arch, split="60:20:20", augment=False)

    def baselines(self, cfg, prepared):
        train, test = prepared.train[1].numpy(), prepared.test[1].numpy()
        return {"majority_accuracy": float((test == np.bincount(train, minlength=2).argmax()).mean())}

    def build_model(self, cfg, prepared):
        w = cfg.width
        return nn.Sequential(nn.Conv2d(1, w, 5, padding=2), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
                             nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(2 * w, 2))

    def loss(self, cfg, prepared):
        return nn.CrossEntropyLoss()

    def evaluator(self, cfg, prepared):
        return evaluate

    def loaders(self, cfg, prepared, generator):
        return (DataLoader(TensorDataset(*prepared.train), batch_size=cfg.batch_size, shuffle=True, generator=generator),
                DataLoader(TensorDataset(*prepared.val), batch_size=64))

    def test(self, cfg, prepared, model):
        return TestOutcome({"accuracy": evaluate(model.eval(), [prepared.test])["accuracy"]})

    def timed_inputs(self, cfg, prepared, outcome):
        return prepared.test[0][:8]

    def log_candidate(self, cfg, prepared, model, outcome):  # a module returning probabilities
        artifacts.log_candidate_model(nn.Sequential(model, nn.Softmax(dim=1)), prepared.test[0][:2].numpy())


class ShapesStudy(Study):
    name, tasks, trainer = NAME, (TASK,), ShapesTrainer()
    config_cls, grid_cls = ShapesConfig, ShapesGrid
    headline = Headline("accuracy", "test accuracy", baselines=(BASE,), selection=tracking.val_metric("accuracy"))
    data_fields = grid_data_fields = ("data", "n_images", "image_size", "seed")
    default_space = "width=2|4|8"
    summary_metrics = ((ACC, "acc"), (BASE, "baseline"))
    policy_dirs = (str(Path(__file__).resolve().parent / "policies"),)
    dashboard = DashboardSpec("Shapes (generated)", (ACC, BASE), "width", "first-conv width", curves=(CurveSpec(
        "Accuracy against width", "Dashed: the majority baseline.", "width", "first-conv width", groups=(),
        panels=((ACC, "test accuracy", ((BASE, "majority baseline"),)),)),))

    def grid_configs(self, grid) -> list:
        return [grid.base.replace(width=w) for w in grid.widths]

    def grid_cell(self, config):
        return f"w{config.width}-s{config.seed}", {"width": config.width, "seed": config.seed}


STUDY = register_study(ShapesStudy())
