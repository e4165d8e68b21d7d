"""Workers: run trials until the study reaches its target or a budget runs out, in this
process or in K worker processes on this machine (each on the shared Optuna storage)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from mlflow.tracking import MlflowClient

from projects.core import runtime, tracking
from projects.search.context import SearchContext, SearchError, build_context, open_study
from projects.search.admission import counts, done_count, epochs_used
from projects.search.names import ATTR_DUPLICATE, ATTR_ERROR, ATTR_EXHAUSTED, ATTR_PID, ATTR_REJECTED, ATTR_SURPLUS, POLL_S
from projects.search.recovery import recover
from projects.search.trial import make_objective

if TYPE_CHECKING:
    from projects.search.settings import SearchSettings


class _Tally:
    """What this worker's trials ended as, and when to give up (in a row: 3 failures, many
    rejected configs, or re-proposed configs with no untried one left)."""

    def __init__(self, ctx: SearchContext):
        self.ctx = ctx
        self.ran = {"complete": 0, "pruned": 0, "failed": 0, "rejected": 0, "surplus": 0, "duplicate": 0}
        self.failures = self.rejected = self.duplicates = 0
        self.max_rejected = max(50, 5 * ctx.settings.n_trials)
        self.max_duplicates = max(30, 3 * ctx.settings.n_trials)

    def add(self, trial) -> bool:
        """Count one finished trial; False when the search should stop (space exhausted)."""
        attrs, name = trial.user_attrs, self.ctx.name
        if trial.state.name in ("COMPLETE", "PRUNED"):
            self.ran["complete" if trial.state.name == "COMPLETE" else "pruned"] += 1
            self.failures = self.rejected = self.duplicates = 0
        elif attrs.get(ATTR_SURPLUS):
            self.ran["surplus"] += 1
        elif attrs.get(ATTR_DUPLICATE) is not None:
            self.ran["duplicate"] += 1
            self.duplicates += 1
            if attrs.get(ATTR_EXHAUSTED) or self.duplicates >= self.max_duplicates:
                print(f"[search {name}] stopping: every config of the space has been tried "
                      f"({self.duplicates} re-proposed in a row, no untried one found)", file=sys.stderr)
                return False
        elif attrs.get(ATTR_REJECTED):
            self.ran["rejected"] += 1
            self.rejected += 1
            if self.rejected >= self.max_rejected:
                raise SearchError(f"{self.rejected} sampled configs in a row were invalid "
                                  f"(last: {attrs[ATTR_REJECTED]}); narrow --space or raise --max-params")
        else:
            self.ran["failed"] += 1
            self.failures += 1
            self.ctx.last_error = attrs.get(ATTR_ERROR, "")
            if self.failures >= 3:
                raise SearchError(f"{self.failures} trials in a row failed; last error: {self.ctx.last_error}")
        return True


def _stop_reason(ctx: SearchContext, trials, deadline: float | None) -> str:
    s = ctx.settings
    if done_count(counts(trials)) >= s.n_trials:
        return "target reached"
    if deadline is not None and time.time() >= deadline:
        return "timeout reached"
    if s.epoch_budget and epochs_used(trials) >= s.epoch_budget:
        return f"epoch budget of {s.epoch_budget} used"
    return ""


def report_progress(ctx: SearchContext) -> None:
    """The parent run's live view (note, counts, best so far, trials table), when this process
    owns it (ctx.progress); a failure to write it never stops the search."""
    if ctx.progress is None:
        return
    try:
        ctx.progress()
    except Exception as exc:  # the tracking server may be briefly away: the next trial retries
        print(f"[search {ctx.name}] progress not written to the parent run: {type(exc).__name__}: {exc}",
              file=sys.stderr)


def work(ctx: SearchContext) -> dict[str, int]:
    """Run trials until the study reaches its target or a budget runs out."""
    objective = make_objective(ctx)
    s = ctx.settings
    deadline = s.deadline if s.deadline else (time.time() + s.timeout if s.timeout else None)
    tally, waited = _Tally(ctx), False
    while True:
        recover(ctx)
        trials = ctx.study.get_trials(deepcopy=False)
        reason = _stop_reason(ctx, trials, deadline)
        if reason:
            if reason != "target reached":
                print(f"[search {ctx.name}] {reason}", file=sys.stderr)
            break
        by_state = counts(trials)
        if done_count(by_state) + by_state["RUNNING"] >= s.n_trials:
            # The target is taken by running trials (other workers); wait for them: a trial
            # that fails or dies frees its slot again.
            if not waited:
                print(f"[search {ctx.name}] waiting for {by_state['RUNNING']} running trial(s)", file=sys.stderr)
                waited = True
            time.sleep(POLL_S)
            continue
        waited = False
        ctx.study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        report_progress(ctx)
        trial = _my_last_trial(ctx)
        if trial is not None and not tally.add(trial):
            break
    return tally.ran


def _my_last_trial(ctx: SearchContext):
    pid = os.getpid()
    mine = [t for t in ctx.study.get_trials(deepcopy=False)
            if t.user_attrs.get(ATTR_PID) == pid and t.state.is_finished()]
    return max(mine, key=lambda t: t.datetime_complete or dt.datetime.min) if mine else None


def _start_workers(ctx: SearchContext, path: str) -> list[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env["MLFLOW_TRACKING_URI"] = runtime.tracking_uri()
    return [subprocess.Popen([sys.executable, "-m", "projects.search", "--worker-settings", path,
                              "--worker-index", str(i), "--parent-run-id", ctx.parent_run_id],
                             env=env, cwd=str(runtime.REPO_ROOT))
            for i in range(ctx.settings.n_workers)]


def _interrupt(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def _wait_reporting(ctx: SearchContext, procs: list[subprocess.Popen]) -> list[int]:
    """Wait for the workers; whenever a trial has finished since the last look, refresh the
    parent run (workers never write it: one writer, no racing updates of its note)."""
    seen = -1
    while any(p.poll() is None for p in procs):
        time.sleep(POLL_S)
        finished = sum(t.state.is_finished() for t in ctx.study.get_trials(deepcopy=False))
        if finished != seen:
            seen = finished
            report_progress(ctx)
    return [p.wait() for p in procs]


def run_workers(ctx: SearchContext) -> None:
    """K worker processes on this machine; each runs `work` on the shared study."""
    s = ctx.settings
    worker = dataclasses.replace(s, name=ctx.name, storage=ctx.storage_url, n_workers=1,
                                 deadline=(time.time() + s.timeout) if s.timeout else None,
                                 torch_threads=max(1, (os.cpu_count() or 1) // s.n_workers))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        fh.write(worker.to_json())
        path = fh.name
    procs: list[subprocess.Popen] = []
    try:
        procs = _start_workers(ctx, path)
        codes = _wait_reporting(ctx, procs)
    except KeyboardInterrupt:
        _interrupt(procs)
        raise
    finally:
        Path(path).unlink(missing_ok=True)
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    if bad:
        message = ", ".join(f"worker {i} exited {c}" for i, c in bad)
        if done_count(counts(ctx.study.get_trials(deepcopy=False))) < s.n_trials:
            raise SearchError(message)
        print(f"[search {ctx.name}] {message} (the study reached its target anyway)", file=sys.stderr)


def run_worker(settings: SearchSettings, worker_index: int, parent_run_id: str) -> dict[str, int]:
    """Entry of a worker process started by `run_workers`."""
    tracking.setup_tracking()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    ctx = build_context(settings)
    ctx.worker_index = worker_index
    open_study(ctx)
    ctx.parent_run_id = parent_run_id
    ctx.experiment_id = MlflowClient().get_run(parent_run_id).info.experiment_id
    return work(ctx)
