"""One mammography run: data -> split -> train -> evaluate -> efficiency -> model, all
logged to the active MLflow run. The entry point, the grid and search trials all call
`run(config)`: the platform's trainer (projects/core/trainer.py) with this study's hooks;
nothing is trained by other code.
"""
from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from projects.core import artifacts
from projects.core.digest import digest_files
from projects.core.errors import InputError
from projects.core.specs.holdout import HoldoutData
from projects.core.trainer import TestOutcome, Trainer
from projects.core.training import balanced_sampler, make_loader
from projects.core.uncertainty import classification_scores
from projects.mammography import data as mias
from projects.mammography import images
from projects.mammography import metrics as cls_metrics
from projects.mammography.config import MammographyConfig
from projects.mammography import roi, roi_data, serving
from projects.mammography.holdout import holdout_digest, holdout_patients
from projects.mammography.models import build_classifier, check_pretrained_download, deployed
from projects.mammography.splits import parse_ratio, patient_id, split_films, split_table

NAME = "mammography"


@dataclass
class PreparedData:
    root: Path
    films: list
    labels: np.ndarray
    class_names: tuple[str, ...]
    assignment: dict[str, str]
    images: dict[str, np.ndarray]  # split -> (N, S, S) uint8
    targets: dict[str, np.ndarray]  # split -> (N,) int
    digest: str
    skipped: list[str] = field(default_factory=list)
    ids: dict[str, list[str]] = field(default_factory=dict)  # split -> film ids, in the arrays' order
    holdout: set[str] = field(default_factory=set)  # patients of the study's fixed holdout (never used here)
    holdout_digest: str = "none"
    holdout_films: list = field(default_factory=list)  # this task's films of the holdout patients
    roi_train: roi_data.RoiSplit | None = None  # input=roi: the training crops' sources ...
    roi_images: dict[str, np.ndarray] = field(default_factory=dict)  # ... and their films, to re-cut them


def resolve_data_root(config: MammographyConfig) -> Path:
    if config.data == "embedded":
        from projects.embedded import ensure_mias

        return ensure_mias(size=config.embedded_size)
    root = Path(config.data).expanduser()
    if not root.exists():
        raise InputError(root, "data folder does not exist (use data=embedded for the generated set)")
    return root


@functools.lru_cache(maxsize=8)
def _load_films(root: Path, skip_missing: bool) -> tuple[list, list[str], str]:
    films, skipped = mias.load_films(root, skip_missing=skip_missing)
    info = [p for p in (root / "Info.txt",) if p.exists()]
    digest = digest_files([f.path for f in films] + info)
    return films, skipped, digest


@functools.lru_cache(maxsize=8)
def _read_resized(root: Path, skip_missing: bool, size: int) -> dict[str, np.ndarray]:
    films, _, _ = _load_films(root, skip_missing)
    out = {}
    for film in films:
        out[film.id] = images.resize_film(images.read_image(film.path), size)
    return out


def check_config(config: MammographyConfig) -> None:
    """What the config cannot check itself: the architecture exists, the weights file too."""
    import timm

    if not timm.is_model(config.arch):
        build_classifier(config.arch, 2)  # raises the InputError with similar names
    if config.weights and not Path(config.weights).expanduser().is_file():
        raise InputError(config.weights, "weights file not found")
    if config.pretrained and not config.weights:
        check_pretrained_download(config.arch)


def prepare_data(config: MammographyConfig) -> PreparedData:
    """Everything that can fail on bad input happens here, before any run is started."""
    check_config(config)
    root = resolve_data_root(config)
    films, skipped, digest = _load_films(root.resolve(), config.skip_missing)
    held = holdout_patients(films, config.holdout_fraction)  # every task and split sets them aside
    pool = [f for f in films if patient_id(f.id) not in held]
    kept, labels, class_names = mias.task_view(pool, config.task)
    labels = np.asarray(labels, dtype=np.int64)
    assignment = split_films([f.id for f in kept], list(labels), parse_ratio(config.split),
                             config.val_fraction, config.seed)
    held_films = mias.task_view([f for f in films if patient_id(f.id) in held], config.task)[0] if held else []
    if config.input == "roi":
        return _prepare_roi(config, root, kept, labels, assignment, digest, skipped, held, films, held_films)
    resized = _read_resized(root.resolve(), config.skip_missing, config.image_size)
    images, targets, ids = {}, {}, {}
    for part in ("train", "val", "test"):
        idx = [i for i, f in enumerate(kept) if assignment[f.id] == part]
        images[part] = np.stack([resized[kept[i].id] for i in idx]) if idx else np.zeros((0, config.image_size, config.image_size), np.uint8)
        targets[part] = labels[idx]
        ids[part] = [kept[i].id for i in idx]
    if len(targets["test"]) == 0 or len(targets["train"]) == 0:
        raise InputError(root, f"split {config.split} leaves an empty train or test set ({len(kept)} films)")
    return PreparedData(root, kept, labels, class_names, assignment, images, targets, digest, skipped, ids, held,
                        holdout_digest(films, held), list(held_films))


def _prepare_roi(config: MammographyConfig, root: Path, kept: list, labels: np.ndarray, assignment: dict,
                 digest: str, skipped: list[str], held: set[str], films: list, held_films: list) -> PreparedData:
    """input=roi: the same patient-level split of films, each side as crops (roi_data)."""
    images = roi.load_images(kept + list(held_films))  # at the films' own resolution; the holdout's checked too
    spec = roi_data.spec_of(config)
    parts, no_crop = {}, []
    for part in ("train", "val", "test"):
        parts[part], why = roi_data.split_crops([f for f in kept if assignment[f.id] == part], images, config.task, spec)
        no_crop += why
    if len(parts["train"].targets) == 0 or len(parts["test"].targets) == 0:
        raise InputError(root, f"split {config.split} leaves no {config.task} crop in train or test")
    return PreparedData(root, kept, labels, roi_data.CLASS_NAMES[config.task], assignment,
                        {k: v.images for k, v in parts.items()}, {k: v.targets for k, v in parts.items()}, digest,
                        skipped + sorted(set(no_crop)), {k: v.film_ids for k, v in parts.items()}, held,
                        holdout_digest(films, held), list(held_films), parts["train"],
                        {f.id: images[f.id] for f in kept})


def holdout_data(config: MammographyConfig) -> HoldoutData | None:
    """The study's fixed holdout for this task, at this config's image size: what the
    registry scores every candidate on (None when holdout_fraction is 0)."""
    root = resolve_data_root(config).resolve()
    films, _, _ = _load_films(root, config.skip_missing)
    held = holdout_patients(films, config.holdout_fraction)
    if not held:
        return None
    kept, labels, class_names = mias.task_view([f for f in films if patient_id(f.id) in held], config.task)
    if config.input == "roi":
        crops, _ = roi_data.split_crops(kept, roi.load_images(kept), config.task, roi_data.spec_of(config))
        units = [patient_id(f) for f in crops.film_ids]
        table = pd.DataFrame({"film": crops.film_ids, "patient": units,
                              "label": [roi_data.CLASS_NAMES[config.task][k] for k in crops.targets]})
        return HoldoutData(_tensor(crops.images).numpy(), crops.targets, units, holdout_digest(films, held),
                           str(root), table)
    resized = _read_resized(root, config.skip_missing, config.image_size)
    units = [patient_id(f.id) for f in kept]
    table = pd.DataFrame({"film": [f.id for f in kept], "patient": units,
                          "label": [class_names[k] for k in labels]})
    return HoldoutData(_tensor(np.stack([resized[f.id] for f in kept])).numpy(), np.asarray(labels, np.int64),
                       units, holdout_digest(films, held), str(root), table)


def augment_films(images: np.ndarray, targets: np.ndarray, factor: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's augmented scenario: (factor - 1) transformed copies of every training
    film (flip, small rotation, intensity jitter), made once so the run is reproducible."""
    if factor <= 1 or len(images) == 0:
        return images, targets
    rng = np.random.default_rng(seed)
    size = images.shape[-1]
    extra = []
    for _ in range(factor - 1):
        for image in images:
            out = image[:, ::-1] if rng.random() < 0.5 else image
            angle = rng.uniform(-10, 10)
            matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
            out = cv2.warpAffine(np.ascontiguousarray(out), matrix, (size, size), borderValue=0)
            gain, gamma = rng.uniform(0.9, 1.1), rng.uniform(0.8, 1.25)
            out = np.clip(255.0 * (out / 255.0) ** gamma * gain, 0, 255).astype(np.uint8)
            extra.append(out)
    return (np.concatenate([images, np.stack(extra)]),
            np.concatenate([targets] + [targets] * (factor - 1)))


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


def _loader(images, targets, batch_size, shuffle, generator=None, drop_last=False, train=None,
            sampler=None) -> DataLoader:
    """Films and labels in batches; `train` (the run's training settings) for the training and
    validation loaders (workers, pinned memory)."""
    ds = TensorDataset(_tensor(images), torch.from_numpy(targets))
    # drop_last only when it still leaves a batch: tiny sets must train too
    drop = drop_last and len(ds) > batch_size and len(ds) % batch_size != 0 and len(ds) % batch_size < 4
    if train is not None:
        return make_loader(ds, train, shuffle=shuffle, generator=generator, drop_last=drop, batch_size=batch_size,
                           sampler=sampler)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop)


def _predict(model: nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray, float]:
    model.eval()
    logits, truth = [], []
    with torch.inference_mode():
        for x, y in loader:
            logits.append(model(x))
            truth.append(y)
    return torch.cat(logits).float().cpu().numpy(), torch.cat(truth).cpu().numpy(), 0.0


def _evaluator(loss_fn: nn.Module, class_names, tta: bool = False):
    def evaluate(model: nn.Module, loader: DataLoader) -> dict[str, float]:
        logits, truth, _ = _predict(deployed(model, tta), loader)
        loss = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(truth)))
        pred = logits.argmax(1)
        m = cls_metrics.classification_metrics(truth, pred, class_names)
        return {"loss": loss, "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
                "f1_macro": m["f1_macro"]}

    return evaluate


class MammographyTrainer(Trainer):
    """The hooks of a mammography run: films (or ROI crops) in, class probabilities out, scored
    by accuracy, balanced accuracy and macro-F1 (resampled by patient) against the majority class."""
    study = NAME
    minus_baseline = {"accuracy": ("majority_accuracy",), "f1_macro": ("majority_f1_macro",),
                      "balanced_accuracy": ("majority_balanced_accuracy",)}
    # The line printed when a run ends (str.format of config, test and base metrics).
    summary = ("{config.registry_task} {config.arch} split={config.split} augment={config.augment}: "
               "test accuracy {test[accuracy]:.3f} (majority baseline {base[majority_accuracy]:.3f}), "
               "balanced accuracy {test[balanced_accuracy]:.3f}, F1-macro {test[f1_macro]:.3f}")

    def prepare(self, config: MammographyConfig) -> PreparedData:
        return prepare_data(config)

    def describe(self, config: MammographyConfig, prepared: PreparedData) -> dict:
        return dict(task=config.registry_task, arch=config.arch, split=config.split, augment=config.augment)

    def log_inputs(self, config: MammographyConfig, prepared: PreparedData) -> None:
        # augment_films adds augment_factor - 1 copies of every training film
        factor = config.augment_factor if config.augment else 1
        _log_inputs(config, prepared, len(prepared.targets["train"]) * factor)

    def baselines(self, config: MammographyConfig, prepared: PreparedData) -> dict[str, float]:
        # On the films before augmentation: it copies every film alike, the class shares stay.
        return cls_metrics.majority_baseline(prepared.targets["train"], prepared.targets["test"],
                                             len(prepared.class_names))

    def build_model(self, config: MammographyConfig, prepared: PreparedData) -> nn.Module:
        return build_classifier(config.arch, len(prepared.class_names), config.weights, pretrained=config.pretrained)

    def untrained_model(self, config: MammographyConfig, prepared: PreparedData) -> nn.Module:
        return build_classifier(config.arch, len(prepared.class_names))

    def loss(self, config: MammographyConfig, prepared: PreparedData) -> nn.Module:
        return nn.CrossEntropyLoss(weight=_class_weights(config, prepared))

    def loaders(self, config: MammographyConfig, prepared: PreparedData, generator):
        return _loaders(config, prepared, generator)

    def evaluator(self, config: MammographyConfig, prepared: PreparedData):
        # Validation loss is unweighted: it selects the model, it should not favour rare classes.
        return _evaluator(nn.CrossEntropyLoss(), prepared.class_names, config.tta)

    def family(self, config: MammographyConfig) -> str:
        return "timm"

    def deployed(self, config: MammographyConfig, model: nn.Module) -> nn.Module:
        return deployed(model, config.tta)

    def test(self, config: MammographyConfig, prepared: PreparedData, model: nn.Module) -> TestOutcome:
        logits, truth, _ = _predict(model, _loader(prepared.images["test"], prepared.targets["test"],
                                                   config.batch_size, False))
        pred = logits.argmax(1)
        test = cls_metrics.classification_metrics(truth, pred, prepared.class_names)
        # Resampled by patient: a film pair is one observation, not two.
        units = classification_scores(truth, pred, [patient_id(f) for f in prepared.ids["test"]],
                                      len(prepared.class_names))
        matrix = cls_metrics.confusion(truth, pred, len(prepared.class_names))
        return TestOutcome(test, units, {"truth": truth, "pred": pred, "confusion": matrix})

    def timed_inputs(self, config: MammographyConfig, prepared: PreparedData, outcome: TestOutcome) -> torch.Tensor:
        films = prepared.images["test"]
        return _tensor(films[:min(config.cpu_predict_n, len(films)) or len(films)])

    def log_artifacts(self, config: MammographyConfig, prepared: PreparedData, outcome: TestOutcome,
                      folder: Path) -> None:
        d = outcome.details
        _log_test_artifacts(config, prepared, d["confusion"], d["truth"], d["pred"], outcome.metrics,
                            outcome.baselines, folder)

    def log_candidate(self, config: MammographyConfig, prepared: PreparedData, model: nn.Module,
                      outcome: TestOutcome) -> None:
        serving.log_classifier_model(model, config, prepared.images["test"][:1])


TRAINER = MammographyTrainer()
run = TRAINER.run_training


def _class_weights(config: MammographyConfig, prepared: PreparedData) -> torch.Tensor | None:
    """Inverse-frequency class weights of the training films (mean 1 over the present classes)."""
    if not config.class_weighted:
        return None
    freq = np.bincount(prepared.targets["train"], minlength=len(prepared.class_names)).astype(np.float64)
    inv = np.where(freq > 0, 1.0 / np.maximum(freq, 1), 0.0)
    return torch.tensor(inv / inv[freq > 0].mean(), dtype=torch.float32)


def _loaders(config: MammographyConfig, prepared: PreparedData, generator) -> tuple[DataLoader, DataLoader | None]:
    train_x, train_y = prepared.images["train"], prepared.targets["train"]
    if config.augment:
        train_x, train_y = augment_films(train_x, train_y, config.augment_factor, config.seed)
    sampler = balanced_sampler(train_y, generator) if config.sampling == "balanced" else None
    if prepared.roi_train is not None:  # ROI: every draw re-cuts its crop from the film, augmented
        ds = roi_data.AugmentedCrops(prepared.roi_train, prepared.roi_images, config.image_size, config.seed,
                                     roi_data.spec_of(config))
        train = make_loader(ds, config.train, shuffle=True, generator=generator, drop_last=len(ds) > config.batch_size,
                            sampler=sampler)
    else:
        train = _loader(train_x, train_y, config.batch_size, True, generator, drop_last=True, train=config.train,
                        sampler=sampler)
    val = (_loader(prepared.images["val"], prepared.targets["val"], config.batch_size, False, train=config.train)
           if len(prepared.targets["val"]) else None)
    return train, val


def _log_inputs(config: MammographyConfig, prepared: PreparedData, n_train_images: int) -> None:
    """Counts, the split assignment (CSV and the Inputs tab's datasets), skipped films."""
    counts = {part: int(len(prepared.targets[part])) for part in ("train", "val", "test")}
    mlflow.log_params({"n_train_films": counts["train"], "n_val_films": counts["val"],
                       "n_test_films": counts["test"], "n_train_images": n_train_images,
                       "n_holdout_patients": len(prepared.holdout),
                       "test_fraction": parse_ratio(config.split), "classes": ",".join(prepared.class_names),
                       "data_root": str(prepared.root)})
    table = split_table(prepared.assignment, prepared.films)
    held = split_table({f.id: "holdout" for f in prepared.holdout_films}, prepared.holdout_films)
    with tempfile.TemporaryDirectory() as tmp:
        split_csv = Path(tmp) / "assignment.csv"
        # every film of the task: train/val/test of this run, and the holdout it never saw
        pd.concat([table, held]).sort_values("film_id").to_csv(split_csv, index=False)
        mlflow.log_artifact(str(split_csv), "split")
    for part in ("train", "test"):
        ds = artifacts.dataset_from_table(table[table["split"] == part], source=str(prepared.root),
                                         name=f"mias-{config.task}", digest=prepared.digest)
        mlflow.log_input(ds, context=part)
    if prepared.skipped:
        mlflow.log_text("\n".join(prepared.skipped), "skipped_films.txt")


def _log_test_artifacts(config: MammographyConfig, prepared: PreparedData, matrix: np.ndarray, truth: np.ndarray,
                        pred: np.ndarray, test: dict, base: dict, tmp: Path) -> None:
    """The confusion matrix (CSV + PNG) and every test film's prediction."""
    frame = pd.DataFrame(matrix, index=[f"true_{c}" for c in prepared.class_names],
                         columns=[f"pred_{c}" for c in prepared.class_names])
    frame.to_csv(tmp / "confusion_matrix.csv")
    fig = cls_metrics.confusion_figure(matrix, prepared.class_names,
                                       f"{config.arch} {config.task} {config.split} augment={config.augment}\n"
                                       f"acc {test['accuracy']:.3f} (baseline {base['majority_accuracy']:.3f}) "
                                       f"F1-macro {test['f1_macro']:.3f}")
    mlflow.log_figure(fig, "confusion_matrix.png")
    plt.close(fig)
    mlflow.log_artifact(str(tmp / "confusion_matrix.csv"))
    # Per-class scores as a table the MLflow UI shows (the run's metrics have them one by one).
    mlflow.log_table({"class": list(prepared.class_names),
                      "test_films": [int(v) for v in matrix.sum(1)],
                      "precision": [test[f"precision_{c}"] for c in prepared.class_names],
                      "recall": [test[f"recall_{c}"] for c in prepared.class_names],
                      "f1": [test[f"f1_{c}"] for c in prepared.class_names]}, "per_class.json")
    (tmp / "predictions.json").write_text(json.dumps({
        "class_names": list(prepared.class_names),
        "film_ids": prepared.ids["test"],
        "true": truth.tolist(), "pred": pred.tolist()}))
    mlflow.log_artifact(str(tmp / "predictions.json"))
