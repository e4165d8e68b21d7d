"""One trial: admit the sampled config, train it as an ordinary study run (a child of the
search's parent run), report each epoch to the pruner, and return the objective values."""
from __future__ import annotations

import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

import mlflow
import optuna
from mlflow.tracking import MlflowClient

from projects.core import space as spaces
from projects.core import tracking
from projects.search.admission import Duplicate, Rejected, Surplus, claim, enqueue_unseen, rejection, twin
from projects.search.names import (ATTR_COMPUTE, ATTR_DUPLICATE, ATTR_ERROR, ATTR_EXHAUSTED, ATTR_HOST, ATTR_PID,
                                   ATTR_REJECTED, ATTR_RUN_ID, RUN_KIND_TRIAL, TAG_PARENT_RUN, TAG_RETRY_OF,
                                   TAG_SEARCH_NAME, TAG_SEARCH_PARENT, TAG_TRIAL_NUMBER, TAG_TRIAL_STATE)

if TYPE_CHECKING:
    from projects.search.context import SearchContext


def objective_values(ctx: SearchContext, history: list[dict[str, float]], run_id: str) -> list[float]:
    """Per-epoch objectives at the epoch whose weights the run kept; efficiency ones from the run."""
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
    """The function Optuna calls per trial; failures are recorded on the trial and re-raised."""

    def objective(trial: optuna.Trial):
        trial.set_user_attr(ATTR_HOST, socket.gethostname())
        trial.set_user_attr(ATTR_PID, os.getpid())
        trial.set_user_attr(ATTR_COMPUTE, {"epochs": 0, "cpu_s": 0.0, "wall_s": 0.0})
        try:
            return TrialRun(ctx, trial).run()
        except (optuna.TrialPruned, Surplus, Rejected, Duplicate, KeyboardInterrupt):
            raise
        except BaseException as exc:
            trial.set_user_attr(ATTR_ERROR, f"{type(exc).__name__}: {exc}"[:500])
            print(f"[search {ctx.name}] trial {trial.number} failed:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            raise

    return objective


class TrialRun:
    """One trial from admission to its objective values."""

    def __init__(self, ctx: SearchContext, trial: optuna.Trial):
        self.ctx, self.trial = ctx, trial
        self.history: list[dict[str, float]] = []
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        self.config = None

    def log(self, text: str) -> None:
        print(f"[search {self.ctx.name}] trial {self.trial.number}{text}", file=sys.stderr, flush=True)

    def admit(self):
        """The trial's config, or Surplus / Rejected / Duplicate before any compute is spent."""
        ctx, trial = self.ctx, self.trial
        frozen = claim(ctx, trial)
        values = ctx.space.sample(trial)
        config = spaces.config_for(ctx.base, values)
        reason = rejection(ctx, config)
        if reason:
            trial.set_user_attr(ATTR_REJECTED, reason[:500])
            self.log(f" rejected before training: {reason}")
            raise Rejected(reason)
        other = twin(ctx, trial)
        if other is not None:
            # Samplers re-propose configs of a discrete space (TPE's startup trials are random
            # draws with replacement, and later it keeps exploiting the best cell): training
            # one again spends a trial's compute to learn nothing. The copy ends FAIL with
            # `duplicate_of` (no compute, no run, not counted toward n_trials), and a random
            # config no trial has tried is queued as the next trial: a failed trial tells TPE
            # nothing, so without that it would propose the same cell again.
            trial.set_user_attr(ATTR_DUPLICATE, other)
            fresh = enqueue_unseen(ctx, trial.number)
            if fresh is None:
                trial.set_user_attr(ATTR_EXHAUSTED, True)
            self.log(f" skipped: same config as trial {other}; "
                     + ("queued an untried config next" if fresh else "no untried config found"))
            raise Duplicate(f"same config as trial {other}")
        return frozen, values, config

    def compute(self) -> dict[str, float]:
        return {"epochs": len(self.history), "cpu_s": round(time.process_time() - self.cpu0, 3),
                "wall_s": round(time.perf_counter() - self.wall0, 3)}

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Record compute; report the first objective and prune (single-objective only)."""
        self.history.append(dict(metrics))
        self.trial.set_user_attr(ATTR_COMPUTE, self.compute())
        if self.ctx.multi:
            return  # Optuna cannot report/prune multi-objective trials
        name = self.ctx.objectives[0].metric
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), epoch)
        # After the last epoch nothing is left to save: the trial is evaluated and completes
        # (test metrics, efficiency, model), rather than thrown away fully trained.
        if epoch < self.config.epochs and self.trial.should_prune():
            mlflow.set_tag("pruned_at_epoch", str(epoch))
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {name}={value:.4f}")

    def start_run(self, frozen) -> str:
        """The trial's MLflow run, created by the client with the parent tag: the parent need not
        be this process's active run (workers are separate processes)."""
        ctx, trial = self.ctx, self.trial
        tags = tracking.process_tags() | {
            TAG_SEARCH_NAME: ctx.name, TAG_TRIAL_NUMBER: str(trial.number), TAG_TRIAL_STATE: "RUNNING",
            TAG_PARENT_RUN: ctx.parent_run_id, TAG_SEARCH_PARENT: ctx.parent_run_id, "optuna_study": ctx.name}
        retry_of = frozen.system_attrs.get("failed_trial")
        if retry_of is not None:
            tags[TAG_RETRY_OF] = str(retry_of)
        # Readable in the UI's run list under the parent: trial number, then the cell it trained.
        run_name = f"t{trial.number:03d}-{ctx.plugin.run_name(self.config)}"
        run_id = MlflowClient().create_run(ctx.experiment_id, run_name=run_name, tags=tags).info.run_id
        mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None, log_system_metrics=True)
        trial.set_user_attr(ATTR_RUN_ID, run_id)
        return run_id

    def constraints(self, run_id: str) -> bool:
        """Optuna constraints (excess over each limit); True when the trial is feasible."""
        ctx, feasible = self.ctx, True
        metrics = MlflowClient().get_run(run_id).data.metrics
        for key, limit, metric in (("max_size_mb", ctx.settings.max_size_mb, tracking.M_SIZE_MB),
                                   ("max_latency_ms", ctx.settings.max_latency_ms, tracking.M_LATENCY_P50)):
            if limit:
                excess = float(metrics.get(metric, math.inf)) - float(limit)
                excess = excess if math.isfinite(excess) else 1e9
                self.trial.set_constraint(key, excess)
                feasible = feasible and excess <= 0
        return feasible

    def run(self):
        ctx = self.ctx
        frozen, values, self.config = self.admit()
        prepared = ctx.prepared(self.config)
        run_id = self.start_run(frozen)
        self.log(": " + ", ".join(f"{k}={v}" for k, v in values.items()))
        state, status = "FAIL", "FAILED"
        try:
            ctx.plugin.run(self.config, prepared, run_kind=RUN_KIND_TRIAL, on_epoch=self.on_epoch)
            result = objective_values(ctx, self.history, run_id)
            mlflow.set_tag("feasible", str(self.constraints(run_id)).lower())
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
            self.trial.set_user_attr(ATTR_COMPUTE, self.compute())
            mlflow.set_tag(TAG_TRIAL_STATE, state)
            mlflow.end_run(status)
