"""The held-out number a study is judged by: every reader of a study reads it (grids, the
search, the registry's summaries, dashboards, benchmarks, the main job)."""
from __future__ import annotations

from dataclasses import dataclass

from projects.core import tracking


@dataclass(frozen=True)
class Headline:
    """The held-out number a study is judged by, and what it must beat."""
    metric: str  # e.g. "accuracy" -> test_accuracy
    label: str  # "test accuracy"
    baselines: tuple[str, ...]  # baseline_* metric names drawn beside it
    selection: str  # the validation metric searches and model selection maximise (val_*)
    best_by: str = ""  # test metric that picks "the best run" of a scenario (default: the headline)

    @property
    def test_metric(self) -> str:
        return tracking.test_metric(self.metric)

    @property
    def best_metric(self) -> str:
        return tracking.test_metric(self.best_by or self.metric)
