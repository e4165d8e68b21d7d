"""The study interface and the registry of studies.

A study is one package that registers one `Study` object when it is imported (like timm's
`register_model`): its name, config, tasks, headline, trainer (projects/core/trainer.py), grid,
search space and dashboard page. The platform looks studies up by name, never names one:

    study = get_study("pathology")
    with tracking.study_run(study.experiment, study.run_name(config)):
        result = study.run(config)

What only some studies have is optional and checked where it is read (a runtime_checkable
Protocol, or getattr): a paper (dashboards.paper.PaperStudy, projects.search.warm.PaperCellsStudy),
a holdout (projects.core.specs.holdout.HoldoutStudy), the main job's profiles, real-data blocks
(pipeline/), benchmark models and sections (benchmarks/). The data a study hands them: specs/.

The modules imported: the `medimg.studies` entry points (the built-in studies are declared in
pyproject.toml; an installed package can add its own) and those named in `MEDIMG_STUDIES`
(comma-separated; how tests and not-installed plug-ins add a study, subprocesses included).
"""
from __future__ import annotations

import abc
import functools
import importlib
import importlib.metadata
import os
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from projects.core import tracking
from projects.core.errors import InputError
from projects.core.specs.dashboard import DashboardSpec
from projects.core.specs.headline import Headline
from projects.core.specs.holdout import HoldoutData

if TYPE_CHECKING:
    from projects.core.trainer import RunResult, Trainer

ENTRY_POINT_GROUP = "medimg.studies"
STUDIES_ENV = "MEDIMG_STUDIES"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"  # there in a source checkout only


class Study(abc.ABC):
    """Base class of a study: the platform owns the flow, a study wires its parts.

    Subclasses set the class attributes without defaults and say how a grid expands into
    configs (`grid_configs`); the run is the trainer's, the rest has defaults that fit most
    studies.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]  # a projects.core.config.Config
    grid_cls: ClassVar[type]  # the grid's settings dataclass (with a `base` config)
    tasks: ClassVar[tuple[str, ...]]
    headline: ClassVar[Headline]
    dashboard: ClassVar[DashboardSpec]
    trainer: ClassVar[Trainer]  # the run's hooks: run, prepare and count_params go through it
    unit: ClassVar[str] = "image"  # the independent unit of a held-out number (patient, source image)
    data_fields: ClassVar[tuple[str, ...]] = ("data", "seed")  # settings that change prepare()
    grid_data_fields: ClassVar[tuple[str, ...]] = ("data", "seed")  # a grid prepares once per combination
    holdout_fields: ClassVar[tuple[str, ...]] = ("data",)  # settings that change how the holdout is prepared
    default_space: ClassVar[str] = ""  # the search space in --space syntax
    summary_metrics: ClassVar[tuple[tuple[str, str], ...]] = ()  # (metric, label) of a champion line
    policy_dirs: ClassVar[tuple[str, ...]] = ()  # extra folders of registry policies (plug-ins)

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
        """The run's inputs, prepared once and shared by the runs with the same data_fields."""
        return self.trainer.prepare(config)

    def run(self, config, prepared=None, run_kind: str = tracking.RUN_KIND_SINGLE, on_epoch=None) -> RunResult:
        """Train and evaluate inside the active MLflow run; returns a result with .run_id and .metrics."""
        return self.trainer.run_training(config, prepared, run_kind, on_epoch)

    def count_params(self, config, prepared) -> int:
        """The trainable parameters of the config's model (a search rejects a trial by them untrained)."""
        from projects.core.efficiency import count_params

        return count_params(self.trainer.untrained_model(config, prepared))

    def holdout(self, config) -> HoldoutData | None:
        """The registry asks every study; None: no holdout (a study that keeps one is a
        projects.core.specs.holdout.HoldoutStudy)."""
        return None

    # the grid
    @abc.abstractmethod
    def grid_configs(self, grid) -> list:
        """The configs of a grid's cells, in order."""

    def grid_run_name(self, grid) -> str:
        return f"grid-{self.name}"

    def grid_cell(self, config) -> tuple[str, dict[str, Any]]:
        """A grid child's run name and its key columns in the runs table."""
        return self.run_name(config), {"arch": config.arch, "seed": config.seed}

    def comparison_table(self, runs):
        """The grid parent's table from its runs table (grid/paper_vs_ours): here, the finished
        runs of each cell (its key columns but the seed) and their mean headline metric."""
        metric = self.headline.test_metric
        keys = [c for c in runs.columns[:list(runs.columns).index("status")] if c != "seed"]
        done = runs[runs["status"] == "FINISHED"]
        return done.groupby(keys, as_index=False).agg(runs=(metric, "size"), **{f"ours_{self.headline.metric}":
                                                                                 (metric, "mean")})

    def grid_tags(self, grid, prepared) -> dict[str, str]:
        return {tracking.TAG_TASK: self.task_of(grid.base)}

    def summary_lines(self, table) -> list[str]:
        """The main job's and the grid parent's lines for this study's grid table."""
        return []

    # the search
    def narrow_space(self, space, base):
        """Drop what cannot work with the base config, so the sampler never proposes it."""
        return space

    def check_space(self, space, base) -> None:
        """Fail early on a space value that can never train (an unknown architecture)."""


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


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _declared_in_checkout() -> tuple[str, dict[str, str]] | None:
    """In a source checkout: the platform's distribution name and the studies its pyproject.toml
    declares, or None (an installed wheel has no pyproject beside its packages)."""
    if not PYPROJECT.is_file():
        return None
    project = tomllib.loads(PYPROJECT.read_text()).get("project", {})
    return _normalized(project.get("name", "")), dict(project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {}))


@functools.lru_cache(maxsize=1)
def _entry_point_modules() -> tuple[str, ...]:
    """The declared study modules, read once per process: entry_points() scans every installed
    distribution's metadata (~10 ms), and a dashboard over 1,000 runs looked studies up 14,231
    times (issue 30). In a source checkout its pyproject.toml names the platform's own studies:
    an editable install's metadata is written at install time only (and one venv may serve
    several checkouts), so it goes stale when a study module is renamed."""
    installed = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    checkout = _declared_in_checkout()
    values = [ep.value for ep in installed]
    if checkout is not None:
        own, declared = checkout
        values = list(declared.values()) + [ep.value for ep in installed
                                            if ep.dist is None or _normalized(ep.dist.name) != own]
    return tuple(value.split(":")[0].strip() for value in values)


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
