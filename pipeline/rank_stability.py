"""Rank stability: does a model's validation Jaccard after k epochs rank configurations the way
their final validation Jaccard does? It decides the least training a search may give a trial
before pruning it (the pruner's minimum resource).

Each configuration is a unit of a resumable measurement (pipeline/real_data.py's runner:
one record per trained configuration under `results/records/<block>/`, with its per-epoch
validation curve); the table is computed from the records alone:

    python -m pipeline.rank_stability --blocks rank-embedded          # train what has no record, then render
    python -m pipeline.rank_stability --render                        # the RESULTS.md section from the records

For each epoch k: Spearman's rho between the configurations' val_jaccard at epoch k and at the
last epoch (every configuration trains the same number of epochs, no early stopping), with a
95% bootstrap interval over configurations, and whether the final winner is in epoch k's top
quarter; the same for the best score up to epoch k, which is what a median pruner judges and
so what sets the minimum resource: the first k from which its rho stays at least RHO_MIN.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
from scipy import stats

from projects.core import cli, records, runtime, tracking
from projects.core.errors import InputError
from projects.core.records import Budget, Record, RecordStore
from projects.core.specs.pipeline import RealDataBlock
from projects.core.study import Study, all_studies

RESULTS = runtime.REPO_ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## 11. Rank stability: how early a validation score ranks configurations"
RHO_MIN = 0.8  # "ranks like the final score": a pruner that keeps the top half then rarely drops the winner
METRIC = "val_jaccard"


@runtime_checkable
class RankStudy(Protocol):
    """A study with configurations whose validation curves measure rank stability."""

    def rank_blocks(self, root: Path) -> Sequence[RealDataBlock]:
        """Trained the same number of epochs without early stopping; public data sets under root."""


def rank_blocks(data_root: Path) -> dict[str, tuple[Study, RealDataBlock]]:
    """Every study's rank-stability blocks by name (their settings live with the study)."""
    return {b.name: (s, b) for s in all_studies() if isinstance(s, RankStudy) for b in s.rank_blocks(data_root)}


def curves(recs: list[Record], metric: str = METRIC) -> pd.DataFrame:
    """Configurations x epochs of the metric, from finished records with a full curve."""
    rows = {}
    for r in recs:
        curve = r.history.get(metric) or []
        if r.status == "FINISHED" and curve and None not in curve:
            label = f"{r.settings.get('arch')} d{r.settings.get('depth')} n{r.settings.get('filters')} " \
                    f"lr{r.settings.get('lr'):g} s{r.settings.get('seed')}"
            rows[label] = curve
    if not rows:
        return pd.DataFrame()
    length = min(len(c) for c in rows.values())
    return pd.DataFrame({k: v[:length] for k, v in rows.items()}).T.set_axis(range(1, length + 1), axis=1)


def stability(table: pd.DataFrame, seed: int = 0, resamples: int = 1000) -> pd.DataFrame:
    """Per epoch k: rho(k, last) of the epoch-k score (`rho`) and of the best score up to epoch k
    (`rho_best`), each with a bootstrap interval over configurations, and whether the last
    epoch's best configuration is in the top quarter by its best score up to k.

    The best-so-far column is what a median pruner sees: Optuna's MedianPruner prunes a trial
    whose best intermediate value so far is below the median of the other trials' values at
    that step, so one noisy epoch of a trial does not decide alone."""
    final = table.iloc[:, -1].to_numpy()
    best = table.cummax(axis=1)
    rng = np.random.default_rng(seed)
    n = len(table)
    winner = int(np.argmax(final))
    samples = [idx for idx in (rng.integers(0, n, n) for _ in range(resamples)) if len(set(idx)) > 2]
    out = []
    for k in table.columns:
        row: dict = {"epoch": k}
        for name, at_k in (("rho", table[k].to_numpy()), ("rho_best", best[k].to_numpy())):
            boot = [v for v in (stats.spearmanr(at_k[idx], final[idx]).statistic for idx in samples) if np.isfinite(v)]
            low, high = (np.percentile(boot, [2.5, 97.5]) if boot else (np.nan, np.nan))
            row |= {name: stats.spearmanr(at_k, final).statistic, f"{name}_low": low, f"{name}_high": high}
        row["winner_in_top_quarter"] = winner in np.argsort(-best[k].to_numpy())[:max(1, n // 4)]
        out.append(row)
    return pd.DataFrame(out)


def min_resource(table: pd.DataFrame, column: str = "rho_best") -> int | None:
    """The first epoch from which rho (of the best score so far: what the pruner judges) stays
    >= RHO_MIN (a single early epoch above it, followed by a dip, is luck: measured on the
    embedded tiles, the epoch-k rho was 0.84 at epoch 5 and 0.67 at 7)."""
    above = (table[column] >= RHO_MIN).to_numpy()
    for i in range(len(above)):
        if above[i:].all():
            return int(table["epoch"].iloc[i])
    return None


def describe(block: RealDataBlock) -> str:
    """What varies across the block's configurations and what they share, from the configs."""
    configs = [g.base.flat() for g in block.grids]
    varied = {k for k in configs[0] if len({str(c[k]) for c in configs}) > 1}
    data = Path(str(configs[0].get("data", ""))).name  # the data set, not this machine's path to it
    return (f"{len(configs)} configurations over {', '.join(sorted(varied))}; data {data}, "
            f"tile {configs[0].get('tile_size')} px, {configs[0].get('epochs')} epochs")


def section(root: Path, data_root: Path = Path("data")) -> str:
    lines = [SECTION, "",
             f"Spearman's rho between each configuration's `{METRIC}` after k epochs and after the last, over "
             "configurations trained the same number of epochs without early stopping (95% bootstrap interval "
             "over configurations): of the epoch-k score, and of the best score up to epoch k. The second is what "
             "a median pruner judges (Optuna's MedianPruner compares a trial's best value so far with the median "
             "of the others at that epoch), so it sets the minimum resource: the first k from which it stays >= "
             f"{RHO_MIN}. A pruner that judges trials earlier throws away models that would have ranked high. "
             "Rendered from the records under `results/records/<block>/` by `python -m pipeline.rank_stability --render`.", ""]
    for name, (study, block) in rank_blocks(data_root.resolve()).items():
        recs = RecordStore(root / name).all()
        table = curves(recs)
        expected = sum(len(study.grid_configs(g)) for g in block.grids)
        lines += [f"### {name}: {study.name}, {describe(block)}", ""]
        if len(table) < 3:
            lines += [f"Not measured yet ({len(table)} of {expected} configurations recorded; "
                      f"`python -m pipeline.rank_stability --blocks {name}` measures them).", ""]
            continue
        result = stability(table)
        k = min_resource(result)
        lines += [records_line(recs, len(table), expected), "",
                  "| epoch k | rho of the epoch-k score [95% CI] | rho of the best score up to k [95% CI] "
                  "| last epoch's winner in the top quarter by best score up to k |", "|---|---|---|---|"]
        lines += [f"| {int(r.epoch)} | {r.rho:.2f} [{r.rho_low:.2f}, {r.rho_high:.2f}] | "
                  f"{r.rho_best:.2f} [{r.rho_best_low:.2f}, {r.rho_best_high:.2f}] | "
                  f"{'yes' if r.winner_in_top_quarter else 'no'} |" for r in result.itertuples()]
        raw = min_resource(result, "rho")
        lines += ["", f"Minimum resource: **{k} epoch{'s' if k != 1 else ''}** (the first k from which the best "
                  f"score's rho stays >= {RHO_MIN}; judged on the epoch-k score alone it would be "
                  f"{raw if raw is not None else 'never'})."
                  if k is not None and k < table.shape[1] else
                  f"No epoch before the last reaches rho >= {RHO_MIN}: do not prune this space early.", ""]
    return "\n".join(lines)


def records_line(recs: list[Record], used: int, expected: int) -> str:
    commits = sorted({r.commit for r in recs if r.commit})
    cpus = sorted({str(r.machine.get("cpu", "?")) for r in recs})
    failed = len(recs) - used
    return (f"{used} of {expected} configurations with full curves{f' ({failed} more recorded without one)' if failed else ''}, "
            f"{sum(r.wall_s for r in recs) / 60:.0f} min of training, on {', '.join(cpus)} at {', '.join(commits)}.")


def write_section(text: str, path: Path = RESULTS, heading: str = SECTION) -> None:
    """Replaces the section (up to the next `## ` heading) or appends it."""
    page = path.read_text() if path.is_file() else ""
    start = page.find(heading)
    if start < 0:
        page = page.rstrip() + "\n\n" + text.rstrip() + "\n"
    else:
        end = page.find("\n## ", start + len(heading))
        page = page[:start] + text.rstrip() + "\n" + (page[end:] if end >= 0 else "")
    path.write_text(page)


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    from pipeline import real_data

    parser = argparse.ArgumentParser(prog="python -m pipeline.rank_stability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=cli.str_list, default=[], help="blocks to measure (default: all)")
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="folder of the public data sets")
    parser.add_argument("--budget-min", type=float, default=0, help="start no new unit after this many minutes")
    parser.add_argument("--render", action="store_true", help="only re-render the section from the records")
    parser.add_argument("--records", type=Path, default=records.RECORDS)
    parser.add_argument("--out", type=Path, default=RESULTS, help="the page whose section is rewritten")
    args = parser.parse_args(argv)
    blocks = rank_blocks(args.data_root.resolve())
    unknown = [b for b in args.blocks if b not in blocks]
    if unknown:
        raise InputError("--blocks", f"unknown block(s) {', '.join(unknown)}; choose from {', '.join(blocks)}")
    if not args.render:
        tracking.setup_tracking()
        budget = Budget(args.budget_min)
        for name in args.blocks or list(blocks):
            study, block = blocks[name]
            if block.source is not None and not block.source.is_dir():
                raise InputError("--data-root", f"block {name} needs {block.source}, which does not exist")
            real_data.run_block(study, block, RecordStore(args.records / name), budget)
    text = section(args.records, args.data_root.resolve())
    write_section(text, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
