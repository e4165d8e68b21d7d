"""Pareto fronts of the dashboards: lowest cost, highest score."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd


def pareto_mask(cost: Iterable[float], score: Iterable[float]) -> np.ndarray:
    """True where a point is on the Pareto front: lowest cost, highest score.

    A point is dominated when another costs no more and scores no less, and is strictly
    better in one of the two. Points with a missing or infinite value are never on the front;
    exact duplicates of a front point are on it too.
    """
    c = np.asarray(list(cost), dtype=float)
    s = np.asarray(list(score), dtype=float)
    ok = np.isfinite(c) & np.isfinite(s)
    mask = np.zeros(len(c), dtype=bool)
    idx = np.flatnonzero(ok)
    for i in idx:
        others = idx[idx != i]
        dominated = np.any((c[others] <= c[i]) & (s[others] >= s[i]) & ((c[others] < c[i]) | (s[others] > s[i])))
        mask[i] = not dominated
    return mask


def pareto_front(table: pd.DataFrame, cost: str, score: str) -> pd.DataFrame:
    """The rows of `table` on the front (minimise `cost`, maximise `score`), by rising cost."""
    if table.empty or cost not in table or score not in table:
        return table.iloc[0:0]
    mask = pareto_mask(table[cost], table[score])
    return table[mask].sort_values([cost, score], ascending=[True, False], kind="stable")
