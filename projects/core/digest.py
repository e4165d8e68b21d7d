"""Content digests of data sets: the `dataset_digest` tag and the preprocessing cache key."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def digest_files(paths: Iterable[Path], extra: str = "", length: int = 16) -> str:
    """sha256 over each file's name and bytes (sorted by name), so moving the data set to
    another folder keeps its digest and changing any pixel changes it."""
    h = hashlib.sha256(extra.encode())
    for path in sorted(Path(p) for p in paths):
        h.update(path.name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:length]
