"""Warm starts: what the store already knows goes into a search before it trains anything.

- `seed_from_runs`: every FINISHED run of the study (grid cells, single runs, other searches'
  trials) whose config is one the search could propose - its searched fields inside the space,
  every other training setting equal to the search's (data, epochs, tile size ...) - is added
  to the Optuna study as a COMPLETE trial with the objective values it logged (Optuna's
  `add_trial`). The sampler learns from it and the search never retrains it (a proposal of
  the same config is skipped as a duplicate; brute force never proposes it).
- `enqueue_named`: configs tried first (`enqueue_trial`): the study's published cells
  (`paper`) or an explicit list, each once.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from projects.core import space as spaces
from projects.core import store_read, tracking
from projects.core.errors import InputError
from projects.search.admission import config_key
from projects.search.names import ATTR_RUN_ID

if TYPE_CHECKING:
    from projects.search.context import SearchContext

ATTR_WARM = "warm_start_run"
# Settings that do not change what a trained config scores (bookkeeping, timing, placement).
NOT_COMPARED = {"seed", "progress", "log_model", "onnx_timing", "cpu_predict_n", "device", "precision",
                "channels_last", "workers", "holdout_fraction"}


def distributions(space: spaces.Space) -> dict[str, optuna.distributions.BaseDistribution]:
    """The space's Optuna distributions (what `space.sample` asks a trial for)."""
    probe = optuna.create_study().ask()
    space.sample(probe)
    return dict(probe.distributions)


def _values(ctx: SearchContext, params: dict[str, str], dists: dict) -> dict[str, Any] | None:
    """The run's values of the searched fields if its config is one this search could train."""
    fixed = {p.name: p.values()[0] for p in ctx.space.params if isinstance(p, spaces.Fixed)}
    trained = spaces.config_for(ctx.base, fixed)  # what every trial of this search trains with
    base = {k: v for k, v in trained.flat().items() if k not in NOT_COMPARED and k not in dists}
    for key, value in base.items():
        if str(params.get(key)).lower() != str(value).lower():
            return None
    out = {}
    for name, dist in dists.items():
        if name not in params:
            return None
        try:
            value = spaces.parse_assignments(f"{name}={params[name]}", ctx.plugin.config_cls)[name]
            if not _inside(dist, value):
                return None
        except (InputError, ValueError, KeyError):
            return None
        out[name] = value
    return out


def _inside(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether a trial could have drawn `value` from `dist`. Optuna's membership test is
    private (its samplers' `_contains`), so the same rule is written here from the public
    `to_internal_repr` (which refuses a choice not offered) and the bounds and step."""
    D = optuna.distributions
    try:
        internal = dist.to_internal_repr(value)
    except (ValueError, TypeError):
        return False
    if isinstance(dist, D.CategoricalDistribution):
        return True
    if not isinstance(dist, (D.FloatDistribution, D.IntDistribution)) or math.isnan(internal):
        return False
    if not dist.low <= internal <= dist.high:
        return False
    if dist.step is None:
        return True
    steps = (internal - dist.low) / dist.step
    return abs(steps - round(steps)) < 1e-8


def _objectives(ctx: SearchContext, run) -> list[float] | None:
    """The objective values the run would have returned as a trial (the kept epoch's)."""
    client, m = MlflowClient(), run.data.metrics
    best = int(m.get("best_epoch", 0) or 0)
    # Epochs are logged as steps 1..epochs_run and the run's latest value is its highest step's:
    # when the kept epoch is the last one that value is the answer, and no history request (one
    # per run: 33 of 99 s at 1,000 runs) is needed.
    kept_last = best > 0 and best == int(m.get("epochs_run", -1) or -1)
    values = []
    for obj in ctx.objectives:
        if obj.per_epoch and kept_last and obj.metric in m:
            value = m[obj.metric]
        elif obj.per_epoch:
            history = {h.step: h.value for h in client.get_metric_history(run.info.run_id, obj.metric)}
            value = history.get(best, history[max(history)] if history else None)
        else:
            value = m.get(obj.metric)
        if value is None or not math.isfinite(value):
            return None
        values.append(float(value))
    return values


def seed_from_runs(ctx: SearchContext) -> int:
    """Add the store's matching finished runs as COMPLETE trials; returns how many were added."""
    client, dists = MlflowClient(), distributions(ctx.space)
    experiments = [e.experiment_id for e in (client.get_experiment_by_name(n) for n in
                                             {ctx.plugin.experiment, tracking.EXPERIMENTS["search"]}) if e]
    if not experiments:
        return 0
    known = {config_key(t.params) for t in ctx.study.get_trials(deepcopy=False) if t.params}
    known_runs = {t.user_attrs.get(ATTR_RUN_ID) for t in ctx.study.get_trials(deepcopy=False)}
    added = 0
    query = f"attributes.status = 'FINISHED' and tags.{tracking.TAG_STUDY} = '{ctx.plugin.name}'"
    runs = store_read.read_runs(client.tracking_uri, experiments, status="FINISHED",
                                tags={tracking.TAG_STUDY: ctx.plugin.name})
    for run in runs if runs is not None else _all_runs(client, experiments, query):
        if run.info.run_id in known_runs or run.data.tags.get(tracking.TAG_RUN_KIND) == "search_parent":
            continue
        values = _values(ctx, run.data.params, dists)
        objectives = _objectives(ctx, run) if values is not None else None
        if values is None or objectives is None or config_key(values) in known:
            continue
        ctx.study.add_trial(optuna.trial.create_trial(
            params=values, distributions=dists, values=objectives, state=TrialState.COMPLETE,
            user_attrs={ATTR_RUN_ID: run.info.run_id, ATTR_WARM: run.info.run_id}))
        known.add(config_key(values))
        added += 1
    return added


def _all_runs(client: MlflowClient, experiments: list[str], query: str):
    """Every matching run, page by page: one search capped at max_results (5,000 here once)
    silently dropped the oldest runs of a store that had more."""
    token = None
    while True:
        page = client.search_runs(experiments, query, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


@runtime_checkable
class PaperCellsStudy(Protocol):
    """A study whose paper trained named configs: `--enqueue paper` tries them first."""

    def paper_cells(self) -> Sequence[Mapping[str, Any]]:
        """The configs the paper trained, settings by name."""


def enqueue_named(ctx: SearchContext, spec: str) -> int:
    """Queue named configs first (`paper` or 'a=1,b=2;a=3,b=4'); returns how many were queued."""
    if not spec:
        return 0
    if spec.strip() == "paper":
        cells = [dict(c) for c in ctx.plugin.paper_cells()] if isinstance(ctx.plugin, PaperCellsStudy) else []
    else:
        cells = [spaces.parse_assignments(part, ctx.plugin.config_cls) for part in spec.split(";") if part.strip()]
    dists = distributions(ctx.space)
    seen = {config_key(t.params) for t in ctx.study.get_trials(deepcopy=False) if t.params}
    seen |= {config_key(t.system_attrs.get("fixed_params") or {}) for t in ctx.study.get_trials(deepcopy=False)
             if t.state == TrialState.WAITING}
    queued = 0
    for cell in cells:
        params = {name: cell.get(name, getattr(ctx.base, name)) for name in dists}
        outside = [n for n, d in dists.items() if not _inside(d, params[n])]
        if outside:
            print(f"[search {ctx.name}] not queued (outside the space: {', '.join(outside)}): {cell}", file=sys.stderr)
            continue
        if config_key(params) not in seen:
            ctx.study.enqueue_trial(params, user_attrs={"queued": "named"})
            seen.add(config_key(params))
            queued += 1
    return queued
