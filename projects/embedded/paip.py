"""A deterministic PAIP 2023 look-alike: H&E tiles with tumour / non-tumour nucleus masks.

Writes the public PAIP 2023 layout (see docs/data.md), so the real loader is what
demos and tests exercise:

    img/<id>.png                        RGB H&E-like tile
    mask/tumor/<id>_tumor.png           uint8, 255 on tumour-cell nuclei, 0 elsewhere
    mask/non_tumor/<id>_nontumor.png    uint8, 255 on non-tumour nuclei
    cellularity_mpp.csv                 id,mpp,cellularity

The picture: pink fibrous stroma, some white background (lumina, fat, tissue edge), sparse
small round non-tumour nuclei, and tumour regions of crowded, large, dark, irregular nuclei.
Tumour extent varies by design from none to dense. Nuclei never touch (each outline stays
within half the distance to its nearest neighbour), so each nucleus is one connected
component of its mask and the cellularity, tumour nuclei / all nuclei * 100, can be checked
from the masks. Masks are rasterised from the same labelled polygons the picture is painted
from, so they align with it exactly.

Sizes are in proportion to the tile width (512 px is the reference). Two tiles are at
0.5 um/px (nuclei and structures half as large in pixels) so an mpp filter has work to do.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MPP = 0.25  # the paper's tiles
MPP_LOW = 0.5  # two tiles at half the magnification
N_LOW_MPP = 2
MAX_TUMOUR_FRACTION = 0.65

# Nucleus radii as a fraction of a 512-px tile at 0.25 um/px (scaled for other sizes / mpp).
TUMOUR_R = (7.5, 10.5)
NON_TUMOUR_R = (3.8, 5.0)

STROMA_RGB = np.array([236, 168, 200], np.float32)  # eosin pink
EPITHELIUM_RGB = np.array([214, 150, 200], np.float32)  # tumour cytoplasm: more purple
WHITE_RGB = np.array([246, 243, 247], np.float32)
TUMOUR_NUCLEUS_RGB = np.array([72, 40, 118], np.float32)  # hyperchromatic: darker
NON_TUMOUR_NUCLEUS_RGB = np.array([108, 78, 160], np.float32)


@dataclass(frozen=True)
class TileSpec:
    id: str
    mpp: float
    tumour_fraction: float  # share of the tissue area covered by tumour regions
    seed: int


def plan_paip(n_images: int, seed: int) -> list[TileSpec]:
    rng = np.random.default_rng([seed, 0x50414950])  # "PAIP"
    # Spread of tumour extent: convex spacing puts a few tiles near zero, a few dense.
    fractions = MAX_TUMOUR_FRACTION * np.linspace(0.0, 1.0, n_images) ** 1.5
    fractions = rng.permutation(fractions)
    n_low = min(N_LOW_MPP, n_images - 1)  # a single tile stays at the paper's mpp
    low = set(rng.choice(n_images, size=n_low, replace=False).tolist())
    seeds = rng.integers(2**31, size=n_images)
    return [
        TileSpec(f"tr_p{i + 1:03d}", MPP_LOW if i in low else MPP, float(fractions[i]), int(seeds[i]))
        for i in range(n_images)
    ]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean unit-variance noise, features about size/cells px across (cells^2 grid, bicubic)."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    up = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return (up - up.mean()) / (up.std() + 1e-6)


def _region(noise: np.ndarray, fraction: float, allowed: np.ndarray) -> np.ndarray:
    """The `fraction` of the allowed area where `noise` is highest."""
    if fraction <= 0 or not allowed.any():
        return np.zeros_like(allowed)
    thr = np.quantile(noise[allowed], 1.0 - fraction)
    return (noise > thr) & allowed


def _jittered_grid(rng, size: int, spacing: float, jitter: float) -> np.ndarray:
    """Hexagonal grid points, each moved at most `jitter` (neighbours >= spacing - 2*jitter apart)."""
    ys = np.arange(spacing / 2, size, spacing * np.sqrt(3) / 2)
    gx, gy = np.meshgrid(np.arange(0, size + spacing, spacing), ys)
    gx = gx + (np.arange(len(ys))[:, None] % 2) * spacing / 2  # offset rows: hexagonal packing
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    pts = pts[pts[:, 0] < size]
    ang, rad = rng.uniform(0, 2 * np.pi, len(pts)), jitter * np.sqrt(rng.uniform(0, 1, len(pts)))
    return pts + np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)


def _spacing_bounds(centres: np.ndarray, gap: float) -> np.ndarray:
    """Largest outline radius per nucleus that keeps it `gap` px clear of every neighbour."""
    out = np.full(len(centres), np.inf)
    for i in range(0, len(centres), 512):  # chunked: O(n^2) distances, bounded memory
        d = np.hypot(*(centres[i : i + 512, None, :] - centres[None, :, :]).transpose(2, 0, 1))
        d[np.arange(len(d)), np.arange(i, i + len(d))] = np.inf
        out[i : i + 512] = (d.min(axis=1) - gap) / 2
    return np.maximum(out, 0.5)


def _polygons(rng, centres: np.ndarray, r_range: tuple[float, float], roughness: float, aspect: float,
              bound: np.ndarray) -> list[np.ndarray]:
    """Star-shaped nucleus outlines (an ellipse with harmonic wobble), none reaching past `bound`."""
    n = len(centres)
    theta = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    ks = np.arange(2, 6)
    amp = roughness * rng.uniform(0, 1, (n, len(ks))) / ks
    phase = rng.uniform(0, 2 * np.pi, (n, len(ks)))
    wobble = 1 + np.einsum("nk,nkt->nt", amp, np.cos(ks[None, :, None] * theta + phase[:, :, None]))
    stretch = rng.uniform(1.0, aspect, (n, 1))
    r = rng.uniform(*r_range, (n, 1))
    ex, ey = r * wobble * stretch * np.cos(theta), r * wobble / stretch * np.sin(theta)
    # Shrink (rarely) to the bound: crowded tumour nuclei get squeezed, never merged.
    shrink = np.minimum(1.0, bound[:, None] / np.hypot(ex, ey).max(axis=1, keepdims=True))
    ex, ey = ex * shrink, ey * shrink
    rot = rng.uniform(0, np.pi, (n, 1))
    x = centres[:, :1] + ex * np.cos(rot) - ey * np.sin(rot)
    y = centres[:, 1:] + ex * np.sin(rot) + ey * np.cos(rot)
    return list(np.round(np.stack([x, y], -1) * 16).astype(np.int32))  # 4-bit sub-pixel


@dataclass
class Tile:
    rgb: np.ndarray  # uint8 HxWx3
    tumour: np.ndarray  # uint8 0/255
    non_tumour: np.ndarray
    n_tumour: int
    n_non_tumour: int

    @property
    def cellularity(self) -> float:
        total = self.n_tumour + self.n_non_tumour
        return 100.0 * self.n_tumour / total if total else 0.0


def _place_nuclei(rng, size: int, scale: float, tumour_area: np.ndarray, white: np.ndarray):
    """Nucleus outlines, tumour ones first: (polygons, number of tumour nuclei)."""
    t_r = (TUMOUR_R[0] * scale, TUMOUR_R[1] * scale)
    n_r = (NON_TUMOUR_R[0] * scale, NON_TUMOUR_R[1] * scale)
    gap = max(3.0, 3 * scale)  # clear of rasterisation spill: no two touch, even diagonally

    # Tumour nuclei: crowded on a tight, well-jittered grid inside the tumour regions.
    t_bound = t_r[1] * 1.2  # outline bound including wobble and stretch
    t_step = 2.4 * np.mean(t_r) + gap
    grid = _jittered_grid(rng, size, t_step, 0.2 * t_step)
    ix = np.clip(grid.astype(int), 0, size - 1)
    t_centres = grid[tumour_area[ix[:, 1], ix[:, 0]] & (rng.random(len(grid)) < 0.92)]

    # Non-tumour nuclei: sparse, outside the tumour regions and the white background.
    n_bound = n_r[1] * 1.1
    reach_t = cv2.distanceTransform((~tumour_area).astype(np.uint8), cv2.DIST_L2, 5)
    reach_w = cv2.distanceTransform((~white).astype(np.uint8), cv2.DIST_L2, 5)
    n_step = 2 * n_bound + gap
    grid = _jittered_grid(rng, size, n_step, 0.3 * n_step)
    ix = np.clip(grid.astype(int), 0, size - 1)
    ok = (reach_t[ix[:, 1], ix[:, 0]] > t_bound) & (reach_w[ix[:, 1], ix[:, 0]] > n_bound)
    n_centres = grid[ok & (rng.random(len(grid)) < rng.uniform(0.08, 0.16))]

    # Each outline stays within half the gap-less distance to its nearest neighbour.
    bounds = _spacing_bounds(np.concatenate([t_centres, n_centres]), gap)
    n_t = len(t_centres)
    tumour = _polygons(rng, t_centres, t_r, 0.45, 1.3, np.minimum(t_bound, bounds[:n_t]))
    other = _polygons(rng, n_centres, n_r, 0.08, 1.1, np.minimum(n_bound, bounds[n_t:]))
    return tumour + other, n_t


def _stroma(rng, size: int, scale: float, tumour_area: np.ndarray, white: np.ndarray) -> np.ndarray:
    """Background colour: fibrous pink stroma, purplish epithelium round tumour, white gaps."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    fibres = cv2.GaussianBlur(noise, (0, 0), 6 * scale + 0.5, sigmaY=0.6 * scale + 0.3)  # streaks
    turn = cv2.getRotationMatrix2D((size / 2, size / 2), float(rng.uniform(0, 180)), 1.0)
    fibres = cv2.warpAffine(fibres, turn, (size, size), borderMode=cv2.BORDER_REFLECT)
    fibres /= fibres.std() + 1e-6
    img = STROMA_RGB * (1 - 0.06 * fibres[..., None])
    epi = cv2.GaussianBlur(tumour_area.astype(np.float32), (0, 0), 3 * scale + 0.5)[..., None]
    img = img * (1 - epi) + EPITHELIUM_RGB * epi
    wsoft = cv2.GaussianBlur(white.astype(np.float32), (0, 0), 1.5 * scale + 0.5)[..., None]
    return img * (1 - wsoft) + WHITE_RGB * wsoft


def render_tile(spec: TileSpec, size: int) -> Tile:
    rng = np.random.default_rng(spec.seed)
    scale = size / 512 * (MPP / spec.mpp)  # px per reference px: smaller at 0.5 um/px
    cells = round(6 * spec.mpp / MPP)  # tissue structures shrink with magnification too
    everywhere = np.ones((size, size), bool)
    white = _region(_smooth_noise(rng, size, cells), rng.uniform(0.03, 0.15), everywhere)
    tumour_area = _region(_smooth_noise(rng, size, cells), spec.tumour_fraction, ~white)
    polys, n_t = _place_nuclei(rng, size, scale, tumour_area, white)

    # Rasterise every nucleus with its own label: masks, colour and counts all come from it.
    labels = np.zeros((size, size), np.int32)
    for k, poly in enumerate(polys, start=1):
        cv2.fillPoly(labels, [poly], k, cv2.LINE_8, shift=4)
    is_t = (labels > 0) & (labels <= n_t)
    is_n = labels > n_t
    present = np.unique(labels[labels > 0])  # a nucleus at the very edge may rasterise empty

    stain = rng.uniform(0.94, 1.04, 3).astype(np.float32)  # slide-to-slide stain variation
    shade = np.ones(len(polys) + 1, np.float32)  # per-nucleus darkness
    shade[1:] = rng.uniform(0.85, 1.15, len(polys))
    noise = rng.standard_normal((size, size)).astype(np.float32)
    grain = cv2.GaussianBlur(noise, (0, 0), 0.8 * scale + 0.3)
    nuc = np.where(is_t[..., None], TUMOUR_NUCLEUS_RGB, NON_TUMOUR_NUCLEUS_RGB)
    nuc = nuc * (shade[labels] * (1 + 0.12 * grain))[..., None]  # chromatin texture
    img = np.where((labels > 0)[..., None], nuc, _stroma(rng, size, scale, tumour_area, white)) * stain
    img = cv2.GaussianBlur(img, (0, 0), 0.5 * scale + 0.2)  # optics: no razor-sharp edges
    img += rng.normal(0, 2.5, img.shape).astype(np.float32)

    return Tile(
        rgb=np.clip(np.rint(img), 0, 255).astype(np.uint8),
        tumour=is_t.astype(np.uint8) * 255,
        non_tumour=is_n.astype(np.uint8) * 255,
        n_tumour=int((present <= n_t).sum()),
        n_non_tumour=int((present > n_t).sum()),
    )


def generate_paip(out_dir: Path, n_images: int = 24, size: int = 512, seed: int = 0) -> Path:
    """Write the PAIP 2023 layout for `n_images` tiles of size x size into out_dir; return it."""
    if n_images < 1 or size < 32:
        raise ValueError(f"need n_images >= 1 and size >= 32, got {n_images}, {size}")
    out_dir = Path(out_dir)
    for sub in ("img", "mask/tumor", "mask/non_tumor"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in plan_paip(n_images, seed):
        tile = render_tile(spec, size)
        cv2.imwrite(str(out_dir / "img" / f"{spec.id}.png"), cv2.cvtColor(tile.rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out_dir / "mask" / "tumor" / f"{spec.id}_tumor.png"), tile.tumour)
        cv2.imwrite(str(out_dir / "mask" / "non_tumor" / f"{spec.id}_nontumor.png"), tile.non_tumour)
        rows.append((spec.id, spec.mpp, round(tile.cellularity)))
    with open(out_dir / "cellularity_mpp.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "mpp", "cellularity"])
        writer.writerows(rows)
    return out_dir
