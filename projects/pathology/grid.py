"""Table V as child runs of one parent: arch x initial filters x depth (defaults: exactly
the paper's 13 trained cells), with a paper-vs-ours table (params, Jaccard, CPU time, size)
on the parent. Cells that do not fit in memory or time are marked, not fatal."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import mlflow
import pandas as pd

from projects.core import tracking
from projects.core.grid import GridCell, log_tables, run_cells
from projects.pathology import study
from projects.pathology.config import PathologyConfig
from projects.pathology.paper import TABLE_V


@dataclass
class PathologyGridConfig:
    base: PathologyConfig = field(default_factory=PathologyConfig)
    # (arch, filters, depth) cells; empty means Table V's 13 trained cells
    cells: list[tuple[str, int, int]] = field(default_factory=list)
    repeats: int = 1

    def resolved_cells(self) -> list[tuple[str, int, int]]:
        return self.cells or [(row.arch, row.filters, row.depth) for row in TABLE_V]


def cells_from_lists(archs: list[str], filters: list[int], depths: list[int]) -> list[tuple[str, int, int]]:
    return [(a, n, d) for a in archs for n in filters for d in depths]


def run_grid(grid: PathologyGridConfig) -> pd.DataFrame:
    cells = grid.resolved_cells()
    configs = [dataclasses.replace(grid.base, arch=a, filters=n, depth=d, seed=grid.base.seed + r)
               for a, n, d in cells for r in range(grid.repeats)]
    for cfg in configs:
        study.check_config(cfg)  # an impossible cell fails before anything trains
    prepared = study.prepare_data(grid.base)  # one split and one tile cache for every cell
    mlflow.set_tags({tracking.TAG_STUDY: study.STUDY, tracking.TAG_TASK: study.TASK,
                     tracking.TAG_RUN_KIND: tracking.RUN_KIND_GRID_PARENT, tracking.TAG_DATASET_DIGEST: prepared.digest})
    mlflow.log_params({"grid.cells": ";".join(f"{a}/{n}/{d}" for a, n, d in cells),
                       "grid.repeats": grid.repeats, "grid.n_runs": len(configs)})
    tracking.log_config(grid.base, prefix="base")
    cells = [GridCell(f"{cfg.arch}-n{cfg.filters}-d{cfg.depth}-s{cfg.seed}",
                      {"arch": cfg.arch, "filters": cfg.filters, "depth": cfg.depth, "seed": cfg.seed},
                      functools.partial(_train, cfg, prepared))
             for cfg in configs]
    runs = run_cells(cells)
    table = comparison_table(runs)
    log_tables(runs, table)
    return table


def _train(cfg: PathologyConfig, prepared) -> dict[str, float]:
    """The cell's metrics plus its efficiency numbers (the comparison table shows both)."""
    result = study.run(cfg, prepared, run_kind=tracking.RUN_KIND_GRID_CHILD)
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.metrics
    efficiency = tracking.EFFICIENCY_METRICS + (tracking.M_PARAMS_KERAS, tracking.M_SIZE_WITH_OPT_MB)
    return dict(result.metrics) | {key: logged.get(key) for key in efficiency}


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every Table V cell and every cell we ran, side by side, with differences."""
    paper = {(r.arch, r.filters, r.depth): r for r in TABLE_V}
    ours = {}
    ok = runs[runs["status"] == "FINISHED"] if len(runs) else runs
    for key, group in runs.groupby(["arch", "filters", "depth"], sort=False):
        done = ok[(ok["arch"] == key[0]) & (ok["filters"] == key[1]) & (ok["depth"] == key[2])]
        ours[key] = (group, done)
    out = []
    for key in list(paper) + [k for k in ours if k not in paper]:
        ref = paper.get(key)
        group, done = ours.get(key, (None, None))
        row = {"arch": key[0], "filters": key[1], "depth": key[2],
               "status": "not run" if group is None else ("ok" if len(done) == len(group) else
                                                          "; ".join(sorted(set(group["status"]) - {"FINISHED"})))}

        def mean(col):
            return float(done[col].astype(float).mean()) if done is not None and len(done) and col in done else float("nan")

        row.update({
            "paper_params": ref.params if ref else float("nan"),
            "ours_params_keras": mean(tracking.M_PARAMS_KERAS),
            "paper_jaccard": ref.jaccard if ref else float("nan"),
            "ours_jaccard": mean(tracking.test_metric("jaccard")),
            "paper_cpu_s": ref.cpu_s if ref else float("nan"),
            "ours_cpu_total_s": mean(tracking.M_CPU_TOTAL),
            "paper_size_mb": ref.size_mb if ref else float("nan"),
            "ours_size_mb": mean(tracking.M_SIZE_MB),
            "ours_size_mb_with_optimizer": mean(tracking.M_SIZE_WITH_OPT_MB),
        })
        row["params_diff"] = row["ours_params_keras"] - row["paper_params"]
        row["jaccard_diff"] = row["ours_jaccard"] - row["paper_jaccard"]
        out.append(row)
    return pd.DataFrame(out)
