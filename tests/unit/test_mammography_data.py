"""The mammography data layer: strict Info.txt parsing, film discovery, image reading,
task views and patient-level splits (real mini-MIAS where available, tmp_path fixtures
otherwise)."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projects.core.errors import InputError
from projects.mammography.data import (
    CLASSES_7,
    TASKS,
    InfoRow,
    load_films,
    parse_info,
    task_view,
)
from projects.mammography.images import read_image
from projects.mammography.splits import parse_ratio, patient_id, split_films, split_table

PAPER_RATIOS = {"90:10": 0.1, "80:20": 0.2, "70:30": 0.3, "75:25": 0.25}
MIAS_FILM_COUNTS = {"ARCH": 19, "ASYM": 15, "CALC": 25, "CIRC": 23, "MISC": 14, "NORM": 207, "SPIC": 19}


def _shared_data() -> Path:
    """MEDIMG_SHARED_DATA, else /work/shared/data, else ../shared/data beside the checkout."""
    if os.environ.get("MEDIMG_SHARED_DATA"):
        return Path(os.environ["MEDIMG_SHARED_DATA"])
    default = Path("/work/shared/data")
    return default if default.is_dir() else Path(__file__).resolve().parents[3] / "shared" / "data"


SHARED = _shared_data()


def _real(sub: str) -> Path:
    path = SHARED / sub
    if not (path / "Info.txt").is_file():
        pytest.skip(f"real data not available at {path}")
    return path


# --------------------------------------------------------------------------- fixtures


def write_pgm(path: Path, size: int = 64, value: int = 100, maxval: int = 255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint8 if maxval < 256 else np.dtype(">u2")
    pixels = np.full((size, size), value, dtype=dtype)
    path.write_bytes(f"P5\n{size} {size}\n{maxval}\n".encode() + pixels.tobytes())
    return path


SMALL_INFO = """Some free text about the database.
=====================
mdb001 G CIRC B 535 425 197
mdb002 G CIRC B 522 280 69
mdb003 D NORM
mdb004 D NORM
mdb005 F CALC M *NOTE 3*
mdb006 F SPIC M 100 200 30
mdb006 F SPIC B 110 210 20
mdb007 G ARCH B
mdb008 G NORM
=====================
"""


def make_mias(root: Path, info: str = SMALL_INFO, images=None, folder: str = "") -> Path:
    """An Info.txt in root and a 64 px PGM per listed film (or per id in `images`)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Info.txt").write_text(info)
    if images is None:
        images = sorted({line.split()[0] for line in info.splitlines() if line.startswith("mdb")})
    for ref in images:
        write_pgm(root / folder / f"{ref}.pgm")
    return root


def info_error(tmp_path: Path, text: str) -> InputError:
    path = tmp_path / "Info.txt"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        parse_info(path)
    return err.value


# --------------------------------------------------------------------------- Info.txt


def test_real_info_original_variant_parses():
    rows = parse_info(_real("mias") / "Info.txt")
    assert len(rows) == 330
    assert len({r.refnum for r in rows}) == 322
    assert Counter(r.severity for r in rows) == {None: 207, "B": 69, "M": 54}
    by_ref = {r.refnum: r for r in rows}
    for ref in ("mdb216", "mdb233", "mdb245"):  # *NOTE 3* instead of coordinates
        assert (by_ref[ref].cls, by_ref[ref].x, by_ref[ref].radius) == ("CALC", None, None)
    assert (by_ref["mdb059"].cls, by_ref["mdb059"].severity, by_ref["mdb059"].x) == ("CIRC", "B", None)
    assert rows[0] == InfoRow("mdb001", "G", "CIRC", "B", 535, 425, 197, rows[0].line_no)


def test_real_info_short_variant_parses():
    rows = parse_info(_real("mias-1024-sample") / "Info.txt")
    assert [r.refnum for r in rows][:3] == ["mdb001", "mdb002", "mdb003"]
    assert len(rows) == 11 and rows[0].line_no == 2


def test_parser_accepts_header_separators_crlf_and_note3(tmp_path):
    path = tmp_path / "Info.txt"
    path.write_bytes(b"REFNUM BG CLASS SEVERITY X Y RADIUS\r\nmdb001 G CALC M *NOTE 3* \r\n\r\n=====\r\n")
    assert parse_info(path) == [InfoRow("mdb001", "G", "CALC", "M", None, None, None, 2)]


@pytest.mark.parametrize("line, problem", [
    ("mdb009 G CIRX B 1 2 3", "unknown class 'CIRX'"),
    ("mdb009 X CIRC B 1 2 3", "unknown background tissue 'X'"),
    ("mdb009 G CIRC 535 425 197", "needs severity B or M, found '535'"),
    ("mdb009 G CIRC", "needs severity B or M, found nothing"),
    ("mdb009 G CIRC B 535 42.5 197", "non-integer coordinate '42.5'"),
    ("mdb009 G CIRC B 535 425", "wrong column count"),
    ("mdb009 G CIRC B 535 425 197 4", "wrong column count"),
    ("mdb009 D NORM B", "wrong column count"),
    ("mdb009 G", "expected at least REFNUM BG CLASS"),
    ("mdb09 G NORM", "malformed reference number 'mdb09'"),
    ("MDB009 G NORM", "malformed reference number 'MDB009'"),
    ("trailing free text", "not a data row"),
])
def test_parser_rejects_malformed_lines_with_file_and_line(tmp_path, line, problem):
    err = info_error(tmp_path, f"header text\n=====\nmdb001 G NORM\n{line}\nmdb010 G NORM\n")
    message = str(err)
    assert message.startswith(str(tmp_path / "Info.txt") + ": line 4: ")
    assert problem in message and f"'{line}'" in message
    assert "\n" not in message


def test_parser_rejects_files_without_rows(tmp_path):
    assert "no data rows" in str(info_error(tmp_path, "just a header\n=====\n"))
    with pytest.raises(InputError, match="does not exist"):
        parse_info(tmp_path / "missing.txt")


# --------------------------------------------------------------------------- films


def test_real_mini_mias_films_and_images():
    films, skipped = load_films(_real("mias"))
    assert skipped == [] and len(films) == 322
    assert Counter(f.label for f in films) == MIAS_FILM_COUNTS
    assert Counter(r.severity for f in films for r in f.rows if r.severity) == {"B": 69, "M": 54}
    mdb144 = next(f for f in films if f.id == "mdb144")  # one B and one M row: malignant
    assert (mdb144.label, mdb144.severity, len(mdb144.rows)) == ("MISC", "M", 2)
    for film in films:
        image = read_image(film.path)
        assert image.shape == (256, 256) and image.dtype == np.uint8


def test_real_full_size_sample_reads_1024():
    films, _ = load_films(_real("mias-1024-sample"))
    assert len(films) == 10
    for film in films:
        image = read_image(film.path)
        assert image.shape == (1024, 1024) and image.dtype == np.uint8


def test_film_level_label_rule(tmp_path):
    root = make_mias(tmp_path / "m")
    films = {f.id: f for f in load_films(root)[0]}
    assert (films["mdb006"].label, films["mdb006"].severity, len(films["mdb006"].rows)) == ("SPIC", "M", 2)
    assert (films["mdb005"].label, films["mdb005"].severity) == ("CALC", "M")
    assert (films["mdb003"].label, films["mdb003"].severity, films["mdb003"].bg) == ("NORM", None, "D")
    assert films["mdb001"].path == root / "mdb001.pgm"
    mixed = make_mias(tmp_path / "mixed", "mdb001 G CALC B\nmdb001 G CIRC M 1 2 3\n")
    (film,), _ = load_films(mixed)
    assert (film.label, film.severity) == ("CALC", "M")  # first abnormal class, M wins


@pytest.mark.parametrize("info, problem", [
    ("mdb001 G NORM\nmdb001 G CALC B\n", "line 1: mdb001 is listed as NORM and as CALC"),
    ("mdb001 G CALC B\nmdb001 F CALC B\n", "line 2: mdb001 has background F here"),
])
def test_contradictory_rows_of_one_film_are_errors(tmp_path, info, problem):
    with pytest.raises(InputError, match=problem):
        load_films(make_mias(tmp_path / "m", info))


def test_missing_film_is_an_error_or_skipped(tmp_path):
    refs = ["mdb001", "mdb002", "mdb004", "mdb005", "mdb006", "mdb007", "mdb008"]  # no mdb003
    root = make_mias(tmp_path / "m", images=refs)
    with pytest.raises(InputError, match=r"Info.txt: line 5: film mdb003 has no image"):
        load_films(root)
    films, skipped = load_films(root, skip_missing=True)
    assert "mdb003" not in {f.id for f in films} and len(films) == 7
    assert len(skipped) == 1 and skipped[0].startswith("mdb003:")


def test_image_without_row_is_an_error_or_skipped(tmp_path):
    root = make_mias(tmp_path / "m")
    stray = write_pgm(root / "mdb099.pgm")
    (root / "notes.png").write_bytes(b"not an mdb image, ignored")
    with pytest.raises(InputError) as err:
        load_films(root)
    assert str(err.value).startswith(f"{stray}: image has no row in")
    films, skipped = load_films(root, skip_missing=True)
    assert len(films) == 8 and skipped == [f"{stray}: image has no row in {root / 'Info.txt'}; skipped"]


def test_images_in_all_mias_folder_and_pgm_preferred(tmp_path):
    root = make_mias(tmp_path / "m", folder="all-mias")
    cv2.imwrite(str(root / "all-mias" / "mdb001.png"), np.zeros((8, 8), np.uint8))
    films, _ = load_films(root)
    assert len(films) == 8 and films[0].path == root / "all-mias" / "mdb001.pgm"


def test_bad_roots(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_films(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no Info.txt and no class folders"):
        load_films(tmp_path / "empty")
    write_pgm(tmp_path / "classes" / "CALC" / "a.pgm")
    (tmp_path / "classes" / "calcs").mkdir()
    with pytest.raises(InputError, match="unknown class folder 'calcs'") as err:
        load_films(tmp_path / "classes")
    assert str(err.value).startswith(str(tmp_path / "classes" / "calcs"))


def test_folder_per_class_layout(tmp_path):
    root = tmp_path / "classes"
    write_pgm(root / "NORM" / "n1.pgm")
    write_pgm(root / "NORM" / "n2.pgm")
    (root / "CALC").mkdir()
    cv2.imwrite(str(root / "CALC" / "c1.png"), np.zeros((8, 8, 3), np.uint8))
    films, skipped = load_films(root)
    assert skipped == [] and [(f.id, f.label, f.severity, f.bg) for f in films] == [
        ("c1", "CALC", None, ""), ("n1", "NORM", None, ""), ("n2", "NORM", None, "")]
    assert task_view(films, "normal_abnormal")[1] == [1, 0, 0]
    with pytest.raises(InputError, match="benign_malignant needs a severity"):
        task_view(films, "benign_malignant")
    write_pgm(root / "CIRC" / "n1.pgm")
    with pytest.raises(InputError, match="film n1 is also in class folder CIRC"):
        load_films(root)


# --------------------------------------------------------------------------- images


def test_truncated_pgm(tmp_path):
    path = tmp_path / "mdb001.pgm"
    path.write_bytes(b"P5\n64 64\n255\n" + bytes(100))
    with pytest.raises(InputError) as err:
        read_image(path)
    assert str(err.value) == f"{path}: truncated: expected 4096 bytes, found 100"


def test_pgm_variants(tmp_path):
    ascii_pgm = tmp_path / "a.pgm"
    ascii_pgm.write_bytes(b"P2\n# comment\n2 2\n255\n0 1\n2 255\n")
    assert read_image(ascii_pgm).tolist() == [[0, 1], [2, 255]]
    wide = write_pgm(tmp_path / "w.pgm", size=4, value=1023, maxval=1023)  # 16-bit: scaled by maxval
    assert read_image(wide).max() == 255 and read_image(wide).dtype == np.uint8
    low = tmp_path / "l.pgm"
    low.write_bytes(b"P5\n2 1\n15\n" + bytes([15, 16]))
    with pytest.raises(InputError, match="above the header's maxval 15"):
        read_image(low)
    bad = tmp_path / "b.pgm"
    bad.write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    with pytest.raises(InputError, match="not a grayscale PGM"):
        read_image(bad)
    long = tmp_path / "x.pgm"
    long.write_bytes(b"P5\n2 2\n255\n" + bytes(5))
    with pytest.raises(InputError, match="1 bytes after the expected 4"):
        read_image(long)


def test_other_formats(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 2] = 200  # red in BGR order
    cv2.imwrite(str(tmp_path / "c.png"), rgb)
    gray = read_image(tmp_path / "c.png")
    assert gray.shape == (5, 7) and gray.dtype == np.uint8 and 50 < gray[0, 0] < 70
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(InputError, match="broken.jpg: cannot decode image"):
        read_image(tmp_path / "broken.jpg")
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "none.png")


# --------------------------------------------------------------------------- tasks


def test_task_views(tmp_path):
    films, _ = load_films(make_mias(tmp_path / "m"))
    kept, labels, names = task_view(films, "7class")
    assert names == CLASSES_7 and len(kept) == 8 and labels[0] == CLASSES_7.index("CIRC")
    kept, labels, names = task_view(films, "benign_malignant")
    assert names == ("benign", "malignant")
    assert [(f.id, y) for f, y in zip(kept, labels)] == [
        ("mdb001", 0), ("mdb002", 0), ("mdb005", 1), ("mdb006", 1), ("mdb007", 0)]
    assert task_view(films, "normal_abnormal")[1:] == ([1, 1, 0, 0, 1, 1, 1, 0], ("normal", "abnormal"))
    assert set(TASKS) == {"7class", "benign_malignant", "normal_abnormal"}
    with pytest.raises(InputError, match="unknown task 'birads'"):
        task_view(films, "birads")


# --------------------------------------------------------------------------- splits


def test_patient_id_pairs():
    assert patient_id("mdb001") == patient_id("mdb002") == "p001"
    assert patient_id("mdb003") == patient_id("mdb004") == "p002"
    assert patient_id("mdb322") == "p161"
    assert patient_id("scan_7") == "scan_7"


@pytest.mark.parametrize("text, share", [
    ("80:20", 0.2), ("90/10", 0.1), ("0.2", 0.2), ("75:25", 0.25), (" 70:30 ", 0.3), ("25%", 0.25)])
def test_parse_ratio(text, share):
    assert parse_ratio(text) == pytest.approx(share)


@pytest.mark.parametrize("text", ["", "abc", "80:", "80:20:0", "100:0", "0:100", "1.5", "0", "-0.2", "nan", "-80:20"])
def test_parse_ratio_rejects_garbage(text):
    with pytest.raises(InputError):
        parse_ratio(text)


def _check_patients_and_train(assignment, ids, labels):
    sides = {}
    for film, side in assignment.items():
        assert sides.setdefault(patient_id(film), side) == side, f"patient of {film} straddles splits"
    patients_per_class = Counter()
    for cls in set(labels):
        patients_per_class[cls] = len({patient_id(i) for i, y in zip(ids, labels) if y == cls})
    train_classes = {y for i, y in zip(ids, labels) if assignment[i] == "train"}
    assert {c for c, n in patients_per_class.items() if n >= 2} <= train_classes


@pytest.mark.parametrize("ratio", list(PAPER_RATIOS))
def test_real_splits_for_paper_ratios(ratio):
    films, _ = load_films(_real("mias"))
    for task in ("7class", "benign_malignant"):
        kept, labels, _ = task_view(films, task)
        ids = [f.id for f in kept]
        share = parse_ratio(ratio)
        assignment = split_films(ids, labels, share, seed=3)
        _check_patients_and_train(assignment, ids, labels)
        counts = Counter(assignment.values())
        assert abs(counts["test"] - share * len(ids)) <= 1.0
        assert abs(counts["val"] - 0.2 * (len(ids) - counts["test"])) <= 2.0
        assert len({y for i, y in zip(ids, labels) if assignment[i] == "train"}) == len(set(labels))
        table = split_table(assignment, kept)
        assert list(table.columns) == ["film_id", "patient", "label", "split"] and len(table) == len(ids)
        assert table.groupby("patient")["split"].nunique().max() == 1


def test_splits_are_deterministic_and_order_independent():
    ids = [f"mdb{i:03d}" for i in range(1, 81)]
    labels = [("NORM" if i % 3 else "CALC") for i in range(80)]
    first = split_films(ids, labels, 0.25, seed=1)
    assert split_films(list(reversed(ids)), list(reversed(labels)), 0.25, seed=1) == first
    assert any(split_films(ids, labels, 0.25, seed=s) != first for s in (2, 3, 4))
    assert "val" not in split_films(ids, labels, 0.25, val_fraction=0.0).values()


@pytest.mark.parametrize("kwargs, problem", [
    (dict(test_fraction=1.0), "test fraction must be in"),
    (dict(test_fraction=0.2, val_fraction=1.0), "val fraction"),
])
def test_split_rejects_bad_fractions(kwargs, problem):
    with pytest.raises(InputError, match=problem):
        split_films(["mdb001", "mdb003"], ["A", "B"], **kwargs)


def test_split_rejects_bad_inputs():
    with pytest.raises(InputError, match="2 film ids but 1 labels"):
        split_films(["mdb001", "mdb003"], ["A"], 0.2)
    with pytest.raises(InputError, match="mdb001 appears more than once"):
        split_films(["mdb001", "mdb001"], ["A", "A"], 0.2)
    with pytest.raises(InputError, match="at least 2 patients"):
        split_films(["mdb001", "mdb002"], ["A", "A"], 0.2)


@st.composite
def paired_films(draw):
    """Random pairs (some patients with one film only) with random labels."""
    n_patients = draw(st.integers(2, 40))
    n_classes = draw(st.integers(1, 7))
    ids = []
    for p in range(n_patients):
        ids.append(f"mdb{2 * p + 1:03d}")
        if draw(st.booleans()) or p % 3:
            ids.append(f"mdb{2 * p + 2:03d}")
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=len(ids), max_size=len(ids)))
    return ids, labels


@settings(max_examples=120, deadline=None)
@given(paired_films(),
       st.one_of(st.sampled_from(sorted(PAPER_RATIOS.values())), st.floats(0.05, 0.5)),
       st.floats(0.0, 0.4), st.integers(0, 1000))
def test_split_properties(films, share, val_share, seed):
    ids, labels = films
    assignment = split_films(ids, labels, share, val_fraction=val_share, seed=seed)
    assert set(assignment) == set(ids) and set(assignment.values()) <= {"train", "val", "test"}
    _check_patients_and_train(assignment, ids, labels)
    test_counts = Counter(y for i, y in zip(ids, labels) if assignment[i] == "test")
    for cls, n in Counter(labels).items():
        assert abs(test_counts[cls] - share * n) <= 2.0, f"class {cls}: {test_counts[cls]} of {n} in test"
    n_test = sum(test_counts.values())
    assert n_test >= 1 and abs(n_test - share * len(ids)) <= 2.0
