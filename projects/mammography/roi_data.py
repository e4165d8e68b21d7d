"""ROI input for a mammography run (`input=roi`): the split stays patient-level over FILMS
(projects.mammography.splits), then every film of a side gives its crops
(projects.mammography.roi): one per located abnormality, `roi_norm_crops` inside the breast
of each NORM film. A crop's class is its abnormality's (7class), abnormal vs NORM
(normal_abnormal) or its row's severity (benign_malignant: lesion crops only).

This is classification of a given region, not detection: the lesion's location comes from
Info.txt. Evaluation crops are fixed per film (the same for every run and seed); training
crops are re-cut from the film at every draw with the ROI study's augmentation (jitter,
scale, any rotation, intensity, flips), so each epoch sees new views of the same regions.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from projects.mammography import roi
from projects.mammography.data import CLASSES_7, NORMAL, SEVERITIES, Film

CLASS_NAMES = {"7class": CLASSES_7, "normal_abnormal": ("normal", "abnormal"), "benign_malignant": ("benign",
                                                                                                    "malignant")}


@dataclass
class RoiSplit:
    """One side of the split as crops: images (N, S, S) uint8, targets, the crop's film."""
    images: np.ndarray
    targets: np.ndarray
    film_ids: list[str]
    items: list[roi.RoiItem]


def spec_of(config) -> roi.RoiSpec:
    return roi.RoiSpec(crop_px=config.roi_crop_px, input_size=config.image_size, norm_crops=config.roi_norm_crops)


def target(task: str, item: roi.RoiItem) -> int | None:
    """The crop's class index for the task, or None when the task has no use for it."""
    if task == "7class":
        return CLASSES_7.index(item.label)
    if task == "normal_abnormal":
        return int(item.label != NORMAL)
    if item.lesion and item.severity in SEVERITIES:  # benign_malignant
        return SEVERITIES.index(item.severity)
    return None


def split_crops(films: list[Film], images: dict[str, np.ndarray], task: str, spec: roi.RoiSpec
                ) -> tuple[RoiSplit, list[str]]:
    """The fixed crops of `films` for the task (and what gave no crop, with why)."""
    items, skipped = roi.plan_crops(films, images, spec)
    kept = [(it, t) for it in items if (t := target(task, it)) is not None]
    crops = [roi.crop(images[it.film_id], it.cx, it.cy, it.side, spec.input_size) for it, _ in kept]
    size = spec.input_size
    return RoiSplit(np.stack(crops) if crops else np.zeros((0, size, size), np.uint8),
                    np.array([t for _, t in kept], np.int64), [it.film_id for it, _ in kept],
                    [it for it, _ in kept]), skipped


class AugmentedCrops(Dataset):
    """Training crops re-cut from their films at every draw (roi.augment_crop); a NORM crop
    moves to a fresh point of its film's breast each time (the ROI study's recipe: new
    tissue every epoch). Item i's draws are seeded by (seed, i, how often it was drawn), so
    a run is reproducible."""

    def __init__(self, split: RoiSplit, images: dict[str, np.ndarray], size: int, seed: int,
                 spec: roi.RoiSpec | None = None):
        self.split, self.images, self.size, self.seed = split, images, size, seed
        self.draws = np.zeros(len(split.items), np.int64)
        spec = spec or roi.RoiSpec(input_size=size)
        self.regions = {}  # NORM film -> (x, y) film-px centres of its allowed region
        for item in split.items:
            if not item.lesion and item.film_id not in self.regions:
                image = images[item.film_id]
                ys, xs = np.nonzero(roi.norm_region(image, spec))
                f = roi.film_scale(image)
                self.regions[item.film_id] = ((xs + 0.5) / f, (ys + 0.5) / f)

    def __len__(self) -> int:
        return len(self.split.items)

    def __getitem__(self, i: int):
        item = self.split.items[i]
        rng = np.random.default_rng((self.seed, i, int(self.draws[i])))
        self.draws[i] += 1
        xs, ys = self.regions.get(item.film_id, ((), ()))
        if not item.lesion and len(xs):
            j = int(rng.integers(len(xs)))
            item = dataclasses.replace(item, cx=float(xs[j]), cy=float(ys[j]))
        x = roi.augment_crop(self.images[item.film_id], item, self.size, rng)
        return torch.from_numpy(x).unsqueeze(0), torch.tensor(self.split.targets[i])
