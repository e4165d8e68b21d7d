"""Finding and reading H&E segmentation pairs (image + binary mask) on disk.

Three layouts are recognised under a root folder:

(a) PAIP 2023: `img/<id>.png`, `mask/tumor/<id>_tumor.png` (the target: tumour cells),
    `mask/non_tumor/<id>_nontumor.png` (ignored) and an optional `cellularity_mpp.csv`
    (id, microns per pixel, tumour cellularity %) that gives each sample its mpp;
(b) plain `images/<stem>.<ext>` + `masks/<stem>.<ext>` with matching stems;
(c) `train/` and `test/` subfolders, each of layout (a) or (b) (MoNuSeg): the samples keep
    the predefined subset so the split never moves a test image into training.

Bad input raises `InputError(file, problem)`; the file named is the one to fix.

Bit-depth rule (documented choice): 8-bit images are used as they are; 16-bit images are
scaled to 8 bits by `round(v / 257)`, which maps 0..65535 linearly onto 0..255 and is exact
for 8-bit data stored in a 16-bit container (v = 257 * x). Any other sample type (float,
signed) is an error. Masks may be 8- or 16-bit but must be binary: {0, 255}, {0, 1} or,
for 16-bit, {0, 65535}.
"""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from projects.core.errors import InputError

IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
PAIP_CSV = "cellularity_mpp.csv"
SUBSETS = ("train", "test")
MPP_TOLERANCE = 1e-6

EXPECTED_LAYOUTS = (
    "expected one of: PAIP 2023 (img/<id>.png, mask/tumor/<id>_tumor.png, "
    "optional cellularity_mpp.csv); images/ + masks/ folders with matching file stems; "
    "train/ and test/ subfolders each holding one of those"
)


@dataclass(frozen=True)
class SegSample:
    id: str
    image_path: Path
    mask_path: Path
    mpp: float | None = None
    subset: str | None = None  # "train" / "test" when the folder layout predefines it


# --------------------------------------------------------------------------- discovery


def discover(root: Path, mpp: float | None = None) -> list[SegSample]:
    """All image/mask pairs under `root`, sorted by (subset, id).

    `mpp` keeps only samples whose microns-per-pixel equals it (within 1e-6); only the PAIP
    layout carries mpp values, so filtering a layout without them is an error too.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(root, "data folder does not exist")
    if not root.is_dir():
        raise InputError(root, "is not a folder; " + EXPECTED_LAYOUTS)
    if not any(root.iterdir()):
        raise InputError(root, "data folder is empty; " + EXPECTED_LAYOUTS)

    samples = _discover_flat(root, subset=None)
    if samples is None:
        if not all((root / s).is_dir() for s in SUBSETS):
            raise InputError(root, "no recognisable data layout; " + EXPECTED_LAYOUTS)
        samples = []
        for subset in SUBSETS:
            found = _discover_flat(root / subset, subset=subset)
            if found is None:
                raise InputError(root / subset, "no recognisable data layout; " + EXPECTED_LAYOUTS)
            samples.extend(found)
        _check_unique_ids(samples)

    if not samples:
        raise InputError(root, "no image/mask pairs found; " + EXPECTED_LAYOUTS)
    if mpp is not None:
        samples = _filter_mpp(root, samples, mpp)
    return sorted(samples, key=lambda s: (s.subset or "", s.id))


def _discover_flat(folder: Path, subset: str | None) -> list[SegSample] | None:
    """Samples of layout (a) or (b) in `folder`, or None when it is neither."""
    if (folder / "img").is_dir() and (folder / "mask" / "tumor").is_dir():
        return _discover_paip(folder, subset)
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return _discover_plain(folder, subset)
    return None


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _by_stem(files: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in files:
        if path.stem in found:
            raise InputError(path, f"two files share the stem {path.stem!r} ({found[path.stem].name})")
        found[path.stem] = path
    return found


def _discover_plain(folder: Path, subset: str | None) -> list[SegSample]:
    images = _by_stem(_image_files(folder / "images"))
    masks = _by_stem(_image_files(folder / "masks"))
    return _pair(images, masks, folder / "masks", "<stem>", {}, subset)


def _discover_paip(folder: Path, subset: str | None) -> list[SegSample]:
    images = _by_stem(_image_files(folder / "img"))
    masks: dict[str, Path] = {}
    for path in _image_files(folder / "mask" / "tumor"):
        if not path.stem.endswith("_tumor"):
            raise InputError(path, "tumour mask not named <id>_tumor.<ext>")
        masks[path.stem[: -len("_tumor")]] = path
    csv_path = folder / PAIP_CSV
    mpps = read_mpp_csv(csv_path) if csv_path.is_file() else {}
    return _pair(images, masks, folder / "mask" / "tumor", "<id>_tumor", mpps, subset)


def _pair(
    images: dict[str, Path],
    masks: dict[str, Path],
    mask_dir: Path,
    mask_pattern: str,
    mpps: dict[str, float],
    subset: str | None,
) -> list[SegSample]:
    for sid, path in sorted(images.items()):
        if sid not in masks:
            expected = mask_dir / (mask_pattern.replace("<stem>", sid).replace("<id>", sid) + ".png")
            raise InputError(path, f"image has no mask (expected e.g. {expected})")
    for sid, path in sorted(masks.items()):
        if sid not in images:
            raise InputError(path, f"mask has no image with id {sid!r}")
    samples = []
    for sid in sorted(images):
        for path in (images[sid], masks[sid]):
            _check_header(path)
        samples.append(SegSample(sid, images[sid], masks[sid], mpps.get(sid), subset))
    return samples


def _check_header(path: Path) -> None:
    # Reads only the signature bytes, so discovery of a large set stays fast; a file that
    # is truncated after a valid header is caught by load_pair when it is decoded.
    if path.stat().st_size == 0 or not cv2.haveImageReader(str(path)):
        raise InputError(path, "unreadable or corrupt image file (no decoder recognises it)")


def _check_unique_ids(samples: list[SegSample]) -> None:
    seen: dict[str, SegSample] = {}
    for s in samples:
        if s.id in seen:
            # The same id in train and test would leak a test image into training.
            raise InputError(s.image_path, f"id {s.id!r} also present as {seen[s.id].image_path}")
        seen[s.id] = s


def _filter_mpp(root: Path, samples: list[SegSample], mpp: float) -> list[SegSample]:
    kept = [s for s in samples if s.mpp is not None and abs(s.mpp - mpp) <= MPP_TOLERANCE]
    if kept:
        return kept
    known = sorted({s.mpp for s in samples if s.mpp is not None})
    if not known:
        raise InputError(root, f"no sample has mpp {mpp}: this layout carries no mpp values "
                               f"(only PAIP's {PAIP_CSV} does); drop the mpp filter")
    counts = ", ".join(f"{v:g} ({sum(1 for s in samples if s.mpp == v)} samples)" for v in known)
    raise InputError(root, f"no sample has mpp {mpp}; mpp values present: {counts}")


# --------------------------------------------------------------------------- PAIP csv


def read_mpp_csv(path: Path) -> dict[str, float]:
    """id -> mpp from PAIP's `cellularity_mpp.csv`.

    Header names are matched loosely (case, spaces, `mpp`/`microns per pixel`-like names)
    because copies of the file differ; rows are checked strictly, naming the line, since a
    wrong mpp silently drops or mixes magnifications. The csv module (not pandas) keeps the
    physical line number of every row, blank lines included.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise InputError(path, "empty csv (expected a header row: id, mpp, cellularity)")
        id_col, mpp_col, cell_col = _csv_columns(path, header)
        mpps: dict[str, float] = {}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise InputError(path, f"line {line}: {len(row)} fields, the header has {len(header)}")
            sid = row[id_col].strip()
            if not sid:
                raise InputError(path, f"line {line}: empty id")
            value = _csv_number(path, line, "mpp", row[mpp_col])
            if value <= 0:
                raise InputError(path, f"line {line}: mpp must be positive, got {row[mpp_col].strip()!r}")
            if cell_col is not None:
                _csv_number(path, line, "cellularity", row[cell_col])
            if sid in mpps and abs(mpps[sid] - value) > MPP_TOLERANCE:
                raise InputError(path, f"line {line}: id {sid!r} listed again with a different mpp")
            mpps[sid] = value
    return mpps


def _csv_columns(path: Path, header: list[str]) -> tuple[int, int, int | None]:
    names = [h.strip().lower().replace(" ", "_") for h in header]

    def find(*needles: str) -> int | None:
        return next((i for i, n in enumerate(names) if any(k in n for k in needles)), None)

    mpp_col = find("mpp", "micron", "um_per_px", "resolution")
    if mpp_col is None:
        raise InputError(path, f"line 1: no mpp column in header {header} (expected e.g. id,mpp,cellularity)")
    id_col = next((i for i, n in enumerate(names) if n in ("id", "image_id", "img_id", "case_id",
                                                           "slide_id", "name", "image", "file")), None)
    if id_col is None:
        id_col = 0 if mpp_col != 0 else None
    if id_col is None:
        raise InputError(path, f"line 1: no id column in header {header}")
    return id_col, mpp_col, find("cellularity", "cell")


def _csv_number(path: Path, line: int, what: str, text: str) -> float:
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise InputError(path, f"line {line}: {what} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(path, f"line {line}: {what} {text.strip()!r} is not a finite number")
    return value


# --------------------------------------------------------------------------- reading


def load_pair(sample: SegSample) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 HxWx3 RGB, mask uint8 HxW in {0, 1}) for one sample."""
    image = _to_rgb8(sample.image_path, _imread(sample.image_path))
    mask = _to_binary(sample.mask_path, _imread(sample.mask_path))
    if mask.shape != image.shape[:2]:
        (h, w), (mh, mw) = image.shape[:2], mask.shape
        raise InputError(sample.mask_path, f"mask is {mw}x{mh} px but its image is {w}x{h} px "
                                           f"({sample.image_path.name})")
    return image, mask


def _imread(path: Path) -> np.ndarray:
    if not Path(path).is_file():
        raise InputError(path, "file not found")
    # IMREAD_UNCHANGED keeps bit depth and alpha so they can be checked, not silently cast.
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise InputError(path, "unreadable or corrupt image file")
    return array


def _to_8bit(path: Path, array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return np.round(array / 257.0).astype(np.uint8)  # the rule in the module docstring
    raise InputError(path, f"unsupported sample type {array.dtype} (expected 8- or 16-bit unsigned)")


def _to_rgb8(path: Path, array: np.ndarray) -> np.ndarray:
    array = _to_8bit(path, array)
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    channels = array.shape[2]
    if channels == 1:
        return cv2.cvtColor(array[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)  # alpha carries no stain information
    raise InputError(path, f"image has {channels} channels (expected gray, RGB or RGBA)")


def _to_binary(path: Path, array: np.ndarray) -> np.ndarray:
    if array.dtype not in (np.uint8, np.uint16):
        raise InputError(path, f"unsupported mask sample type {array.dtype} (expected 8- or 16-bit)")
    if array.ndim == 3:
        # Masks are often saved as RGB(A) with equal channels; a coloured mask is ambiguous.
        colour = array[:, :, : min(3, array.shape[2])]
        if not (colour == colour[:, :, :1]).all():
            raise InputError(path, "mask has differing colour channels (expected a black/white mask)")
        array = colour[:, :, 0]
    values = np.unique(array)
    allowed = [{0, 255}, {0, 1}] + ([{0, 65535}] if array.dtype == np.uint16 else [])
    present = {int(v) for v in values}
    if not any(present <= a for a in allowed):
        shown = ", ".join(str(int(v)) for v in values[:10]) + (", ..." if len(values) > 10 else "")
        raise InputError(path, f"mask is not binary: values found {{{shown}}} "
                               f"(expected 0 and 255, or 0 and 1)")
    return (array > 0).astype(np.uint8)


# --------------------------------------------------------------------------- identity


def dataset_digest(samples: list[SegSample]) -> str:
    """First 16 hex chars of a sha256 over ids and the bytes of every image and mask file.

    Samples are taken in id order so the digest names the set, not the listing order;
    lengths are hashed before contents so no two different sets can share a byte stream.
    """
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.id):
        _hash_field(h, s.id.encode("utf-8"))
        for path in (s.image_path, s.mask_path):
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
            _hash_field(h, data)
    return h.hexdigest()[:16]


def _hash_field(h: "hashlib._Hash", data: bytes) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)
