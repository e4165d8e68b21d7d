"""Which trials may train: the target not yet reached, not a config already tried (a
re-proposed cell queues an untried one instead), and valid before any compute is spent."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from projects.core.errors import InputError
from projects.search.names import ATTR_COMPUTE, ATTR_SURPLUS

if TYPE_CHECKING:
    from projects.search.context import SearchContext


class Rejected(Exception):
    """The sampled config cannot train (invalid, over the parameter budget)."""


class Surplus(Exception):
    """The study's target is reached or taken by running trials (several workers)."""


class Duplicate(Exception):
    """The sampled config was already trained (or is training)."""


def counts(trials) -> dict[str, int]:
    out = {s.name: 0 for s in TrialState}
    for t in trials:
        out[t.state.name] += 1
    return out


def done_count(by_state: dict[str, int]) -> int:
    return by_state["COMPLETE"] + by_state["PRUNED"]


def epochs_used(trials) -> int:
    return int(sum((t.user_attrs.get(ATTR_COMPUTE) or {}).get("epochs", 0) for t in trials))


def claim(ctx: SearchContext, trial):
    """Refuse a trial the target no longer needs (several workers near the end).

    Counted: finished trials plus trials that started before this one and still run. Every
    worker sees the same storage, so of two workers racing for the last slot the later
    trial (by start time, then number) gives way; it ends FAIL with user attr `surplus`
    and never gets an MLflow run.
    """
    trials = ctx.study.get_trials(deepcopy=False)
    me = next(t for t in trials if t.number == trial.number)
    floor = dt.datetime.min
    my_key = (me.datetime_start or floor, me.number)
    ahead = [t for t in trials if t.state == TrialState.RUNNING and t.number != me.number
             and (t.datetime_start or floor, t.number) < my_key]
    done = done_count(counts(trials))
    if done + len(ahead) >= ctx.settings.n_trials:
        trial.set_user_attr(ATTR_SURPLUS, True)
        raise Surplus(f"target of {ctx.settings.n_trials} reached or taken by running trials")
    if ctx.settings.epoch_budget and epochs_used(trials) >= ctx.settings.epoch_budget:
        trial.set_user_attr(ATTR_SURPLUS, True)
        raise Surplus("epoch budget used up")
    return me


def twin(ctx: SearchContext, trial) -> int | None:
    """The trial that trained (or is training) exactly these params already, if any: a
    complete or pruned one, or a running one with a lower number (of two workers that drew
    the same config at once, the later trial gives way)."""
    params = trial.params
    for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                          TrialState.RUNNING)):
        if t.number == trial.number or t.params != params:
            continue
        if t.state != TrialState.RUNNING or t.number < trial.number:
            return t.number
    return None


def config_key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def enqueue_unseen(ctx: SearchContext, number: int, tries: int = 200) -> dict | None:
    """Queue a random config (drawn from the trial's own distributions, seeded by the search
    seed and the trial number) that no trial has tried, is running or is queued; None when
    `tries` draws found none (the space is exhausted, or nearly)."""
    trials = ctx.study.get_trials(deepcopy=False)
    me = next(t for t in trials if t.number == number)
    seen = {config_key(t.params) for t in trials if t.params}  # tried, running, rejected or a copy
    seen |= {config_key(t.system_attrs.get("fixed_params") or {}) for t in trials if t.state == TrialState.WAITING}
    sampler = optuna.samplers.RandomSampler(seed=(ctx.settings.seed or 0) * 100_003 + number)
    for _ in range(tries):
        params = {name: sampler.sample_independent(ctx.study, me, name, dist) for name, dist in me.distributions.items()}
        if config_key(params) not in seen:
            ctx.study.enqueue_trial(params, user_attrs={"queued_after_duplicate": number})
            return params
    return None


def rejection(ctx: SearchContext, config) -> str:
    """Why a sampled config cannot train ('' when it can), decided before any training."""
    try:
        ctx.plugin.check(config)
    except InputError as exc:
        return str(exc)
    if ctx.settings.max_params:
        try:
            n = ctx.plugin.count_params(config, ctx.prepared(config))
        except InputError as exc:
            return str(exc)
        if n > ctx.settings.max_params:
            return f"{n:,} parameters > budget {ctx.settings.max_params:,}"
    return ""


