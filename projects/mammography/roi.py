"""Region-of-interest (ROI) crops of mini-MIAS films: one crop per located abnormality,
centred on its Info.txt coordinates, and a few crops per NORM film at random points inside
the breast. Pure data (numpy + OpenCV); training code turns the crops into tensors.

Ported from the ROI study on the 256-px films (patient-level splits, 3 seeds: normal vs
abnormal test balanced accuracy about 0.84, against 0.5 for the majority class). The rules
are that study's; where this module differs it says so.

Coordinates: every centre, side and radius here is in ORIGINAL film pixels (1024 x 1024,
x to the right, y down), whatever size the image in memory is (256, 512 or 1024 px): a
film's own pixel (i, j) covers [i, i+1) x [j, j+1) of its grid, so its centre is i + 0.5.
Info.txt puts the origin at the bottom-left, hence row = 1024 - Y.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from projects.core.errors import InputError
from projects.mammography.data import NORMAL, REFNUM_RE, Film, InfoRow
from projects.mammography.images import read_image

FILM_PX = 1024  # Info.txt coordinates are in this space at every image size
MASK_BASE_PX = 256  # the image size the breast-mask kernels were tuned at
MIN_IMAGE_PX = 64  # below this the scaled mask kernels lose their meaning
HALVE_ABOVE = 1.5  # shrink factor above which a crop is cut from a half-size copy


@dataclass(frozen=True)
class RoiSpec:
    crop_px: int = 192  # crop side in film px; NORM crops and small lesions
    radius_factor: float = 2.4  # a lesion's crop side is at least this x its radius
    input_size: int = 64  # side of the crops handed out, px
    norm_crops: int = 2  # crops per NORM film
    erode_px: int = 32  # NORM centres this far inside the breast mask (8 px at 256)
    border_px: int = 24  # ... and this far from the film's edge (6 px at 256)

    def __post_init__(self):
        for name in ("crop_px", "input_size"):
            if getattr(self, name) < 1:
                raise InputError("RoiSpec", f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("radius_factor", "norm_crops", "erode_px", "border_px"):
            if getattr(self, name) < 0:
                raise InputError("RoiSpec", f"{name} must not be negative, got {getattr(self, name)}")

    def side(self, radius: float) -> float:
        """Crop side of a lesion: the whole lesion plus context, never below crop_px."""
        return float(max(self.crop_px, self.radius_factor * radius))


@dataclass(frozen=True)
class RoiItem:
    """Where one crop comes from (before cutting it): centre and side in film px."""
    film_id: str
    cx: float
    cy: float
    side: float
    label: str  # the abnormal row's class, or NORM
    severity: str | None
    lesion: bool  # False for NORM crops


@dataclass
class RoiSet:
    images: np.ndarray  # (N, S, S) uint8
    film_ids: list[str]  # one per crop: splits stay patient-level over films
    labels: list[str]
    severity: list[str | None]
    centres: np.ndarray  # (N, 3) float: cx, cy, side in film px
    skipped: list[str]  # rows and films that gave no crop, and why


# --------------------------------------------------------------------------- images


def film_scale(image: np.ndarray, where: object = "image") -> float:
    """Image px per film px, after checking the image is a square uint8 greyscale film."""
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.uint8:
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(where, f"expected a 2-D uint8 greyscale film, got a {got}")
    h, w = image.shape
    if h != w or h < MIN_IMAGE_PX:
        raise InputError(where, f"film is {w} x {h} px; expected a square film of at least {MIN_IMAGE_PX} px")
    return h / FILM_PX


def load_images(films: Iterable[Film]) -> dict[str, np.ndarray]:
    """film id -> image, each read and checked (InputError names the file)."""
    images = {}
    for film in films:
        images[film.id] = read_image(film.path)
        film_scale(images[film.id], film.path)
    return images


# --------------------------------------------------------------------------- breast mask


def _odd(base_px: int, f: float) -> int:
    """An odd kernel side base_px at 256 px, scaled by f (5 -> 17, 7 -> 25 at 1024 px)."""
    return 2 * max(1, round(base_px // 2 * f)) + 1


def breast_mask(image: np.ndarray) -> np.ndarray:
    """The breast (bool, same shape): the largest bright component, holes filled.

    Blurred film > max(0.5 * Otsu, 20) (Otsu alone cuts into the fatty edge; the floor keeps
    film noise out), a 7x7 opening to cut thin bridges to the label, then the largest
    component. Kernels are in pixels, so they scale with the image (f = side / 256): the
    same physical blur and bridge width at 1024 px as the tuned 256-px rule.
    """
    f = film_scale(image) * FILM_PX / MASK_BASE_PX
    # At 256 px sigma 0 is OpenCV's fixed 5-tap kernel [1 4 6 4 1]/16, the tuned one
    # (a binomial of sigma 1); elsewhere the same sigma in film units.
    blur = cv2.GaussianBlur(image, (_odd(5, f),) * 2, 0 if f == 1 else f)
    otsu, _ = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (blur > max(0.5 * otsu, 20)).astype(np.uint8)
    k = _odd(7, f)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    return _fill_holes(_largest_component(mask))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n < 2:
        return np.zeros(mask.shape, bool)  # a blank film: no breast
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Dark background pockets not touching the film's edge are breast (fat, dark lesions)."""
    _, labels = cv2.connectedComponents((~mask).astype(np.uint8))
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask | ((labels > 0) & ~np.isin(labels, edge))


def norm_region(image: np.ndarray, spec: RoiSpec = RoiSpec()) -> np.ndarray:
    """Where NORM crop centres may fall (bool): the breast mask eroded by erode_px and
    border_px away from the film's edge, so a crop is mostly breast, never label or border."""
    f = film_scale(image)
    erode, border = round(spec.erode_px * f), round(spec.border_px * f)
    kernel = np.ones((2 * erode + 1,) * 2, np.uint8)
    region = cv2.erode(breast_mask(image).astype(np.uint8), kernel).astype(bool)
    if border:
        region[:border] = region[-border:] = False
        region[:, :border] = region[:, -border:] = False
    return region


def norm_centres(image: np.ndarray, n: int, rng: np.random.Generator,
                 spec: RoiSpec = RoiSpec()) -> list[tuple[float, float]]:
    """n centres (x, y) in film px, drawn uniformly from `norm_region` pixels (the centre of
    each pixel); [] when the region is empty (a blank or tiny breast)."""
    f = film_scale(image)
    ys, xs = np.nonzero(norm_region(image, spec))
    if not len(xs):
        return []
    picks = [int(rng.integers(len(xs))) for _ in range(n)]  # one draw per centre, as the study
    return [((xs[i] + 0.5) / f, (ys[i] + 0.5) / f) for i in picks]


def film_seed(film_id: str) -> int:
    """The seed of a film's fixed NORM centres: the study's for MIAS ids (mdb001 -> 7936),
    a CRC of the id otherwise; the same in every run, whatever the run's seed."""
    if REFNUM_RE.fullmatch(film_id):
        return int(film_id[3:]) * 7919 + 17
    return zlib.crc32(film_id.encode())


# --------------------------------------------------------------------------- lesions


def _located(film: Film) -> list[InfoRow]:
    return [r for r in film.rows if r.cls != NORMAL and r.x is not None and r.y is not None]


def _centre(row: InfoRow) -> tuple[float, float, float]:
    return float(row.x), float(FILM_PX - row.y), float(row.radius or 0)


def lesion_centres(film: Film) -> list[tuple[float, float, float]]:
    """(x, y, radius) in film px, y down, for each abnormal row with coordinates."""
    return [_centre(r) for r in _located(film)]


def missing_coordinates(films: Iterable[Film]) -> list[str]:
    """One line per abnormality that cannot be cropped: rows without coordinates (MIAS:
    mdb059, and *NOTE 3* diffuse calcifications) and abnormal films without Info.txt rows."""
    out = []
    for film in films:
        if film.label != NORMAL and not film.rows:
            out.append(f"{film.id} {film.label}: no Info.txt rows (folder-per-class data has no coordinates)")
        for r in film.rows:
            if r.cls != NORMAL and (r.x is None or r.y is None):
                out.append(f"{film.id} {r.cls} {r.severity}: Info.txt line {r.line_no} gives no coordinates")
    return out


# --------------------------------------------------------------------------- crops


def crop(image: np.ndarray, cx: float, cy: float, side: float, out_size: int,
         angle: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """out_size x out_size uint8 crop of side `side * scale` film px centred at (cx, cy),
    rotated by `angle` degrees; bilinear, zero outside the film."""
    f = film_scale(image)
    if out_size < 1 or not side * scale > 0:
        raise InputError("crop", f"needs out_size >= 1 and a positive side, got {out_size} and {side} x {scale}")
    x, y, s = cx * f, cy * f, side * scale * f / out_size  # s: image px per output px
    while s > HALVE_ABOVE:
        # Bilinear sampling skips pixels when shrinking a lot (aliasing); halve the film
        # first. pyrDown's pixel j sits on pixel 2j, so x' = (x + 0.5) / 2 in pixel-edge units.
        image = cv2.pyrDown(image)
        x, y, s = (x + 0.5) / 2, (y + 0.5) / 2, s / 2
    th = np.deg2rad(angle)
    c, si, h = np.cos(th) * s, np.sin(th) * s, (out_size - 1) / 2.0
    # output pixel u -> image point centre + R * s * (u - h), in pixel-index units (-0.5)
    m = np.array([[c, -si, x - 0.5 - (c * h - si * h)],
                  [si, c, y - 0.5 - (si * h + c * h)]], np.float32)
    return cv2.warpAffine(image, m, (out_size, out_size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _image_of(images: Mapping[str, np.ndarray], film: Film) -> np.ndarray:
    if film.id not in images:
        raise InputError(film.path, f"no image given for film {film.id}")
    film_scale(images[film.id], film.path)
    return images[film.id]


def plan_crops(films: Iterable[Film], images: Mapping[str, np.ndarray], spec: RoiSpec = RoiSpec(),
               seed: int = 0, *, norm_seed_by_film: bool = True) -> tuple[list[RoiItem], list[str]]:
    """Every crop's source, in film order, and the rows/films skipped.

    norm_seed_by_film: NORM centres seeded by the film id (fixed val/test crops, the same for
    every run and seed); False draws them from `seed` (fresh training centres per epoch).
    """
    films = list(films)
    skipped = missing_coordinates(films)
    rng = np.random.default_rng(seed)
    items: list[RoiItem] = []
    for film in films:
        image = _image_of(images, film)
        if film.label != NORMAL:
            items += [RoiItem(film.id, x, y, spec.side(r), row.cls, row.severity, True)
                      for row, (x, y, r) in zip(_located(film), lesion_centres(film))]
            continue
        g = np.random.default_rng(film_seed(film.id)) if norm_seed_by_film else rng
        centres = norm_centres(image, spec.norm_crops, g, spec)
        if spec.norm_crops and not centres:
            skipped.append(f"{film.id} NORM: no room for a crop centre inside the breast mask")
        items += [RoiItem(film.id, x, y, float(spec.crop_px), NORMAL, None, False) for x, y in centres]
    return items, skipped


def build_crops(films: Iterable[Film], images: Mapping[str, np.ndarray], spec: RoiSpec = RoiSpec(),
                seed: int = 0, *, norm_seed_by_film: bool = True) -> RoiSet:
    """The crops of `plan_crops`, cut without augmentation."""
    items, skipped = plan_crops(films, images, spec, seed, norm_seed_by_film=norm_seed_by_film)
    size = spec.input_size
    crops = [crop(images[it.film_id], it.cx, it.cy, it.side, size) for it in items]
    return RoiSet(images=np.stack(crops) if crops else np.zeros((0, size, size), np.uint8),
                  film_ids=[it.film_id for it in items], labels=[it.label for it in items],
                  severity=[it.severity for it in items],
                  centres=np.array([(it.cx, it.cy, it.side) for it in items], float).reshape(-1, 3),
                  skipped=skipped)


def augment_crop(image: np.ndarray, item: RoiItem, out_size: int, rng: np.random.Generator,
                 jitter: float = 0.1) -> np.ndarray:
    """One training crop, float32 in [0, 1]: the study's strong augmentation, drawn in its
    order. Lesion centres move up to jitter x side; then scale 0.9-1.1 (log-uniform), any
    rotation, gamma 0.8-1.25, gain 0.9-1.1, bias +-0.05 and a left-right flip. Rotation is
    done by the warp from the film, so the corners hold real tissue, not padding."""
    cx, cy = item.cx, item.cy
    if item.lesion:
        cx += rng.uniform(-1, 1) * jitter * item.side
        cy += rng.uniform(-1, 1) * jitter * item.side
    scale = np.exp(rng.uniform(np.log(0.9), np.log(1.1)))
    angle = rng.uniform(0, 360)
    gamma = np.exp(rng.uniform(np.log(0.8), np.log(1.25)))
    gain, bias = rng.uniform(0.9, 1.1), rng.uniform(-0.05, 0.05)
    x = crop(image, cx, cy, item.side, out_size, angle, scale).astype(np.float32) / 255.0
    if rng.integers(2):
        x = x[:, ::-1]
    x = np.clip(gain * np.power(x, gamma) + bias, 0.0, 1.0)
    return np.ascontiguousarray(x, dtype=np.float32)
