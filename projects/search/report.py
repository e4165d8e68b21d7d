"""The end of a search (and its state so far): the parent run's tags and metrics, the
trials table, Optuna's plots as offline HTML, and the one-line summary."""
from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna import visualization as vis
from optuna.trial import TrialState

from projects.core import artifacts, tracking
from projects.search.admission import counts, done_count, epochs_used
from projects.search.factories import safe_url
from projects.search.names import (ATTR_COMPUTE, ATTR_DUPLICATE, ATTR_ERROR, ATTR_HOST, ATTR_PID, ATTR_REJECTED,
                                   ATTR_RUN_ID, ATTR_SURPLUS, TAG_BEST, TAG_PARETO)
from projects.search.recovery import close_dead_trial_runs

if TYPE_CHECKING:
    from projects.search.context import SearchContext

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


def _pareto_tags(ctx: SearchContext, client: MlflowClient, complete, run_of: dict) -> set[int]:
    pid, front = ctx.parent_run_id, ctx.study.best_trials
    pareto = {t.number for t in front}
    client.set_tag(pid, "pareto_trials", ",".join(str(n) for n in sorted(pareto))[:5000])
    client.set_tag(pid, "pareto_run_ids", ",".join(run_of.get(n) or "" for n in sorted(pareto))[:5000])
    client.set_tag(pid, "pareto_size", str(len(pareto)))
    # each objective's best value on the front, as metrics the parent's chart view can plot
    step = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ctx.study.get_trials(deepcopy=False))
    values = {"pareto_size": float(len(pareto))}
    for i, obj in enumerate(ctx.objectives):
        column = [t.values[i] for t in front]
        if column:
            values[f"best_{obj.metric}"] = max(column) if obj.direction == "maximize" else min(column)
    client.log_batch(pid, metrics=_metric_list(values, step))
    for t in sorted(front, key=lambda t: t.number)[:50]:
        values = ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(ctx.objectives, t.values))
        client.set_tag(pid, f"pareto.trial_{t.number:03d}", f"{values}; run {run_of.get(t.number)}; "
                                                               f"{json.dumps(t.params)}"[:5000])
    for t in complete:
        _tag_trial_run(client, run_of.get(t.number), TAG_PARETO, str(t.number in pareto).lower())
    return pareto


def _best_tags(ctx: SearchContext, client: MlflowClient, complete, run_of: dict, summary: SearchSummary):
    try:
        best = ctx.study.best_trial
    except ValueError:
        return None
    pid = ctx.parent_run_id
    summary.best_trial, summary.best_values = best.number, list(best.values)
    summary.best_run_id = run_of.get(best.number)
    client.set_tag(pid, "best_trial", str(best.number))
    client.set_tag(pid, "best_run_id", summary.best_run_id or "")
    client.set_tag(pid, "best_value", f"{best.value:.6g}")
    client.set_tag(pid, "best_params", json.dumps(best.params)[:5000])
    client.log_metric(pid, f"best_{ctx.objectives[0].metric}", best.value,
                      step=summary.n_complete + summary.n_pruned)
    for t in complete:
        _tag_trial_run(client, run_of.get(t.number), TAG_BEST, str(t.number == best.number).lower())
    return best.number


def _tag_trial_run(client: MlflowClient, run_id: str | None, key: str, value: str) -> None:
    """Tag a trial's run where this store has it. A search resumed from a journal that travelled
    (the real-data searches commit theirs) has earlier trials whose runs are in another store:
    the journal keeps their results, and there is no run here to tag."""
    if not run_id:
        return
    try:
        client.set_tag(run_id, key, value)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _summary(ctx: SearchContext, trials) -> tuple[SearchSummary, dict[str, int]]:
    by_state = counts(trials)
    rejected = sum(1 for t in trials if t.user_attrs.get(ATTR_REJECTED))
    surplus = sum(1 for t in trials if t.user_attrs.get(ATTR_SURPLUS))
    duplicates = sum(1 for t in trials if t.user_attrs.get(ATTR_DUPLICATE) is not None)
    failed = by_state["FAIL"] - rejected - surplus - duplicates
    summary = SearchSummary(ctx.name, ctx.parent_run_id, ctx.settings.study, [o.metric for o in ctx.objectives],
                            by_state["COMPLETE"], by_state["PRUNED"], failed, rejected,
                            storage=safe_url(ctx.storage_url), n_duplicate=duplicates)
    summary.total_epochs = epochs_used(trials)
    summary.total_cpu_s = float(sum((t.user_attrs.get(ATTR_COMPUTE) or {}).get("cpu_s", 0.0) for t in trials))
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    numbers = {
        "n_trials_complete": by_state["COMPLETE"], "n_trials_pruned": by_state["PRUNED"],
        "n_trials_failed": failed, "n_trials_rejected": rejected, "n_trials_surplus": surplus,
        "n_trials_duplicate": duplicates, "n_trials_running": by_state["RUNNING"],
        "search_epochs_total": summary.total_epochs, "search_cpu_s_total": summary.total_cpu_s,
        "search_trial_wall_s_total": float(sum((t.user_attrs.get(ATTR_COMPUTE) or {}).get("wall_s", 0.0)
                                               for t in trials)),
        # What the same trials would have cost unpruned (a grid of that size): compare with the total.
        "search_epochs_unpruned": ctx.settings.epochs * len(finished),
    }
    return summary, numbers


def finalize(ctx: SearchContext, final: bool = True) -> SearchSummary:
    """Everything the parent run shows about the search so far (safe to call repeatedly)."""
    client, pid = MlflowClient(), ctx.parent_run_id
    close_dead_trial_runs(ctx)
    trials = ctx.study.get_trials(deepcopy=False)
    summary, numbers = _summary(ctx, trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    run_of = {t.number: t.user_attrs.get(ATTR_RUN_ID) for t in trials}
    pareto: set[int] = set()
    best_number = None
    if ctx.multi:
        pareto = _pareto_tags(ctx, client, complete, run_of)
        summary.pareto_trials = sorted(pareto)
    else:
        best_number = _best_tags(ctx, client, complete, run_of, summary)
    # step = trials done so far: the parent's charts show how the search progressed
    step = summary.n_complete + summary.n_pruned
    client.log_batch(pid, metrics=_metric_list(numbers, step))
    done = done_count(counts(trials)) >= ctx.settings.n_trials
    client.set_tag(pid, "search_state", "complete" if done else "incomplete")
    table = trials_table(ctx, trials, pareto, best_number)
    client.set_tag(pid, "mlflow.note.content", parent_note(ctx, summary, table, done, final))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table.to_csv(tmp / "trials.csv", index=False)
        if ctx.settings.plots and final:
            write_plots(ctx, tmp / "plots")
        (tmp / "summary.txt").write_text(summary.line() + "\n")
        client.log_artifacts(pid, str(tmp), "search")
    # the same rows as an MLflow table: the run page shows it as a table, not a file to download
    artifacts.log_table(table, "search/trials.json", run_id=pid)
    return summary


def parent_note(ctx: SearchContext, summary: SearchSummary, table: pd.DataFrame, done: bool, final: bool) -> str:
    """The parent run's description (markdown on its run page): where the search stands, the
    best trials with links, and what it cost. Rewritten after every trial while it runs."""
    names = [o.metric for o in ctx.objectives]
    state = "ended" if final else "running"
    n_done = summary.n_complete + summary.n_pruned
    lines = [f"**Search `{ctx.name}`** ({ctx.settings.study}; "
             + ", ".join(f"{o.direction} `{o.metric}`" for o in ctx.objectives)
             + f"): {state}, {n_done}/{ctx.settings.n_trials} trials done"
             + (" (target reached)." if done else "."),
             "",
             f"{summary.n_complete} complete, {summary.n_pruned} pruned, {summary.n_failed} failed, "
             f"{summary.n_rejected} rejected, {summary.n_duplicate} duplicates skipped; compute "
             f"{summary.total_epochs} epochs, {summary.total_cpu_s:.0f} CPU s."]
    complete = table[table["state"] == "COMPLETE"] if len(table) else table
    if len(complete):
        if ctx.multi:
            shown, title = complete[complete["pareto_optimal"]], "Pareto-optimal trials"
        else:
            ascending = ctx.objectives[0].direction == "minimize"
            shown, title = complete.sort_values(names[0], ascending=ascending).head(5), "Best trials"
        params = [c for c in table.columns if c.startswith("param_")]
        lines += ["", f"{title} (validation metrics; held-out test numbers are on each trial's run):", "",
                  "| trial | " + " | ".join(names) + " | " + " | ".join(c[6:] for c in params) + " |",
                  "|---" * (1 + len(names) + len(params)) + "|"]
        for _, row in shown.head(20).iterrows():
            run_id = row["mlflow_run_id"]
            trial = (f"[{int(row['number'])}]({tracking.ui_run_url(ctx.experiment_id, run_id)})"
                     if run_id else str(int(row["number"])))
            values = [f"{row[n]:.4g}" if pd.notna(row[n]) else "" for n in names]
            lines.append(f"| {trial} | " + " | ".join(values) + " | "
                         + " | ".join(str(row[c]) for c in params) + " |")
    else:
        lines += ["", "No complete trial yet."]
    lines += ["", "Every trial: `search/trials` (table) in this run's artifacts. Watch it live: "
                  f"`make optuna-dashboard SEARCH_STORAGE='{summary.storage}'`."]
    return "\n".join(lines)[:5000]


def _metric_list(values: dict[str, float], step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if math.isfinite(float(v))]
