"""The logged models' preprocessing is training's (issue 29): the same pixels reach the
network whether a tile came from the training cache or from an image a user sends, a mask
comes back at the image's size, and films/regions are read and cut as training reads them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from projects.core import serving
from projects.core.errors import InputError
from projects.mammography import data as mias
from projects.mammography import images
from projects.mammography import roi, roi_data
from projects.mammography import serving as mammo_serving
from projects.pathology import preprocess, trainer
from projects.pathology import serving as path_serving
from projects.pathology.models import build_model


def he_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image (equalisation has something to spread), uint8 RGB."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 220, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    import cv2
    return np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))


def test_model_tiles_are_training_tiles():
    image, tile = he_image(128, 192), 64
    equalised = preprocess.equalize(image, "hist")
    train_tiles, _, _ = preprocess.tile(equalised, np.zeros(image.shape[:2], np.uint8), tile)
    tiles, origins = path_serving.image_tiles(image, tile, "hist")
    # every training tile is one of the model's (which add the half-tile shifted ones)
    for k, (r, c) in enumerate((r, c) for r in range(0, 128, tile) for c in range(0, 192, tile)):
        assert np.array_equal(tiles[origins.index((r, c))], train_tiles[k])
    assert np.array_equal(path_serving.tiles_batch(train_tiles), trainer.tiles_tensor(train_tiles).numpy())


def test_mask_has_the_image_size_and_matches_the_network_on_aligned_tiles():
    torch.manual_seed(0)
    net = build_model("unet", 4, 3).eval()
    model = path_serving.TumourMaskModel().use(
        {"tile_size": 32, "equalization": "hist", "threshold": 0.5},
        serving.torch_network(path_serving.probability_module(net)))
    image = he_image(70, 50)  # not a multiple of the tile: padded, then cut back
    out = model.predict(None, pd.DataFrame({"image": [serving.encode_png(image[:, :, ::-1])]}),
                        {"output": "probability"})
    prob = out["mask"][0]
    assert prob.shape == (70, 50) and (out["height"][0], out["width"][0]) == (70, 50)
    assert np.array_equal(model.predict(None, pd.DataFrame({"image": [serving.encode_png(image[:, :, ::-1])]}),
                                        {})["mask"][0], (prob > 0.5).astype(np.uint8))
    # the prepared form (what the registry scores) is the training module on training tensors
    tiles = path_serving.image_tiles(image, 32, "hist")[0][:3]
    with torch.inference_mode():
        eager = trainer.MaskProbabilities(net)(trainer.tiles_tensor(tiles)).numpy()
    assert np.abs(model.predict(None, path_serving.tiles_batch(tiles)) - eager).max() < 1e-6
    with pytest.raises(InputError, match="output"):
        model.predict(None, pd.DataFrame({"image": [serving.encode_png(image)]}), {"output": "logits"})
    with pytest.raises(InputError, match="cannot decode"):
        model.predict(None, pd.DataFrame({"image": [b"not an image"]}), {})


def test_film_bytes_are_read_and_resized_as_training_reads_files(tmp_path):
    rng = np.random.default_rng(0)
    film = rng.integers(0, 65535, (96, 96), dtype=np.uint16)
    path = tmp_path / "mdb001.pgm"
    path.write_bytes(b"P5\n96 96\n65535\n" + film.astype(">u2").tobytes())  # 16-bit, as some scanners
    assert np.array_equal(images.decode_film(path.read_bytes()), images.read_image(path))
    assert images.resize_film(images.read_image(path), 32).shape == (32, 32)
    with pytest.raises(InputError, match="truncated"):
        images.decode_film(path.read_bytes()[:-10], "cut.pgm")


def test_roi_region_in_info_txt_convention_is_training_s_crop():
    """A lesion at Info.txt (x, y) with the origin bottom-left: the model cuts the crop
    roi_data cuts for the same row (y flipped, side from the radius)."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (256, 256), dtype=np.uint8)
    row = mias.InfoRow("mdb002", "F", "CIRC", "B", 600, 300, 40, 1)
    film = mias.Film("mdb002", None, "CIRC", "B", "F", (row,))
    spec = roi.RoiSpec(crop_px=192, input_size=32)
    expected = roi.crop(image, 600.0, 1024 - 300.0, spec.side(40), 32)
    got = mammo_serving.roi_crop(image, 600, 300, 40, {"roi_crop_px": 192, "image_size": 32})
    assert np.array_equal(got, expected)
    split, _ = roi_data.split_crops([film], {"mdb002": image}, "7class", spec)
    assert np.array_equal(split.images[0], got)
