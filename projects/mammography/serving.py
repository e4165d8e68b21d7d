"""The mammography models users apply: a film (or a film and a region) -> named class
probabilities.

Film model (input=film): column `image`, a film of any resolution as PGM/PNG/TIFF bytes
(base64 text over REST), read by training's reader (images.decode_film: 16-bit PGMs scaled,
colour converted to grey) and resized by training's function (images.resize_film).

ROI model (input=roi): columns `image` (the whole film, square, any resolution) and `x`, `y`,
`radius`: the region in the Info.txt convention, i.e. pixels of the ORIGINAL 1024 x 1024
film whatever the size of the film sent, origin at the BOTTOM-LEFT corner (y up), radius in
the same pixels (0 or absent: a NORM-sized region). The crop is cut as training cut it
(roi.crop, side roi.RoiSpec.side(radius)).

Output: one row per input: a column per class name with its probability, and `class`, the
most probable one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from torch import nn

from projects.core import serving
from projects.core.errors import InputError
from projects.mammography import images
from projects.mammography import roi
from projects.mammography.models import ClassProbabilities, build_classifier, deployed
from projects.mammography.roi_data import CLASS_NAMES


def read_film(value, where: object = "image") -> np.ndarray:
    """uint8 HxW grey film from encoded bytes (or a 2-D uint8 array)."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        if value.dtype != np.uint8 or value.ndim != 2:
            raise InputError(where, f"expected a uint8 HxW greyscale film, got {value.dtype} {value.shape}")
        return value
    data = serving.image_bytes(value, where)
    if not data:
        raise InputError(where, "empty image")
    return images.decode_film(data, where)


def film_batch(images: list[np.ndarray]) -> np.ndarray:
    """uint8 (N, S, S) -> float32 (N, 1, S, S) in [0, 1], as study._tensor."""
    return (np.stack(images).astype(np.float32) / np.float32(255.0))[:, None]


def roi_crop(film: np.ndarray, x: float, y: float, radius: float, config: dict, where: object = "image"
             ) -> np.ndarray:
    """The model's input crop of the region at Info.txt (x, y, radius) on `film`."""
    roi.film_scale(film, where)
    spec = roi.RoiSpec(crop_px=int(config["roi_crop_px"]), input_size=int(config["image_size"]))
    radius = 0.0 if radius is None or not np.isfinite(radius) else float(radius)
    return roi.crop(film, float(x), roi.FILM_PX - float(y), spec.side(radius), spec.input_size)


class ClassifierModel(serving.ImageModel):
    """config: arch, task, input (film | roi), image_size, tta, roi_crop_px, class_names."""

    def build_module(self, config: dict) -> nn.Module:
        return ClassProbabilities(deployed(build_classifier(config["arch"], len(config["class_names"])),
                                           bool(config.get("tta", False))))

    def prepared_shape(self) -> tuple[int, ...]:
        return 1, int(self.config["image_size"]), int(self.config["image_size"])

    def benchmark_input(self) -> tuple[pd.DataFrame, str]:
        """A film at the original 1024-px size as a binary PGM (and a region for ROI models)."""
        film = np.random.default_rng(0).integers(0, 256, (1024, 1024), dtype=np.uint8)
        row = {"image": [b"P5\n1024 1024\n255\n" + film.tobytes()]}
        if self.config["input"] == "roi":
            row |= {"x": [535.0], "y": [425.0], "radius": [197.0]}
            return pd.DataFrame(row), "1024-px PGM film + region"
        return pd.DataFrame(row), "1024-px PGM film"

    def inputs(self, frame: pd.DataFrame) -> list[np.ndarray]:
        size, out = int(self.config["image_size"]), []
        for i, value in enumerate(frame["image"]):
            where = f"image (row {i})"
            film = read_film(value, where)
            if self.config["input"] == "roi":
                missing = [c for c in ("x", "y") if c not in frame.columns or pd.isna(frame[c].iloc[i])]
                if missing:
                    raise InputError(where, f"an ROI model needs the region's {' and '.join(missing)} "
                                            "(Info.txt convention: 1024-px film, origin bottom-left)")
                radius = frame["radius"].iloc[i] if "radius" in frame.columns else 0.0
                out.append(roi_crop(film, frame["x"].iloc[i], frame["y"].iloc[i], radius, self.config, where))
            else:
                out.append(images.resize_film(film, size))
        return out

    def predict_rows(self, frame: pd.DataFrame, params: dict) -> pd.DataFrame:
        names = list(self.config["class_names"])
        probs = self.network(film_batch(self.inputs(frame))) if len(frame) else np.zeros((0, len(names)))
        table = pd.DataFrame(probs.astype(np.float64), columns=names)
        table["class"] = [names[k] for k in probs.argmax(1)]
        return table


def inputs_of(config) -> dict[str, str]:
    film = {"image": "a film of any resolution: PGM/PNG/TIFF bytes (base64 text over REST)"}
    if config.input != "roi":
        return film
    return film | {"x": "region centre, px of the 1024-px film from the LEFT edge",
                   "y": "region centre, px of the 1024-px film from the BOTTOM edge (Info.txt)",
                   "radius": "region radius in the same px (optional; 0: a NORM-sized region)"}


def signature(config) -> object:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    names = CLASS_NAMES[config.task]
    return ModelSignature(inputs=None,  # inputs: metadata `inputs` (why: projects.core.serving)
                          outputs=Schema([ColSpec("double", n) for n in names] + [ColSpec("string", "class")]))


def log_classifier_model(model: nn.Module, config, example_images: np.ndarray) -> None:
    """Log the run's registry candidate: `model` (the run's deployed classifier) taking films."""
    names = list(CLASS_NAMES[config.task])
    settings = {"arch": config.arch, "task": config.task, "input": config.input, "image_size": int(config.image_size),
                "tta": bool(config.tta), "roi_crop_px": int(config.roi_crop_px), "class_names": names}
    film = images.resize_film(np.ascontiguousarray(example_images[0]), 64)  # a tiny film: examples stay small
    example = {"image": [serving.encode_png(film)]}
    if config.input == "roi":
        example |= {"x": [512.0], "y": [512.0], "radius": [40.0]}
    metadata = {"inputs": inputs_of(config), "task": f"mammography {config.task} ({config.input})", "class_names": names,
                "image_size": settings["image_size"],
                serving.PREPARED_INPUT: f"1x{config.image_size}x{config.image_size}"} | serving.run_facts()
    serving.log_image_model(ClassifierModel, ClassProbabilities(model), settings, signature(config),
                            pd.DataFrame(example), metadata)
