"""Every setting of a mammography run, with the paper's values as defaults (declared once:
the command line, MLproject check, search space and logged params read these fields)."""
from __future__ import annotations

from dataclasses import dataclass

from projects.core.config import Config, Section, section, setting
from projects.core.errors import InputError
from projects.core.training import TrainConfig
from projects.mammography.data import TASKS
from projects.mammography.presets import PRESETS
from projects.mammography.splits import parse_ratio


@dataclass
class MammographyData(Section):
    data: str = setting("embedded", "'embedded' or a mini-MIAS / folder-per-class folder")
    task: str = setting("7class", " | ".join(TASKS))
    image_size: int = setting(256, "input size in px (the paper: 256; 128 and 64 also tried)", min=16, max=2048)
    split: str = setting("80:20", "train:test ratio, e.g. 80:20")
    val_fraction: float = setting(0.2, "share of the training films for validation (early stopping, model "
                                       "selection)", unit_interval=True)
    holdout_fraction: float = setting(0.15, "share of the patients set aside as the study's fixed holdout: no run "
                                            "trains on it, the registry compares candidates on it; 0: none (the "
                                            "paper's splits over every film)", min=0, max=0.5)
    augment: bool = setting(False, "the paper's augmented scenario (training films only)")
    augment_factor: int = setting(2, "training set size multiplier when augmenting (the paper's counts imply ~2x)",
                                  min=1)
    skip_missing: bool = setting(False, "skip Info.txt rows whose film file is missing")
    # ROI: the location is given by Info.txt; this classifies a region, it does not detect one.
    input: str = setting("film", "film (the whole film, the paper) | roi (crops of the annotated abnormalities "
                                 "and of NORM breast tissue; image_size is the crop's side)", choices=("film", "roi"))
    roi_crop_px: int = setting(192, "ROI crop side in original 1024-px film pixels (a lesion's crop also covers "
                                    "2.4x its radius)", min=16)
    roi_norm_crops: int = setting(2, "ROI crops per NORM film, inside the breast", min=1)
    embedded_size: int = setting(256, "resolution of the generated films when data=embedded", min=16)

    def validate(self) -> None:
        if self.task not in TASKS:
            raise InputError("task", f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")
        try:
            parse_ratio(self.split)
        except InputError as exc:
            raise InputError("split", exc.problem) from None
        if self.input == "roi" and self.augment:
            raise InputError("augment", "the paper's film augmentation is for input=film; ROI training crops are "
                                        "always augmented (re-cut from the film at every draw)")


@dataclass
class MammographyModel(Section):
    arch: str = setting("resnet101", "any timm architecture (random init)")
    weights: str = setting("", "optional local pretrained weights file (nothing is downloaded)")
    pretrained: bool = setting(False, "timm's published weights for arch, downloaded (needs a connection and "
                                      "HF_HUB_OFFLINE=0; weights= wins when both are given)")


@dataclass
class MammographyTrain(TrainConfig):
    epochs: int = setting(10, "training epochs", min=1)
    batch_size: int = setting(32, "batch size", min=2)
    lr: float = setting(1e-4, "Adam learning rate", positive=True)
    class_weighted: bool = setting(False, "inverse-frequency class weights in the loss (the fix for the "
                                          "all-NORM collapse, see README)")
    sampling: str = setting("shuffle", "shuffle | balanced (every class drawn equally often, with replacement)",
                            choices=("shuffle", "balanced"))


@dataclass
class MammographyEvaluation(Section):
    cpu_predict_n: int = setting(0, "images in the CPU timing; 0 = every test film", min=0)
    # Also time ONNX Runtime (exported, checked against eager to 1e-4) with the same protocol:
    # cpu_*_onnx metrics beside the eager ones (benchmarks/RESULTS.md: which runtime is fastest).
    onnx_timing: bool = setting(True, "also time ONNX Runtime (cpu_total_s_onnx ...)")
    log_model: bool = setting(True, "log the full MLflow model (a registry candidate), not only the weights")
    tta: bool = setting(False, "evaluate (validation, test, the logged model) on the mean of the 8 flips and "
                               "quarter turns of each input (costs 8x at prediction; the ROI recipe uses it)")


@dataclass
class MammographyRecipe(Section):
    preset: str = setting("", "a named recipe (projects/mammography/presets.py): " + " | ".join(PRESETS)
                              + "; settings left at their defaults take its values", choices=("", *PRESETS))


@dataclass(init=False)
class MammographyConfig(Config):
    PRESETS = PRESETS
    # Sections: dataset (not "data": that is the setting naming the data folder), model, train, evaluation.
    dataset: MammographyData = section(MammographyData)
    model: MammographyModel = section(MammographyModel)
    train: MammographyTrain = section(MammographyTrain)
    evaluation: MammographyEvaluation = section(MammographyEvaluation)
    recipe: MammographyRecipe = section(MammographyRecipe)

    @property
    def registry_task(self) -> str:
        """The task as runs are tagged and models registered: ROI models take other inputs
        than film models, so they are their own models (mammography-roi_<task>)."""
        return self.task if self.input == "film" else f"roi_{self.task}"
