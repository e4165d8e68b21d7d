"""The study interface and the registry of studies.

A study is one folder (`projects/<study>/`, or any importable package) that describes itself
with one `Study` object: its name, config class, tasks, headline metric and baselines, the
search space, the papers' numbers, what the dashboards and the main job show, and
`run(config)`. The platform (entry points, grids, search, registry, dashboards, benchmarks,
the main job) looks studies up by name and never names one:

    from projects.core.study import get_study, all_studies
    study = get_study("pathology")
    config = study.config_cls.of(arch="unet", epochs=3)
    with tracking.study_run(study.experiment, study.run_name(config)):
        result = study.run(config)

Registration works like timm's `register_model`: a study module calls
`register_study(MyStudy())` when it is imported. Which modules are imported: every entry
point of the `medimg.studies` group (the built-in studies are declared in pyproject.toml;
an installed package can add its own) and the modules named in `MEDIMG_STUDIES`
(comma-separated; how tests and not-installed plug-ins add a study, subprocesses included).
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from projects.core import tracking
from projects.core.errors import InputError

ENTRY_POINT_GROUP = "medimg.studies"
STUDIES_ENV = "MEDIMG_STUDIES"


# --- what a study shows -------------------------------------------------------------------------
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


@dataclass(frozen=True)
class CurveSpec:
    """A dashboard chart of test metrics against one setting, a line per group, the paper's
    points and the baselines beside it (mammography: against the split; pathology: depth)."""
    title: str
    caption: str
    x: str  # column of the runs table
    x_label: str
    groups: tuple[str, ...]  # one line per combination of these columns
    panels: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]  # (metric, title, ((baseline, label), ...))
    x_scale: float = 1.0
    x_ticks: str = ""  # column whose text labels the x ticks ("split": 80:20)
    per_task: bool = False  # one chart per task
    paper_groups: tuple[str, ...] = ()  # columns of the paper's points that choose the group (else one series)


@dataclass(frozen=True)
class GallerySpec:
    """Images a run logged, shown on the study page: the best run of each group, or the
    champion's (falling back to the best run)."""
    title: str
    caption: str
    artifact: str  # e.g. "confusion_matrix.png"
    group_by: tuple[str, ...] = ()  # empty: one image, the champion's
    csv_fallback: str = ""  # a CSV artifact shown as a table when the image is missing
    strip: bool = False  # a tall strip of (tile | overlay) pairs: laid out in rows


@dataclass(frozen=True)
class DashboardSpec:
    title: str  # page title
    metrics: tuple[str, ...]  # test_* and baseline_* columns of the study's tables
    size_by: str  # column that sizes the markers of the trade-off charts
    size_label: str
    hover: tuple[str, ...] = ()  # format strings over run columns, e.g. "filters n={filters}"
    run_columns: tuple[str, ...] = ()  # settings shown in the runs table
    curves: tuple[CurveSpec, ...] = ()
    galleries: tuple[GallerySpec, ...] = ()
    paper_on_tradeoff: bool = False  # the paper published costs: draw its points there
    paper_caption: str = ""
    paper_columns: tuple[str, ...] = ()
    paper_headers: Mapping[str, str] = field(default_factory=dict)
    paper_int_columns: tuple[str, ...] = ()


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


# --- the fixed holdout ----------------------------------------------------------------------------
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


# --- results on real data ------------------------------------------------------------------------
@dataclass
class RealDataBlock:
    """One block of the real-data results page (pipeline/real_data.py): the study's grids on a
    public data set under the data root, and how its runs are shown."""
    name: str  # what --blocks selects, e.g. "roi"
    grids: list  # the study's grid configs, data already pointed at the real set
    metrics: tuple[str, ...]  # the held-out metrics the table shows (test_<name>, with intervals)
    table: Callable[[Any], list[str]]  # rows (one per record: pipeline.real_data.record_rows) -> markdown lines
    source: Path | None = None  # the public data set it needs (the page renders without it)


# --- benchmarks --------------------------------------------------------------------------------
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


# --- the interface ------------------------------------------------------------------------------
class Study:
    """Base class of a study: the platform owns the flow, a study wires its parts.

    Subclasses set the class attributes and implement the methods that raise
    NotImplementedError; the rest have defaults that fit most studies.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]  # a projects.core.config.Config
    grid_cls: ClassVar[type]  # the grid's settings dataclass (with a `base` config)
    tasks: ClassVar[tuple[str, ...]]
    headline: ClassVar[Headline]
    unit: ClassVar[str] = "image"  # the independent unit of a held-out number (patient, source image)
    data_fields: ClassVar[tuple[str, ...]] = ("data", "seed")  # settings that change prepare()
    grid_data_fields: ClassVar[tuple[str, ...]] = ("data", "seed")  # a grid prepares once per combination
    default_space: ClassVar[str] = ""  # the search space in --space syntax
    summary_metrics: ClassVar[tuple[tuple[str, str], ...]] = ()  # (metric, label) of a champion line
    dashboard: ClassVar[DashboardSpec]
    profiles: ClassVar[Mapping[str, StudyProfile]] = {}
    policy_dirs: ClassVar[tuple[str, ...]] = ()  # extra folders of registry policies (plug-ins)
    search_benchmark: ClassVar[SearchBenchmark | None] = None
    holdout_fields: ClassVar[tuple[str, ...]] = ("data",)  # settings that change how the holdout is prepared

    @property
    def experiment(self) -> str:
        return self.name

    def task_of(self, config) -> str:
        return config.task if len(self.tasks) > 1 else self.tasks[0]

    def model_name(self, task: str) -> str:
        """The registered model of a task: `<study>-<task>`."""
        return f"{self.name}-{task}"

    def run_name(self, config) -> str:
        return f"{config.arch}-{self.task_of(config)}-s{config.seed}"

    # the run
    def check(self, config) -> None:
        """What cannot train, found before any run starts (beyond the config's own checks)."""

    def prepare(self, config):
        raise NotImplementedError

    def run(self, config, prepared=None, run_kind: str = tracking.RUN_KIND_SINGLE, on_epoch=None):
        """Train and evaluate inside the active MLflow run; returns a result with .run_id and .metrics."""
        raise NotImplementedError

    def count_params(self, config, prepared) -> int:
        raise NotImplementedError

    # the holdout (registry/evaluation.py)
    def holdout(self, config) -> HoldoutData | None:
        """The fixed holdout prepared the way `config` prepares its inputs; None when the
        study keeps none (holdout_fraction 0: the papers' splits over all the data)."""
        return None

    def holdout_scores(self, config, holdout: HoldoutData, outputs):
        """The logged model's outputs on the holdout -> projects.core.uncertainty.UnitScores."""
        raise NotImplementedError

    def holdout_baselines(self, config, holdout: HoldoutData, outputs) -> dict[str, Any]:
        """The trivial predictors a model must beat, as outputs shaped like a model's `outputs`
        on the same holdout (name -> outputs); scored by holdout_scores like any model. The
        registry's baseline gate compares candidates with them on the holdout, not on each run's
        own test side. Empty: the study names none, and the gate reads the runs' own numbers."""
        return {}

    # the grid
    def grid_configs(self, grid) -> list:
        raise NotImplementedError

    def grid_run_name(self, grid) -> str:
        return f"grid-{self.name}"

    def grid_cell(self, config) -> tuple[str, dict[str, Any]]:
        """A grid child's run name and its key columns in the runs table."""
        return self.run_name(config), {"arch": config.arch, "seed": config.seed}

    def comparison_table(self, runs):
        """The grid parent's paper-vs-ours table from its runs table."""
        raise NotImplementedError

    def grid_tags(self, grid, prepared) -> dict[str, str]:
        return {tracking.TAG_TASK: self.task_of(grid.base)}

    # the search
    def narrow_space(self, space, base):
        """Drop what cannot work with the base config, so the sampler never proposes it."""
        return space

    def check_space(self, space, base) -> None:
        """Fail early on a space value that can never train (an unknown architecture)."""

    # presentation
    def paper_points(self):
        """The paper's published results as a DataFrame with the runs table's column names."""
        raise NotImplementedError

    def paper_vs_ours(self, table):
        """Every paper row beside our finished runs of the same setting."""
        raise NotImplementedError

    def summary_lines(self, table) -> list[str]:
        """The main job's lines for this study's grid table."""
        return []

    def reference_models(self) -> Sequence[ReferenceModel]:
        return ()

    def training_references(self) -> Sequence[TrainingReference]:
        return ()

    def paper_cells(self) -> Sequence[Mapping[str, Any]]:
        """The configs the study's paper trained (settings by name): `--enqueue paper` tries them first."""
        return ()

    def real_data(self, root: Path, quick: bool) -> Sequence[RealDataBlock]:
        """The study's blocks of the real-data results page (its public data sets under root)."""
        return ()

    def rank_blocks(self, root: Path) -> Sequence[RealDataBlock]:
        """Configurations whose validation curves measure rank stability (pipeline/rank_stability.py):
        trained the same number of epochs without early stopping; public data sets under root."""
        return ()

    def benchmark_sections(self) -> Mapping[str, Callable]:
        """Benchmark sections of the study's own pipeline: name -> run(quick, experiment_id, log)
        returning a projects.core.bench.Section (python -m benchmarks runs them with the rest)."""
        return {}


# --- the registry --------------------------------------------------------------------------------
_STUDIES: dict[str, Study] = {}
_LOADED: set[str] = set()


def register_study(study: Study) -> Study:
    """Add a study (call at import of its module); registering the same name twice replaces
    the earlier object only when it is the same class (a module imported twice)."""
    name = study.name
    old = _STUDIES.get(name)
    if old is not None and type(old).__qualname__ != type(study).__qualname__:
        raise ValueError(f"study {name!r} is registered twice ({type(old).__module__} and {type(study).__module__})")
    _STUDIES[name] = study
    return study


def unregister_study(name: str) -> None:
    """Remove a study (tests that add one for a while)."""
    _STUDIES.pop(name, None)


@functools.lru_cache(maxsize=1)
def _entry_point_modules() -> tuple[str, ...]:
    """The installed studies, read once per process: entry_points() scans every installed
    distribution's metadata (~10 ms here), and a dashboard over 1,000 runs looked studies up
    14,231 times (issue 30's profile: 130 of 152 s). Installing a study needs a new process."""
    return tuple(ep.value.split(":")[0] for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _modules() -> list[str]:
    names = list(_entry_point_modules())
    names += [m.strip() for m in os.environ.get(STUDIES_ENV, "").split(",") if m.strip()]
    return list(dict.fromkeys(names))


def load_studies() -> None:
    """Import every declared study module once (a new MEDIMG_STUDIES entry is picked up)."""
    for module in _modules():
        if module not in _LOADED:
            importlib.import_module(module)
            _LOADED.add(module)


def all_studies() -> list[Study]:
    load_studies()
    return [_STUDIES[name] for name in sorted(_STUDIES)]


def study_names() -> list[str]:
    return [s.name for s in all_studies()]


def get_study(name: str) -> Study:
    load_studies()
    try:
        return _STUDIES[name]
    except KeyError:
        known = ", ".join(sorted(_STUDIES)) or "none registered"
        raise InputError("study", f"unknown study {name!r}; choose from {known}") from None


def study_of_model(model: str) -> tuple[Study, str] | None:
    """The study and task behind a registered model name, if a study makes it."""
    for study in all_studies():
        for task in study.tasks:
            if study.model_name(task) == model:
                return study, task
    return None
