"""Trials whose process died: failed, re-queued with the same params, their runs closed.

Same host: the trial's pid is checked at once. Other hosts: the RDB heartbeat fails a trial
silent for its grace period. Either way `RetryDeadTrial` queues a retry.
"""
from __future__ import annotations

import socket
import sys
import warnings
from typing import TYPE_CHECKING

import mlflow
from mlflow.tracking import MlflowClient

from projects.core.tracking import pid_alive
from projects.search.names import (ATTR_COMPUTE, ATTR_ERROR, ATTR_HOST, ATTR_PID, ATTR_RUN_ID, ATTR_SURPLUS,
                                   TAG_TRIAL_NUMBER, TAG_TRIAL_STATE)

if TYPE_CHECKING:
    from projects.search.context import SearchContext


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
        if trial.user_attrs.get(ATTR_HOST) != host or pid <= 0 or pid_alive(pid):
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
    close_dead_trial_runs(ctx)
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


def close_dead_trial_runs(ctx: SearchContext) -> list[str]:
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


