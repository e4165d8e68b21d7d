"""The pathology model users apply: an RGB H&E image of any size -> a tumour mask of exactly
its size.

The image is read with training's conversion rules (data._to_rgb8), equalised by training's
function (preprocess.equalize) over the whole image as training does before tiling, cut into
tiles of the training size that overlap by half a tile, predicted, and the tiles'
probabilities averaged back into place: a tile's border pixels see less context than its
centre, so every pixel gets the vote of each tile that covers it. Bottom/right sides are
reflect-padded as `preprocess.tile` does, and the padding is cut off again.

Input (metadata `inputs`): DataFrame column `image`, PNG/JPEG/TIFF bytes (base64 text over REST).
Param `output`: "mask" (default: HxW uint8 0/1 at the logged threshold) or "probability".
Output: one row per image: height, width, tumour_fraction, mask.
"""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from torch import nn

from projects.core import serving
from projects.core.errors import InputError
from projects.pathology import data as seg_data
from projects.pathology import preprocess
from projects.pathology.models import build_model
from projects.pathology.models.tta import deployed

OUTPUTS = ("mask", "probability")
INPUTS = {"image": "an RGB H&E image of any size: PNG/JPEG/TIFF bytes (base64 text over REST)"}


def read_rgb(value, where: object = "image") -> np.ndarray:
    """uint8 HxWx3 RGB from encoded bytes (or an RGB array), as training reads its files."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3:
            raise InputError(where, f"expected a uint8 HxWx3 RGB array, got {value.dtype} {value.shape}")
        return value
    buf = np.frombuffer(serving.image_bytes(value, where), np.uint8)
    array = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if array is None or array.size == 0:
        raise InputError(where, "cannot decode image (empty, corrupt or unsupported format)")
    return seg_data._to_rgb8(where, array)  # noqa: SLF001 - training's rule, one place


def tile_origins(length: int, tile: int) -> list[int]:
    """Tile starts along one side: every half tile, the last one ending at the padded edge."""
    padded = max(tile, -(-length // tile) * tile)
    starts = list(range(0, padded - tile + 1, max(1, tile // 2)))
    if starts[-1] != padded - tile:
        starts.append(padded - tile)
    return starts


def image_tiles(image: np.ndarray, tile: int, equalization: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Equalised, padded, overlapping tiles (N, tile, tile, 3) uint8 and their (row, col) origins."""
    image = preprocess.equalize(image, equalization)
    h, w = image.shape[:2]
    pad_h, pad_w = max(tile, -(-h // tile) * tile) - h, max(tile, -(-w // tile) * tile) - w
    if pad_h or pad_w:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
    origins = [(r, c) for r in tile_origins(h, tile) for c in tile_origins(w, tile)]
    return np.stack([image[r:r + tile, c:c + tile] for r, c in origins]), origins


def tiles_batch(tiles: np.ndarray) -> np.ndarray:
    """(N, T, T, 3) uint8 -> (N, 3, T, T) float32 in [0, 1], as study.tiles_tensor."""
    return np.ascontiguousarray(tiles.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


class TumourMaskModel(serving.ImageModel):
    """config: arch, filters, depth, upsample, tile_size, equalization, threshold, tta."""

    kind = "segmentation"

    def display_image(self, value, where: object = "image") -> np.ndarray:
        return read_rgb(value, where)

    def prepared_shape(self) -> tuple[int, ...]:
        return 3, int(self.config["tile_size"]), int(self.config["tile_size"])

    def benchmark_input(self) -> tuple[pd.DataFrame, str]:
        """A 1000 x 1000 H&E-coloured image (MoNuSeg's tile size), PNG-encoded."""
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (125, 125, 3), dtype=np.uint8)
        image = cv2.resize(small, (1000, 1000), interpolation=cv2.INTER_CUBIC)
        return pd.DataFrame({"image": [serving.encode_png(image)]}), "1000 x 1000 PNG"

    def build_module(self, config: dict) -> nn.Module:
        network = build_model(config["arch"], int(config["filters"]), int(config["depth"]),
                              upsample=config.get("upsample", "bilinear"))
        return probability_module(deployed(network, bool(config.get("tta", False))))  # older models: no tta

    def probability(self, image: np.ndarray, batch: int = 16, factor: int | None = None) -> np.ndarray:
        """HxW float32 tumour probability of an RGB image (at the image's own size: a model
        trained on shrunk images sees the image shrunk alike, and its map is scaled back)."""
        factor = int(self.config.get("downsample", 1)) if factor is None else factor  # older models: 1
        if factor > 1:
            full = image.shape[:2]
            small = cv2.resize(image, (max(1, round(full[1] / factor)), max(1, round(full[0] / factor))),
                               interpolation=cv2.INTER_AREA)
            return cv2.resize(self.probability(small, batch, factor=1), (full[1], full[0]),
                              interpolation=cv2.INTER_LINEAR)
        tile = int(self.config["tile_size"])
        tiles, origins = image_tiles(image, tile, self.config["equalization"])
        probs = np.concatenate([self.network(tiles_batch(tiles[i:i + batch]))[:, 0]
                                for i in range(0, len(tiles), batch)])
        h, w = image.shape[:2]
        total = np.zeros((origins[-1][0] + tile, origins[-1][1] + tile), np.float32)
        count = np.zeros_like(total)
        for p, (r, c) in zip(probs, origins):
            total[r:r + tile, c:c + tile] += p
            count[r:r + tile, c:c + tile] += 1
        return (total / count)[:h, :w]

    def predict_rows(self, frame: pd.DataFrame, params: dict) -> pd.DataFrame:
        output = params.get("output") or "mask"
        if output not in OUTPUTS:
            raise InputError("output", f"unknown output {output!r} (expected one of {', '.join(OUTPUTS)})")
        rows = []
        for i, value in enumerate(frame["image"]):
            prob = self.probability(read_rgb(value, f"image (row {i})"))
            mask = (prob > float(self.config["threshold"])).astype(np.uint8)
            rows.append({"height": prob.shape[0], "width": prob.shape[1], "tumour_fraction": float(mask.mean()),
                         "mask": mask if output == "mask" else prob})
        return pd.DataFrame(rows)


def probability_module(network: nn.Module) -> nn.Module:
    """Tiles (B, 3, T, T) in [0, 1] -> tumour probability: what study.MaskProbabilities computes."""
    return nn.Sequential(network, nn.Sigmoid())


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    return ModelSignature(  # inputs: metadata INPUTS (why: projects.core.serving)
        inputs=None,
        outputs=Schema([ColSpec("long", "height"), ColSpec("long", "width"), ColSpec("double", "tumour_fraction"),
                        ColSpec(Array(Array("double")), "mask")]),
        params=ParamSchema([ParamSpec("output", "string", "mask")]))


def log_tumour_model(network: nn.Module, config, example_tiles: np.ndarray) -> None:
    """Log the run's registry candidate: `network` (logits; with tta, its 8-view mean) as a TumourMaskModel."""
    settings = {"arch": config.arch, "filters": int(config.filters), "depth": int(config.depth),
                "upsample": config.upsample, "tile_size": int(config.tile_size),
                "downsample": int(config.downsample),
                "equalization": config.equalization, "threshold": float(config.threshold), "tta": bool(config.tta)}
    example = pd.DataFrame({"image": [serving.encode_png(np.ascontiguousarray(example_tiles[0][:48, :48]))]})
    facts = serving.run_facts()
    metadata = {"inputs": INPUTS, "task": "tumour segmentation", "tile_size": settings["tile_size"], "threshold": settings["threshold"],
                "equalization": config.equalization, "mpp": float(config.mpp or 0),
                serving.PREPARED_INPUT: f"3x{config.tile_size}x{config.tile_size}"} | facts
    serving.log_image_model(TumourMaskModel, probability_module(network), settings, signature(), example, metadata)
