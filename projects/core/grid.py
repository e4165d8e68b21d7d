"""What every study's grid does around its cells: one nested child run per cell, a cell
that does not fit marked rather than fatal, and the tables logged on the parent.

    cells = [GridCell(name, {"arch": ..., "seed": ...}, lambda: study.run(cfg).metrics), ...]
    runs = run_cells(cells)               # inside the active parent run
    log_tables(runs, comparison_table(runs))
"""
from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from projects.core import tracking


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
                                  tags=tracking.process_tags()) as child:
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
    """grid/grid_runs.csv (one row per child) and grid/paper_vs_ours.{csv,md} on the parent."""
    with tempfile.TemporaryDirectory() as tmp:
        runs.to_csv(Path(tmp) / "grid_runs.csv", index=False)
        table.to_csv(Path(tmp) / "paper_vs_ours.csv", index=False)
        (Path(tmp) / "paper_vs_ours.md").write_text(_markdown(table))
        mlflow.log_artifacts(tmp, "grid")
    print(table.to_string(index=False), file=sys.stderr)


def _markdown(table: pd.DataFrame) -> str:
    try:
        return table.to_markdown(index=False, floatfmt=".3f")
    except ImportError:  # tabulate is optional
        return table.to_string(index=False)
