"""mini-MIAS films on disk: the strict `Info.txt` parser, film discovery and the task views
(7 classes, benign/malignant, normal/abnormal).

Two layouts are recognised under a root folder:

(a) MIAS: `Info.txt` in the root, the images `<refnum>.pgm|.png|.jpg|.jpeg` beside it or in
    `all-mias/` (the folder name of the public archive). Both `Info.txt` variants parse: the
    original (free-text header, `=====` separator lines around the table) and the short one
    people share (a one-line column header `REFNUM BG CLASS SEVERITY X Y RADIUS`, then rows).
(b) folder per class: `<root>/<CLASS>/*.png|.pgm|.jpg|.jpeg` with CLASS one of CLASSES_7.
    Such data has no severity and no background tissue (`Film.bg == ""`), so it cannot be
    used for the benign_malignant task.

Film-level label rule (a film may have several rows, one per abnormality):
- label: the class of the film's abnormal rows; in real MIAS all rows of a film share one
  class. If they disagree, the first abnormal row (in file order) wins. A film whose rows
  are all NORM is NORM; a film listed both as NORM and as abnormal is an error.
- severity: M if any abnormal row is M, else B; None for NORM films (real MIAS: mdb144 has
  one B and one M MISC row and is therefore malignant).
- bg: the rows' background tissue; rows of one film that disagree on it are an error.

Bad input raises `InputError(file, problem)`, naming the file to fix (and the line number
for `Info.txt` problems).

Images are read by projects/mammography/images.py (its bit-depth rule).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from projects.core.errors import InputError

CLASSES_7 = ("ARCH", "ASYM", "CALC", "CIRC", "MISC", "NORM", "SPIC")
TASKS = ("7class", "benign_malignant", "normal_abnormal")
BACKGROUNDS = ("F", "G", "D")
SEVERITIES = ("B", "M")
NORMAL = "NORM"
INFO_NAME = "Info.txt"
IMAGE_SUBDIR = "all-mias"
# Order of preference when one film exists in several formats (the paper converted PGM to
# PNG, so both may sit side by side): the original PGM first.
IMAGE_SUFFIXES = (".pgm", ".png", ".jpg", ".jpeg")
NOTE_3 = "*NOTE 3*"  # "coordinates omitted: calcifications widely distributed" (Info.txt note 3)

REFNUM_RE = re.compile(r"mdb[0-9]{3}")
# A first token that looks like an attempt at a reference number but is not one exactly
# (mdb01, MDB001, mdb0012): always an error, even among the header lines.
REFNUM_LIKE_RE = re.compile(r"mdb\d", re.IGNORECASE)
INT_RE = re.compile(r"[0-9]+")
ROW_EXAMPLE = "'mdb001 G CIRC B 535 425 197' or 'mdb003 D NORM'"


@dataclass(frozen=True)
class InfoRow:
    refnum: str
    bg: str
    cls: str
    severity: str | None
    x: int | None
    y: int | None
    radius: int | None
    line_no: int


@dataclass(frozen=True)
class Film:
    id: str
    path: Path
    label: str
    severity: str | None
    bg: str
    rows: tuple[InfoRow, ...]


# --------------------------------------------------------------------------- Info.txt


def parse_info(path: Path) -> list[InfoRow]:
    """Every data row of an `Info.txt`, in file order (strict: any malformed row is an error).

    A line is a data row iff its first token matches `mdb\\d{3}` exactly. Lines before the
    first row are header (free text or the one-line column header); after it only rows,
    blank lines and `=====` separators may appear (the real file ends with a separator).
    """
    path = Path(path)
    lines = _read_lines(path)
    rows: list[InfoRow] = []
    for line_no, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens or _is_separator(line):
            continue
        if REFNUM_RE.fullmatch(tokens[0]):
            rows.append(_parse_row(path, line_no, line, tokens))
        elif REFNUM_LIKE_RE.match(tokens[0]):
            _fail(path, line_no, line, f"malformed reference number '{tokens[0]}' (expected mdb + 3 digits)")
        elif rows:
            _fail(path, line_no, line, f"text after the first data row is not a data row (expected {ROW_EXAMPLE})")
    if not rows:
        raise InputError(path, f"no data rows (expected lines like {ROW_EXAMPLE})")
    return rows


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(path, "file does not exist")
    try:
        # utf-8-sig: a BOM from a Windows editor would otherwise glue onto the first token.
        return path.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not a text file (byte {exc.start} is not UTF-8)") from None


def _is_separator(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 3 and set(stripped) == {"="}


def _fail(path: Path, line_no: int, line: str, problem: str) -> None:
    raise InputError(path, f"line {line_no}: {problem}: '{line.strip()}'")


def _parse_row(path: Path, line_no: int, line: str, tokens: list[str]) -> InfoRow:
    if len(tokens) < 3:
        _fail(path, line_no, line, f"expected at least REFNUM BG CLASS, got {len(tokens)} column(s)")
    refnum, bg, cls = tokens[:3]
    if bg not in BACKGROUNDS:
        _fail(path, line_no, line, f"unknown background tissue '{bg}' (expected F, G or D)")
    if cls not in CLASSES_7:
        _fail(path, line_no, line, f"unknown class '{cls}' (expected one of {', '.join(CLASSES_7)})")
    rest = tokens[3:]
    if cls == NORMAL:
        if rest:
            _fail(path, line_no, line, f"wrong column count: a NORM row has 3 columns, got {len(tokens)}")
        return InfoRow(refnum, bg, cls, None, None, None, None, line_no)
    if not rest or rest[0] not in SEVERITIES:
        found = f"'{rest[0]}'" if rest else "nothing"
        _fail(path, line_no, line, f"abnormal class {cls} needs severity B or M, found {found}")
    x, y, radius = _parse_coordinates(path, line_no, line, rest[1:])
    return InfoRow(refnum, bg, cls, rest[0], x, y, radius, line_no)


def _parse_coordinates(path: Path, line_no: int, line: str, coords: list[str]):
    """X Y RADIUS, or none at all, or the `*NOTE 3*` marker (= none)."""
    if not coords or " ".join(coords) == NOTE_3:
        return None, None, None
    if len(coords) != 3:
        _fail(path, line_no, line, f"wrong column count: expected 3 coordinates X Y RADIUS or none, got {len(coords)}")
    bad = [c for c in coords if not INT_RE.fullmatch(c)]
    if bad:
        _fail(path, line_no, line, f"non-integer coordinate '{bad[0]}' (X Y RADIUS must be whole pixels)")
    x, y, radius = (int(c) for c in coords)
    return x, y, radius


# --------------------------------------------------------------------------- film labels


@dataclass(frozen=True)
class FilmLabel:
    label: str
    severity: str | None
    bg: str


def film_label(rows: list[InfoRow] | tuple[InfoRow, ...], info_path: Path) -> FilmLabel:
    """One label for the rows of one film (the rule in the module docstring)."""
    first = rows[0]
    for row in rows[1:]:
        if row.bg != first.bg:
            raise InputError(info_path, f"line {row.line_no}: {row.refnum} has background {row.bg} here "
                                        f"but {first.bg} on line {first.line_no}")
    abnormal = [r for r in rows if r.cls != NORMAL]
    if not abnormal:
        return FilmLabel(NORMAL, None, first.bg)
    if len(abnormal) != len(rows):
        norm = next(r for r in rows if r.cls == NORMAL)
        raise InputError(info_path, f"line {norm.line_no}: {norm.refnum} is listed as NORM and as "
                                    f"{abnormal[0].cls} (line {abnormal[0].line_no})")
    severity = "M" if any(r.severity == "M" for r in abnormal) else "B"
    return FilmLabel(abnormal[0].cls, severity, first.bg)


def rows_by_film(rows: list[InfoRow]) -> dict[str, list[InfoRow]]:
    """Rows grouped by reference number, in order of first appearance."""
    grouped: dict[str, list[InfoRow]] = defaultdict(list)
    for row in rows:
        grouped[row.refnum].append(row)
    return dict(grouped)


# --------------------------------------------------------------------------- discovery


def load_films(root: Path, skip_missing: bool = False) -> tuple[list[Film], list[str]]:
    """The films under `root` (sorted by id) and one message per film skipped.

    Layout (a) when `root/Info.txt` exists, else (b). With `skip_missing`, films listed in
    Info.txt without an image and images without an Info.txt row are skipped and reported
    instead of being errors.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(root, "data folder does not exist")
    if not root.is_dir():
        raise InputError(root, "is not a folder")
    info = root / INFO_NAME
    if info.is_file():
        return _load_mias(root, info, skip_missing)
    return _load_class_folders(root), []


def _images_in(folder: Path) -> dict[str, list[Path]]:
    """Image files of a folder by stem (several when one film exists in several formats)."""
    found: dict[str, list[Path]] = defaultdict(list)
    if not folder.is_dir():
        return found
    for p in folder.iterdir():
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES:
            found[p.stem].append(p)
    return found


def _preferred(paths: list[Path]) -> Path:
    return min(paths, key=lambda p: (IMAGE_SUFFIXES.index(p.suffix.lower()), p.name))


def _load_mias(root: Path, info: Path, skip_missing: bool) -> tuple[list[Film], list[str]]:
    grouped = rows_by_film(parse_info(info))
    images: dict[str, list[Path]] = defaultdict(list)
    for folder in (root, root / IMAGE_SUBDIR):
        for stem, paths in _images_in(folder).items():
            if REFNUM_RE.fullmatch(stem):
                images[stem].extend(paths)

    skipped: list[str] = []
    missing = [ref for ref in grouped if ref not in images]
    if missing and not skip_missing:
        first = grouped[missing[0]][0]
        more = f" ({len(missing) - 1} more films missing)" if len(missing) > 1 else ""
        raise InputError(info, f"line {first.line_no}: film {missing[0]} has no image "
                               f"({missing[0]}.pgm/.png/.jpg/.jpeg) in {root} or {root / IMAGE_SUBDIR}{more}; "
                               "pass skip_missing to leave such films out")
    skipped += [f"{ref}: listed in {info} (line {grouped[ref][0].line_no}) but no image found; skipped"
                for ref in missing]

    unlisted = sorted(ref for ref in images if ref not in grouped)
    if unlisted and not skip_missing:
        path = _preferred(images[unlisted[0]])
        more = f" ({len(unlisted) - 1} more unlisted images)" if len(unlisted) > 1 else ""
        raise InputError(path, f"image has no row in {info}{more}; pass skip_missing to leave such images out")
    skipped += [f"{_preferred(images[ref])}: image has no row in {info}; skipped" for ref in unlisted]

    films = []
    for ref in sorted(r for r in grouped if r in images):
        rows = grouped[ref]
        lab = film_label(rows, info)
        films.append(Film(ref, _preferred(images[ref]), lab.label, lab.severity, lab.bg, tuple(rows)))
    if not films:
        raise InputError(info, f"none of the {len(grouped)} listed films has an image in {root}")
    return films, skipped


def _load_class_folders(root: Path) -> list[Film]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(root, f"no {INFO_NAME} and no class folders (expected {INFO_NAME} with the "
                               f"images, or one folder per class: {', '.join(CLASSES_7)})")
    for folder in folders:
        if folder.name not in CLASSES_7:
            raise InputError(folder, f"unknown class folder '{folder.name}' (expected one of "
                                     f"{', '.join(CLASSES_7)}, or an {INFO_NAME} in {root})")
    films: dict[str, Film] = {}
    for folder in folders:
        for stem, paths in sorted(_images_in(folder).items()):
            path = _preferred(paths)
            if stem in films:
                raise InputError(path, f"film {stem} is also in class folder {films[stem].label}/")
            films[stem] = Film(stem, path, folder.name, None, "", ())
    if not films:
        raise InputError(root, f"the class folders hold no images ({'/'.join(IMAGE_SUFFIXES)})")
    return [films[k] for k in sorted(films)]


# --------------------------------------------------------------------------- tasks


def task_view(films: list[Film], task: str) -> tuple[list[Film], list[int], tuple[str, ...]]:
    """(films kept, integer labels, class names) for one task.

    7class: all films, CLASSES_7 order; benign_malignant: abnormal films with a severity,
    0 benign / 1 malignant; normal_abnormal: all films, 0 normal / 1 abnormal.
    """
    if task == "7class":
        return list(films), [CLASSES_7.index(f.label) for f in films], CLASSES_7
    if task == "normal_abnormal":
        return list(films), [int(f.label != NORMAL) for f in films], ("normal", "abnormal")
    if task == "benign_malignant":
        abnormal = [f for f in films if f.label != NORMAL]
        unknown = [f for f in abnormal if f.severity is None]
        if unknown:
            raise InputError(unknown[0].path, "benign_malignant needs a severity (B/M) per abnormal film, which "
                                              "only an Info.txt gives; folder-per-class data has none "
                                              f"({len(unknown)} abnormal films without one)")
        if not abnormal:
            raise InputError(None, "benign_malignant needs abnormal films; the data has only NORM films")
        return abnormal, [SEVERITIES.index(f.severity) for f in abnormal], ("benign", "malignant")
    raise InputError(None, f"unknown task '{task}' (expected one of {', '.join(TASKS)})")
