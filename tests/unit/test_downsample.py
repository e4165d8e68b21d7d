"""`downsample`: MoNuSeg shrunk by an integer factor before tiling, so a 36-configuration grid
on real tissue fits this machine (issue 27). The same shrink reaches training tiles, the
holdout and the served model; factor 1 changes nothing, not even cache and record keys."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from projects.core import serving
from projects.core.errors import InputError
from projects.pathology import preprocess
from projects.pathology import serving as path_serving
from projects.pathology.config import PathologyConfig
from projects.pathology.models import build_model
from pipeline import real_data


def test_shrink_averages_the_image_and_keeps_tumour_where_half_the_area_was():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :4] = 200
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0:2] = 1  # 2 of the 4 pixels under output (0, 0): kept
    mask[2, 2] = 1  # 1 of 4 under output (1, 1): dropped
    small, small_mask = preprocess.shrink(image, mask, 2)
    assert small.shape == (4, 4, 3) and small_mask.shape == (4, 4) and small_mask.dtype == mask.dtype
    assert (small[:, :2] == 200).all() and (small[:, 2:] == 0).all()
    assert small_mask[0, 0] == 1 and small_mask[1, 1] == 0 and small_mask.sum() == 1
    same = preprocess.shrink(image, mask, 1)
    assert same[0] is image and same[1] is mask


def test_factor_one_leaves_cache_and_record_keys_as_before_the_setting():
    assert preprocess.PreprocessConfig(downsample=1).key() == preprocess.PreprocessConfig().key()
    assert preprocess.PreprocessConfig(downsample=2).key() != preprocess.PreprocessConfig().key()
    assert "downsample" not in real_data.unit_settings(PathologyConfig.of())
    assert real_data.unit_settings(PathologyConfig.of(downsample=4))["downsample"] == 4
    with pytest.raises(InputError, match="downsample"):
        preprocess.PreprocessConfig(downsample=0)


def test_served_model_shrinks_the_image_as_training_did_and_answers_at_full_size():
    torch.manual_seed(0)
    net = serving.torch_network(path_serving.probability_module(build_model("unet", 4, 3).eval()))
    settings = {"tile_size": 32, "equalization": "none", "threshold": 0.5}
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 64, 3), dtype=np.uint8)
    shrunk_model = path_serving.TumourMaskModel().use(settings | {"downsample": 2}, net)
    plain_model = path_serving.TumourMaskModel().use(settings, net)
    prob = shrunk_model.probability(image)
    assert prob.shape == (96, 64)
    small = preprocess.shrink(image, np.zeros((96, 64), np.uint8), 2)[0]
    expected = plain_model.probability(small)  # the network saw the half-size image
    assert np.allclose(prob[::2, ::2], expected, atol=0.05)
    out = shrunk_model.predict(None, pd.DataFrame({"image": [serving.encode_png(image[:, :, ::-1])]}), {})
    assert (out["height"][0], out["width"][0]) == (96, 64)
