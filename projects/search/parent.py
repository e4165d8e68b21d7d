"""The search's parent run in MLflow: one per search name, elected when several launchers
start at once, holding the search's settings as params."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import mlflow
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from projects.core import tracking
from projects.search.factories import safe_url
from projects.search.names import RUN_KIND_LAUNCHER, RUN_KIND_PARENT, TAG_ELECTED, TAG_SEARCH_NAME, TAG_SEARCH_PARENT

if TYPE_CHECKING:
    from projects.search.context import SearchContext


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
            tracking.TAG_STUDY: ctx.settings.study, tracking.TAG_TASK: ctx.plugin.task_of(ctx.base),
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


def log_parent_params(ctx: SearchContext, prepared) -> None:
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
    for key, value in ctx.base.flat().items():
        params[f"base.{key}"] = "" if value is None else value
    existing = client.get_run(ctx.parent_run_id).data.params
    new = {k: str(v) for k, v in params.items() if k not in existing}
    changed = {k: str(v) for k, v in params.items() if k in existing and existing[k] != str(v)}
    if new:
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


