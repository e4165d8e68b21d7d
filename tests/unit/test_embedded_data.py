"""The embedded data generators write the real on-disk formats, deterministically.

Everything here reads the generated files back from disk, the way the loaders will, with a
deliberately small local parser for Info.txt (the strict project parser lives elsewhere).
"""
from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from pathlib import Path

import projects  # noqa: F401  (runtime defaults first)

import cv2
import numpy as np
import pytest

from projects.embedded import DATASETS_VERSION, ensure_mias, ensure_paip
from projects.embedded.__main__ import main as cli_main
from projects.embedded.mias import MIAS_CLASS_COUNTS, generate_mias
from projects.embedded.paip import generate_paip

# REFNUM BG CLASS [SEVERITY [X Y RADIUS | *NOTE 3*]] with the real file's optional trailing space.
ROW = re.compile(
    r"^(?P<ref>mdb\d{3}) (?P<bg>[FGD]) (?P<cls>ARCH|ASYM|CALC|CIRC|MISC|NORM|SPIC)"
    r"(?: (?P<sev>[BM]))?(?: (?P<x>\d+) (?P<y>\d+) (?P<r>\d+)| (?P<note>\*NOTE 3\*))? ?$"
)


def parse_info(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        if not line.startswith("mdb"):
            continue
        m = ROW.match(line)
        assert m, f"row does not follow the 7-column convention: {line!r}"
        row = m.groupdict()
        for k in ("x", "y", "r"):
            row[k] = int(row[k]) if row[k] is not None else None
        rows.append(row)
    return rows


def read_pgm(path: Path) -> tuple[int, int, int, np.ndarray]:
    """Strict P5 reader: magic, width, height, maxval, single whitespace, raw bytes."""
    data = path.read_bytes()
    m = re.match(rb"P5\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    assert m, f"{path.name}: not a binary PGM"
    w, h, maxval = (int(g) for g in m.groups())
    pixels = data[m.end() :]
    assert len(pixels) == w * h, f"{path.name}: {len(pixels)} bytes for {w}x{h}"
    return w, h, maxval, np.frombuffer(pixels, np.uint8).reshape(h, w)


def film_table(rows: list[dict]) -> dict[str, dict]:
    films: dict[str, dict] = {}
    for r in rows:
        f = films.setdefault(r["ref"], {"bg": r["bg"], "cls": r["cls"], "rows": []})
        assert f["bg"] == r["bg"] and f["cls"] == r["cls"], f"{r['ref']}: rows disagree"
        f["rows"].append(r)
    return films


# ------------------------------------------------------------------------------- MIAS

SIZE = 256


@pytest.fixture(scope="module")
def mias(tmp_path_factory) -> Path:
    return generate_mias(tmp_path_factory.mktemp("mias"), size=SIZE, seed=0)


@pytest.fixture(scope="module")
def mias_films(mias) -> dict[str, dict]:
    return film_table(parse_info(mias / "Info.txt"))


def test_info_txt_header_and_rows_follow_the_real_conventions(mias):
    lines = (mias / "Info.txt").read_text().splitlines()
    first_row = next(i for i, line in enumerate(lines) if line.startswith("mdb"))
    assert first_row > 20, "free-text header expected before the table"
    assert sum(line.startswith("=====") for line in lines[:first_row]) >= 2
    assert lines[-1].startswith("=====")  # a separator closes the table, as in the real file
    rows = parse_info(mias / "Info.txt")
    for r in rows:
        if r["cls"] == "NORM":
            assert r["sev"] is None and r["x"] is None and r["note"] is None
        else:
            assert r["sev"] in ("B", "M")
    norm_lines = [line for line in lines if line.startswith("mdb") and " NORM" in line]
    assert all(line.endswith("NORM ") for line in norm_lines), "NORM rows end with a space"
    sev = Counter(r["sev"] for r in rows if r["sev"])
    assert sev == {"B": 69, "M": 54}  # the real file's row counts


def test_film_level_class_counts_are_exact(mias_films):
    assert len(mias_films) == 322
    assert sorted(mias_films) == [f"mdb{i:03d}" for i in range(1, 323)]
    assert Counter(f["cls"] for f in mias_films.values()) == MIAS_CLASS_COUNTS


def test_quirks_of_the_real_file_are_present(mias_films):
    multi = [ref for ref, f in mias_films.items() if len(f["rows"]) > 1]
    assert len(multi) >= 5
    abnormal_rows = [r for f in mias_films.values() if f["cls"] != "NORM" for r in f["rows"]]
    calc_no_coords = [r for r in abnormal_rows if r["x"] is None and r["cls"] == "CALC"]
    assert len(calc_no_coords) >= 2
    notes = [r for f in mias_films.values() for r in f["rows"] if r["note"]]
    assert notes and all(r["cls"] == "CALC" for r in notes)


def test_every_film_is_an_8bit_p5_pgm_of_the_requested_size(mias, mias_films):
    for ref in mias_films:
        w, h, maxval, img = read_pgm(mias / f"{ref}.pgm")
        assert (w, h, maxval) == (SIZE, SIZE, 255)
        assert img.max() > 100, f"{ref}: no breast"
    decoded = cv2.imread(str(mias / "mdb001.pgm"), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (SIZE, SIZE) and decoded.dtype == np.uint8


def test_pairs_share_background_and_breasts_are_mirrored(mias, mias_films):
    refs = sorted(mias_films)
    for odd, even in zip(refs[0::2], refs[1::2]):
        assert mias_films[odd]["bg"] == mias_films[even]["bg"], (odd, even)
    third = SIZE // 3
    for ref in refs[:40]:
        img = read_pgm(mias / f"{ref}.pgm")[3].astype(float)
        left, right = img[:, :third].mean(), img[:, -third:].mean()
        # odd films: chest wall (and the breast) on the right; even films: on the left
        assert (right > left) if int(ref[3:]) % 2 else (left > right), ref


def _disc_contrast(img: np.ndarray, row: dict, flip_y: bool = False) -> float:
    s = img.shape[0] / 1024
    cx = row["x"] * s
    cy = (row["y"] if flip_y else 1024 - row["y"]) * s  # bottom-left origin -> image row
    r = row["r"] * s
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]] + 0.5
    d = np.hypot(xx - cx, yy - cy)
    ring = img[(d > 1.3 * r) & (d < 1.8 * r) & (img > 10)]  # tissue around, not background
    return float(img[d < 0.4 * r].mean() - ring.mean())


def test_circ_masses_are_bright_at_the_written_centre(mias, mias_films):
    checked, told_apart = 0, 0
    for ref, f in mias_films.items():
        if f["cls"] != "CIRC":
            continue
        img = read_pgm(mias / f"{ref}.pgm")[3].astype(float)
        for row in f["rows"]:
            if row["x"] is None:
                continue
            right = _disc_contrast(img, row)
            assert right > 30, (ref, row)
            checked += 1
            if abs(1024 - 2 * row["y"]) > 1.5 * row["r"]:  # a top-left reading lands elsewhere
                assert _disc_contrast(img, row, flip_y=True) < right - 20, (ref, row)
                told_apart += 1
    assert checked >= 20 and told_apart >= 3, (checked, told_apart)


def test_other_lesions_are_visible_at_their_centre(mias, mias_films):
    for ref, f in mias_films.items():
        if f["cls"] in ("NORM", "ARCH"):
            continue
        img = read_pgm(mias / f"{ref}.pgm")[3].astype(float)
        for row in f["rows"]:
            if row["x"] is not None:
                assert _disc_contrast(img, row) > 10, (ref, f["cls"], row)


def test_mias_is_deterministic_and_seeded(tmp_path):
    a = generate_mias(tmp_path / "a", size=64, seed=0)
    b = generate_mias(tmp_path / "b", size=64, seed=0)
    c = generate_mias(tmp_path / "c", size=64, seed=1)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and len(names) == 323
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert (a / "Info.txt").read_text() != (c / "Info.txt").read_text()
    assert sum((a / n).read_bytes() != (c / n).read_bytes() for n in names) > 300


def test_rows_do_not_depend_on_the_pixel_size(tmp_path, mias):
    small = generate_mias(tmp_path / "s", size=64, seed=0)
    assert parse_info(small / "Info.txt") == parse_info(mias / "Info.txt")
    assert read_pgm(small / "mdb001.pgm")[:2] == (64, 64)


# ------------------------------------------------------------------------------- PAIP


@pytest.fixture(scope="module")
def paip(tmp_path_factory) -> Path:
    return generate_paip(tmp_path_factory.mktemp("paip"))  # the defaults: 24 tiles of 512


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == "id,mpp,cellularity"
    return list(csv.DictReader(lines))


def test_paip_layout_and_files(paip):
    rows = read_csv(paip / "cellularity_mpp.csv")
    assert [r["id"] for r in rows] == [f"tr_p{i:03d}" for i in range(1, 25)]
    mpps = Counter(float(r["mpp"]) for r in rows)
    assert mpps == {0.25: 22, 0.5: 2}
    for r in rows:
        img = cv2.imread(str(paip / "img" / f"{r['id']}.png"), cv2.IMREAD_UNCHANGED)
        assert img.shape == (512, 512, 3) and img.dtype == np.uint8
        for sub, suffix in (("tumor", "_tumor"), ("non_tumor", "_nontumor")):
            mask = cv2.imread(str(paip / "mask" / sub / f"{r['id']}{suffix}.png"), cv2.IMREAD_UNCHANGED)
            assert mask.shape == img.shape[:2] and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 255}


def _load(paip: Path, id_: str):
    img = cv2.cvtColor(cv2.imread(str(paip / "img" / f"{id_}.png")), cv2.COLOR_BGR2RGB)
    t = cv2.imread(str(paip / "mask" / "tumor" / f"{id_}_tumor.png"), cv2.IMREAD_GRAYSCALE) > 0
    n = cv2.imread(str(paip / "mask" / "non_tumor" / f"{id_}_nontumor.png"), cv2.IMREAD_GRAYSCALE) > 0
    return img, t, n


def test_masks_are_disjoint_and_cellularity_matches_nucleus_counts(paip):
    cellularities = []
    for r in read_csv(paip / "cellularity_mpp.csv"):
        _, t, n = _load(paip, r["id"])
        assert not (t & n).any(), r["id"]
        n_t = cv2.connectedComponents(t.astype(np.uint8), connectivity=8)[0] - 1
        n_n = cv2.connectedComponents(n.astype(np.uint8), connectivity=8)[0] - 1
        assert n_n > 0
        expected = 100 * n_t / (n_t + n_n)
        assert abs(float(r["cellularity"]) - expected) <= 1.0, (r, n_t, n_n)
        cellularities.append(expected)
    assert min(cellularities) < 5 and max(cellularities) > 50  # extent varies by design


def _mean_area(mask: np.ndarray) -> float:
    return mask.sum() / max(1, cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1)


def test_masks_sit_on_dark_nuclei(paip):
    for r in read_csv(paip / "cellularity_mpp.csv")[:8]:
        img, t, n = _load(paip, r["id"])
        grey = img.astype(float).mean(axis=2)
        nuclei = t | n
        near = cv2.dilate(nuclei.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        stroma = ~near & (grey < 235)  # not nuclei, not white background
        ring = cv2.dilate(nuclei.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~nuclei
        assert grey[n].mean() < grey[stroma].mean() - 40
        assert grey[n].mean() < grey[ring].mean() - 20  # masks hug the drawn nuclei
        if t.sum() > 200:
            assert grey[t].mean() < grey[stroma].mean() - 60
            assert grey[t].mean() < grey[n].mean()  # tumour nuclei are the darker ones
            assert _mean_area(t) > 2 * _mean_area(n)  # and the larger ones


def test_paip_is_deterministic_and_seeded(tmp_path):
    a = generate_paip(tmp_path / "a", n_images=3, size=128, seed=0)
    b = generate_paip(tmp_path / "b", n_images=3, size=128, seed=0)
    c = generate_paip(tmp_path / "c", n_images=3, size=128, seed=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 10
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "img" / "tr_p001.png").read_bytes() != (c / "img" / "tr_p001.png").read_bytes()


# ------------------------------------------------------------------------- ensure_* / CLI


def test_ensure_generates_once_into_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path))
    first = ensure_mias(size=64, seed=0)
    assert first == tmp_path.resolve() / "embedded" / f"mias-64-s0-v{DATASETS_VERSION}"
    assert "generating" in capsys.readouterr().err
    assert len(parse_info(first / "Info.txt")) == 330
    stamp = (first / "mdb001.pgm").stat().st_mtime_ns
    assert ensure_mias(size=64, seed=0) == first
    assert (first / "mdb001.pgm").stat().st_mtime_ns == stamp
    assert capsys.readouterr().err == ""  # nothing regenerated, nothing printed

    paip = ensure_paip(n_images=3, size=64, seed=0)
    assert paip.parent == first.parent and (paip / "cellularity_mpp.csv").is_file()
    stamp = (paip / "cellularity_mpp.csv").stat().st_mtime_ns
    assert ensure_paip(n_images=3, size=64, seed=0) == paip
    assert (paip / "cellularity_mpp.csv").stat().st_mtime_ns == stamp
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")], "temporary folders left"


def test_a_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path))

    def dies_half_way(out_dir, size, seed):
        (Path(out_dir) / "mdb001.pgm").write_bytes(b"P5\n")
        raise KeyboardInterrupt

    monkeypatch.setattr("projects.embedded.mias.generate_mias", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ensure_mias(size=64, seed=0)
    assert list((tmp_path / "embedded").iterdir()) == []


def test_cli_writes_into_out(tmp_path, capsys):
    assert cli_main(["all", "--size", "64", "--n-images", "2", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str((tmp_path / "mias").resolve()), str((tmp_path / "paip").resolve())]
    assert (tmp_path / "mias" / "mdb322.pgm").is_file()
    assert len(read_csv(tmp_path / "paip" / "cellularity_mpp.csv")) == 2
