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
storages). Workers never start a trial the target does not need (admission.claim).

The package, one module per job: settings (what a search is), factories (pruner, sampler,
storage), context (the study opened), parent (the MLflow parent run), recovery (dead
trials), admission (which trial may train), trial (one trial), workers, report (the end).
"""
from __future__ import annotations

import sys
import time

from mlflow.tracking import MlflowClient

from projects.core import space as spaces
from projects.core import tracking
from projects.core.specs.pipeline import SearchPlan
from projects.search.admission import counts, done_count
from projects.search.context import SearchContext, SearchError, build_context, open_study  # noqa: F401 (API)
from projects.search.factories import safe_url
from projects.search.names import STUDY_ATTR_PARENT, TAG_SEARCH_NAME, TAG_TRIAL_STATE
from projects.search.parent import elect_parent, log_parent_params
from projects.search.report import SearchSummary, finalize
from projects.search.settings import SearchSettings
from projects.search import warm
from projects.search.workers import run_workers, work


def _warm_data(ctx: SearchContext):
    """Prepare (and cache on disk) every data variant the space can ask for, once, before
    workers start; returns the base config's prepared data (its digest tags the parent)."""
    combos = spaces.categorical_values(ctx.space, ctx.plugin.data_fields, ctx.base) or [{}]
    base_prepared = None
    for combo in combos:
        prepared = ctx.prepared(spaces.config_for(ctx.base, combo))
        base_prepared = base_prepared or prepared
    return base_prepared


def _open_parent(ctx: SearchContext, launcher_run_id: str | None, prepared) -> None:
    """Elect (or adopt) the parent run, close runs of dead processes, mark it RUNNING."""
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
    log_parent_params(ctx, prepared)


def _warm_start(ctx: SearchContext) -> None:
    """Finished runs of the store as trials, then the named configs queued (projects.search.warm)."""
    seeded = warm.seed_from_runs(ctx) if ctx.settings.warm_start else 0
    queued = warm.enqueue_named(ctx, ctx.settings.enqueue)
    if seeded or queued:
        print(f"[search {ctx.name}] warm start: {seeded} finished run(s) added as trials (not retrained), "
              f"{queued} named config(s) queued first", file=sys.stderr, flush=True)
    client = MlflowClient()
    client.set_tag(ctx.parent_run_id, "warm_started_trials", str(sum(
        1 for t in ctx.study.get_trials(deepcopy=False) if t.user_attrs.get(warm.ATTR_WARM))))


def run_search(settings: SearchSettings, launcher_run_id: str | None = None) -> SearchSummary:
    """A whole search from this machine: study, parent run, K workers, the end summary."""
    tracking.setup_tracking()
    ctx = build_context(settings)
    open_study(ctx)
    prepared = _warm_data(ctx)  # bad data fails here, before a parent run exists
    _open_parent(ctx, launcher_run_id, prepared)
    _warm_start(ctx)
    done = done_count(counts(ctx.study.get_trials(deepcopy=False)))
    print(f"[search {ctx.name}] {settings.study}: {done}/{settings.n_trials} trials done; parent run "
          f"{ctx.parent_run_id}; storage {safe_url(ctx.storage_url)}", file=sys.stderr, flush=True)
    ctx.progress = lambda: finalize(ctx, final=False)
    client, status = MlflowClient(), "FAILED"
    try:
        if settings.n_workers == 1:
            work(ctx)
        else:
            run_workers(ctx)
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


def main_job_search(study: str, base, plan: SearchPlan) -> str:
    """The main job's search stage of a study: its profile's plan on the grid's base config,
    single worker, seeded; returns a one-line summary (the main run stores it as a tag)."""
    settings = SearchSettings(study=study, base=base, name=f"main-search-{time.strftime('%Y%m%d-%H%M%S')}",
                              n_trials=int(plan.n_trials), epochs=int(plan.epochs), objectives=("accuracy",),
                              pruner=plan.pruner, space=plan.space, n_workers=1, seed=0)
    return run_search(settings).line()
