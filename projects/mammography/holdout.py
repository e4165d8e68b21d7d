"""The fixed holdout of the mammography study: whole patients that no run trains, validates,
stops early or searches on, so that every candidate for a registry alias can be judged on the
same films (registry/evaluation.py; the study scores its outputs: study.py).

Chosen from the data's identity, not from a run's seed or split: the random state is derived
from the sorted film ids, so every run on the same data - any task, split or seed - sets the
same patients aside. Stratified like the splits (splits.py): patients are allocated by their
films' class and severity (NORM, CALC-B, CIRC-M, ...), so each task's classes are in the
holdout in about their share. A film pair never straddles: the unit is the patient.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from projects.mammography.data import Film
from projects.mammography.splits import allocate_patients, patient_id


def identity_seed(film_ids: Sequence[str]) -> int:
    """A random state that depends on which films the data has, and on nothing else."""
    digest = hashlib.sha256(("holdout:" + ",".join(sorted(film_ids))).encode()).hexdigest()
    return int(digest[:12], 16)


def holdout_patients(films: Sequence[Film], fraction: float) -> set[str]:
    """The patients set aside (empty when fraction is 0): about `fraction` of the films of each
    class-and-severity stratum, whole patients only."""
    if fraction <= 0 or not films:
        return set()
    strata = [f.label if f.severity is None else f"{f.label}-{f.severity}" for f in films]
    ids = [f.id for f in films]
    return allocate_patients(ids, strata, fraction, np.random.default_rng(identity_seed(ids)))


def holdout_digest(films: Sequence[Film], patients: set[str]) -> str:
    """Names the holdout: the sorted ids of its films (runs log it; promotion compares it)."""
    held = sorted(f.id for f in films if patient_id(f.id) in patients)
    return hashlib.sha256(",".join(held).encode()).hexdigest()[:16] if held else "none"
