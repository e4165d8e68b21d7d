"""Every setting of a pathology run, with the paper's values as defaults (declared once:
the command line, MLproject check, search space and logged params read these fields).

Tile size, equalisation and mpp are checked where they are used, by the preprocessing
(`preprocess.PreprocessConfig`); the tile size against the model's depth by the study's
`check`: each rule lives in one place.
"""
from __future__ import annotations

from dataclasses import dataclass

from projects.core.config import Config, Section, section, setting
from projects.core.training import TrainConfig


@dataclass
class PathologyData(Section):
    data: str = setting("embedded", "'embedded' or a PAIP 2023 / images+masks folder")
    mpp: float = setting(0.0, "keep only tiles at this microns-per-pixel (the paper: 0.25); 0 = all", min=0)
    tile_size: int = setting(256, "tile size in px (each source image is cut into tiles)")
    downsample: int = setting(1, "shrink every source image and mask by this integer factor before tiling "
                                 "(1 = native resolution; 2 halves each side, so a 128-px tile sees what a "
                                 "256-px tile sees at 1, at a quarter of the compute)", min=1)
    equalization: str = setting("hist", "hist (the paper) | clahe | none")
    augment_flips: bool = setting(True, "x4 flips of the training tiles (original, vertical, horizontal, both)")
    test_count: int = setting(0, "source images held out for test (the paper: 10 of 46); 0 = use test_fraction",
                              min=0)
    # Both fractions are checked where the split is made (preprocess.split_images).
    test_fraction: float = setting(0.2, "share of the source images for test")
    val_fraction: float = setting(0.2, "share of the remaining images for validation (the paper: 80:20)")
    holdout_fraction: float = setting(0.15, "share of the source images set aside as the study's fixed holdout "
                                            "(a predefined test/ subset is the holdout): no run trains on it, the "
                                            "registry compares candidates on it; 0: none", min=0, max=0.5)
    embedded_images: int = setting(24, "source images of the generated set when data=embedded", min=3)
    embedded_size: int = setting(512, "size in px of the generated images when data=embedded", min=16)


@dataclass
class PathologyModel(Section):
    arch: str = setting("elunet", "unet | elunet | smp:<Arch>:<encoder>")
    filters: int = setting(8, "initial filters n; level i has n * 2^(i-1)")
    depth: int = setting(5, "levels of the contracting path")
    upsample: str = setting("bilinear", "ELU-Net's parameter-free upsampling: bilinear | nearest")


@dataclass
class PathologyTrain(TrainConfig):
    epochs: int = setting(40, "training epochs", min=1)
    batch_size: int = setting(8, "batch size", min=1)
    lr: float = setting(1e-4, "Adam learning rate", positive=True)
    patience: int = setting(5, "early stopping: epochs without a better val_loss (best weights restored); 0 = off",
                            min=0)
    # The paper trains on BCE alone. Nuclei cover ~22% of a MoNuSeg tile and the headline is
    # overlap, so adding a soft-Dice term trains on what is scored (a searchable choice).
    loss: str = setting("bce", "bce (the paper) | bce_dice (BCE plus soft Dice over the batch's valid pixels)",
                        choices=("bce", "bce_dice"))
    # Online draws (projects/pathology/augment.py), beside the paper's stored flips: what a small
    # H&E set of a few labs lacks is orientation and stain variety.
    rotate: bool = setting(False, "a random quarter turn of each training tile, drawn every epoch")
    stain_jitter: float = setting(0.0, "H&E stain jitter sigma of each training tile, drawn every epoch "
                                       "(Tellez et al. 2018: 0.05 light, 0.2 strong); 0 = off", min=0, max=1)
    hsv_jitter: float = setting(0.0, "HSV jitter sigma of each training tile, drawn every epoch: hue turned by "
                                     "U(-s, s) of the circle, saturation and brightness scaled by U(1-s, 1+s); "
                                     "0 = off", min=0, max=1)


@dataclass
class PathologyEvaluation(Section):
    threshold: float = setting(0.5, "probability -> tumour pixel", unit_interval=True)
    cpu_predict_n: int = setting(57, "tiles in the paper's CPU timing", min=1)
    # Also time ONNX Runtime (exported, checked against eager to 1e-4) with the same protocol:
    # cpu_*_onnx metrics beside the eager ones (benchmarks/RESULTS.md: which runtime is fastest).
    onnx_timing: bool = setting(True, "also time ONNX Runtime (cpu_total_s_onnx ...)")
    log_model: bool = setting(True, "log the full MLflow model (a registry candidate), not only the weights")
    tta: bool = setting(False, "evaluate (validation, test, the logged model) on the mean probability of the 8 flips "
                               "and quarter turns of each tile (8x the prediction cost)")


@dataclass(init=False)
class PathologyConfig(Config):
    # Sections: dataset (not "data": that is the setting naming the data folder), model, train, evaluation.
    dataset: PathologyData = section(PathologyData)
    model: PathologyModel = section(PathologyModel)
    train: PathologyTrain = section(PathologyTrain)
    evaluation: PathologyEvaluation = section(PathologyEvaluation)

    ADDED_LATER = {"downsample": 1, "loss": "bce", "tta": False, "rotate": False, "stain_jitter": 0.0,
                   "hsv_jitter": 0.0}
