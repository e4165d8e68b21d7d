"""What every study's grid does: check every cell and prepare its data before the parent
run starts, one nested child run per cell (a cell that does not fit is marked, not fatal),
and the runs table and the study's paper-vs-ours table logged on the parent.

    plan = plan_grid(study, grid)            # bad input fails here, before any run
    with tracking.study_run(study.experiment, study.grid_run_name(grid)):
        table = run_grid(study, grid, plan)  # the comparison table
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from projects.core import artifacts, device, tracking


@dataclass(frozen=True)
class GridCell:
    name: str  # the child run's name
    keys: Mapping[str, object]  # the cell's settings: the key columns of the runs table
    train: Callable[[], Mapping[str, float]]  # runs inside the child run; returns its metrics


def run_cells(cells: Sequence[GridCell]) -> pd.DataFrame:
    """One child run per cell, in order; a row per cell with its run id, status and metrics.

    MemoryError / RuntimeError (a cell too big for the machine, a model that cannot be built
    at that size) mark the cell FAILED and the grid goes on; anything else stops the grid.
    Either way the child run records the error and ends FAILED, never RUNNING.
    """
    exp_id = mlflow.active_run().info.experiment_id
    rows = []
    for i, cell in enumerate(cells, 1):
        print(f"[grid {i}/{len(cells)}] {cell.name}", file=sys.stderr, flush=True)
        row = dict(cell.keys) | {"status": "FINISHED"}
        try:
            with mlflow.start_run(run_name=cell.name, nested=True, experiment_id=exp_id,
                                  tags=tracking.process_tags(), log_system_metrics=True) as child:
                row["run_id"] = child.info.run_id
                try:
                    row.update(cell.train())
                except Exception as exc:
                    mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
                    raise
        except (MemoryError, RuntimeError) as exc:
            row["status"] = f"FAILED: {type(exc).__name__}: {str(exc)[:200]}"
            print(f"[grid] {cell.name} failed: {exc}", file=sys.stderr)
        rows.append(row)
    return pd.DataFrame(rows)


def log_tables(runs: pd.DataFrame, table: pd.DataFrame) -> None:
    """grid/grid_runs.csv (one row per child) and grid/paper_vs_ours.{csv,md} on the parent, and
    both as MLflow tables (grid/*.json) the UI shows as tables."""
    with tempfile.TemporaryDirectory() as tmp:
        runs.to_csv(Path(tmp) / "grid_runs.csv", index=False)
        table.to_csv(Path(tmp) / "paper_vs_ours.csv", index=False)
        (Path(tmp) / "paper_vs_ours.md").write_text(_markdown(table))
        mlflow.log_artifacts(tmp, "grid")
    artifacts.log_table(table, "grid/paper_vs_ours.json")
    artifacts.log_table(runs, "grid/grid_runs.json")
    print(table.to_string(index=False), file=sys.stderr)


def _markdown(table: pd.DataFrame) -> str:
    try:
        return table.to_markdown(index=False, floatfmt=".3f")
    except ImportError:  # tabulate is optional
        return table.to_string(index=False)


# --- the whole grid of a study -----------------------------------------------------------------
@dataclass
class GridPlan:
    configs: list  # one per child run, in order
    prepared: dict[tuple, Any] = field(default_factory=dict)  # data key -> the study's prepared data

    def data_for(self, study, cfg) -> Any:
        return self.prepared[_data_key(study, cfg)]


def _data_key(study, cfg) -> tuple:
    return tuple(getattr(cfg, name) for name in study.grid_data_fields)


def plan_grid(study, grid) -> GridPlan:
    """Every cell checked and its data prepared (once per data variant) before any run starts."""
    configs = study.grid_configs(grid)
    for cfg in configs:
        device.check_device(cfg.device)
        study.check(cfg)
    plan = GridPlan(configs)
    for cfg in configs:
        key = _data_key(study, cfg)
        if key not in plan.prepared:
            plan.prepared[key] = study.prepare(cfg)
    return plan


def run_grid(study, grid, plan: GridPlan | None = None) -> pd.DataFrame:
    """Inside the active (parent) run: one child per cell; returns the paper-vs-ours table."""
    plan = plan or plan_grid(study, grid)
    first = plan.prepared[_data_key(study, plan.configs[0])] if plan.configs else None
    mlflow.set_tags({tracking.TAG_STUDY: study.name, tracking.TAG_RUN_KIND: tracking.RUN_KIND_GRID_PARENT}
                    | study.grid_tags(grid, first))
    params = {f"grid.{k}": _param(v) for k, v in dataclasses.asdict(grid).items() if k != "base"}
    mlflow.log_params(params | {"grid.n_runs": len(plan.configs)})
    tracking.log_config(grid.base, prefix="base")
    cells = [GridCell(*study.grid_cell(cfg), functools.partial(_train, study, cfg, plan.data_for(study, cfg)))
             for cfg in plan.configs]
    runs = run_cells(cells)
    table = study.comparison_table(runs)
    log_tables(runs, table)
    summarise_parent(study, runs, table)
    return table


def summarise_parent(study, runs: pd.DataFrame, table: pd.DataFrame) -> None:
    """What the children decided, on the parent: as metrics (the parent's chart view compares
    them) and as its description (mlflow.note.content, markdown, shown on the run page)."""
    metric = study.headline.test_metric
    done = runs[(runs["status"] == "FINISHED") & runs.get(metric, pd.Series(dtype=float)).notna()] \
        if metric in runs else runs.iloc[0:0]
    numbers = {"cells_finished": float(len(done)), "cells_failed": float(len(runs) - len(done))}
    # a cell's settings are the runs table's first columns (run_cells puts them before status)
    keys = [c for c in runs.columns[:list(runs.columns).index("status")] if c != "seed"] if "status" in runs else []
    lines = [f"**{study.dashboard.title}: grid of {len(runs)} runs** ({len(done)} finished)."]
    if len(done):
        best = done.loc[done[metric].idxmax()]
        numbers[f"best_{metric}"] = float(best[metric])
        low, high = best.get(tracking.ci_low(metric)), best.get(tracking.ci_high(metric))
        interval = f" [{low:.3f}, {high:.3f}]" if low is not None and pd.notna(low) else ""
        mlflow.set_tags({"best_cell": _cell_label(best, keys), "best_run_id": best["run_id"]})
        lines.append(f"Best {study.headline.label}: **{best[metric]:.3f}**{interval} "
                     f"({_cell_label(best, keys)}, run `{best['run_id']}`).")
        for base in study.headline.baselines:
            if base in done:
                lines.append(f"Baseline {base}: {float(done[base].mean()):.3f}.")
        for label, group in done.groupby(keys, sort=True) if keys else ():
            if len(group) > 1:  # repeated cells: the mean over seeds
                cell = _cell_label(group.iloc[0], keys)
                numbers[f"mean_{metric}/{cell}"] = float(group[metric].mean())
    tracking.log_metrics_finite(numbers)
    summary = study.summary_lines(table)
    if summary:
        lines += ["", "```", *summary, "```"]
    dash = mlflow.get_experiment_by_name(tracking.EXPERIMENTS["dashboard"])  # none until a dashboard is built
    where = (f"[dashboard runs]({tracking.ui_experiment_url(dash.experiment_id, tracking.IN_UI)})" if dash
             else "dashboard runs")
    lines += ["", f"The paper against ours: `grid/paper_vs_ours` (table) in this run's artifacts; the trade-off "
                  f"page `{study.name}.html` among the artifacts of the {where} "
                  "(`mlflow run . -e dashboard --env-manager local` writes them)."]
    mlflow.set_tag("mlflow.note.content", "\n".join(lines)[:5000])


def _cell_label(row: pd.Series, keys: list[str]) -> str:
    return "-".join(str(row[k]) for k in keys if k in row and pd.notna(row[k]))


def _param(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ";".join("/".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in value)
    return str(value)


def _train(study, cfg, prepared) -> dict[str, float]:
    """The cell's held-out metrics plus its efficiency numbers (the tables show both)."""
    result = study.run(cfg, prepared, run_kind=tracking.RUN_KIND_GRID_CHILD)
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.metrics
    efficiency = tracking.EFFICIENCY_METRICS + (tracking.M_PARAMS_KERAS, tracking.M_SIZE_WITH_OPT_MB)
    intervals = [k for k in logged if k.endswith(("_ci95_low", "_ci95_high")) or k == tracking.M_TEST_UNITS]
    return dict(result.metrics) | {key: logged[key] for key in (*efficiency, *intervals) if key in logged}
