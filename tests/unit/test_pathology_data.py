"""Pathology data layer: discovery, reading, preprocessing, splits and the tile cache.

Inputs are small real files written with cv2.imwrite into tmp_path; the MoNuSeg checks run
only where the shared data set is present.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from projects.core.errors import InputError
from projects.pathology import data
from projects.pathology.data import SegSample, dataset_digest, discover, load_pair, read_mpp_csv
from projects.pathology.preprocess import (
    PreprocessConfig,
    equalize,
    flip_augment,
    prepare,
    split_images,
    tile,
)

MONUSEG = Path("/work/shared/data/monuseg")


# --------------------------------------------------------------------------- builders


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A narrow band of values, so equalisation has something to stretch.
    return rng.integers(90, 160, size=(h, w, 3), dtype=np.uint8)


def _mask(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    return (rng.random((h, w)) > 0.6).astype(np.uint8) * 255


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def make_paip(root: Path, mpps: dict[str, float], size: int = 64) -> Path:
    rows = ["id,mpp,cellularity"]
    for i, (sid, mpp) in enumerate(sorted(mpps.items())):
        _write(root / "img" / f"{sid}.png", _rgb(size, size, i))
        _write(root / "mask" / "tumor" / f"{sid}_tumor.png", _mask(size, size, i))
        _write(root / "mask" / "non_tumor" / f"{sid}_nontumor.png", _mask(size, size, i + 50))
        rows.append(f"{sid},{mpp},{10 * i}")
    (root / "cellularity_mpp.csv").write_text("\n".join(rows) + "\n")
    return root


def make_plain(root: Path, stems: list[str], size: int = 100, ext: str = ".png") -> Path:
    for i, stem in enumerate(stems):
        _write(root / "images" / f"{stem}{ext}", _rgb(size, size, i))
        _write(root / "masks" / f"{stem}.png", _mask(size, size, i))
    return root


def _message(excinfo: pytest.ExceptionInfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- discovery


def test_discover_paip_layout_reads_mpp_and_ignores_non_tumor(tmp_path):
    root = make_paip(tmp_path / "paip", {"tr_c002": 0.25, "tr_c001": 0.25, "tr_c003": 0.5})
    samples = discover(root)
    assert [s.id for s in samples] == ["tr_c001", "tr_c002", "tr_c003"]
    assert [s.mpp for s in samples] == [0.25, 0.25, 0.5]
    assert all(s.mask_path.parent.name == "tumor" and s.subset is None for s in samples)
    assert samples[0].mask_path.name == "tr_c001_tumor.png"


def test_discover_plain_layout_any_extension(tmp_path):
    root = make_plain(tmp_path / "plain", ["b", "a"])
    _write(root / "images" / "c.tif", _rgb(100, 100, 9))
    _write(root / "masks" / "c.bmp", _mask(100, 100, 9))
    samples = discover(root)
    assert [s.id for s in samples] == ["a", "b", "c"]
    assert all(s.mpp is None and s.subset is None for s in samples)


def test_discover_train_test_subsets(tmp_path):
    make_plain(tmp_path / "train", ["t1", "t2", "t3"])
    make_plain(tmp_path / "test", ["x1"])
    samples = discover(tmp_path)
    assert {(s.id, s.subset) for s in samples} == {("t1", "train"), ("t2", "train"),
                                                   ("t3", "train"), ("x1", "test")}
    assert samples == discover(tmp_path)  # deterministic order


def test_discover_same_id_in_train_and_test_is_an_error(tmp_path):
    make_plain(tmp_path / "train", ["a", "b"])
    make_plain(tmp_path / "test", ["a"])
    with pytest.raises(InputError, match="also present"):
        discover(tmp_path)


def test_mpp_filter_and_error_lists_values(tmp_path):
    root = make_paip(tmp_path, {"a": 0.25, "b": 0.2500000001, "c": 0.5})
    assert [s.id for s in discover(root, mpp=0.25)] == ["a", "b"]
    assert [s.id for s in discover(root, mpp=0.5)] == ["c"]
    with pytest.raises(InputError) as excinfo:
        discover(root, mpp=0.3)
    text = _message(excinfo)
    assert "0.25" in text and "0.5" in text


def test_mpp_filter_on_layout_without_mpp_is_an_error(tmp_path):
    root = make_plain(tmp_path, ["a"])
    with pytest.raises(InputError, match="no mpp values"):
        discover(root, mpp=0.25)


def test_csv_header_names_are_matched_loosely(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("ID , MPP (um/px), Cellularity\nx1, 0.25 , 40%\n\n")
    assert read_mpp_csv(path) == {"x1": 0.25}


@pytest.mark.parametrize("row", ["tr_c002,abc,10", "tr_c002,0.25", "tr_c002,0.25,10,extra", ",0.25,10",
                                 "tr_c002,-1,10", "tr_c002,0.25,lots"])
def test_malformed_csv_row_names_file_and_line(tmp_path, row):
    root = make_paip(tmp_path, {"tr_c001": 0.25, "tr_c002": 0.25})
    csv_path = root / "cellularity_mpp.csv"
    lines = csv_path.read_text().splitlines()
    lines[2] = row
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as excinfo:
        discover(root)
    text = _message(excinfo)
    assert str(csv_path) in text and "line 3" in text


@pytest.mark.parametrize("setup, names", [
    (lambda r: (r / "masks" / "b.png").unlink(), "b.png"),  # image without mask
    (lambda r: (r / "images" / "b.png").unlink(), "masks/b.png"),  # mask without image
    (lambda r: (r / "images" / "b.png").write_bytes(b"not a png at all" * 8), "images/b.png"),
])
def test_discovery_errors_name_the_file(tmp_path, setup, names):
    root = make_plain(tmp_path, ["a", "b"])
    setup(root)
    with pytest.raises(InputError) as excinfo:
        discover(root)
    assert names in _message(excinfo)
    assert excinfo.value.where.endswith(names)


def test_paip_tumor_mask_without_image(tmp_path):
    root = make_paip(tmp_path, {"a": 0.25, "b": 0.25})
    (root / "img" / "b.png").unlink()
    with pytest.raises(InputError) as excinfo:
        discover(root)
    assert "b_tumor.png" in _message(excinfo)


def test_missing_empty_and_unknown_roots(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        discover(tmp_path / "empty")
    _write(tmp_path / "odd" / "pics" / "a.png", _rgb(8, 8))
    with pytest.raises(InputError, match="images/ \\+ masks/"):
        discover(tmp_path / "odd")


# --------------------------------------------------------------------------- load_pair


def test_load_pair_rgb_and_binary(tmp_path):
    root = make_plain(tmp_path, ["a"])
    bgr = cv2.imread(str(root / "images" / "a.png"))
    image, mask = load_pair(discover(root)[0])
    assert image.shape == (100, 100, 3) and image.dtype == np.uint8
    assert np.array_equal(image, bgr[:, :, ::-1])  # converted from OpenCV's BGR
    assert mask.shape == (100, 100) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}


def test_load_pair_gray_rgba_16bit_and_01_mask(tmp_path):
    gray = _rgb(20, 20)[:, :, 0]
    _write(tmp_path / "images" / "g.png", gray)
    _write(tmp_path / "images" / "r.png", np.dstack([_rgb(20, 20), np.full((20, 20), 7, np.uint8)]))
    _write(tmp_path / "images" / "w.png", gray.astype(np.uint16) * 257)
    for stem in "grw":
        _write(tmp_path / "masks" / f"{stem}.png", (_mask(20, 20) > 0).astype(np.uint8))
    samples = {s.id: s for s in discover(tmp_path)}
    g, m = load_pair(samples["g"])
    assert g.shape == (20, 20, 3) and np.array_equal(g[:, :, 1], gray)
    assert set(np.unique(m)) == {0, 1}
    assert load_pair(samples["r"])[0].shape == (20, 20, 3)
    assert np.array_equal(load_pair(samples["w"])[0], g)  # 16-bit: round(v / 257)


@pytest.mark.parametrize("bad, fragment", [
    (lambda r: _write(r / "masks" / "a.png", _mask(64, 80)), "80x64"),  # size mismatch
    (lambda r: _write(r / "masks" / "a.png", np.full((100, 100), 128, np.uint8)), "128"),
    (lambda r: _write(r / "masks" / "a.png", np.tile(np.array([0, 1, 255], np.uint8), (100, 34))[:, :100]), "1, 255"),
])
def test_bad_mask_names_file_and_problem(tmp_path, bad, fragment):
    root = make_plain(tmp_path, ["a"])
    bad(root)
    with pytest.raises(InputError) as excinfo:
        load_pair(discover(root)[0])
    text = _message(excinfo)
    assert str(root / "masks" / "a.png") in text and fragment in text


def test_truncated_png_fails_at_load(tmp_path):
    root = make_plain(tmp_path, ["a"])
    path = root / "images" / "a.png"
    path.write_bytes(path.read_bytes()[:200])  # valid signature, corrupt body
    sample = discover(root)[0]
    with pytest.raises(InputError) as excinfo:
        load_pair(sample)
    assert str(path) in _message(excinfo)


def test_dataset_digest_tracks_bytes_and_ids(tmp_path):
    root = make_plain(tmp_path, ["a", "b"])
    samples = discover(root)
    d = dataset_digest(samples)
    assert len(d) == 16 and d == dataset_digest(list(reversed(samples)))
    _write(root / "masks" / "b.png", 255 - _mask(100, 100, 1))
    assert dataset_digest(samples) != d


# --------------------------------------------------------------------------- preprocessing


def test_tile_pads_non_multiple_and_marks_padding():
    image, mask = _rgb(100, 100), (_mask(100, 100) > 0).astype(np.uint8)
    images, masks, valid = tile(image, mask, 32)
    assert len(images) == math.ceil(100 / 32) ** 2 == 16
    assert images.shape == (16, 32, 32, 3) and masks.shape == valid.shape == (16, 32, 32)
    assert valid.dtype == bool and int(valid.sum()) == 100 * 100
    assert np.array_equal(images[0], image[:32, :32]) and np.array_equal(images[1], image[:32, 32:64])
    assert np.array_equal(masks[5], mask[32:64, 32:64])
    # Last column tile: 4 real columns, then the reflection of the image's right edge.
    assert valid[3][:, :4].all() and not valid[3][:, 4:].any()
    assert np.array_equal(images[3][:, 4], image[:32, 98])


def test_tile_exact_multiple_and_small_image():
    images, masks, valid = tile(_rgb(64, 64), np.zeros((64, 64), np.uint8), 16)
    assert len(images) == 16 and valid.all()  # the 1024/256 case at 1/16 scale
    images, _, valid = tile(_rgb(20, 10), np.zeros((20, 10), np.uint8), 32)
    assert images.shape == (1, 32, 32, 3) and int(valid.sum()) == 200


def test_tile_1024_at_256_gives_16_valid_tiles():
    images, _, valid = tile(np.zeros((1024, 1024, 3), np.uint8), np.zeros((1024, 1024), np.uint8), 256)
    assert images.shape == (16, 256, 256, 3) and valid.all()


@pytest.mark.parametrize("method", ["hist", "clahe"])
def test_equalize_spreads_luminance(method):
    image = _rgb(64, 64)
    out = equalize(image, method)
    assert out.shape == image.shape and out.dtype == np.uint8
    y_in = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[:, :, 0]
    y_out = cv2.cvtColor(out, cv2.COLOR_RGB2YCrCb)[:, :, 0]
    assert np.ptp(y_out) > np.ptp(y_in) and y_out.std() > y_in.std()


def test_equalize_none_and_unknown():
    image = _rgb(8, 8)
    assert np.array_equal(equalize(image, "none"), image)
    with pytest.raises(InputError, match="unknown equalization"):
        equalize(image, "gamma")


def test_flip_augment_flips_masks_with_images():
    images, masks, valid = tile(_rgb(40, 40), (_mask(40, 40) > 0).astype(np.uint8), 32)
    big_i, big_m, big_v = flip_augment(images, masks, valid)
    n = len(images)
    assert len(big_i) == len(big_m) == len(big_v) == 4 * n
    for k, flip in enumerate([lambda a: a, np.flipud, np.fliplr, lambda a: np.flipud(np.fliplr(a))]):
        for j in range(n):
            assert np.array_equal(big_i[k * n + j], flip(images[j]))
            assert np.array_equal(big_m[k * n + j], flip(masks[j]))
            assert np.array_equal(big_v[k * n + j], flip(valid[j]))


def test_config_key_is_stable_and_validated():
    assert PreprocessConfig().key() == PreprocessConfig().key()
    assert PreprocessConfig().key() != PreprocessConfig(equalization="clahe").key()
    with pytest.raises(InputError):
        PreprocessConfig(equalization="gamma")
    with pytest.raises(InputError):
        PreprocessConfig(tile_size=0)


# --------------------------------------------------------------------------- splits


def _fake(n: int, subsets: dict[str, str] | None = None) -> list[SegSample]:
    subsets = subsets or {}
    return [SegSample(f"s{i:02d}", Path(f"/x/s{i:02d}.png"), Path(f"/x/m{i:02d}.png"),
                      subset=subsets.get(f"s{i:02d}")) for i in range(n)]


def test_split_paper_counts_disjoint_and_deterministic():
    samples = _fake(46)
    split = split_images(samples, test_count=10, seed=3)
    counts = {k: list(split.values()).count(k) for k in ("train", "val", "test")}
    assert counts == {"train": 29, "val": 7, "test": 10}
    assert set(split) == {s.id for s in samples}  # one split per source image
    assert split == split_images(samples, test_count=10, seed=3)
    assert split != split_images(samples, test_count=10, seed=4)


@pytest.mark.parametrize("n", [3, 4, 5, 11])
def test_split_every_split_non_empty(n):
    split = split_images(_fake(n), test_fraction=0.01, val_fraction=0.99)
    assert set(split.values()) == {"train", "val", "test"}


def test_split_respects_predefined_test_subset():
    subsets = {f"s{i:02d}": ("test" if i < 4 else "train") for i in range(20)}
    split = split_images(_fake(20, subsets), test_count=2, seed=1)
    assert sorted(k for k, v in split.items() if v == "test") == [f"s{i:02d}" for i in range(4)]
    assert list(split.values()).count("val") == 3  # round(0.2 * 16)


def test_split_rejects_bad_arguments():
    with pytest.raises(InputError):
        split_images(_fake(2))
    with pytest.raises(InputError):
        split_images(_fake(10), test_fraction=1.0)
    with pytest.raises(InputError):
        split_images(_fake(10), val_fraction=0)
    with pytest.raises(InputError):
        split_images(_fake(10), test_count=9)


# --------------------------------------------------------------------------- prepare + cache


def test_prepare_tiles_flips_train_and_caches(tmp_path, monkeypatch):
    root = make_paip(tmp_path / "paip", {f"c{i}": 0.25 for i in range(5)}, size=40)
    samples = discover(root, mpp=0.25)
    assignment = split_images(samples, test_count=1, val_fraction=0.25, seed=0)
    config = PreprocessConfig(tile_size=32, mpp=0.25)
    first = prepare(samples, assignment, config, tmp_path / "cache")
    assert not first.cache_hit and (first.cache_path / "manifest.json").is_file()
    assert first.digest == dataset_digest(samples)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.cache_path.name]  # no temp left

    per_image = 4  # 40 px at 32 -> 2 x 2 tiles
    for split in ("train", "val", "test"):
        n_images = list(assignment.values()).count(split)
        arrays = first.arrays[split]
        n_tiles = n_images * per_image * (4 if split == "train" else 1)
        assert arrays["images"].shape == (n_tiles, 32, 32, 3) and arrays["images"].dtype == np.uint8
        assert arrays["masks"].shape == arrays["valid"].shape == (n_tiles, 32, 32)
        assert arrays["valid"].dtype == bool and set(np.unique(arrays["masks"])) <= {0, 1}
        assert set(arrays["source"]) == {k for k, v in assignment.items() if v == split}
        assert int(arrays["valid"].sum()) == 40 * 40 * n_tiles // per_image

    def boom(sample):
        raise AssertionError("cache hit must not decode images")

    monkeypatch.setattr(data, "load_pair", boom)
    second = prepare(samples, assignment, config, tmp_path / "cache")
    assert second.cache_hit and second.cache_path == first.cache_path
    for split in ("train", "val", "test"):
        for name, array in first.arrays[split].items():
            assert np.array_equal(second.arrays[split][name], array)
            assert second.arrays[split][name].dtype == array.dtype
    # A hit maps the files (nothing read up front) copy-on-write: writable, the cache unchanged.
    hit_images = second.arrays["train"]["images"]
    assert isinstance(hit_images, np.memmap) and hit_images.flags.writeable
    hit_images[0] = 0
    third = prepare(samples, assignment, config, tmp_path / "cache")
    assert np.array_equal(third.arrays["train"]["images"], first.arrays["train"]["images"])

    # A different config or assignment is a different cache entry.
    with pytest.raises(AssertionError, match="cache hit"):
        prepare(samples, assignment, PreprocessConfig(tile_size=32, equalization="none"), tmp_path / "cache")


def test_prepare_rejects_bad_assignment_and_mpp(tmp_path):
    root = make_paip(tmp_path / "paip", {"a": 0.25, "b": 0.5, "c": 0.25}, size=16)
    samples = discover(root)
    with pytest.raises(InputError, match="no split"):
        prepare(samples, {"a": "train"}, PreprocessConfig(tile_size=16), tmp_path / "cache")
    with pytest.raises(InputError, match="configured mpp"):
        prepare(samples, {"a": "train", "b": "val", "c": "test"}, PreprocessConfig(tile_size=16, mpp=0.25),
                tmp_path / "cache")


def test_prepare_rebuilds_damaged_cache(tmp_path):
    root = make_plain(tmp_path / "d", ["a", "b", "c"], size=16)
    samples = discover(root)
    assignment = {"a": "train", "b": "val", "c": "test"}
    config = PreprocessConfig(tile_size=16, augment_flips=False)
    first = prepare(samples, assignment, config, tmp_path / "cache")
    (first.cache_path / "train__images.npy").write_bytes(b"garbage")  # damaged file
    again = prepare(samples, assignment, config, tmp_path / "cache")
    assert not again.cache_hit and len(again.arrays["train"]["images"]) == 1
    assert prepare(samples, assignment, config, tmp_path / "cache").cache_hit  # rebuilt in place
    (first.cache_path / "manifest.json").unlink()  # a writer that died before its manifest
    assert not prepare(samples, assignment, config, tmp_path / "cache").cache_hit
    np.save(first.cache_path / "val__masks.npy", np.zeros((5, 16, 16), np.uint8))  # shape disagrees
    assert not prepare(samples, assignment, config, tmp_path / "cache").cache_hit
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.cache_path.name]  # nothing left over


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def monuseg() -> list[SegSample]:
    if not (MONUSEG / "train").is_dir():
        pytest.skip(f"MoNuSeg not present at {MONUSEG}")
    return discover(MONUSEG)


def test_monuseg_discovery(monuseg):
    subsets = [s.subset for s in monuseg]
    assert subsets.count("train") == 30 and subsets.count("test") == 14
    split = split_images(monuseg, seed=0)
    assert all(split[s.id] == "test" for s in monuseg if s.subset == "test")
    assert list(split.values()).count("val") == 6


def test_monuseg_pair_loads(monuseg):
    image, mask = load_pair(monuseg[0])
    assert image.shape == (1000, 1000, 3) and image.dtype == np.uint8
    assert mask.shape == (1000, 1000) and set(np.unique(mask)) == {0, 1}
    images, _, valid = tile(image, mask, 256)
    assert len(images) == 16 and int(valid.sum()) == 1000 * 1000
