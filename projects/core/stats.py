"""Summaries over repeated runs (seeds): mean and a 95% confidence interval."""
from __future__ import annotations

import math
from collections.abc import Sequence


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for a single value)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, 0.0
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return mean, float(stats.t.ppf(0.975, len(vals) - 1) * sd / math.sqrt(len(vals)))


def summarise(values) -> tuple[float, float, int]:
    """Mean, 95% CI half-width (NaN unless there are repeats) and count of finite values."""
    vals = [float(v) for v in values if v is not None and v == v and math.isfinite(float(v))]
    mean, ci = mean_ci95(vals)
    return mean, (ci if len(vals) > 1 else float("nan")), len(vals)
