"""The search context (settings, study plug-in, space, objectives, storage) and opening the
Optuna study; a resumed search must have the same definition."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from projects.core import device
from projects.core import space as spaces
from projects.core.errors import InputError
from projects.core.study import Study, get_study
from projects.search.factories import build_pruner, build_sampler, open_storage, quiet_optuna, resolve_storage_url
from projects.search.names import NAME_PATTERN, STUDY_ATTR_DEFINITION
from projects.search.settings import Objective, SearchSettings, resolve_objectives

class SearchError(RuntimeError):
    """The search cannot go on (every trial failing, a space with no valid point)."""


@dataclass
class SearchContext:
    settings: SearchSettings
    plugin: Study  # the study being searched (projects.core.study)
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
    progress: Callable[[], Any] | None = None  # refreshes the parent run (set by its owner)

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def prepared(self, config):
        key = tuple(getattr(config, f) for f in self.plugin.data_fields)
        if key not in self.prepared_cache:
            self.prepared_cache[key] = self.plugin.prepare(config)
        return self.prepared_cache[key]


def build_context(settings: SearchSettings) -> SearchContext:
    plugin = get_study(settings.study)
    if settings.n_trials < 1:
        raise InputError("--n-trials", f"must be at least 1, got {settings.n_trials}")
    if settings.epochs < 1:
        raise InputError("--epochs", f"must be at least 1, got {settings.epochs}")
    if settings.n_workers < 1:
        raise InputError("--n-workers", f"must be at least 1, got {settings.n_workers}")
    base = settings.base if settings.base is not None else plugin.config_cls()
    base = base.replace(epochs=settings.epochs)
    device.check_device(base.device)
    objectives = resolve_objectives(settings.objectives, plugin)
    default = spaces.parse_space(plugin.name, plugin.default_space, plugin.config_cls)
    space = spaces.apply_overrides(default, settings.space, plugin.config_cls)
    space = plugin.narrow_space(space, base)
    plugin.check_space(space, base)
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
        "base": {k: v for k, v in base.flat().items() if k not in ("epochs", "progress", "log_model")},
    }
    return SearchContext(settings, plugin, base, space, objectives, name,
                         resolve_storage_url(settings.storage), definition)


def open_study(ctx: SearchContext):
    """Create or load the Optuna study; a resumed study must have the same definition."""
    import optuna

    quiet_optuna()
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
    sampler, ctx.sampler_text = build_sampler(ctx.settings.sampler, len(ctx.objectives), ctx.settings.n_trials, seed,
                                              ctx.space.size())
    ctx.study = optuna.load_study(study_name=ctx.name, storage=storage, sampler=sampler, pruner=pruner)
    return ctx.study


def _difference(key: str, old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return "; ".join(f"{key}.{k}: was {old.get(k)!r}, now {new.get(k)!r}" for k in keys)
    return f"{key}: was {old!r}, now {new!r}"


