"""Online augmentation of training tiles (projects/pathology/augment.py): quarter turns that
move the mask and valid map with the tile, H&E stain jitter in optical density and HSV jitter."""
import numpy as np
import pytest
import torch

from projects.core.errors import InputError
from projects.pathology.augment import HED_FROM_RGB, OnlineAugment, hsv_jitter, stain_jitter
from projects.pathology.config import PathologyConfig
from projects.pathology.trainer import TileDataset


def _tile(size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(20, 250, (size, size, 3), dtype=np.uint8)
    mask = (image[..., 0] > 128).astype(np.uint8)  # the mask is a function of the pixels
    valid = np.ones((size, size), np.uint8)
    valid[:, -3:] = 0  # padding on one side: it must turn with the tile
    return image, mask, valid


def _stains(image: np.ndarray) -> np.ndarray:
    density = -np.log(np.maximum(image.astype(np.float64) / 255.0, 1 / 256))
    return density @ HED_FROM_RGB


def test_no_jitter_gives_back_the_tile():
    image, _, _ = _tile()
    out = stain_jitter(image, np.ones(3), np.zeros(3))
    assert np.abs(out.astype(int) - image).max() <= 1  # 8-bit rounding only


def test_scaling_haematoxylin_changes_haematoxylin_only():
    image, _, _ = _tile()
    out = stain_jitter(image, np.array([1.3, 1.0, 1.0]), np.zeros(3))
    before, after = _stains(image), _stains(out)
    unclipped = (out > 1).all(-1) & (out < 254).all(-1)
    ratio = after[unclipped, 0] / before[unclipped, 0]
    assert np.median(ratio) == pytest.approx(1.3, abs=0.02)
    assert np.abs(after[unclipped, 1] - before[unclipped, 1]).mean() < 0.02  # eosin stays


def test_quarter_turns_move_the_mask_and_the_padding_with_the_tile():
    image, mask, valid = _tile()
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        i, m, v = OnlineAugment(rotate=True)(image, mask, valid)
        assert np.array_equal(m, (i[..., 0] > 128).astype(np.uint8))
        k = next(k for k in range(4) if np.array_equal(i, np.rot90(image, k)))
        assert np.array_equal(v, np.rot90(valid, k)) and i.flags["C_CONTIGUOUS"]
        seen.add(k)
    assert seen == {0, 1, 2, 3}


def test_draws_follow_torch_seed_and_change_every_read():
    image, mask, valid = _tile()
    augment = OnlineAugment(rotate=True, stain_sigma=0.2)
    torch.manual_seed(3)
    first = [augment(image, mask, valid)[0] for _ in range(3)]
    torch.manual_seed(3)
    again = [augment(image, mask, valid)[0] for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1])


def test_the_dataset_augments_only_when_asked():
    image, mask, valid = _tile()
    arrays = {"images": image[None], "masks": mask[None], "valid": valid[None]}
    plain, _ = TileDataset(arrays, OnlineAugment())[0]  # nothing switched on: the stored tile
    assert torch.equal(plain, torch.from_numpy(image).permute(2, 0, 1).float() / 255)
    torch.manual_seed(1)
    jittered, target = TileDataset(arrays, OnlineAugment(stain_sigma=0.2))[0]
    assert not torch.equal(jittered, plain) and torch.equal(target[0], torch.from_numpy(mask).float())


def test_stain_jitter_is_a_checked_setting():
    assert PathologyConfig(stain_jitter=0.05, rotate=True).stain_jitter == 0.05
    with pytest.raises(InputError, match="stain_jitter"):
        PathologyConfig(stain_jitter=-0.1)


def _hsv(image: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)


def test_no_hsv_jitter_gives_back_the_tile():
    image, _, _ = _tile()
    assert np.abs(hsv_jitter(image, 0.0, 1.0, 1.0).astype(int) - image).max() <= 1


def test_hsv_jitter_turns_the_hue_and_scales_saturation_and_brightness():
    rng = np.random.default_rng(0)  # H&E-like colours: saturated, away from black and white
    image = np.stack([rng.integers(120, 200, (16, 16)), rng.integers(40, 90, (16, 16)),
                      rng.integers(120, 200, (16, 16))], -1).astype(np.uint8)
    turned = _hsv(hsv_jitter(image, 0.1, 1.0, 1.0))
    shift = np.mod(turned[..., 0] - _hsv(image)[..., 0] + 180.0, 360.0) - 180.0
    assert np.median(shift) == pytest.approx(36.0, abs=1.5)  # a tenth of the circle
    scaled = _hsv(hsv_jitter(image, 0.0, 0.8, 0.9))
    assert np.median(scaled[..., 1] / _hsv(image)[..., 1]) == pytest.approx(0.8, abs=0.02)
    assert np.median(scaled[..., 2] / _hsv(image)[..., 2]) == pytest.approx(0.9, abs=0.02)
    assert np.abs(scaled[..., 0] - _hsv(image)[..., 0]).mean() < 2.0  # the hue stays


def test_hsv_jitter_draws_within_sigma_and_leaves_the_mask_alone():
    image, mask, valid = _tile()
    augment = OnlineAugment(hsv_sigma=0.05)
    assert augment  # switched on by the HSV draw alone
    torch.manual_seed(0)
    outs = [augment(image, mask, valid) for _ in range(5)]
    assert all(np.array_equal(m, mask) and np.array_equal(v, valid) for _, m, v in outs)
    assert len({o[0].tobytes() for o in outs}) == 5
    value_ratio = [np.median(_hsv(o[0])[..., 2] / np.maximum(_hsv(image)[..., 2], 1e-3)) for o in outs]
    assert all(0.94 <= r <= 1.06 for r in value_ratio)  # brightness scaled by U(0.95, 1.05), plus rounding


def test_hsv_jitter_is_a_checked_setting_that_names_its_cell():
    from projects.pathology.grid import cell
    config = PathologyConfig(hsv_jitter=0.1, rotate=True)
    assert config.hsv_jitter == 0.1 and cell(config)[0].endswith("-rot-hsv0.1-s0")
    with pytest.raises(InputError, match="hsv_jitter"):
        PathologyConfig(hsv_jitter=1.5)
