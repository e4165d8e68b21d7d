"""Embedded data: deterministic stand-ins for the two studies' data sets, in their real formats.

    from projects.embedded import ensure_mias, ensure_paip
    mias_dir = ensure_mias()   # Info.txt + mdb001.pgm ... mdb322.pgm (mini-MIAS layout)
    paip_dir = ensure_paip()   # img/, mask/tumor/, mask/non_tumor/, cellularity_mpp.csv

Each is generated on first use into `projects.core.runtime.cache_dir() / "embedded"` and reused
afterwards. A data set is built in a temporary sibling folder, marked complete last, then
renamed into place in one step, so a generator killed half-way never leaves a data set that
looks usable. Bump DATASETS_VERSION whenever a generator's output changes: the folder names
carry it, so stale caches are simply not found (delete `.cache/embedded` to reclaim space).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from projects.core import runtime

DATASETS_VERSION = 1
MARKER = ".complete"  # written last inside a finished data set


def embedded_root() -> Path:
    return runtime.cache_dir() / "embedded"


def mias_dir(size: int = 256, seed: int = 0) -> Path:
    return embedded_root() / f"mias-{size}-s{seed}-v{DATASETS_VERSION}"


def paip_dir(n_images: int = 24, size: int = 512, seed: int = 0) -> Path:
    return embedded_root() / f"paip-{n_images}x{size}-s{seed}-v{DATASETS_VERSION}"


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _ensure(final: Path, what: str, build: Callable[[Path], object]) -> Path:
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's private 0700 would outlive the rename
    try:
        print(f"generating embedded {what} into {final} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        build(tmp)
        (tmp / MARKER).write_text(f"{what}\ngenerated in {time.perf_counter() - started:.1f} s\n")
        if final.exists() and not is_complete(final):
            shutil.rmtree(final)  # a folder without its marker is not ours to trust
        try:
            os.rename(tmp, final)  # atomic on one filesystem
        except OSError:
            if not is_complete(final):  # not a concurrent generator finishing first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _remove_stale_tmp(final: Path) -> None:
    """Remove temporary folders left by generators that were killed (their process is gone)."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            pid = int(tmp.name.split(".tmp-", 1)[1].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            pass  # not ours to judge, or a live process of another user


def ensure_mias(size: int = 256, seed: int = 0) -> Path:
    """The embedded mini-MIAS look-alike at `size` px: generated once, then reused."""
    from projects.embedded.mias import generate_mias

    return _ensure(
        mias_dir(size, seed),
        f"MIAS (322 films, {size} px, seed {seed})",
        lambda out: generate_mias(out, size=size, seed=seed),
    )


def ensure_paip(n_images: int = 24, size: int = 512, seed: int = 0) -> Path:
    """The embedded PAIP 2023 look-alike: generated once, then reused."""
    from projects.embedded.paip import generate_paip

    return _ensure(
        paip_dir(n_images, size, seed),
        f"PAIP ({n_images} tiles, {size} px, seed {seed})",
        lambda out: generate_paip(out, n_images=n_images, size=size, seed=seed),
    )


__all__ = [
    "DATASETS_VERSION",
    "embedded_root",
    "ensure_mias",
    "ensure_paip",
    "is_complete",
    "mias_dir",
    "paip_dir",
]
