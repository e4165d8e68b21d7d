"""Table V as child runs of one parent: arch x initial filters x depth (defaults: exactly
the paper's 13 trained cells), with a paper-vs-ours table (params, Jaccard, CPU time, size)
on the parent. Cells that do not fit in memory or time are marked, not fatal."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from projects.core import tracking
from projects.core.config import setting
from projects.pathology.config import PathologyConfig
from projects.pathology.paper import TABLE_V


@dataclass
class PathologyGridConfig:
    base: PathologyConfig = setting(PathologyConfig(), "every cell's settings", cli_flag=False)
    # (arch, filters, depth) cells; empty means Table V's 13 trained cells (or the lists below)
    cells: list = setting([], "(arch, filters, depth) cells", cli_flag=False)
    archs: list[str] = setting([], "with --filters-list/--depths: a custom grid (empty: Table V's 13 cells)")
    filters_list: list[int] = setting([], "initial filters of a custom grid, comma-separated")
    depths: list[int] = setting([], "depths of a custom grid, comma-separated")
    repeats: int = setting(1, "seeds per cell (mean and 95% CI in the parent's table)", min=1)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            from projects.core.errors import InputError

            raise InputError("repeats", f"must be at least 1, got {self.repeats}")

    def resolved_cells(self) -> list[tuple[str, int, int]]:
        if self.cells:
            return [tuple(c) for c in self.cells]
        if self.archs or self.filters_list or self.depths:
            return cells_from_lists(self.archs or [self.base.arch], self.filters_list or [self.base.filters],
                                    self.depths or [self.base.depth])
        return [(row.arch, row.filters, row.depth) for row in TABLE_V]


def cells_from_lists(archs: list[str], filters: list[int], depths: list[int]) -> list[tuple[str, int, int]]:
    return [(a, n, d) for a in archs for n in filters for d in depths]


def grid_configs(grid: PathologyGridConfig) -> list[PathologyConfig]:
    return [grid.base.replace(arch=a, filters=n, depth=d, seed=grid.base.seed + r)
            for a, n, d in grid.resolved_cells() for r in range(grid.repeats)]


def cell(cfg: PathologyConfig) -> tuple[str, dict]:
    # online augmentation in the name: cells of one model that differ only by it stay apart
    augment = (("-rot" if cfg.rotate else "") + (f"-stain{cfg.stain_jitter:g}" if cfg.stain_jitter else "")
               + (f"-hsv{cfg.hsv_jitter:g}" if cfg.hsv_jitter else ""))
    return (f"{cfg.arch}-n{cfg.filters}-d{cfg.depth}{augment}-s{cfg.seed}",
            {"arch": cfg.arch, "filters": cfg.filters, "depth": cfg.depth, "seed": cfg.seed})


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
            # bootstrap over the test images (mean over seeds)
            "ours_jaccard_boot_low": mean(tracking.ci_low(tracking.test_metric("jaccard"))),
            "ours_jaccard_boot_high": mean(tracking.ci_high(tracking.test_metric("jaccard"))),
            "test_images": mean(tracking.M_TEST_UNITS),
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
