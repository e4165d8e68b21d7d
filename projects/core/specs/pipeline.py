"""What the pipeline runs for a study: the main job's profiles (pipeline/main.py, and the
search driver's plan) and the real-data page's blocks (pipeline/real_data.py,
pipeline/rank_stability.py)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StudyProfile:
    """What the main job runs for a study under one profile (quick / smoke / paper)."""
    grid: Any  # the study's grid config
    search: Any = None  # a SearchPlan, or None: no search for this study
    notes: str = ""


@dataclass(frozen=True)
class SearchPlan:
    """The main job's search of a study: trials, epochs per trial and the space."""
    n_trials: int
    epochs: int
    space: str = ""
    pruner: str = "median"


@dataclass
class RealDataBlock:
    """One block of the real-data results page (pipeline/real_data.py): the study's grids on a
    public data set under the data root, and how its runs are shown."""
    name: str  # what --blocks selects, e.g. "roi"
    grids: list  # the study's grid configs, data already pointed at the real set
    metrics: tuple[str, ...]  # the held-out metrics the table shows (test_<name>, with intervals)
    table: Callable[[Any], list[str]]  # rows (one per record: pipeline.real_data.record_rows) -> markdown lines
    source: Path | None = None  # the public data set it needs (the page renders without it)
    about: str = ""  # one paragraph under the block's heading: what it measures and why
    # Blocks whose records this one's paired test includes (on the same holdout): e.g. the model
    # without a change, measured in its own block, against the models with it.
    paired_with: tuple[str, ...] = ()


@dataclass(frozen=True)
class RealSearch:
    """The platform's search on a real data set (pipeline/real_search.py): resumable through its
    Optuna journal beside the records; its winner measured with seeds as a real-data block."""
    name: str  # the Optuna study's name, the journal's file name, the page's section
    source: Path  # the data set's folder
    base: str  # settings of every trial, in --base syntax (a preset, usually)
    space: str  # --space syntax
    epochs: int
    n_trials: int
    objective: str  # a val_* metric (the search never sees a test number)
    winner_block: Callable[[dict], RealDataBlock]  # the winner's searched settings -> its seeds as a block
    pruner: str = "median"  # --pruner syntax; e.g. median:warmup=K, K the data's minimum resource

