"""Patient-level, class-stratified train/val/test splits of mini-MIAS films.

MIAS lists films in left/right pairs of one patient (mdb001+mdb002, mdb003+mdb004, ...).
A split that puts one film of a pair in train and the other in test leaks the patient, so
every split here assigns whole patients.

How a held-out side is chosen (test from all patients, then val from the rest):
each patient is a vector of film counts per class. Patients are visited rarest class
first (a patient counts as its rarest film label, so a NORM+CALC pair is placed as a CALC
patient while there is still room), ties in a seeded random order, and a patient goes to
the held-out side when that lowers the cost

    sum_c (held_c - f * N_c)^2  +  C * (held - f * N)^2

(held_c: held-out films of class c, N_c: films of class c, C: number of classes; the
second term, weighted like all classes together, keeps the overall share within about a
film of the target). A local search then moves single patients across or swaps two while
the cost drops. Constraints: every class with at least 2 patients keeps a film in train
(in the val step: every class left in the pool), train never becomes empty, and a held-out
side with a positive fraction gets at least one patient when the pool has two or more.
Deterministic for a seed and independent of the input order.

What that gives (checked by property tests for test shares 0.05-0.5): no patient on two
sides; per class, test films within 2 (one pair) of the target share; the test total
within about one film (more only when the target is under one patient). For shares near 1
the train-side constraints win over the targets.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from projects.core.errors import InputError

MIAS_ID_RE = re.compile(r"mdb([0-9]{3})")
SPLITS = ("train", "val", "test")
_EPS = 1e-9  # cost improvements smaller than this are float noise, not progress


def patient_id(film_id: str) -> str:
    """mdb001/mdb002 -> p001, mdb003/mdb004 -> p002, ...; any other id is its own patient."""
    m = MIAS_ID_RE.fullmatch(film_id)
    if not m:
        return film_id
    return f"p{(int(m.group(1)) + 1) // 2:03d}"


def parse_ratio(text: str) -> float:
    """The test share of a ratio: '80:20' -> 0.2, '90/10' -> 0.1, '0.2' -> 0.2, '20%' -> 0.2."""
    raw = str(text).strip()
    try:
        parts = re.split(r"[:/]", raw)
        if len(parts) == 2:
            train, test = (float(p) for p in parts)
            if train < 0 or test < 0:
                raise ValueError
            share = test / (train + test)
        elif len(parts) == 1 and raw.endswith("%"):
            share = float(raw[:-1]) / 100.0
        elif len(parts) == 1:
            share = float(raw)
        else:
            raise ValueError
    except (ValueError, ZeroDivisionError):
        raise InputError(None, f"cannot read train:test ratio '{text}' (expected e.g. 80:20, 90/10 or 0.2)") from None
    if not 0.0 < share < 1.0:  # also rejects nan
        raise InputError(None, f"train:test ratio '{text}' gives a test share of {share:g}; it must be in (0, 1)")
    return share


def split_films(film_ids: Sequence[str], labels: Sequence[Hashable], test_fraction: float,
                val_fraction: float = 0.2, seed: int = 0) -> dict[str, str]:
    """film id -> 'train' | 'val' | 'test' (method in the module docstring).

    test_fraction: the test share of all films, in (0, 1); val_fraction: the share of the
    remaining (non-test) films that goes to val, in [0, 1).
    """
    ids, labels = list(film_ids), list(labels)
    _check_inputs(ids, labels, test_fraction, val_fraction)
    patients, counts = _patient_matrix(ids, labels)
    if len(patients) < 2:
        raise InputError(None, f"need films of at least 2 patients to split, got {len(patients)}")
    rng = np.random.default_rng(seed)

    per_class_patients = (counts > 0).sum(axis=0)
    test = _holdout(counts, test_fraction, rng, protect=per_class_patients >= 2)
    side = np.where(test, "test", "train").astype(object)
    pool = np.flatnonzero(~test)
    if val_fraction > 0:
        pool_counts = counts[pool]
        val = _holdout(pool_counts, val_fraction, rng, protect=pool_counts.sum(axis=0) > 0)
        side[pool[val]] = "val"

    by_patient = dict(zip(patients, side))
    return {film: str(by_patient[patient_id(film)]) for film in ids}


def allocate_patients(film_ids: Sequence[str], labels: Sequence[Hashable], fraction: float,
                      rng: np.random.Generator) -> set[str]:
    """Whole patients holding about `fraction` of each label's films: the allocation a split's
    test side gets (used for the study's fixed holdout, see holdout.py)."""
    patients, counts = _patient_matrix(list(film_ids), list(labels))
    if len(patients) < 2:
        return set()
    held = _holdout(counts, fraction, rng, protect=(counts > 0).sum(axis=0) >= 2)
    return {p for p, h in zip(patients, held) if h}


def _check_inputs(ids: list[str], labels: list, test_fraction: float, val_fraction: float) -> None:
    if len(ids) != len(labels):
        raise InputError(None, f"{len(ids)} film ids but {len(labels)} labels")
    if not ids:
        raise InputError(None, "no films to split")
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        raise InputError(None, f"film id {dupes[0]} appears more than once")
    if not 0.0 < float(test_fraction) < 1.0:
        raise InputError(None, f"test fraction must be in (0, 1), got {test_fraction}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise InputError(None, f"val fraction must be in [0, 1), got {val_fraction}")


def _patient_matrix(ids: list[str], labels: list) -> tuple[list[str], np.ndarray]:
    """Sorted patient ids and a (patients x classes) matrix of film counts."""
    classes = sorted(set(labels), key=repr)  # any hashable labels; repr gives a total order
    col = {c: j for j, c in enumerate(classes)}
    films_of: dict[str, list[int]] = defaultdict(list)
    for film, label in zip(ids, labels):
        films_of[patient_id(film)].append(col[label])
    patients = sorted(films_of)
    counts = np.zeros((len(patients), len(classes)), dtype=np.int64)
    for i, p in enumerate(patients):
        for j in films_of[p]:
            counts[i, j] += 1
    return patients, counts


class _Holdout:
    """State of one two-way allocation: which patients are held out, and the cost."""

    def __init__(self, counts: np.ndarray, fraction: float, protect: np.ndarray):
        self.v = counts.astype(np.float64)
        self.target = fraction * self.v.sum(axis=0)
        self.total_target = fraction * self.v.sum()
        self.weight = float(counts.shape[1])
        self.protect = protect
        self.held = np.zeros(len(counts), dtype=bool)
        self.h = np.zeros(counts.shape[1])

    def cost(self, h: np.ndarray) -> np.ndarray:
        """Cost of held-out count vectors h (any leading shape)."""
        return ((h - self.target) ** 2).sum(axis=-1) + self.weight * (h.sum(axis=-1) - self.total_target) ** 2

    def train_counts(self) -> np.ndarray:
        return self.v[~self.held].sum(axis=0)

    def move_ok(self, train_after: np.ndarray) -> np.ndarray:
        """Protected classes keep a film in train (train_after: (..., C) counts)."""
        return ~((train_after < 0.5) & self.protect).any(axis=-1)

    def flip(self, p: int) -> None:
        self.h += -self.v[p] if self.held[p] else self.v[p]
        self.held[p] = ~self.held[p]

    def best_single(self):
        """(delta, patient) of the best allowed single move across, or None."""
        sign = np.where(self.held, -1.0, 1.0)[:, None]
        h_new = self.h + sign * self.v
        ok = self.move_ok(self.train_counts() - sign * self.v)
        n_train = int((~self.held).sum())
        ok &= self.held | (n_train > 1)  # never empty train
        if not ok.any():
            return None
        delta = np.where(ok, self.cost(h_new) - self.cost(self.h), np.inf)
        p = int(np.argmin(delta))
        return float(delta[p]), p

    def best_swap(self):
        """(delta, held patient, train patient) of the best allowed swap, or None."""
        hp, tp = np.flatnonzero(self.held), np.flatnonzero(~self.held)
        if not len(hp) or not len(tp):
            return None
        diff = self.v[tp][None, :, :] - self.v[hp][:, None, :]  # (held, train, C)
        ok = self.move_ok(self.train_counts() - diff)
        if not ok.any():
            return None
        delta = np.where(ok, self.cost(self.h + diff) - self.cost(self.h), np.inf)
        i, j = np.unravel_index(int(np.argmin(delta)), delta.shape)
        return float(delta[i, j]), int(hp[i]), int(tp[j])


def _holdout(counts: np.ndarray, fraction: float, rng: np.random.Generator, protect: np.ndarray) -> np.ndarray:
    """Boolean mask of the patients (rows of counts) held out for a share `fraction`."""
    n = len(counts)
    # Visit order: rarest class first, ties in a seeded random order. Working on permuted
    # rows makes argmin's first-index tie-breaking follow the seed too.
    class_films = counts.sum(axis=0)
    rarest = np.where(counts > 0, class_films, np.iinfo(np.int64).max).min(axis=1)
    order = rng.permutation(n)
    order = order[np.argsort(rarest[order], kind="stable")]
    state = _Holdout(counts[order], fraction, protect)

    for p in range(n):  # greedy pass
        if (~state.held).sum() > 1 and state.move_ok(state.train_counts() - state.v[p]):
            if state.cost(state.h + state.v[p]) < state.cost(state.h) - _EPS:
                state.flip(p)
    _local_search(state)
    if not state.held.any() and n > 1:  # a held-out side that was asked for is never empty
        best = state.best_single()
        if best is not None:
            state.flip(best[1])

    held = np.zeros(n, dtype=bool)
    held[order] = state.held
    return held


def _local_search(state: _Holdout, max_steps: int = 10_000) -> None:
    """Best single move or swap while the cost drops (strictly, so it terminates)."""
    for _ in range(max_steps):
        single, swap = state.best_single(), state.best_swap()
        best_single = single[0] if single else np.inf
        best_swap = swap[0] if swap else np.inf
        if min(best_single, best_swap) >= -_EPS:
            return
        if best_single <= best_swap:
            state.flip(single[1])
        else:
            state.flip(swap[1])
            state.flip(swap[2])


def split_table(assignment: Mapping[str, str], films: Iterable) -> pd.DataFrame:
    """One row per assigned film: film_id, patient, label, split (sorted by film_id).

    `films` are `data.Film` objects (anything with `.id` and `.label`); films absent from
    the assignment (e.g. NORM films in a benign_malignant split) are left out.
    """
    label_of = {f.id: f.label for f in films}
    unknown = sorted(set(assignment) - set(label_of))
    if unknown:
        raise ValueError(f"assignment names film {unknown[0]} that is not among the films")
    rows = [(fid, patient_id(fid), label_of[fid], assignment[fid]) for fid in sorted(assignment)]
    return pd.DataFrame(rows, columns=["film_id", "patient", "label", "split"])
