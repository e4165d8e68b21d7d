"""A study's fixed holdout, as the registry scores candidates on it (registry/evaluation.py,
registry/export.py).

Every study answers `Study.holdout(config)` (None: it keeps no holdout). A study whose holdout
is data also scores outputs on it, the `HoldoutStudy` capability below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass
class HoldoutData:
    """A study's holdout, prepared as one candidate's run prepared its inputs: what the logged
    model takes, the truth, and the independent unit of every input."""
    inputs: Any  # float32 (N, C, H, W), as the logged model's signature says
    targets: Any  # labels (N,) or masks (N, H, W)
    units: list[str]  # patient / source image of each input
    digest: str  # names the held-out units; equals the holdout_digest tag of every clean run
    source: str  # where the data came from (the dataset's source)
    table: Any  # pandas: one row per input (id, unit, truth): the evaluation run's mlflow.data dataset
    valid: Any = None  # segmentation: the valid-pixel map

    @property
    def n_units(self) -> int:
        return len(set(self.units))


@runtime_checkable
class HoldoutStudy(Protocol):
    """A study that keeps a holdout: the registry scores a logged model's outputs on it."""

    def holdout(self, config) -> HoldoutData | None:
        """The fixed holdout prepared the way `config` prepares its inputs; None when this
        config keeps none (holdout_fraction 0: the papers' splits over all the data)."""

    def holdout_scores(self, config, holdout: HoldoutData, outputs) -> Any:
        """The logged model's outputs on the holdout -> projects.core.uncertainty.UnitScores."""

    def holdout_baselines(self, config, holdout: HoldoutData, outputs) -> dict[str, Any]:
        """The trivial predictors a model must beat, as outputs shaped like a model's `outputs`
        on the same holdout (name -> outputs); scored by holdout_scores like any model. The
        registry's baseline gate compares candidates with them on the holdout, not on each run's
        own test side. Empty: the study names none, and the gate reads the runs' own numbers."""
