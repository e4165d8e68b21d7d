"""The mammography model the benchmarks measure: the paper's resnet101 (7 classes), with
the data, training loss and metric it is checked by (benchmarks/runtimes.py)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from projects.core.specs.benchmarks import CaseData, ReferenceModel, TrainingReference


def _resnet101() -> nn.Module:
    from projects.mammography.models import build_classifier

    return build_classifier("resnet101", 7)


def case_data(size: int) -> CaseData:
    """The embedded MIAS films at `size` px: train (+ val) and test of the default split."""
    from projects.mammography import trainer
    from projects.mammography.config import MammographyConfig

    prepared = trainer.prepare_data(MammographyConfig.of(image_size=size, progress=False))

    def films(x):
        return np.ascontiguousarray(x[:, None], np.float32) / np.float32(255)

    train = np.concatenate([prepared.images["train"], prepared.images["val"]])
    train_y = np.concatenate([prepared.targets["train"], prepared.targets["val"]])
    return CaseData(films(train), train_y, films(prepared.images["test"]), prepared.targets["test"],
                    class_names=tuple(prepared.class_names), source=f"embedded MIAS, {size}px films")


def training(data: CaseData, recipe: Mapping) -> tuple[TensorDataset, nn.Module]:
    """Class-weighted cross-entropy: the README's fix for the all-NORM collapse."""
    x = torch.from_numpy(data.train)
    y = torch.from_numpy(data.train_targets.astype(np.int64))
    counts = np.bincount(data.train_targets, minlength=len(data.class_names)).astype(np.float32)
    weights = torch.from_numpy(counts.sum() / np.maximum(counts, 1) / len(counts))
    return TensorDataset(x, y), nn.CrossEntropyLoss(weight=weights)


def score(data: CaseData, outputs: np.ndarray, n: int) -> float:
    """Macro-F1 of the first n test films."""
    from projects.mammography.metrics import classification_metrics

    return classification_metrics(data.test_targets[:n], outputs.argmax(1), data.class_names)["f1_macro"]


def baseline(data: CaseData, n: int) -> float:
    """Macro-F1 of always predicting the majority training class."""
    from projects.mammography.metrics import majority_baseline

    return majority_baseline(data.train_targets, data.test_targets[:n], len(data.class_names))["majority_f1_macro"]


def agreement(ref: np.ndarray, out: np.ndarray) -> float:
    """Share of films predicted the same class as the reference."""
    return float(np.mean(ref.argmax(1) == out.argmax(1)))


REFERENCE_MODELS = (
    # A global-pooling classifier sees another scale at another size: trained at 256 px.
    ReferenceModel("resnet101", "resnet101 (7 classes)", 1, _resnet101, case_data, training, score, baseline,
                   agreement, metric_name="macro-F1", steps_full=32, train_size_full=256),
)


def training_step(config) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """One batch of the recipe's shape: grey films, class labels, cross-entropy."""
    from projects.mammography.models import build_classifier

    gen = torch.Generator().manual_seed(0)
    n, s = config.batch_size, config.image_size
    return (build_classifier(config.arch, 7), nn.CrossEntropyLoss(), torch.rand(n, 1, s, s, generator=gen),
            torch.randint(0, 7, (n,), generator=gen))


# The quick profile's classifier: resnet10t at 96 px, class-weighted, lr 1e-3 (profiles.py).
TRAINING_REFERENCES = (
    TrainingReference("resnet10t-96", "timm resnet10t (96 px)", "timm",
                      dict(arch="resnet10t", image_size=96, epochs=15, batch_size=32, lr=1e-3, class_weighted=True,
                           cpu_predict_n=8, onnx_timing=False, log_model=False, progress=False), training_step,
                      quick_step_settings={"image_size": 64}),
)
