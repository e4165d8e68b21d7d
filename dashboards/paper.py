"""The papers' numbers on the study pages: each study with a paper holds its own (a PaperStudy);
a study without one has no paper section and no paper points on its charts."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import pandas as pd

from projects.core.study import get_study


@runtime_checkable
class PaperStudy(Protocol):
    """A study that reproduces a paper: its published numbers, and its rows beside our runs
    (how the page lays them out: the study's DashboardSpec.paper_*)."""

    def paper_points(self) -> pd.DataFrame:
        """The paper's published results as a DataFrame with the runs table's column names."""

    def paper_vs_ours(self, table: pd.DataFrame) -> pd.DataFrame:
        """Every paper row beside our finished runs of the same setting (mean, CI, runs)."""


def has_paper(study: str) -> bool:
    return isinstance(get_study(study), PaperStudy)


def paper_points(study: str) -> pd.DataFrame | None:
    """The paper's published results as a table with our column names (None: no paper)."""
    return get_study(study).paper_points() if has_paper(study) else None


def paper_vs_ours(study: str, table: pd.DataFrame) -> pd.DataFrame | None:
    """Every paper row beside our finished runs of the same setting (None: no paper)."""
    return get_study(study).paper_vs_ours(table) if has_paper(study) else None
