"""Every setting of a pathology run, with the paper's values as defaults."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PathologyConfig:
    data: str = "embedded"  # "embedded" or a folder (PAIP 2023 layout or images/ + masks/)
    arch: str = "elunet"  # unet | elunet | smp:<Architecture>:<encoder>
    filters: int = 8  # initial filters n; level i has n * 2^(i-1)
    depth: int = 5  # levels of the contracting path
    upsample: str = "bilinear"  # ELU-Net's parameter-free upsampling
    mpp: float = 0.0  # keep only tiles at this microns-per-pixel (the paper: 0.25); 0 = all
    tile_size: int = 256
    equalization: str = "hist"  # hist (the paper) | clahe | none
    augment_flips: bool = True  # x4: original, vertical, horizontal, both (training only)
    test_count: int = 0  # source images held out for test (the paper: 10 of 46); 0 = use test_fraction
    test_fraction: float = 0.2
    val_fraction: float = 0.2  # of the remaining images (the paper: 80:20)
    epochs: int = 40
    batch_size: int = 8
    lr: float = 1e-4
    patience: int = 5  # early stopping on val_loss, best weights restored; 0 = off
    threshold: float = 0.5  # probability -> tumour pixel
    seed: int = 0
    cpu_predict_n: int = 57  # tiles in the paper's CPU timing
    embedded_images: int = 24
    embedded_size: int = 512
    # Also time ONNX Runtime (exported, checked against eager to 1e-4) with the same protocol:
    # cpu_*_onnx metrics beside the eager ones (benchmarks/RESULTS.md: which runtime is fastest).
    onnx_timing: bool = True
    log_model: bool = True  # full MLflow model (registry candidate) vs weights file only
    progress: bool = True
