"""The pathology models the benchmarks measure: U-Net (32, 5) and ELU-Net (8, 5), with the
tiles, training loss and metric they are checked by (benchmarks/runtimes.py)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from projects.core.specs.benchmarks import CaseData, ReferenceModel, TrainingReference


def _unet() -> nn.Module:
    from projects.pathology.models import build_model

    return build_model("unet", 32, 5)


def _elunet() -> nn.Module:
    from projects.pathology.models import build_model

    return build_model("elunet", 8, 5)


def case_data(size: int) -> CaseData:
    """The embedded PAIP tiles at `size` px of the default split."""
    from projects.pathology import trainer
    from projects.pathology.config import PathologyConfig

    prepared = trainer.prepare_data(PathologyConfig.of(tile_size=size, progress=False))
    a = prepared.arrays

    def tiles(x):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32) / np.float32(255)

    return CaseData(tiles(a["train"]["images"]), a["train"]["masks"], tiles(a["test"]["images"]),
                    a["test"]["masks"], a["test"]["valid"], source=f"embedded PAIP, {size}px tiles")


def training(data: CaseData, recipe: Mapping) -> tuple[TensorDataset, nn.Module]:
    """The study's masked BCE, or BCE with tumour pixels weighted `pos_weight` times."""
    from projects.pathology.trainer import MaskedBCE

    x = torch.from_numpy(data.train)
    masks = torch.from_numpy(data.train_targets.astype(np.float32))
    if recipe.get("pos_weight", 1.0) != 1.0:
        return TensorDataset(x, masks[:, None]), nn.BCEWithLogitsLoss(pos_weight=torch.tensor(recipe["pos_weight"]))
    target = torch.stack([masks, torch.ones_like(masks)], 1)  # (mask, valid): tiles are unpadded
    return TensorDataset(x, target), MaskedBCE()


def score(data: CaseData, outputs: np.ndarray, n: int) -> float:
    """Per-tile Jaccard of the first n test tiles (logits > 0 = probability > 0.5)."""
    from projects.pathology.metrics import segmentation_metrics

    return segmentation_metrics(outputs[:, 0] > 0, data.test_targets[:n], data.test_valid[:n])["jaccard"]


def baseline(data: CaseData, n: int) -> float:
    """The better of all-background and all-tumour on the same tiles."""
    from projects.pathology.metrics import trivial_baselines

    b = trivial_baselines(data.test_targets[:n], data.test_valid[:n])
    return max(b["jaccard_all_background"], b["jaccard_all_tumor"])


def agreement(ref: np.ndarray, out: np.ndarray) -> float:
    """Share of pixels predicted the same as the reference."""
    return float(np.mean((ref > 0) == (out > 0)))


REFERENCE_MODELS = (
    # BCE weight of tumour pixels: the Keras-initialised U-Net (no batch norm) predicted no
    # tumour at all after 120 steps with plain BCE (lr 3e-4 or 1e-3): a model whose every
    # logit is far below 0 hides what a runtime changes. Weighted 4x it reached test Jaccard
    # 0.63 in 60 steps. ELU-Net learns with plain BCE (0.71 after 90 steps).
    ReferenceModel("unet", "U-Net (32,5)", 3, _unet, case_data, training, score, baseline, agreement,
                   metric_name="Jaccard", pos_weight=4.0),
    ReferenceModel("elunet", "ELU-Net (8,5)", 3, _elunet, case_data, training, score, baseline, agreement,
                   metric_name="Jaccard"),
)


def training_step(config) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """One batch of the recipe's shape: RGB tiles, (mask, valid) targets, the masked BCE."""
    from projects.pathology.models import build_model
    from projects.pathology.trainer import MaskedBCE

    gen = torch.Generator().manual_seed(0)
    n, t = config.batch_size, config.tile_size
    masks = (torch.rand(n, t, t, generator=gen) > 0.7).float()
    return (build_model(config.arch, config.filters, config.depth, upsample=config.upsample), MaskedBCE(),
            torch.rand(n, 3, t, t, generator=gen), torch.stack([masks, torch.ones_like(masks)], 1))


# The quick profile's data and training settings (profiles.py) with the benchmark's two models:
# ELU-Net (8,5) and U-Net (32,4) at 256-px tiles as in the paper.
_QUICK = dict(embedded_images=16, embedded_size=256, tile_size=64, epochs=3, batch_size=8, lr=1e-3, patience=0,
              cpu_predict_n=8, onnx_timing=False, log_model=False, progress=False)
TRAINING_REFERENCES = (
    TrainingReference("elunet-8-5", "ELU-Net (8,5)", "elunet",
                      _QUICK | dict(arch="elunet", filters=8, depth=5), training_step, {"tile_size": 256},
                      {"tile_size": 64}),
    TrainingReference("unet-32-4", "U-Net (32,4)", "unet", _QUICK | dict(arch="unet", filters=32, depth=4),
                      training_step, {"tile_size": 256}, {"tile_size": 64}),
)
