"""Paired comparisons between a block's records on the same holdout (results/REAL_DATA.md).

Two intervals that overlap do not say that two models are alike: on the same held-out units
the differences are correlated, and a paired bootstrap (the same units drawn for both models in
each resample) sees a difference the separate intervals hide. Each record keeps its holdout
result by unit (`Record.holdout_units`), so the page pairs the block's best model with each
other one without any model or data at hand. Only records on the same holdout (digest) are
paired; records written before the per-unit results were kept are left out, and the page says so.
"""
from __future__ import annotations

from collections.abc import Sequence

from projects.core.records import Record
from projects.core.uncertainty import UnitScores, paired_difference


def lines(recs: Sequence[Record], metric: str, unit: str, block: str | None = None) -> list[str]:
    """Markdown: the best record by holdout `metric` minus each other one, with the 95% interval
    of the difference and the one-sided p that the best is not better; [] when fewer than two
    records can be paired. Records of a block other than `block` are named with theirs."""

    def name(r: Record) -> str:
        return r.unit if block is None or r.block == block else f"{r.unit} ({r.block})"

    usable = [r for r in recs if r.holdout_units and r.holdout.get(metric) is not None]
    out = []
    for digest in sorted({r.holdout_digest for r in usable}):
        group = sorted((r for r in usable if r.holdout_digest == digest), key=lambda r: -r.holdout[metric])
        if len(group) < 2:
            continue
        best, scores = group[0], {r.key: UnitScores.from_dict(r.holdout_units) for r in group}
        n = scores[best.key].n_units
        out += [f"Paired on the holdout (the same {n} {unit}s for both models, bootstrap over them): "
                f"the best by holdout {metric}, **{name(best)}**, minus each other model"
                + (f" ({len(recs) - len(usable)} record(s) from before per-unit results were kept are not paired)"
                   if len(usable) < len(recs) else "") + ":", ""]
        for r in group[1:]:
            d = paired_difference(scores[best.key], scores[r.key], metric)
            out.append(f"- minus {name(r)}: {d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}], p = {d.p_value:.2g}")
        out.append("")
    return out
