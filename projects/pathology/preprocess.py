"""The paper's preprocessing for H&E segmentation, and the split and cache around it.

Per source image: histogram equalisation of the luminance (OpenCV), then cut into
non-overlapping tiles (the paper: 1024 -> 16 tiles of 256); training tiles are then
augmented by vertical, horizontal and both flips (each tile gives 3 more). Splits are made
at the level of source images, never tiles, so no image contributes to two splits.

`prepare` caches the finished tiles (flips included) keyed by the data digest, the config
and the assignment: a folder with one uncompressed .npy file per array, memory-mapped on a
hit. Measured on the embedded set (benchmarks/data_pipeline.py): the former cache, one
compressed .npz with flips recomputed on every hit, made a hit only ~5x faster than
preprocessing from scratch, because zlib decompression (~60%) and the flips (~25%) were most
of it; the mapped folder reads no pixel until a loader touches it (~33x). It costs disk: no
compression and 4x the training tiles.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from projects.core.errors import InputError
from projects.pathology import data
from projects.pathology.data import SegSample

SPLITS = ("train", "val", "test")
EQUALIZATIONS = ("hist", "clahe", "none")
FIELDS = ("images", "masks", "valid", "source")
# Bump when the tiling/equalisation code changes meaning, so old caches stop matching.
PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    tile_size: int = 256
    equalization: str = "hist"  # "hist" | "clahe" | "none"
    augment_flips: bool = True  # training split only
    mpp: float | None = None  # when set, every sample must have this mpp (PAIP: 0.25)
    downsample: int = 1  # integer shrink factor applied to image and mask before tiling

    def __post_init__(self) -> None:
        if isinstance(self.downsample, bool) or not isinstance(self.downsample, int) or self.downsample < 1:
            raise InputError("downsample", f"must be a positive integer, got {self.downsample!r}")
        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int) or self.tile_size < 1:
            raise InputError("tile_size", f"must be a positive integer, got {self.tile_size!r}")
        if self.equalization not in EQUALIZATIONS:
            raise InputError("equalization", f"unknown method {self.equalization!r} "
                                             f"(expected one of {', '.join(EQUALIZATIONS)})")
        if self.mpp is not None and not (self.mpp > 0 and math.isfinite(self.mpp)):
            raise InputError("mpp", f"must be a positive number, got {self.mpp!r}")

    def key(self) -> str:
        """Stable short hash of every field (and the preprocessing version); downsample 1 is
        left out so that caches made before the setting existed still match."""
        fields = {k: v for k, v in asdict(self).items() if not (k == "downsample" and v == 1)}
        payload = json.dumps({"version": PREPROCESS_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Prepared:
    arrays: dict[str, dict[str, np.ndarray]]  # split -> images / masks / valid / source
    cache_hit: bool
    cache_path: Path
    digest: str  # dataset_digest of the samples


# --------------------------------------------------------------------------- per image


def equalize(image_rgb: np.ndarray, method: str) -> np.ndarray:
    """Equalise the luminance only (Y of YCrCb), so stain colours keep their hue."""
    if method not in EQUALIZATIONS:
        raise InputError(None, f"unknown equalization {method!r} (expected one of {', '.join(EQUALIZATIONS)})")
    _check_rgb(image_rgb)
    if method == "none":
        return image_rgb
    ycrcb = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2YCrCb)
    y = ycrcb[:, :, 0]
    if method == "hist":
        ycrcb[:, :, 0] = cv2.equalizeHist(y)
    else:
        ycrcb[:, :, 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(y)
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)


def _check_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(None, f"expected a uint8 HxWx3 RGB image, got {image.dtype} {image.shape}")


def shrink(image: np.ndarray, mask: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask at 1/factor of each side: area averaging for the image (no aliasing of
    the stain texture), and a mask pixel is tumour when at least half of its area was."""
    if factor == 1:
        return image, mask
    h, w = mask.shape
    size = (max(1, round(w / factor)), max(1, round(h / factor)))  # cv2 takes (width, height)
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    share = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return small, (share >= 0.5).astype(mask.dtype)


def tile(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping size x size tiles in row-major order: (images, masks, valid).

    Sides that are not a multiple of `size` (MoNuSeg's 1000 px) are reflect-padded at the
    bottom/right; `valid` is False on padded pixels so metrics can leave them out. The mask
    is reflected like the image so that a loss that ignores `valid` still sees labels that
    match the pixels it is shown.
    """
    _check_rgb(image)
    if mask.shape != image.shape[:2]:
        raise InputError(None, f"mask shape {mask.shape} differs from image shape {image.shape[:2]}")
    if size < 1:
        raise InputError("tile_size", f"must be positive, got {size}")
    h, w = mask.shape
    pad_h, pad_w = -h % size, -w % size
    valid = np.ones((h, w), dtype=np.uint8)
    if pad_h or pad_w:
        # BORDER_REFLECT_101 == numpy's "reflect"; it copes with pads larger than the image.
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        mask = cv2.copyMakeBorder(mask, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        valid = cv2.copyMakeBorder(valid, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
    return _blocks(image, size), _blocks(mask, size), _blocks(valid, size).astype(bool)


def _blocks(array: np.ndarray, size: int) -> np.ndarray:
    h, w = array.shape[:2]
    rest = array.shape[2:]
    grid = array.reshape(h // size, size, w // size, size, *rest).swapaxes(1, 2)
    return np.ascontiguousarray(grid.reshape(-1, size, size, *rest))


def flip_augment(images: np.ndarray, masks: np.ndarray, valid: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x4 along axis 0, grouped by transform: originals, vertical, horizontal, both flips."""
    def four(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, a[:, ::-1, :], a[:, :, ::-1], a[:, ::-1, ::-1]])

    return four(images), four(masks), four(valid)


# --------------------------------------------------------------------------- split


def split_images(
    samples: list[SegSample],
    test_count: int | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, str]:
    """Sample id -> "train" | "val" | "test", decided per source image.

    Samples with the predefined subset "test" stay test (test_count/test_fraction are then
    unused) and the rest is split into train/val. Otherwise `test_count` images (the paper:
    10 of 46), else round(test_fraction * N), go to test, and val_fraction of the rest to
    val (the paper's 80:20). Every split is non-empty; the same seed gives the same split.
    """
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 < value < 1:
            raise InputError(name, f"must be between 0 and 1 (exclusive), got {value}")
    ids = sorted(s.id for s in samples)
    if len(set(ids)) != len(ids):
        dup = next(i for i, j in zip(ids, ids[1:]) if i == j)
        raise InputError("samples", f"id {dup!r} appears more than once")
    if len(ids) < 3:
        raise InputError("samples", f"need at least 3 source images to make train/val/test splits, got {len(ids)}")

    rng = np.random.default_rng(seed)
    fixed_test = sorted(s.id for s in samples if s.subset == "test")
    if fixed_test:
        rest = sorted(set(ids) - set(fixed_test))
        if len(rest) < 2:
            raise InputError("samples", f"only {len(rest)} non-test images: need 2 for train and val")
        test = fixed_test
    else:
        n_test = _test_size(len(ids), test_count, test_fraction)
        order = list(rng.permutation(ids))
        test, rest = sorted(order[:n_test]), sorted(order[n_test:])
    n_val = min(max(_round_half_up(val_fraction * len(rest)), 1), len(rest) - 1)
    shuffled = list(rng.permutation(rest))
    val = set(shuffled[:n_val])

    assignment = {sid: "test" for sid in test}
    assignment.update({sid: ("val" if sid in val else "train") for sid in rest})
    return dict(sorted(assignment.items()))


def _test_size(n: int, test_count: int | None, test_fraction: float) -> int:
    if test_count is not None:
        if isinstance(test_count, bool) or not isinstance(test_count, int) or not 1 <= test_count <= n - 2:
            raise InputError("test_count", f"must be an integer from 1 to {n - 2} for {n} images "
                                           f"(train and val need one each), got {test_count!r}")
        return test_count
    return min(max(_round_half_up(test_fraction * n), 1), n - 2)


def _round_half_up(x: float) -> int:
    # Python's round() rounds half to even; a split size should not depend on parity.
    return int(math.floor(x + 0.5))


# --------------------------------------------------------------------------- prepare + cache


def prepare(
    samples: list[SegSample],
    assignment: dict[str, str],
    config: PreprocessConfig,
    cache_dir: Path,
) -> Prepared:
    """Tiles for "train", "val" and "test": load, equalise, tile; flip train only.

    Each split gets `images` (N,t,t,3 uint8), `masks` (N,t,t uint8 {0,1}), `valid`
    (N,t,t bool) and `source` (N, the sample id of each tile). Results are cached under
    `cache_dir`; a second call with the same files, config and assignment reads the cache
    and decodes no image (the digest still hashes the files' bytes).
    """
    _check_assignment(samples, assignment)
    _check_mpp(samples, config)
    digest = data.dataset_digest(samples)
    path = cache_path(Path(cache_dir), digest, config, assignment, samples)

    arrays = _load_cache(path)
    cache_hit = arrays is not None
    if arrays is None:
        arrays = _build(samples, assignment, config)
        if config.augment_flips and len(arrays["train"]["source"]):
            train = arrays["train"]
            train["images"], train["masks"], train["valid"] = flip_augment(train["images"], train["masks"],
                                                                           train["valid"])
            train["source"] = np.tile(train["source"], 4)
        _save_cache(path, arrays)
    return Prepared(arrays, cache_hit, path, digest)


def cache_path(cache_dir: Path, digest: str, config: PreprocessConfig,
               assignment: dict[str, str], samples: list[SegSample]) -> Path:
    """The cache entry: a folder holding <split>__<field>.npy files and a manifest."""
    ids = {s.id for s in samples}
    relevant = sorted((sid, split) for sid, split in assignment.items() if sid in ids)
    split_key = hashlib.sha256(json.dumps(relevant).encode()).hexdigest()[:12]
    return cache_dir / f"pathology-{digest}-{config.key()}-{split_key}.tiles"


def _check_assignment(samples: list[SegSample], assignment: dict[str, str]) -> None:
    for s in samples:
        split = assignment.get(s.id)
        if split is None:
            raise InputError(s.image_path, f"sample {s.id!r} has no split in the assignment")
        if split not in SPLITS:
            raise InputError(s.image_path, f"unknown split {split!r} for {s.id!r} (expected {', '.join(SPLITS)})")


def _check_mpp(samples: list[SegSample], config: PreprocessConfig) -> None:
    if config.mpp is None:
        return
    for s in samples:
        if s.mpp is None or abs(s.mpp - config.mpp) > data.MPP_TOLERANCE:
            raise InputError(s.image_path, f"sample mpp {s.mpp} differs from the configured mpp {config.mpp} "
                                           f"(discover(root, mpp=...) keeps only matching samples)")


def _build(samples: list[SegSample], assignment: dict[str, str], config: PreprocessConfig
           ) -> dict[str, dict[str, np.ndarray]]:
    t = config.tile_size
    parts: dict[str, list[tuple[np.ndarray, ...]]] = {split: [] for split in SPLITS}
    for s in sorted(samples, key=lambda s: s.id):
        image, mask = shrink(*data.load_pair(s), config.downsample)
        images, masks, valid = tile(equalize(image, config.equalization), mask, t)
        parts[assignment[s.id]].append((images, masks, valid, np.full(len(images), s.id)))
    empty = (np.zeros((0, t, t, 3), np.uint8), np.zeros((0, t, t), np.uint8),
             np.zeros((0, t, t), bool), np.zeros(0, dtype="<U1"))
    out = {}
    for split, chunks in parts.items():
        columns = zip(*chunks) if chunks else ([e] for e in empty)
        out[split] = {name: np.concatenate(list(col)) for name, col in zip(FIELDS, columns)}
    return out


MANIFEST = "manifest.json"


def _load_cache(path: Path) -> dict[str, dict[str, np.ndarray]] | None:
    """The cached arrays, memory-mapped copy-on-write ("c": writable in memory, the file is
    never changed, and torch.from_numpy takes them without a read-only warning); None when
    there is no complete entry. A damaged entry is removed so that it is rebuilt."""
    if not (path / MANIFEST).is_file():
        if path.exists():
            _remove(path)  # a foreign file, or a folder without its manifest
        return None
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        out = {split: {name: np.load(path / f"{split}__{name}.npy", mmap_mode="c", allow_pickle=False)
                       for name in FIELDS} for split in SPLITS}
        for split, fields in out.items():
            for name, array in fields.items():
                if list(array.shape) != manifest[split][name]:
                    raise ValueError(f"{split}__{name}.npy has shape {array.shape}, manifest says "
                                     f"{manifest[split][name]}")
        return out
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        _remove(path)
        return None


def _save_cache(path: Path, arrays: dict[str, dict[str, np.ndarray]]) -> None:
    """Write into a temporary folder beside the entry, manifest last, then rename it into
    place: readers never see a half-written entry, and of two concurrent writers the second
    finds the first's complete entry and drops its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp"))
    try:
        for split, fields in arrays.items():
            for name, array in fields.items():
                np.save(tmp / f"{split}__{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        manifest = {split: {name: list(a.shape) for name, a in fields.items()} for split, fields in arrays.items()}
        (tmp / MANIFEST).write_text(json.dumps(manifest))
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / MANIFEST).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another writer finished the same entry first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
