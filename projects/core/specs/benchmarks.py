"""What the benchmarks measure of a study (benchmarks/): reference models for the runtime
and FLOP sections, training references, and the search-vs-grid benchmark's space."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SearchBenchmark:
    """The discrete space a study's search-vs-grid benchmark grids once and then searches
    (benchmarks/search_vs_grid.py): settings every cell and trial share, and per mode the
    space (in --space syntax; its value lists are the grid's axes), epochs and trials."""
    base: Mapping[str, Any]
    space: Mapping[str, str]  # "quick" | "full" -> space
    epochs: Mapping[str, int]
    n_trials: Mapping[str, int]
    seeds: Mapping[str, tuple[int, ...]]
    about: str = ""  # one line on the data and sizes, for the table's title


@dataclass(frozen=True)
class TrainingReference:
    """A model the training benchmark measures (benchmarks/training.py): the study's quick
    recipe for it, and one training step's ingredients at the recipe's batch and input size."""
    key: str
    label: str
    family: str  # what the automatic precision is chosen by (projects/core/device.py)
    recipe: Mapping[str, Any]  # settings of the study's config for the quick recipe
    # config -> (model, loss_fn, inputs, targets) of one batch, on the CPU in fp32
    step: Callable[[Any], tuple[Any, Any, Any, Any]]
    step_settings: Mapping[str, Any] = field(default_factory=dict)  # over the recipe, for the step timing
    # over step_settings in the quick (smoke) run: small inputs, so it checks the code path in seconds
    quick_step_settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CaseData:
    """A reference model's data: float32 NCHW inputs in [0, 1] and their targets."""
    train: Any
    train_targets: Any
    test: Any
    test_targets: Any  # masks (N, H, W) or labels (N,)
    test_valid: Any = None  # segmentation: the valid-pixel map
    class_names: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class ReferenceModel:
    """A model the benchmarks measure, with what it takes to train and score it."""
    key: str
    label: str
    channels: int
    build: Callable[[], Any]
    data: Callable[[int], CaseData]  # size in px -> the embedded data at that size
    training: Callable[[CaseData, Mapping[str, Any]], tuple[Any, Any]]  # -> (dataset, loss_fn)
    score: Callable[[CaseData, Any, int], float]  # (data, outputs, n) -> the metric on the first n
    baseline: Callable[[CaseData, int], float]  # the same metric for the trivial predictor
    agreement: Callable[[Any, Any], float]  # share of outputs predicted as the reference does
    metric_name: str
    lr: float = 1e-3
    steps_full: int = 90
    train_size_full: int = 128
    pos_weight: float = 1.0
