"""The search driver: Optuna proposes configs, each trial is an ordinary training run.

    parent run (one per search name)   params: study, space, sampler, pruner, objectives, budget
      +- child run per trial           the study's own `run(config)`: same params, metrics,
      |                                artifacts, efficiency metrics as any training run,
      |                                plus tags trial_number / trial_state / search_name
      +- at the end                    best trial or Pareto set as tags, trials.csv, Optuna's
                                       plots as offline HTML, compute used (epochs, CPU s)

Storage and resumption: the Optuna study lives in an RDB (SQLite next to the tracking store
by default, PostgreSQL for several machines) or a journal file, under the search name.
`n_trials` is a target - "until the study has N COMPLETE + PRUNED trials" - so re-running a
search resumes it. A trial whose process died is failed and retried: at once when its
process was on this host (pid check), after the heartbeat grace period otherwise (RDB
storages). Workers never start a trial the target does not need (see `_claim`).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from projects.core import runtime, tracking
from projects.core.errors import InputError
from projects.search import spaces

# --- names (search's own; the shared ones come from projects.core.tracking) --------------------
TAG_SEARCH_NAME = tracking.TAG_SEARCH_NAME
TAG_TRIAL_NUMBER = tracking.TAG_TRIAL_NUMBER
TAG_TRIAL_STATE = tracking.TAG_TRIAL_STATE
TAG_PARENT_RUN = tracking.TAG_PARENT_RUN
TAG_ELECTED = "search_parent_elected"
TAG_SEARCH_PARENT = "search_parent_run_id"
TAG_RETRY_OF = "retry_of_trial"
TAG_BEST = tracking.TAG_SEARCH_BEST
TAG_PARETO = tracking.TAG_PARETO
RUN_KIND_PARENT = tracking.RUN_KIND_SEARCH_PARENT
RUN_KIND_TRIAL = tracking.RUN_KIND_TRIAL
RUN_KIND_LAUNCHER = "search_launcher"  # an `mlflow run` launcher that resumed an existing search

ATTR_RUN_ID = "mlflow_run_id"
ATTR_HOST = "host"
ATTR_PID = "pid"
ATTR_COMPUTE = "compute"  # {"epochs": n, "cpu_s": s, "wall_s": s}, updated every epoch
ATTR_REJECTED = "rejected"
ATTR_SURPLUS = "surplus"
ATTR_DUPLICATE = "duplicate_of"  # the number of the trial that already trained these params
ATTR_EXHAUSTED = "space_exhausted"  # a duplicate for which no untried config could be found
ATTR_ERROR = "error"
STUDY_ATTR_DEFINITION = "search_definition"
STUDY_ATTR_PARENT = "mlflow_parent_run_id"

EFFICIENCY_OBJECTIVES = (tracking.M_SIZE_MB, tracking.M_LATENCY_P50, tracking.M_PARAMS, tracking.M_CPU_TOTAL)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
POLL_S = 2.0


# --- the two studies, as the driver sees them ---------------------------------------------
class PathologyAdapter:
    name = "pathology"
    accuracy = "val_jaccard"
    # Fields that change what prepare_data returns (one prepared copy per combination).
    data_fields = ("data", "mpp", "tile_size", "equalization", "augment_flips", "test_count",
                   "test_fraction", "val_fraction", "seed", "embedded_images", "embedded_size")

    @property
    def config_cls(self):
        from projects.pathology.config import PathologyConfig

        return PathologyConfig

    def study(self):
        from projects.pathology import study

        return study

    def check(self, config) -> None:
        self.study().check_config(config)

    def prepare(self, config):
        # prepare_data checks the whole config; tiles depend on the data fields only, so a
        # depth every tile size allows keeps an unusual base depth from blocking the data.
        from projects.pathology.models import MIN_DEPTH

        return self.study().prepare_data(dataclasses.replace(config, arch="unet", depth=MIN_DEPTH))

    def count_params(self, config, prepared) -> int:
        from projects.pathology.models import build_model, count_params

        return count_params(build_model(config.arch, config.filters, config.depth, upsample=config.upsample))

    def check_space(self, space: spaces.Space, base) -> None:
        from projects.pathology.models import build_model  # noqa: F401 (validates imports)
        from projects.pathology.models import min_input_multiple

        arch = space.get("arch")
        for a in (arch.values() if arch is not None else (base.arch,)):
            min_input_multiple(str(a), 3)  # unknown arch / bad smp spec -> InputError now

    def task(self, config) -> str:
        return "tumor"

    def run(self, config, prepared, on_epoch):
        return self.study().run(config, prepared, run_kind=RUN_KIND_TRIAL, on_epoch=on_epoch)


class MammographyAdapter:
    name = "mammography"
    accuracy = "val_f1_macro"
    data_fields = ("data", "task", "image_size", "split", "val_fraction", "seed", "skip_missing",
                   "embedded_size")

    @property
    def config_cls(self):
        from projects.mammography.config import MammographyConfig

        return MammographyConfig

    def study(self):
        from projects.mammography import study

        return study

    def check(self, config) -> None:
        self.study()._check_config(config)

    def prepare(self, config):
        return self.study().prepare_data(config)

    def count_params(self, config, prepared) -> int:
        from projects.core.efficiency import count_params
        from projects.mammography.models import build_classifier

        return count_params(build_classifier(config.arch, len(prepared.class_names)))

    def check_space(self, space: spaces.Space, base) -> None:
        import timm

        arch = space.get("arch")
        for a in (arch.values() if arch is not None else (base.arch,)):
            if not timm.is_model(str(a)):
                raise InputError("--space", f"arch: unknown timm architecture {a!r}")

    def task(self, config) -> str:
        return config.task

    def run(self, config, prepared, on_epoch):
        return self.study().run(config, prepared, run_kind=RUN_KIND_TRIAL, on_epoch=on_epoch)


ADAPTERS = {"pathology": PathologyAdapter(), "mammography": MammographyAdapter()}


def adapter_for(study: str):
    try:
        return ADAPTERS[study]
    except KeyError:
        raise InputError("--study", f"unknown study {study!r}; choose from {', '.join(ADAPTERS)}") from None


# --- settings -----------------------------------------------------------------------------
@dataclass
class SearchSettings:
    study: str = "pathology"
    base: Any = None  # the study's config dataclass (defaults when None)
    name: str = ""  # Optuna study name = search name; empty: <study>-<timestamp>
    n_trials: int = 20  # target: COMPLETE + PRUNED trials in the study
    epochs: int = 5  # per trial
    objectives: Sequence[str] = ("accuracy",)
    pruner: Any = "median"  # spec string (see build_pruner) or an optuna pruner object
    sampler: str = "auto"  # auto | tpe | nsga2 | nsga3 | random | gp
    space: str = ""  # --space overrides of the study's default space
    storage: str = ""  # "" (SQLite beside the tracking store) | RDB URL | journal:<file>
    n_workers: int = 1  # worker processes on this machine
    timeout: float = 0.0  # seconds; no new trial starts after it (0: none)
    epoch_budget: int = 0  # total epochs over all trials of the study (0: none)
    max_size_mb: float = 0.0  # constraint (Optuna): feasible trials only count as best
    max_latency_ms: float = 0.0  # constraint on cpu_latency_ms_p50
    max_params: int = 0  # budget checked BEFORE training: bigger models are rejected
    seed: int | None = None  # sampler seed (offset per worker and per resume)
    heartbeat_s: int = 60  # RDB heartbeat; a silent trial is failed after 2x this
    max_retry: int = 2  # retries of a trial whose process died
    plots: bool = True
    experiment: str = tracking.EXPERIMENTS["search"]
    settle_s: float = 1.0  # wait before electing the parent run (several launchers at once)
    # set by the launcher for its worker processes
    deadline: float | None = None
    torch_threads: int = 0

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["base"] = dataclasses.asdict(self.base) if self.base is not None else None
        if not isinstance(self.pruner, str):
            raise InputError("--pruner", "worker processes need a pruner given as text")
        data["objectives"] = list(self.objectives)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> SearchSettings:
        data = json.loads(text)
        adapter = adapter_for(data["study"])
        base = data.pop("base")
        settings = cls(**data)
        settings.base = adapter.config_cls(**base) if base is not None else None
        return settings


@dataclass(frozen=True)
class Objective:
    metric: str  # a val_* metric of the epoch loop or an efficiency metric of the run
    direction: str  # maximize | minimize
    per_epoch: bool  # val_* (known during training: prunable) vs efficiency (after training)


def resolve_objectives(names: Sequence[str], adapter) -> list[Objective]:
    out: list[Objective] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name in ("accuracy", "acc"):
            name = adapter.accuracy
        if name.startswith("test_"):
            raise InputError("--objectives", f"{name}: selecting on the test set leaks it; use a val_* metric")
        if name.startswith("val_"):
            out.append(Objective(name, "minimize" if "loss" in name else "maximize", True))
        elif name in EFFICIENCY_OBJECTIVES:
            out.append(Objective(name, "minimize", False))
        else:
            raise InputError("--objectives", f"unknown objective {raw!r}; use accuracy (= {adapter.accuracy}), "
                                             f"a val_* metric, or one of {', '.join(EFFICIENCY_OBJECTIVES)}")
    if not out:
        raise InputError("--objectives", "no objective given")
    if not out[0].per_epoch:
        raise InputError("--objectives", "the first objective must be the accuracy (a val_* metric); "
                                         "e.g. accuracy,model_size_mb")
    if len({o.metric for o in out}) != len(out):
        raise InputError("--objectives", f"repeated objective in {','.join(names)}")
    return out


# --- Optuna pieces ------------------------------------------------------------------------
def _quiet_optuna() -> None:
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def _spec(text: str) -> tuple[str, dict[str, str], list[str]]:
    """'median:startup=1,warmup=0' -> ('median', {'startup': '1', 'warmup': '0'}, [])."""
    name, _, rest = str(text).strip().partition(":")
    opts, positional = {}, []
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
            opts[k.strip().lower()] = v.strip()
        else:
            positional.append(part)
    return name.strip().lower(), opts, positional


def build_pruner(spec: Any, epochs: int, n_trials: int, multi_objective: bool):
    """median | percentile:P | sha | hyperband | threshold:lower=X | none, with options
    startup=N (trials before pruning starts), warmup=N (epochs never pruned), min=N
    (min_resource), factor=N (reduction_factor). Returns (pruner, description)."""
    from optuna import pruners

    if not isinstance(spec, str):
        return spec, type(spec).__name__
    name, opts, positional = _spec(spec)
    if multi_objective and name not in ("", "none", "nop", "off", "false"):
        # Trial.report / should_prune are single-objective only in Optuna.
        print(f"[search] pruner {spec!r} ignored: Optuna cannot prune multi-objective studies",
              file=sys.stderr)
        return pruners.NopPruner(), f"none (multi-objective; asked {spec})"

    def num(key: str, default: float, kind=int):
        try:
            return kind(opts.get(key, default))
        except ValueError:
            raise InputError("--pruner", f"{key}={opts[key]!r} is not a number") from None

    startup = num("startup", max(1, min(5, n_trials // 4)))
    warmup = num("warmup", 0)
    try:
        if name in ("median",):
            pruner = pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
        elif name in ("percentile",):
            p = float(positional[0]) if positional else num("percentile", 25.0, float)
            pruner = pruners.PercentilePruner(p, n_startup_trials=startup, n_warmup_steps=warmup)
        elif name in ("sha", "successive_halving", "successivehalving", "asha"):
            pruner = pruners.SuccessiveHalvingPruner(min_resource=num("min", 1), reduction_factor=num("factor", 3))
        elif name in ("hyperband",):
            pruner = pruners.HyperbandPruner(min_resource=num("min", 1), max_resource=max(epochs, 1),
                                             reduction_factor=num("factor", 3))
        elif name in ("threshold",):
            lower = opts.get("lower")
            upper = opts.get("upper")
            pruner = pruners.ThresholdPruner(lower=float(lower) if lower is not None else None,
                                             upper=float(upper) if upper is not None else None,
                                             n_warmup_steps=warmup)
        elif name in ("", "none", "nop", "off", "false"):
            pruner = pruners.NopPruner()
        else:
            raise InputError("--pruner", f"unknown pruner {spec!r}; use median, percentile:P, sha, hyperband, "
                                         "threshold:lower=X or none (options: startup=N,warmup=N,min=N,factor=N)")
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError("--pruner", f"{spec!r}: {exc}") from None
    return pruner, _describe(pruner)


def _describe(obj: Any) -> str:
    keep = {k.lstrip("_"): v for k, v in vars(obj).items()
            if isinstance(v, (int, float, str, bool)) and not k.startswith("__")}
    return f"{type(obj).__name__}({', '.join(f'{k}={v}' for k, v in sorted(keep.items()))})"


def build_sampler(spec: str, n_objectives: int, n_trials: int, seed: int | None):
    from optuna import samplers

    name, opts, _ = _spec(spec or "auto")
    startup = int(opts.get("startup", max(3, min(10, n_trials // 3))))
    if name in ("auto", "tpe", "motpe"):
        # TPE handles one objective and several (MOTPE); it suits budgets of tens of trials,
        # where NSGA-II's generations (population 50 by default) would be mostly random.
        sampler = samplers.TPESampler(n_startup_trials=startup, seed=seed, constant_liar=True)
    elif name in ("nsga2", "nsgaii"):
        pop = int(opts.get("population", max(4, min(50, n_trials // 2))))
        sampler = samplers.NSGAIISampler(population_size=pop, seed=seed)
    elif name in ("nsga3", "nsgaiii"):
        pop = int(opts.get("population", max(4, min(50, n_trials // 2))))
        sampler = samplers.NSGAIIISampler(population_size=pop, seed=seed)
    elif name == "random":
        sampler = samplers.RandomSampler(seed=seed)
    elif name == "gp":
        sampler = samplers.GPSampler(seed=seed, n_startup_trials=startup)
    else:
        raise InputError("--sampler", f"unknown sampler {spec!r}; use auto, tpe, nsga2, nsga3, random or gp")
    detail = f"population={pop}" if name.startswith("nsga") else "" if name == "random" else f"startup={startup}"
    return sampler, f"{type(sampler).__name__}(seed={seed}{', ' + detail if detail else ''})"


def default_storage_url() -> str:
    """SQLite file beside the tracking store (mlflow.db's folder, else MEDIMG_STORE)."""
    uri = runtime.tracking_uri()
    folder = runtime.store_dir()
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).expanduser().resolve().parent
    return f"sqlite:///{folder / 'optuna.db'}"


def _journal_path(spec: str) -> Path | None:
    if spec.startswith("journal:"):
        return Path(spec[len("journal:"):]).expanduser().resolve()
    if "://" not in spec and spec.endswith((".log", ".journal", ".jsonl")):
        return Path(spec).expanduser().resolve()
    return None


def resolve_storage_url(spec: str) -> str:
    spec = (spec or "").strip()
    if not spec:
        return default_storage_url()
    journal = _journal_path(spec)
    if journal is not None:
        return f"journal:{journal}"
    if "://" not in spec:
        raise InputError("--storage", f"{spec!r}: use an RDB URL (sqlite:///file.db, postgresql://user@host/db) "
                                      "or journal:<file>")
    return _postgres_driver(spec)


def _postgres_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the platform installs psycopg2-binary."""
    import importlib.util

    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix) and importlib.util.find_spec("psycopg") is None \
                and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def open_storage(url: str, heartbeat_s: int, max_retry: int):
    """Optuna storage for the URL: RDB with heartbeat + retry of dead trials, or a journal file."""
    from optuna import storages

    _quiet_optuna()
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    try:
        return storages.RDBStorage(
            url, heartbeat_interval=max(1, int(heartbeat_s)), grace_period=max(2, 2 * int(heartbeat_s)),
            heartbeat_stale_trial_callback=RetryDeadTrial(max_retry=max_retry),
            **kwargs)
    except Exception as exc:  # bad URL, unreachable server, missing driver
        raise InputError("--storage", f"cannot open Optuna storage {safe_url(url)}: {type(exc).__name__}: {exc}") from None


def safe_url(url: str) -> str:
    """The storage URL without its password (for params and messages)."""
    if "://" not in url or url.startswith("sqlite"):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


# --- the search context -------------------------------------------------------------------
class SearchError(RuntimeError):
    """The search cannot go on (every trial failing, a space with no valid point)."""


class _Rejected(Exception):
    pass


class _Surplus(Exception):
    pass


class _Duplicate(Exception):
    pass


@dataclass
class SearchContext:
    settings: SearchSettings
    adapter: Any
    base: Any
    space: spaces.Space
    objectives: list[Objective]
    name: str
    storage_url: str
    definition: dict[str, Any]
    study: Any = None
    parent_run_id: str = ""
    experiment_id: str = ""
    pruner_text: str = ""
    sampler_text: str = ""
    worker_index: int = 0
    prepared_cache: dict = field(default_factory=dict)
    last_error: str = ""

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def prepared(self, config):
        key = tuple(getattr(config, f) for f in self.adapter.data_fields)
        if key not in self.prepared_cache:
            self.prepared_cache[key] = self.adapter.prepare(config)
        return self.prepared_cache[key]


def build_context(settings: SearchSettings) -> SearchContext:
    adapter = adapter_for(settings.study)
    if settings.n_trials < 1:
        raise InputError("--n-trials", f"must be at least 1, got {settings.n_trials}")
    if settings.epochs < 1:
        raise InputError("--epochs", f"must be at least 1, got {settings.epochs}")
    if settings.n_workers < 1:
        raise InputError("--n-workers", f"must be at least 1, got {settings.n_workers}")
    base = settings.base if settings.base is not None else adapter.config_cls()
    base = dataclasses.replace(base, epochs=settings.epochs)
    objectives = resolve_objectives(settings.objectives, adapter)
    space = spaces.apply_overrides(spaces.default_space(settings.study), settings.space, adapter.config_cls)
    space = spaces.fit_to_base(space, base)
    adapter.check_space(space, base)
    name = settings.name or f"{settings.study}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not NAME_PATTERN.match(name):
        raise InputError("--name", f"{name!r}: use letters, digits, '.', '_' and '-' (128 at most)")
    definition = {
        "study": settings.study,
        "space": space.text(),
        "objectives": [o.metric for o in objectives],
        "epochs": settings.epochs,
        "constraints": {"max_size_mb": settings.max_size_mb, "max_latency_ms": settings.max_latency_ms,
                        "max_params": settings.max_params},
        # epochs is its own entry; progress and log_model do not change what a trial finds
        "base": {k: v for k, v in dataclasses.asdict(base).items() if k not in ("epochs", "progress", "log_model")},
    }
    return SearchContext(settings, adapter, base, space, objectives, name,
                         resolve_storage_url(settings.storage), definition)


def open_study(ctx: SearchContext):
    """Create or load the Optuna study; a resumed study must have the same definition."""
    import optuna

    _quiet_optuna()
    # Optuna logs every failed trial with a traceback, rejected and surplus ones included;
    # the driver prints its own one-liners (and the traceback of real failures).
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(ctx.storage_url, ctx.settings.heartbeat_s, ctx.settings.max_retry)
    pruner, ctx.pruner_text = build_pruner(ctx.settings.pruner, ctx.settings.epochs, ctx.settings.n_trials, ctx.multi)
    # Probe for an existing study first so the sampler seed can move on with each resume.
    directions = [o.direction for o in ctx.objectives]
    study = optuna.create_study(storage=storage, study_name=ctx.name, directions=directions,
                                load_if_exists=True, pruner=pruner)
    existing = study.user_attrs.get(STUDY_ATTR_DEFINITION)
    if existing is None:
        study.set_user_attr(STUDY_ATTR_DEFINITION, ctx.definition)
        study.set_metric_names([o.metric for o in ctx.objectives])
    else:
        changed = sorted(k for k in set(existing) | set(ctx.definition)
                         if json.dumps(existing.get(k), sort_keys=True) != json.dumps(ctx.definition.get(k), sort_keys=True))
        if changed:
            detail = "; ".join(_difference(k, existing.get(k), ctx.definition.get(k)) for k in changed[:3])
            raise InputError("--name", f"search {ctx.name!r} exists with a different {', '.join(changed)} "
                                       f"({detail}); resume it with the same settings or use a new --name")
    if [d.name.lower() for d in study.directions] != directions:
        raise InputError("--name", f"search {ctx.name!r} exists with other objectives; use a new --name")
    seed = ctx.settings.seed
    if seed is not None:
        # Same seed on a resume or in another worker would replay the same first proposals.
        seed = seed + 7919 * len(study.get_trials(deepcopy=False)) + 104729 * ctx.worker_index
    sampler, ctx.sampler_text = build_sampler(ctx.settings.sampler, len(ctx.objectives), ctx.settings.n_trials, seed)
    ctx.study = optuna.load_study(study_name=ctx.name, storage=storage, sampler=sampler, pruner=pruner)
    return ctx.study


def _difference(key: str, old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return "; ".join(f"{key}.{k}: was {old.get(k)!r}, now {new.get(k)!r}" for k in keys)
    return f"{key}: was {old!r}, now {new!r}"


# --- MLflow parent run --------------------------------------------------------------------
def _parent_candidates(name: str) -> list:
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.{TAG_SEARCH_NAME} = '{name}' and "
                                            f"tags.{tracking.TAG_RUN_KIND} = '{RUN_KIND_PARENT}'")
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def elect_parent(ctx: SearchContext, launcher_run_id: str | None) -> str:
    """One parent run per search, even with several launchers (machines) starting at once.

    An existing elected parent is adopted (resume). Otherwise each launcher creates a
    candidate, waits `settle_s`, and all agree on the earliest candidate (start time, run
    id), which gets the elected tag; the others are deleted (or, for an `mlflow run`
    launcher run, re-tagged as a launcher that points at the parent).
    """
    client = MlflowClient()
    tags = {TAG_SEARCH_NAME: ctx.name, tracking.TAG_RUN_KIND: RUN_KIND_PARENT,
            tracking.TAG_STUDY: ctx.settings.study, tracking.TAG_TASK: ctx.adapter.task(ctx.base),
            "optuna_study": ctx.name, "mlflow.runName": ctx.name}
    elected = [r for r in _parent_candidates(ctx.name) if r.data.tags.get(TAG_ELECTED) == "true"]
    mine = None
    if elected:
        winner = elected[0].info.run_id
    else:
        if launcher_run_id:
            mine = launcher_run_id
            for k, v in tags.items():
                client.set_tag(mine, k, v)
        else:
            exp_id = tracking.ensure_experiment(ctx.settings.experiment)
            mine = client.create_run(exp_id, run_name=ctx.name, tags=tags | tracking.process_tags()).info.run_id
        time.sleep(max(0.0, ctx.settings.settle_s))
        candidates = _parent_candidates(ctx.name)
        elected = [r for r in candidates if r.data.tags.get(TAG_ELECTED) == "true"]
        winner = (elected or candidates)[0].info.run_id if (elected or candidates) else mine
        client.set_tag(winner, TAG_ELECTED, "true")
        if mine != winner and mine != launcher_run_id:
            client.delete_run(mine)
    if launcher_run_id and launcher_run_id != winner:
        client.set_tag(launcher_run_id, tracking.TAG_RUN_KIND, RUN_KIND_LAUNCHER)
        client.set_tag(launcher_run_id, TAG_SEARCH_PARENT, winner)
        client.set_tag(launcher_run_id, TAG_SEARCH_NAME, ctx.name)
    run = client.get_run(winner)
    ctx.parent_run_id = winner
    ctx.experiment_id = run.info.experiment_id
    return winner


def _log_parent_params(ctx: SearchContext, prepared) -> None:
    client = MlflowClient()
    s = ctx.settings
    params = {
        "search.name": ctx.name, "search.study": s.study, "search.space": ctx.space.text(),
        "search.searched": ",".join(ctx.space.searched()),
        "search.objectives": ",".join(o.metric for o in ctx.objectives),
        "search.directions": ",".join(o.direction for o in ctx.objectives),
        "search.sampler": ctx.sampler_text, "search.pruner": ctx.pruner_text,
        "search.n_trials": s.n_trials, "search.epochs_per_trial": s.epochs,
        "search.timeout_s": s.timeout, "search.epoch_budget": s.epoch_budget,
        "search.max_size_mb": s.max_size_mb, "search.max_latency_ms": s.max_latency_ms,
        "search.max_params": s.max_params, "search.n_workers": s.n_workers,
        "search.storage": safe_url(ctx.storage_url), "search.seed": "" if s.seed is None else s.seed,
    }
    for key, value in dataclasses.asdict(ctx.base).items():
        params[f"base.{key}"] = "" if value is None else value
    existing = client.get_run(ctx.parent_run_id).data.params
    new = {k: str(v) for k, v in params.items() if k not in existing}
    changed = {k: str(v) for k, v in params.items() if k in existing and existing[k] != str(v)}
    if new:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in new.items()]
        for i in range(0, len(items), 100):
            client.log_batch(ctx.parent_run_id, params=items[i:i + 100])
    for k, v in changed.items():  # params are immutable: a resume with new budgets says so in tags
        client.set_tag(ctx.parent_run_id, f"resumed_with.{k}", v[:5000])
    extra = {tracking.TAG_GIT_COMMIT: tracking.git_commit(), "optuna_storage": safe_url(ctx.storage_url)}
    if prepared is not None and getattr(prepared, "digest", None):
        extra[tracking.TAG_DATASET_DIGEST] = prepared.digest
    for k, v in extra.items():
        client.set_tag(ctx.parent_run_id, k, v)


# --- dead trials and stale runs -----------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    return tracking._pid_alive(pid)


def recover(ctx: SearchContext) -> list[int]:
    """Fail (and queue a retry of) trials whose process is gone; close their MLflow runs.

    Same host: the trial's pid is checked at once. Other hosts: the RDB heartbeat fails a
    trial that has been silent for the grace period (`fail_stale_trials`). Either way the
    trial is re-queued (WAITING, same params) by `RetryDeadTrial`.
    """
    import optuna
    from optuna.trial import TrialState

    study = ctx.study
    host = socket.gethostname()
    retry = RetryDeadTrial(max_retry=ctx.settings.max_retry)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = int(trial.user_attrs.get(ATTR_PID, 0) or 0)
        if trial.user_attrs.get(ATTR_HOST) != host or pid <= 0 or _pid_alive(pid):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first
        failed.append(trial.number)
        print(f"[search] trial {trial.number} was running in dead process {pid}: failed, queued for retry",
              file=sys.stderr)
        retry(study, next(t for t in study.get_trials(deepcopy=True) if t.number == trial.number))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    _close_dead_trial_runs(ctx)
    return failed


class RetryDeadTrial:
    """Optuna's RetryHeartbeatStaleTrialCallback, minus the dead process's identity.

    The retry is a WAITING copy with the same params; Optuna's callback also copies the user
    attrs, and a copied host/pid would make the retry look dead again in the moment between
    a worker taking it and writing its own pid. So this one leaves out what belongs to the
    dead attempt (host, pid, run id, compute). `failed_trial` / `retry_history` system attrs
    are Optuna's, as in the original.
    """

    PER_ATTEMPT = (ATTR_HOST, ATTR_PID, ATTR_RUN_ID, ATTR_COMPUTE, ATTR_ERROR)

    def __init__(self, max_retry: int | None = 2):
        self.max_retry = max_retry

    def __call__(self, study, trial) -> None:
        import optuna

        kept = {k: v for k, v in trial.system_attrs.items() if not k.startswith("completed_rung_")}  # SHA's
        system_attrs = {"failed_trial": trial.number, "retry_history": [], **kept}
        system_attrs["retry_history"] = list(system_attrs["retry_history"]) + [trial.number]
        if self.max_retry is not None and self.max_retry < len(system_attrs["retry_history"]):
            return
        study.add_trial(optuna.create_trial(
            state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={k: v for k, v in trial.user_attrs.items() if k not in self.PER_ATTEMPT},
            system_attrs=system_attrs))


def _close_dead_trial_runs(ctx: SearchContext) -> list[str]:
    """MLflow runs of FAILED trials still RUNNING (their process died): end them FAILED."""
    from optuna.trial import TrialState

    client = MlflowClient()
    closed = []
    for trial in ctx.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        if not run_id or trial.user_attrs.get(ATTR_SURPLUS):
            continue
        try:
            run = client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            continue
        if run.info.status == "RUNNING" and run.data.tags.get(TAG_TRIAL_NUMBER) == str(trial.number):
            client.set_tag(run_id, TAG_TRIAL_STATE, "FAIL")
            client.set_tag(run_id, "closed_as_stale", "true")
            client.set_terminated(run_id, status="FAILED")
            closed.append(run_id)
        elif run.data.tags.get(TAG_TRIAL_STATE) == "RUNNING" and run.data.tags.get(TAG_TRIAL_NUMBER) == str(trial.number):
            client.set_tag(run_id, TAG_TRIAL_STATE, "FAIL")
    return closed


# --- one trial ----------------------------------------------------------------------------
def _counts(trials) -> dict[str, int]:
    from optuna.trial import TrialState

    out = {s.name: 0 for s in TrialState}
    for t in trials:
        out[t.state.name] += 1
    return out


def _done(counts: dict[str, int]) -> int:
    return counts["COMPLETE"] + counts["PRUNED"]


def _epochs_used(trials) -> int:
    return int(sum((t.user_attrs.get(ATTR_COMPUTE) or {}).get("epochs", 0) for t in trials))


def _claim(ctx: SearchContext, trial):
    """Refuse a trial the target no longer needs (several workers near the end).

    Counted: finished trials plus trials that started before this one and still run. Every
    worker sees the same storage, so of two workers racing for the last slot the later
    trial (by start time, then number) gives way; it ends FAIL with user attr `surplus`
    and never gets an MLflow run.
    """
    from optuna.trial import TrialState

    trials = ctx.study.get_trials(deepcopy=False)
    me = next(t for t in trials if t.number == trial.number)
    floor = dt.datetime.min
    my_key = (me.datetime_start or floor, me.number)
    ahead = [t for t in trials if t.state == TrialState.RUNNING and t.number != me.number
             and (t.datetime_start or floor, t.number) < my_key]
    done = _done(_counts(trials))
    if done + len(ahead) >= ctx.settings.n_trials:
        trial.set_user_attr(ATTR_SURPLUS, True)
        raise _Surplus(f"target of {ctx.settings.n_trials} reached or taken by running trials")
    if ctx.settings.epoch_budget and _epochs_used(trials) >= ctx.settings.epoch_budget:
        trial.set_user_attr(ATTR_SURPLUS, True)
        raise _Surplus("epoch budget used up")
    return me


def _twin(ctx: SearchContext, trial) -> int | None:
    """The trial that trained (or is training) exactly these params already, if any: a
    complete or pruned one, or a running one with a lower number (of two workers that drew
    the same config at once, the later trial gives way)."""
    from optuna.trial import TrialState

    params = trial.params
    for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                          TrialState.RUNNING)):
        if t.number == trial.number or t.params != params:
            continue
        if t.state != TrialState.RUNNING or t.number < trial.number:
            return t.number
    return None


def _config_key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _enqueue_unseen(ctx: SearchContext, number: int, tries: int = 200) -> dict | None:
    """Queue a random config (drawn from the trial's own distributions, seeded by the search
    seed and the trial number) that no trial has tried, is running or is queued; None when
    `tries` draws found none (the space is exhausted, or nearly)."""
    import optuna
    from optuna.trial import TrialState

    trials = ctx.study.get_trials(deepcopy=False)
    me = next(t for t in trials if t.number == number)
    seen = {_config_key(t.params) for t in trials if t.params}  # tried, running, rejected or a copy
    seen |= {_config_key(t.system_attrs.get("fixed_params") or {}) for t in trials if t.state == TrialState.WAITING}
    sampler = optuna.samplers.RandomSampler(seed=(ctx.settings.seed or 0) * 100_003 + number)
    for _ in range(tries):
        params = {name: sampler.sample_independent(ctx.study, me, name, dist) for name, dist in me.distributions.items()}
        if _config_key(params) not in seen:
            ctx.study.enqueue_trial(params, user_attrs={"queued_after_duplicate": number})
            return params
    return None


def _rejection(ctx: SearchContext, config) -> str:
    """Why a sampled config cannot train ('' when it can), decided before any training."""
    try:
        ctx.adapter.check(config)
    except InputError as exc:
        return str(exc)
    if ctx.settings.max_params:
        try:
            n = ctx.adapter.count_params(config, ctx.prepared(config))
        except InputError as exc:
            return str(exc)
        if n > ctx.settings.max_params:
            return f"{n:,} parameters > budget {ctx.settings.max_params:,}"
    return ""


def _objective_values(ctx: SearchContext, history: list[dict[str, float]], run_id: str) -> list[float]:
    metrics = MlflowClient().get_run(run_id).data.metrics
    best_epoch = int(metrics.get("best_epoch", 0) or 0)
    values = []
    for obj in ctx.objectives:
        if obj.per_epoch:
            value = None
            if 1 <= best_epoch <= len(history):  # the epoch whose weights the run keeps
                value = history[best_epoch - 1].get(obj.metric)
            if value is None or not math.isfinite(value):
                finite = [h[obj.metric] for h in history if math.isfinite(h.get(obj.metric, math.nan))]
                value = finite[-1] if finite else None
        else:
            value = metrics.get(obj.metric)
        if value is None or not math.isfinite(float(value)):
            raise ValueError(f"objective {obj.metric} is missing or not finite in run {run_id} "
                             "(no validation split?)")
        values.append(float(value))
    return values


def make_objective(ctx: SearchContext) -> Callable:
    import optuna

    def objective(trial: optuna.Trial):
        trial.set_user_attr(ATTR_HOST, socket.gethostname())
        trial.set_user_attr(ATTR_PID, os.getpid())
        trial.set_user_attr(ATTR_COMPUTE, {"epochs": 0, "cpu_s": 0.0, "wall_s": 0.0})
        try:
            return _objective(trial)
        except (optuna.TrialPruned, _Surplus, _Rejected, _Duplicate, KeyboardInterrupt):
            raise
        except BaseException as exc:
            trial.set_user_attr(ATTR_ERROR, f"{type(exc).__name__}: {exc}"[:500])
            print(f"[search {ctx.name}] trial {trial.number} failed:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            raise

    def _objective(trial: optuna.Trial):
        frozen = _claim(ctx, trial)
        values = ctx.space.sample(trial)
        config = spaces.config_for(ctx.base, values)
        reason = _rejection(ctx, config)
        if reason:
            trial.set_user_attr(ATTR_REJECTED, reason[:500])
            print(f"[search {ctx.name}] trial {trial.number} rejected before training: {reason}", file=sys.stderr)
            raise _Rejected(reason)
        twin = _twin(ctx, trial)
        if twin is not None:
            # Samplers re-propose configs of a discrete space (TPE's startup trials are random
            # draws with replacement, and later it keeps exploiting the best cell): training
            # one again spends a trial's compute to learn nothing. The copy ends FAIL with
            # `duplicate_of` (no compute, no run, not counted toward n_trials), and a random
            # config no trial has tried is queued as the next trial: a failed trial tells TPE
            # nothing, so without that it would propose the same cell again.
            trial.set_user_attr(ATTR_DUPLICATE, twin)
            fresh = _enqueue_unseen(ctx, trial.number)
            if fresh is None:
                trial.set_user_attr(ATTR_EXHAUSTED, True)
            print(f"[search {ctx.name}] trial {trial.number} skipped: same config as trial {twin}; "
                  + ("queued an untried config next" if fresh else "no untried config found"), file=sys.stderr)
            raise _Duplicate(f"same config as trial {twin}")
        prepared = ctx.prepared(config)
        retry_of = frozen.system_attrs.get("failed_trial")
        tags = tracking.process_tags() | {
            TAG_SEARCH_NAME: ctx.name, TAG_TRIAL_NUMBER: str(trial.number), TAG_TRIAL_STATE: "RUNNING",
            TAG_PARENT_RUN: ctx.parent_run_id, TAG_SEARCH_PARENT: ctx.parent_run_id,
            "optuna_study": ctx.name,
        }
        if retry_of is not None:
            tags[TAG_RETRY_OF] = str(retry_of)
        history: list[dict[str, float]] = []
        cpu0, wall0 = time.process_time(), time.perf_counter()

        def compute() -> dict[str, float]:
            return {"epochs": len(history), "cpu_s": round(time.process_time() - cpu0, 3),
                    "wall_s": round(time.perf_counter() - wall0, 3)}

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            history.append(dict(metrics))
            trial.set_user_attr(ATTR_COMPUTE, compute())
            if ctx.multi:
                return  # Optuna cannot report/prune multi-objective trials
            value = metrics.get(ctx.objectives[0].metric)
            if value is None or not math.isfinite(value):
                return
            trial.report(float(value), epoch)
            # After the last epoch nothing is left to save: the trial is evaluated and completes
            # (test metrics, efficiency, model), rather than thrown away fully trained.
            if epoch < config.epochs and trial.should_prune():
                mlflow.set_tag("pruned_at_epoch", str(epoch))
                raise optuna.TrialPruned(f"pruned at epoch {epoch}: {ctx.objectives[0].metric}={value:.4f}")

        run_name = f"{ctx.name}-t{trial.number:03d}"
        state, status = "FAIL", "FAILED"
        # Created by the client with the parent tag: the parent need not be this process's
        # active run (workers are separate processes), and an active run of a caller stays.
        run_id = MlflowClient().create_run(ctx.experiment_id, run_name=run_name, tags=tags).info.run_id
        mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None)
        trial.set_user_attr(ATTR_RUN_ID, run_id)
        print(f"[search {ctx.name}] trial {trial.number}: " + ", ".join(f"{k}={v}" for k, v in values.items()),
              file=sys.stderr, flush=True)
        try:
            ctx.adapter.run(config, prepared, on_epoch)
            result = _objective_values(ctx, history, run_id)
            metrics = MlflowClient().get_run(run_id).data.metrics
            feasible = True
            for key, limit, metric in (("max_size_mb", ctx.settings.max_size_mb, tracking.M_SIZE_MB),
                                       ("max_latency_ms", ctx.settings.max_latency_ms, tracking.M_LATENCY_P50)):
                if limit:
                    excess = float(metrics.get(metric, math.inf)) - float(limit)
                    excess = excess if math.isfinite(excess) else 1e9
                    trial.set_constraint(key, excess)
                    feasible = feasible and excess <= 0
            mlflow.set_tag("feasible", str(feasible).lower())
            tracking.log_metrics_finite({f"objective_{o.metric}": v for o, v in zip(ctx.objectives, result)})
            state, status = "COMPLETE", "FINISHED"
            return result if ctx.multi else result[0]
        except optuna.TrialPruned:
            state, status = "PRUNED", "KILLED"
            raise
        except KeyboardInterrupt:
            state, status = "FAIL", "KILLED"
            raise
        except BaseException as exc:
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
            raise
        finally:
            trial.set_user_attr(ATTR_COMPUTE, compute())
            mlflow.set_tag(TAG_TRIAL_STATE, state)
            mlflow.end_run(status)

    return objective


# --- a worker -----------------------------------------------------------------------------
def work(ctx: SearchContext) -> dict[str, int]:
    """Run trials until the study reaches its target or a budget runs out."""
    objective = make_objective(ctx)
    s = ctx.settings
    deadline = s.deadline if s.deadline else (time.time() + s.timeout if s.timeout else None)
    ran = {"complete": 0, "pruned": 0, "failed": 0, "rejected": 0, "surplus": 0, "duplicate": 0}
    failures_in_row = rejected_in_row = duplicates_in_row = 0
    max_rejected = max(50, 5 * s.n_trials)
    max_duplicates = max(30, 3 * s.n_trials)
    waited = False
    while True:
        recover(ctx)
        trials = ctx.study.get_trials(deepcopy=False)
        counts = _counts(trials)
        if _done(counts) >= s.n_trials:
            break
        if deadline is not None and time.time() >= deadline:
            print(f"[search {ctx.name}] timeout reached", file=sys.stderr)
            break
        if s.epoch_budget and _epochs_used(trials) >= s.epoch_budget:
            print(f"[search {ctx.name}] epoch budget of {s.epoch_budget} used", file=sys.stderr)
            break
        if _done(counts) + counts["RUNNING"] >= s.n_trials:
            # The target is taken by running trials (other workers); wait for them: a trial
            # that fails or dies frees its slot again.
            if not waited:
                print(f"[search {ctx.name}] waiting for {counts['RUNNING']} running trial(s)", file=sys.stderr)
                waited = True
            time.sleep(POLL_S)
            continue
        waited = False
        ctx.study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        trial = _my_last_trial(ctx)
        if trial is None:
            continue
        if trial.state.name in ("COMPLETE", "PRUNED"):
            ran["complete" if trial.state.name == "COMPLETE" else "pruned"] += 1
            failures_in_row = rejected_in_row = duplicates_in_row = 0
        elif trial.user_attrs.get(ATTR_SURPLUS):
            ran["surplus"] += 1
        elif trial.user_attrs.get(ATTR_DUPLICATE) is not None:
            ran["duplicate"] += 1
            duplicates_in_row += 1
            if trial.user_attrs.get(ATTR_EXHAUSTED) or duplicates_in_row >= max_duplicates:
                print(f"[search {ctx.name}] stopping: every config of the space has been tried "
                      f"({duplicates_in_row} re-proposed in a row, no untried one found)", file=sys.stderr)
                break
            continue
        elif trial.user_attrs.get(ATTR_REJECTED):
            ran["rejected"] += 1
            rejected_in_row += 1
            if rejected_in_row >= max_rejected:
                raise SearchError(f"{rejected_in_row} sampled configs in a row were invalid "
                                  f"(last: {trial.user_attrs[ATTR_REJECTED]}); narrow --space or raise --max-params")
        else:
            ran["failed"] += 1
            failures_in_row += 1
            ctx.last_error = trial.user_attrs.get(ATTR_ERROR, "")
            if failures_in_row >= 3:
                raise SearchError(f"{failures_in_row} trials in a row failed; last error: {ctx.last_error}")
    return ran


def _my_last_trial(ctx: SearchContext):
    pid = os.getpid()
    mine = [t for t in ctx.study.get_trials(deepcopy=False)
            if t.user_attrs.get(ATTR_PID) == pid and t.state.is_finished()]
    return max(mine, key=lambda t: t.datetime_complete or dt.datetime.min) if mine else None


# --- the end of a search: tags, table, plots, compute -------------------------------------
@dataclass
class SearchSummary:
    name: str
    parent_run_id: str
    study: str
    objectives: list[str]
    n_complete: int
    n_pruned: int
    n_failed: int
    n_rejected: int
    best_trial: int | None = None
    best_values: list[float] | None = None
    best_run_id: str | None = None
    pareto_trials: list[int] = field(default_factory=list)
    total_epochs: int = 0
    total_cpu_s: float = 0.0
    storage: str = ""
    n_duplicate: int = 0  # re-proposed configs skipped without training

    def line(self) -> str:
        done = f"{self.n_complete} complete, {self.n_pruned} pruned, {self.n_failed} failed, {self.n_rejected} rejected"
        if self.n_duplicate:
            done += f", {self.n_duplicate} duplicates skipped"
        if self.pareto_trials:
            best = f"Pareto trials {self.pareto_trials}"
        elif self.best_trial is not None and self.best_values:
            best = f"best {self.objectives[0]} {self.best_values[0]:.4f} (trial {self.best_trial}, run {self.best_run_id})"
        else:
            best = "no complete feasible trial"
        return (f"search {self.name}: {best}; {done}; compute {self.total_epochs} epochs, "
                f"{self.total_cpu_s:.0f} CPU s; parent run {self.parent_run_id}")


def trials_table(ctx: SearchContext, trials, pareto: set[int], best: int | None):
    import pandas as pd

    rows = []
    for t in trials:
        compute = t.user_attrs.get(ATTR_COMPUTE) or {}
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for i, obj in enumerate(ctx.objectives):
            row[obj.metric] = t.values[i] if t.values is not None and i < len(t.values) else None
        for name in ctx.space.names():
            row[f"param_{name}"] = t.params.get(name)
        row.update({
            "mlflow_run_id": t.user_attrs.get(ATTR_RUN_ID, ""),
            "epochs_run": compute.get("epochs", 0), "cpu_s": compute.get("cpu_s", 0.0),
            "wall_s": compute.get("wall_s", 0.0),
            "pruned_at_epoch": t.last_step if t.state.name == "PRUNED" else None,
            "feasible": all(v <= 0 for v in t.constraints.values()) if t.state.name == "COMPLETE" else None,
            "best": t.number == best, "pareto_optimal": t.number in pareto,
            "retry_of": t.system_attrs.get("failed_trial"),
            "rejected": t.user_attrs.get(ATTR_REJECTED, ""), "surplus": bool(t.user_attrs.get(ATTR_SURPLUS)),
            "duplicate_of": t.user_attrs.get(ATTR_DUPLICATE),
            "error": t.user_attrs.get(ATTR_ERROR, ""),
            "host": t.user_attrs.get(ATTR_HOST, ""), "pid": t.user_attrs.get(ATTR_PID, ""),
            "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete,
        })
        for key, value in t.constraints.items():
            row[f"constraint_{key}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def write_plots(ctx: SearchContext, folder: Path) -> dict[str, str]:
    """Optuna's plots as self-contained HTML (plotly.js inlined: they open offline)."""
    from optuna import visualization as vis
    from optuna.trial import TrialState

    study = ctx.study
    names = [o.metric for o in ctx.objectives]
    first = (lambda t: t.values[0])
    plots: dict[str, Callable[[], Any]] = {}
    if ctx.multi:
        plots["optimization_history"] = lambda: vis.plot_optimization_history(study, target=first, target_name=names[0])
        if len(names) <= 3:
            plots["pareto_front"] = lambda: vis.plot_pareto_front(study, target_names=names)
        plots["param_importances"] = lambda: vis.plot_param_importances(study, target=first, target_name=names[0])
    else:
        plots["optimization_history"] = lambda: vis.plot_optimization_history(study, target_name=names[0])
        plots["param_importances"] = lambda: vis.plot_param_importances(study, target_name=names[0])
        plots["intermediate_values"] = lambda: vis.plot_intermediate_values(study)
    folder.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for name, make in plots.items():
        if name == "param_importances":
            varied = [p for p in ctx.space.searched() if len({t.params.get(p) for t in complete}) > 1]
            if len(complete) < 2 or not varied:
                skipped[name] = f"needs 2+ complete trials with varied parameters ({len(complete)} complete)"
                continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = make()
            fig.write_html(str(folder / f"{name}.html"), include_plotlyjs=True, full_html=True)
        except Exception as exc:  # a plot must never fail the search
            skipped[name] = f"{type(exc).__name__}: {exc}"
    if skipped:
        (folder / "skipped.txt").write_text("".join(f"{k}: {v}\n" for k, v in skipped.items()))
    return skipped


def finalize(ctx: SearchContext, final: bool = True) -> SearchSummary:
    """Everything the parent run shows about the search so far (safe to call repeatedly)."""
    from optuna.trial import TrialState

    client = MlflowClient()
    study = ctx.study
    _close_dead_trial_runs(ctx)
    trials = study.get_trials(deepcopy=False)
    counts = _counts(trials)
    rejected = sum(1 for t in trials if t.user_attrs.get(ATTR_REJECTED))
    surplus = sum(1 for t in trials if t.user_attrs.get(ATTR_SURPLUS))
    duplicates = sum(1 for t in trials if t.user_attrs.get(ATTR_DUPLICATE) is not None)
    failed = counts["FAIL"] - rejected - surplus - duplicates
    summary = SearchSummary(ctx.name, ctx.parent_run_id, ctx.settings.study, [o.metric for o in ctx.objectives],
                            counts["COMPLETE"], counts["PRUNED"], failed, rejected, storage=safe_url(ctx.storage_url),
                            n_duplicate=duplicates)
    pid = ctx.parent_run_id
    pareto: set[int] = set()
    best_number = None
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    run_of = {t.number: t.user_attrs.get(ATTR_RUN_ID) for t in trials}
    if ctx.multi:
        front = study.best_trials
        pareto = {t.number for t in front}
        summary.pareto_trials = sorted(pareto)
        client.set_tag(pid, "pareto_trials", ",".join(str(n) for n in sorted(pareto))[:5000])
        client.set_tag(pid, "pareto_run_ids", ",".join(run_of.get(n) or "" for n in sorted(pareto))[:5000])
        client.set_tag(pid, "pareto_size", str(len(pareto)))
        for t in sorted(front, key=lambda t: t.number)[:50]:
            values = ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(ctx.objectives, t.values))
            client.set_tag(pid, f"pareto.trial_{t.number:03d}", f"{values}; run {run_of.get(t.number)}; "
                                                                   f"{json.dumps(t.params)}"[:5000])
        for t in complete:
            if run_of.get(t.number):
                client.set_tag(run_of[t.number], TAG_PARETO, str(t.number in pareto).lower())
    else:
        try:
            best = study.best_trial
        except ValueError:
            best = None
        if best is not None:
            best_number = best.number
            summary.best_trial, summary.best_values = best.number, list(best.values)
            summary.best_run_id = run_of.get(best.number)
            client.set_tag(pid, "best_trial", str(best.number))
            client.set_tag(pid, "best_run_id", summary.best_run_id or "")
            client.set_tag(pid, "best_value", f"{best.value:.6g}")
            client.set_tag(pid, "best_params", json.dumps(best.params)[:5000])
            client.log_metric(pid, f"best_{ctx.objectives[0].metric}", best.value)
            for t in complete:
                if run_of.get(t.number):
                    client.set_tag(run_of[t.number], TAG_BEST, str(t.number == best.number).lower())
    summary.total_epochs = _epochs_used(trials)
    summary.total_cpu_s = float(sum((t.user_attrs.get(ATTR_COMPUTE) or {}).get("cpu_s", 0.0) for t in trials))
    wall = float(sum((t.user_attrs.get(ATTR_COMPUTE) or {}).get("wall_s", 0.0) for t in trials))
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    client.log_batch(pid, metrics=[m for m in _metric_list({
        "n_trials_complete": counts["COMPLETE"], "n_trials_pruned": counts["PRUNED"],
        "n_trials_failed": failed, "n_trials_rejected": rejected, "n_trials_surplus": surplus,
        "n_trials_duplicate": duplicates,
        "n_trials_running": counts["RUNNING"],
        "search_epochs_total": summary.total_epochs, "search_cpu_s_total": summary.total_cpu_s,
        "search_trial_wall_s_total": wall,
        # What the same trials would have cost unpruned (a grid of that size): compare with the total.
        "search_epochs_unpruned": ctx.settings.epochs * len(finished),
    })])
    client.set_tag(pid, "search_state", "complete" if _done(counts) >= ctx.settings.n_trials else "incomplete")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = trials_table(ctx, trials, pareto, best_number)
        table.to_csv(tmp / "trials.csv", index=False)
        if ctx.settings.plots and final:
            write_plots(ctx, tmp / "plots")
        (tmp / "summary.txt").write_text(summary.line() + "\n")
        client.log_artifacts(pid, str(tmp), "search")
    return summary


def _metric_list(values: dict[str, float]):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in values.items() if math.isfinite(float(v))]


# --- the top level ------------------------------------------------------------------------
def _warm_data(ctx: SearchContext):
    """Prepare (and cache on disk) every data variant the space can ask for, once, before
    workers start; returns the base config's prepared data (its digest tags the parent)."""
    combos = spaces.categorical_values(ctx.space, ctx.adapter.data_fields, ctx.base) or [{}]
    base_prepared = None
    for combo in combos:
        prepared = ctx.prepared(spaces.config_for(ctx.base, combo))
        base_prepared = base_prepared or prepared
    return base_prepared


def run_search(settings: SearchSettings, launcher_run_id: str | None = None) -> SearchSummary:
    """A whole search from this machine: study, parent run, K workers, the end summary."""
    tracking.setup_tracking()
    ctx = build_context(settings)
    open_study(ctx)
    prepared = _warm_data(ctx)  # bad data fails here, before a parent run exists
    elect_parent(ctx, launcher_run_id)
    client = MlflowClient()
    ctx.study.set_user_attr(STUDY_ATTR_PARENT, ctx.parent_run_id)
    experiment = client.get_experiment(ctx.experiment_id).name
    stale = tracking.close_stale_runs(experiment, filter_string=f"tags.{TAG_SEARCH_NAME} = '{ctx.name}'")
    for run_id in stale:
        if run_id != ctx.parent_run_id:
            client.set_tag(run_id, TAG_TRIAL_STATE, "FAIL")
    if stale:
        print(f"[search {ctx.name}] closed {len(stale)} run(s) of dead processes as FAILED", file=sys.stderr)
    client.update_run(ctx.parent_run_id, status="RUNNING")
    for k, v in tracking.process_tags().items():
        client.set_tag(ctx.parent_run_id, k, v)
    _log_parent_params(ctx, prepared)
    done = _done(_counts(ctx.study.get_trials(deepcopy=False)))
    print(f"[search {ctx.name}] {settings.study}: {done}/{settings.n_trials} trials done; parent run "
          f"{ctx.parent_run_id}; storage {safe_url(ctx.storage_url)}", file=sys.stderr, flush=True)
    status = "FAILED"
    try:
        if settings.n_workers == 1:
            work(ctx)
        else:
            _run_workers(ctx)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException as exc:
        client.set_tag(ctx.parent_run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        raise
    finally:
        try:
            summary = finalize(ctx, final=True)
        finally:
            client.set_terminated(ctx.parent_run_id, status=status)
    return summary


def _run_workers(ctx: SearchContext) -> None:
    """K worker processes on this machine; each runs `work` on the shared study."""
    s = ctx.settings
    worker = dataclasses.replace(s, name=ctx.name, storage=ctx.storage_url, n_workers=1,
                                 deadline=(time.time() + s.timeout) if s.timeout else None,
                                 torch_threads=max(1, (os.cpu_count() or 1) // s.n_workers))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env["MLFLOW_TRACKING_URI"] = runtime.tracking_uri()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        fh.write(worker.to_json())
        path = fh.name
    procs = []
    try:
        for i in range(s.n_workers):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "projects.search", "--worker-settings", path,
                 "--worker-index", str(i), "--parent-run-id", ctx.parent_run_id],
                env=env, cwd=str(runtime.REPO_ROOT)))
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    finally:
        Path(path).unlink(missing_ok=True)
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    if bad:
        counts = _counts(ctx.study.get_trials(deepcopy=False))
        message = ", ".join(f"worker {i} exited {c}" for i, c in bad)
        if _done(counts) < s.n_trials:
            raise SearchError(message)
        print(f"[search {ctx.name}] {message} (the study reached its target anyway)", file=sys.stderr)


def run_worker(settings: SearchSettings, worker_index: int, parent_run_id: str) -> dict[str, int]:
    """Entry of a worker process started by `_run_workers`."""
    tracking.setup_tracking()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    ctx = build_context(settings)
    ctx.worker_index = worker_index
    open_study(ctx)
    ctx.parent_run_id = parent_run_id
    ctx.experiment_id = MlflowClient().get_run(parent_run_id).info.experiment_id
    return work(ctx)


def main_job_search(base, n_trials: int, epochs: int,
                    space: str = "arch=unet|elunet,depth=3:5,filters=4:16") -> str:
    """The main job's search stage: a short pathology search on the grid's base config.

    Small archs only (the quick profile must stay within minutes), single worker, median
    pruning; returns a one-line summary (the main run stores it as a tag).
    """
    settings = SearchSettings(study="pathology", base=base, name=f"main-search-{time.strftime('%Y%m%d-%H%M%S')}",
                              n_trials=int(n_trials), epochs=int(epochs), objectives=("accuracy",),
                              pruner="median", space=space, n_workers=1, seed=0)
    return run_search(settings).line()
