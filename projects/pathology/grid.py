"""Table V as child runs of one parent: arch x initial filters x depth (defaults: exactly
the paper's 13 trained cells), with a paper-vs-ours table (params, Jaccard, CPU time, size)
on the parent. Cells that do not fit in memory or time are marked, not fatal."""
from __future__ import annotations

import dataclasses
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd

from projects import tracking
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
                     tracking.TAG_RUN_KIND: "grid_parent", tracking.TAG_DATASET_DIGEST: prepared.digest})
    mlflow.log_params({"grid.cells": ";".join(f"{a}/{n}/{d}" for a, n, d in cells),
                       "grid.repeats": grid.repeats, "grid.n_runs": len(configs)})
    tracking.log_config(grid.base, prefix="base")
    exp_id = mlflow.active_run().info.experiment_id
    rows = []
    for i, cfg in enumerate(configs, 1):
        name = f"{cfg.arch}-n{cfg.filters}-d{cfg.depth}-s{cfg.seed}"
        print(f"[grid {i}/{len(configs)}] {name}", file=sys.stderr, flush=True)
        row = {"arch": cfg.arch, "filters": cfg.filters, "depth": cfg.depth, "seed": cfg.seed, "status": "FINISHED"}
        try:
            with mlflow.start_run(run_name=name, nested=True, experiment_id=exp_id,
                                  tags=tracking.process_tags()) as child:
                row["run_id"] = child.info.run_id
                try:
                    result = study.run(cfg, prepared, run_kind="grid_child")
                except Exception as exc:
                    mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
                    raise
                row.update(result.metrics)
                metrics = mlflow.get_run(child.info.run_id).data.metrics
                for key in tracking.EFFICIENCY_METRICS + (tracking.M_PARAMS_KERAS, tracking.M_SIZE_WITH_OPT_MB):
                    row[key] = metrics.get(key)
        except (MemoryError, RuntimeError) as exc:
            row["status"] = f"FAILED: {type(exc).__name__}: {str(exc)[:200]}"
            print(f"[grid] {name} did not fit: {exc}", file=sys.stderr)
        rows.append(row)
    runs = pd.DataFrame(rows)
    table = comparison_table(runs)
    with tempfile.TemporaryDirectory() as tmp:
        runs.to_csv(Path(tmp) / "grid_runs.csv", index=False)
        table.to_csv(Path(tmp) / "paper_vs_ours.csv", index=False)
        (Path(tmp) / "paper_vs_ours.txt").write_text(table.to_string(index=False))
        mlflow.log_artifacts(tmp, "grid")
    print(table.to_string(index=False), file=sys.stderr)
    return table


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
