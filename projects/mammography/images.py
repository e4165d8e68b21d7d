"""A film's pixels: image files and encoded bytes (PGM, PNG, JPEG, TIFF) as uint8 grayscale,
read the same way for training (projects/mammography/data.py finds the files) and for the
logged model (projects/mammography/serving.py decodes what users send).

Bit-depth rule (documented choice): images come back as uint8. PGM samples are scaled to
0..255 by `round(v * 255 / maxval)` (a no-op for the usual maxval 255; 16-bit PGMs with
maxval > 255 are converted the same way, since maxval is the file's own white point).
16-bit PNG/JPEG have no white point and use the platform's rule from
`projects.pathology.data`: `round(v / 257)`. Any other sample type is an error.

Bad input raises `InputError(file, problem)`, naming the file to fix.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from projects.core.errors import InputError


def read_image(path: Path) -> np.ndarray:
    """The image as a uint8 HxW grayscale array (bit-depth rule in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image file does not exist")
    if path.suffix.lower() == ".pgm":
        return _read_pgm(path)
    return _read_other(path)


def decode_film(data: bytes, where: object = "image") -> np.ndarray:
    """A film's encoded bytes (PGM, PNG, TIFF, ...) as read_image reads its file: the logged
    model reads what users send with the rules training read its films with."""
    if data[:2] in (b"P5", b"P2"):
        return decode_pgm(data, where)
    return _decode_other(np.frombuffer(data, dtype=np.uint8), where)


def resize_film(image: np.ndarray, size: int) -> np.ndarray:
    """A film at the model's input size (training and the logged model share this)."""
    if image.shape != (size, size):
        # INTER_AREA averages when shrinking: lesions survive the downscale.
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image


def _read_pgm(path: Path) -> np.ndarray:
    """PGM read by hand: cv2 silently returns None or partial images for truncated files."""
    return decode_pgm(path.read_bytes(), path)


def decode_pgm(data: bytes, path) -> np.ndarray:
    """PGM bytes as a uint8 film; `path` names the source in errors."""
    magic = data[:2]
    if magic not in (b"P5", b"P2"):
        raise InputError(path, f"not a grayscale PGM: magic {magic!r}, expected P5 (binary) or P2 (ascii)")
    width, height, maxval, pos = _pgm_header(path, data)
    n = width * height
    if magic == b"P5":
        pixels = _pgm_binary(path, data, pos, n, maxval)
    else:
        pixels = _pgm_ascii(path, data, pos, n)
    if pixels.size and int(pixels.max()) > maxval:
        raise InputError(path, f"pixel value {int(pixels.max())} above the header's maxval {maxval}")
    pixels = pixels.reshape(height, width)
    if maxval == 255:
        return pixels.astype(np.uint8, copy=False)
    return np.rint(pixels.astype(np.float64) * (255.0 / maxval)).astype(np.uint8)


def _pgm_header(path: Path, data: bytes) -> tuple[int, int, int, int]:
    """width, height, maxval and the offset of the first pixel byte."""
    fields: list[int] = []
    pos = 2
    while len(fields) < 3:
        while pos < len(data) and (data[pos:pos + 1].isspace() or data[pos:pos + 1] == b"#"):
            if data[pos:pos + 1] == b"#":  # comment to end of line
                end = data.find(b"\n", pos)
                pos = len(data) if end < 0 else end
            pos += 1
        start = pos
        while pos < len(data) and data[pos:pos + 1].isdigit():
            pos += 1
        if start == pos and pos >= len(data):
            raise InputError(path, "truncated: the file ends inside the PGM header")
        if start == pos:
            raise InputError(path, "malformed PGM header: expected width, height and maxval")
        fields.append(int(data[start:pos]))
    if pos >= len(data):
        raise InputError(path, "truncated: the file ends inside the PGM header")
    if not data[pos:pos + 1].isspace():
        raise InputError(path, "malformed PGM header: no whitespace after maxval")
    width, height, maxval = fields
    if width <= 0 or height <= 0:
        raise InputError(path, f"PGM header gives an empty image ({width} x {height})")
    if not 0 < maxval < 65536:
        raise InputError(path, f"PGM maxval {maxval} outside 1..65535")
    return width, height, maxval, pos + 1


def _pgm_binary(path: Path, data: bytes, pos: int, n: int, maxval: int) -> np.ndarray:
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")  # 16-bit PGM is big-endian
    expected, found = n * dtype.itemsize, len(data) - pos
    if found < expected:
        raise InputError(path, f"truncated: expected {expected} bytes, found {found}")
    if found > expected:
        # Extra bytes usually mean a wrong size in the header; reading the prefix would
        # give a sheared image without any warning.
        raise InputError(path, f"{found - expected} bytes after the expected {expected} bytes of pixel data "
                               "(wrong size in the header?)")
    # astype copies: frombuffer's view is read-only and callers may edit the image in place.
    native = np.uint16 if dtype.itemsize == 2 else np.uint8
    return np.frombuffer(data, dtype=dtype, count=n, offset=pos).astype(native)


def _pgm_ascii(path: Path, data: bytes, pos: int, n: int) -> np.ndarray:
    tokens = data[pos:].split()
    if len(tokens) < n:
        raise InputError(path, f"truncated: expected {n} values, found {len(tokens)}")
    if len(tokens) > n:
        raise InputError(path, f"{len(tokens) - n} values after the expected {n} (wrong size in the header?)")
    bad = next((t for t in tokens if not t.isdigit()), None)
    if bad is not None:
        raise InputError(path, f"non-integer pixel value {bad.decode('ascii', 'replace')!r}")
    values = np.array([int(t) for t in tokens], dtype=np.int64)
    if values.max(initial=0) > 65535:
        raise InputError(path, f"pixel value {int(values.max())} above 65535")
    return values.astype(np.uint16)


def _read_other(path: Path) -> np.ndarray:
    # imdecode from bytes rather than imread: imread fails silently on some non-ASCII paths.
    return _decode_other(np.fromfile(path, dtype=np.uint8), path)


def _decode_other(buf: np.ndarray, path) -> np.ndarray:
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if image is None:
        raise InputError(path, "cannot decode image (empty, corrupt or unsupported format)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        image = cv2.cvtColor(image, code)
    elif image.ndim != 2:
        raise InputError(path, f"unsupported image shape {image.shape}")
    if image.dtype == np.uint16:
        return np.rint(image / 257.0).astype(np.uint8)
    if image.dtype != np.uint8:
        raise InputError(path, f"unsupported sample type {image.dtype} (expected 8- or 16-bit unsigned)")
    return image
