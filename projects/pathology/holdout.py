"""The fixed holdout of the pathology study: whole source images that no run trains,
validates, stops early or searches on, so that every candidate for a registry alias can be
judged on the same tiles (registry/evaluation.py).

When the data predefines a test subset (MoNuSeg's test/ folder), that subset is the holdout:
it is what the data's authors set aside. Otherwise the images are ranked by a hash of their
id and the first `fraction` of them are held out: chosen from the data's identity, not from a
run's seed, so every run on the same data sets the same images aside. The unit is the
source image: tiles of one image never straddle.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

from projects.pathology.data import SegSample


def holdout_images(samples: Sequence[SegSample], fraction: float) -> set[str]:
    """Ids of the source images set aside (empty when fraction is 0)."""
    if fraction <= 0 or not samples:
        return set()
    predefined = {s.id for s in samples if s.subset == "test"}
    if predefined:
        return predefined
    ranked = sorted((s.id for s in samples), key=lambda i: hashlib.sha256(f"holdout:{i}".encode()).hexdigest())
    return set(ranked[:max(1, int(fraction * len(ranked) + 0.5))])


def holdout_digest(ids: set[str]) -> str:
    """Names the holdout: the sorted ids of its images (runs log it; promotion compares it)."""
    return hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:16] if ids else "none"
