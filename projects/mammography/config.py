"""Every setting of a mammography run, with the paper's values as defaults."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MammographyConfig:
    data: str = "embedded"  # "embedded" or a folder (mini-MIAS layout or folder-per-class)
    task: str = "7class"  # 7class | benign_malignant | normal_abnormal
    arch: str = "resnet101"  # any timm architecture
    weights: str = ""  # optional local pretrained weights file (nothing is downloaded)
    image_size: int = 256  # the paper: 256 (128 and 64 also tried)
    split: str = "80:20"  # train:test
    val_fraction: float = 0.2  # of the training films, for early stopping / model selection
    augment: bool = False  # the paper's "augmented data" scenario, training films only
    augment_factor: int = 2  # training set size multiplier (the paper's counts imply ~2x)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    class_weighted: bool = False  # the fix for the all-NORM collapse (see README)
    patience: int = 0  # early stopping on val_loss; 0 = off
    seed: int = 0
    skip_missing: bool = False
    embedded_size: int = 256  # resolution of the generated films when data=embedded
    cpu_predict_n: int = 0  # images in the CPU timing; 0 = every test film
    # Also time ONNX Runtime (exported, checked against eager to 1e-4) with the same protocol:
    # cpu_*_onnx metrics beside the eager ones (benchmarks/RESULTS.md: which runtime is fastest).
    onnx_timing: bool = True
    log_model: bool = True  # full MLflow model (registry candidate) vs weights file only
    progress: bool = True
