"""ROI crops of mammography films (projects.mammography.roi): Info.txt coordinates to
crops at 256 and 1024 px, the crop side rule, the breast mask, fixed NORM centres, rows
without coordinates, and the same on generated and (where present) real mini-MIAS films."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from projects.core.errors import InputError
from projects.embedded.mias import info_text, plan_mias, render_film
from projects.embedded.mias import write_pgm as write_embedded_pgm
from projects.mammography.data import Film, InfoRow, load_films
from projects.mammography.roi import (
    RoiSpec,
    augment_crop,
    breast_mask,
    build_crops,
    crop,
    lesion_centres,
    load_images,
    missing_coordinates,
    norm_centres,
    norm_region,
    plan_crops,
)
from projects.mammography.splits import patient_id

LESION = (300, 700, 48)  # Info.txt X, Y (origin bottom-left), radius: image row 1024 - 700 = 324
LABEL_BOX = ((850, 60), (950, 140))  # film px, top-right: a film label, apart from the breast


def synthetic_film(size: int = 256, lesion=LESION, hole: bool = False) -> np.ndarray:
    """Black film; breast = half-ellipse on the left edge (~110, textured); a bright label
    top right; a bright film-edge strip on the right; optional bright lesion and dark hole.
    Drawn in 1024-px coordinates scaled to `size`, so every size shows the same film."""
    f = size / 1024
    img = np.zeros((size, size), np.uint8)

    def pt(x, y):
        return round(x * f), round(y * f)
    cv2.ellipse(img, pt(0, 512), pt(600, 450), 0, 0, 360, 110, -1)
    img = np.where(img > 0, img + np.random.default_rng(0).integers(0, 12, img.shape, dtype=np.uint8), 0)
    img = img.astype(np.uint8)
    cv2.rectangle(img, pt(*LABEL_BOX[0]), pt(*LABEL_BOX[1]), 230, -1)
    cv2.rectangle(img, pt(1008, 0), pt(1024, 1024), 200, -1)
    if lesion:
        x, y, r = lesion
        cv2.circle(img, pt(x, 1024 - y), round(r * f), 250, -1)
    if hole:
        cv2.circle(img, pt(250, 450), round(20 * f), 0, -1)
    return img


def row(ref: str, cls: str = "CIRC", sev: str | None = "B", x=None, y=None, r=None, line: int = 1) -> InfoRow:
    return InfoRow(ref, "F", cls, sev, x, y, r, line)


def film(ref: str, *rows: InfoRow, label: str | None = None) -> Film:
    label = label or next((r.cls for r in rows if r.cls != "NORM"), "NORM")
    sev = None if label == "NORM" else ("M" if any(r.severity == "M" for r in rows) else "B")
    return Film(ref, Path(f"/films/{ref}.pgm"), label, sev, "F", tuple(rows))


def lesion_film(ref: str = "mdb001", lesion=LESION) -> Film:
    return film(ref, row(ref, "CIRC", "B", *lesion))


def norm_film(ref: str) -> Film:
    return film(ref, row(ref, "NORM", None))


# --------------------------------------------------------------------------- coordinates


@pytest.mark.parametrize("size", [256, 1024])
def test_lesion_crop_is_centred_on_the_flipped_info_txt_point(size):
    f = lesion_film()
    assert lesion_centres(f) == [(300.0, 324.0, 48.0)]  # row = 1024 - Y
    img = synthetic_film(size)
    roi = build_crops([f], {f.id: img}, RoiSpec(input_size=32))
    assert roi.images.shape == (1, 32, 32) and roi.images.dtype == np.uint8
    assert roi.images[0, 14:18, 14:18].min() > 200  # the bright lesion fills the centre
    # Without the flip the centre would sit at row 700: plain breast tissue.
    assert crop(img, 300, 700, 192, 32)[14:18, 14:18].max() < 150


def test_crops_agree_at_256_and_1024_px():
    f = lesion_film()
    small, big = (build_crops([f], {f.id: synthetic_film(s)}).images[0].astype(float) for s in (256, 1024))
    assert np.abs(small - big).mean() < 6


def test_crop_side_rule_and_scale():
    spec = RoiSpec()
    assert spec.side(30) == 192 and spec.side(100) == 240  # max(crop_px, 2.4 * radius)
    f = lesion_film(lesion=(512, 512, 100))
    assert build_crops([f], {f.id: synthetic_film()}, spec).centres[0, 2] == 240
    for size in (256, 1024):  # a bright square of 240 film px centred on (512, 512)
        img = np.zeros((size, size), np.uint8)
        a, b = round(392 * size / 1024), round(632 * size / 1024)
        img[a:b, a:b] = 255
        assert crop(img, 512, 512, 240, 64)[2:-2, 2:-2].min() == 255  # the square fills the crop
        half = crop(img, 512, 512, 480, 64)  # twice the side: the square is the middle half
        assert half[18:46, 18:46].min() == 255 and half[:12].max() == 0 and half[:, -12:].max() == 0
        assert crop(img, 512, 512, 480, 64, scale=0.5)[2:-2, 2:-2].min() == 255
        assert crop(img, 0, 0, 240, 64)[:28, :28].max() == 0  # zero outside the film


@pytest.mark.parametrize("size", [256, 1024])
def test_strong_shrinking_does_not_alias(size):
    """1-px stripes seen 6-24x smaller must come out as their mean grey, not as stripes."""
    img = np.zeros((size, size), np.uint8)
    img[:, ::2] = 255
    for cx in (500.0, 501.3, 503.7):
        x = crop(img, cx, 512, 768, 32).astype(float)
        assert abs(x.mean() - 127.5) < 3 and x.std() < 3, (cx, x.mean(), x.std())


# --------------------------------------------------------------------------- breast mask


@pytest.mark.parametrize("size", [256, 1024])
def test_breast_mask_excludes_label_and_black_border_and_fills_holes(size):
    img = synthetic_film(size, hole=True)
    mask = breast_mask(img)
    assert mask.dtype == bool and mask.shape == img.shape

    def at(x, y):
        return mask[round(y * size / 1024), round(x * size / 1024)]
    assert at(200, 512) and at(250, 450)  # tissue, and the dark hole inside it
    assert not at(900, 100)  # the label
    assert not at(1016, 512)  # the film-edge strip
    assert not at(800, 900) and not at(700, 20)  # black background
    assert abs(mask.mean() - 0.5 * np.pi * 600 * 450 / 1024 ** 2) < 0.02  # about the half-ellipse


def test_blank_film_has_no_breast_and_norm_film_is_skipped():
    blank = np.zeros((256, 256), np.uint8)
    assert not breast_mask(blank).any()
    assert norm_centres(blank, 2, np.random.default_rng(0)) == []
    f = norm_film("mdb003")
    roi = build_crops([f], {f.id: blank})
    assert roi.images.shape == (0, 64, 64) and roi.centres.shape == (0, 3)
    assert roi.skipped == ["mdb003 NORM: no room for a crop centre inside the breast mask"]


# --------------------------------------------------------------------------- NORM centres


@pytest.mark.parametrize("size", [256, 1024])
def test_norm_centres_lie_inside_the_eroded_mask(size):
    img, spec = synthetic_film(size), RoiSpec()
    region, mask = norm_region(img, spec), breast_mask(img)
    f = size / 1024
    inside = cv2.erode(mask.astype(np.uint8), np.ones((2 * round(32 * f) + 1,) * 2, np.uint8)).astype(bool)
    assert region.any() and not (region & ~inside).any()
    centres = norm_centres(img, 50, np.random.default_rng(0), spec)
    for x, y in centres:
        i, j = int(y * f), int(x * f)
        assert region[i, j] and mask[i, j]
        assert 24 <= x <= 1000 and 24 <= y <= 1000  # border_px from the film's edge
        assert x < 600  # never on the label or the edge strip


def test_norm_centres_are_fixed_per_film_id():
    img = synthetic_film(lesion=None)
    films = [norm_film("mdb003"), norm_film("mdb004"), norm_film("case-7")]
    images = {f.id: img for f in films}
    runs = [build_crops(films, images, seed=s) for s in (0, 1, 2)]
    assert all(np.array_equal(runs[0].centres, r.centres) for r in runs[1:])
    assert np.array_equal(runs[0].images, runs[1].images)
    assert runs[0].film_ids == ["mdb003"] * 2 + ["mdb004"] * 2 + ["case-7"] * 2
    per_film = runs[0].centres.reshape(3, 2, 3)
    assert not np.array_equal(per_film[0], per_film[1])  # same image, other id: other centres
    # Training centres follow the run's seed instead.
    fresh = [plan_crops(films, images, seed=s, norm_seed_by_film=False)[0] for s in (0, 0, 1)]
    assert fresh[0] == fresh[1] and fresh[0] != fresh[2]


# --------------------------------------------------------------------------- rows and films


def test_rows_without_coordinates_are_skipped_and_listed():
    calc = film("mdb216", row("mdb216", "CALC", "M", 400, 600, 30, line=10),
                row("mdb216", "CALC", "M", line=11))
    circ = film("mdb059", row("mdb059", "CIRC", "B", line=12))
    folder = Film("scan9", Path("/films/SPIC/scan9.png"), "SPIC", None, "", ())
    films = [calc, circ, folder, lesion_film()]
    expected = ["mdb216 CALC M: Info.txt line 11 gives no coordinates",
                "mdb059 CIRC B: Info.txt line 12 gives no coordinates",
                "scan9 SPIC: no Info.txt rows (folder-per-class data has no coordinates)"]
    assert missing_coordinates(films) == expected
    assert lesion_centres(calc) == [(400.0, 424.0, 30.0)]
    roi = build_crops(films, {f.id: synthetic_film() for f in films})
    assert roi.film_ids == ["mdb216", "mdb001"] and roi.labels == ["CALC", "CIRC"]
    assert roi.skipped == expected


def test_crops_map_back_to_their_films_and_rows():
    pair = [film("mdb143", row("mdb143", "NORM", None)),
            film("mdb144", row("mdb144", "MISC", "B", 300, 700, 48, 1), row("mdb144", "MISC", "M", 600, 400, 40, 2))]
    roi = build_crops(pair, {f.id: synthetic_film() for f in pair})
    assert roi.film_ids == ["mdb143", "mdb143", "mdb144", "mdb144"]
    assert roi.labels == ["NORM", "NORM", "MISC", "MISC"] and roi.severity == [None, None, "B", "M"]
    assert {patient_id(i) for i in roi.film_ids} == {"p072"}  # one patient: split as one
    assert roi.centres[2:].tolist() == [[300, 324, 192], [600, 624, 192]]
    assert len(roi.images) == len(roi.film_ids) == len(roi.labels) == len(roi.severity) == len(roi.centres)


def test_bad_input_is_an_input_error():
    f = lesion_film()
    with pytest.raises(InputError, match=r"/films/mdb001.pgm: no image given"):
        build_crops([f], {})
    for bad, problem in ((np.zeros((256, 200), np.uint8), "film is 200 x 256 px"),
                         (np.zeros((256, 256), np.float32), "2-D uint8"),
                         (np.zeros((32, 32), np.uint8), "at least 64 px")):
        with pytest.raises(InputError, match=problem) as err:
            build_crops([f], {f.id: bad})
        assert err.value.where == "/films/mdb001.pgm"
    with pytest.raises(InputError, match="positive side"):
        crop(synthetic_film(), 512, 512, 0, 32)
    with pytest.raises(InputError, match="input_size must be at least 1"):
        RoiSpec(input_size=0)
    with pytest.raises(InputError, match="radius_factor must not be negative"):
        RoiSpec(radius_factor=-1)


# --------------------------------------------------------------------------- augmentation


def test_augment_crop_is_seeded_and_keeps_the_lesion_central():
    f = lesion_film()
    img = synthetic_film()
    (item,), _ = plan_crops([f], {f.id: img})
    crops = [augment_crop(img, item, 32, np.random.default_rng(s)) for s in (0, 0, 1, 2, 3)]
    assert np.array_equal(crops[0], crops[1]) and not np.array_equal(crops[0], crops[2])
    for x in crops:
        assert x.dtype == np.float32 and x.shape == (32, 32) and 0 <= x.min() and x.max() <= 1
        assert x[14:18, 14:18].min() > 0.7  # jitter (<= 0.1 x side) and rotation keep it inside


def _bright_centroid(x: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(x > 0.6)
    return np.array([xs.mean(), ys.mean()])


def test_augment_crop_jitters_lesion_centres_only():
    img = synthetic_film()
    f = lesion_film()
    (item,), _ = plan_crops([f], {f.id: img})
    offsets = {j: np.array([_bright_centroid(augment_crop(img, item, 32, np.random.default_rng(s), jitter=j)) - 15.5
                            for s in range(24)]) for j in (0.0, 0.1)}
    assert np.abs(offsets[0.0]).max() < 1  # rotation, scale and flip turn about the centre
    assert offsets[0.1].std(axis=0).min() > 1  # up to 0.1 x 32 px = 3.2 px each way
    assert np.abs(offsets[0.1]).max() < 4
    norm = replace(item, lesion=False)  # a NORM centre is already random: no jitter
    offsets = np.array([_bright_centroid(augment_crop(img, norm, 32, np.random.default_rng(s))) - 15.5
                        for s in range(8)])
    assert np.abs(offsets).max() < 1


# --------------------------------------------------------------------------- data sets


def test_generated_films(tmp_path):
    """The embedded generator's films (the platform's default data) through the real loader."""
    plan, anatomies = plan_mias(0)
    keep = plan[:24] + [p for p in plan if any(les.coords_text is not None for les in p.lesions)][:2]
    (tmp_path / "Info.txt").write_text(info_text(plan, 256, 0))
    for p in keep:
        write_embedded_pgm(tmp_path / f"{p.refnum}.pgm", render_film(p, anatomies[p.patient], 256, 0))
    films, _ = load_films(tmp_path, skip_missing=True)
    roi = build_crops(films, load_images(films))
    n_norm = sum(f.label == "NORM" for f in films)
    n_rows = sum(len(lesion_centres(f)) for f in films)
    assert n_norm and n_rows and len(roi.film_ids) == 2 * n_norm + n_rows
    assert len(roi.skipped) == len(missing_coordinates(films)) >= 2


def _real_films(shared_data: Path, sub: str) -> list[Film]:
    root = shared_data / sub
    if not (root / "Info.txt").is_file():
        pytest.skip(f"real data not available at {root}")
    return load_films(root)[0]


def test_real_mias_crops(shared_data):
    films = _real_films(shared_data, "mias")[50:70]  # mdb051-mdb070
    images = load_images(films)
    roi = build_crops(films, images)
    # Info.txt: 16 NORM films, MISC mdb058 and mdb063, CIRC mdb069, CIRC mdb059 without coordinates
    assert roi.images.shape == (2 * 16 + 3, 64, 64)
    assert [(i, c) for i, c in zip(roi.film_ids, roi.labels) if c != "NORM"] == \
        [("mdb058", "MISC"), ("mdb063", "MISC"), ("mdb069", "CIRC")]
    assert roi.skipped == ["mdb059 CIRC B: Info.txt line 163 gives no coordinates"]
    for fid, label, (x, y, _) in zip(roi.film_ids, roi.labels, roi.centres):
        if label == "NORM":
            mask = breast_mask(images[fid])
            assert mask[int(y / 4), int(x / 4)], (fid, x, y)
    assert build_crops(films, images, seed=5).centres.tolist() == roi.centres.tolist()


def test_real_1024_px_films_match_their_256_px_copies(shared_data):
    big = _real_films(shared_data, "mias-1024-sample")
    small = [f for f in _real_films(shared_data, "mias") if f.id in {b.id for b in big}]
    a, b = load_images(big), load_images(small)
    for fid in a:
        m_big = cv2.resize(breast_mask(a[fid]).astype(np.uint8), (256, 256), interpolation=cv2.INTER_AREA) > 0
        m_small = breast_mask(b[fid])
        assert (m_big & m_small).sum() / (m_big | m_small).sum() > 0.99, fid
    crops_big, crops_small = build_crops(big, a), build_crops(small, b)
    assert crops_big.film_ids == crops_small.film_ids
    assert crops_big.skipped == ["mdb059 CIRC B: Info.txt line 9 gives no coordinates",
                                 "mdb216 CALC M: Info.txt line 12 gives no coordinates"]
    for k, label in enumerate(crops_big.labels):
        if label != "NORM":  # NORM centres are drawn on each size's own pixel grid
            diff = np.abs(crops_big.images[k].astype(float) - crops_small.images[k])
            assert diff.mean() < 2, crops_big.film_ids[k]
