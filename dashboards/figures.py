"""The dashboards' figures (plotly): accuracy against cost with Pareto fronts, a study's
metric against one setting (its `CurveSpec`), the overview, and a search's trials.

Points link to their run in the MLflow UI (hover shows the address; a click opens it).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards import data as dd
from dashboards.searches import Search
from dashboards.html import colours, esc, fmt, marker_sizes
from projects.core import tracking
from projects.core.specs.dashboard import CurveSpec
from projects.core.study import get_study

FRONT_OURS = "Pareto front (ours)"
FRONT_PAPER = "Pareto front (paper)"
FRONT_SEARCH = "Pareto front (search)"
FRONT_GRID = "Pareto front (grid)"
FRONT_MARKER = dict(symbol="circle-open", size=16, color="#222", line=dict(width=1.5))


def _fill(template: str, row: Mapping) -> str:
    """A study's hover line: `{column}` replaced by the row's value, formatted and escaped."""
    return re.sub(r"\{(\w+)\}", lambda m: esc(fmt(row.get(m.group(1)))), template)


def run_hover(row: Mapping, study: str) -> str:
    """Hover text: the run's settings and numbers, and its address in the MLflow UI.

    `row` is a plain dict (DataFrame.to_dict("records")), not a Series from iterrows: building
    a Series per run cost ~10x the text itself, once per run per figure."""
    spec, metric = get_study(study).dashboard, dd.primary_metric(study)
    lines = [f"<b>{esc(row.get('arch', ''))}</b> · {esc(row.get('run_name', ''))}"]
    lines += [_fill(t, row) for t in spec.hover[:1]]
    lines.append(f"split {esc(row.get('split', ''))}, augment {esc(row.get('augment', ''))}, "
                 f"seed {fmt(row.get('seed'))}, {esc(row.get('run_kind', ''))}")
    low, high = row.get(tracking.ci_low(metric)), row.get(tracking.ci_high(metric))
    interval = (f" [{fmt(low)}, {fmt(high)}; 95%, {fmt(row.get(tracking.M_TEST_UNITS), 'int')} units]"
                if low is not None and pd.notna(low) else "")
    lines.append(f"{dd.primary_label(study)}: {fmt(row.get(metric))}{interval}")
    lines += [_fill(t, row) for t in spec.hover[1:]]
    lines.append(f"params {fmt(row.get(tracking.M_PARAMS), 'int')}, {fmt(row.get(tracking.M_SIZE_MB))} MB, "
                 f"CPU {fmt(row.get(tracking.M_CPU_TOTAL))} s")
    if row.get("aliases"):
        lines.append(f"registry: {esc(row['aliases'])}")
    if row.get("url"):
        lines.append(f"<i>click to open: {esc(row['url'])}</i>")
    return "<br>".join(lines)


def paper_hover(row: pd.Series, study: str) -> str:
    """The paper's point: its settings, then each published number."""
    numbers = {c for c in row.index if c.startswith(("test_", "baseline_")) or c in dd.COST_LABEL}
    settings = ", ".join(f"{c} {esc(fmt(row[c]))}" for c in row.index if c not in numbers and c != "test_fraction")
    lines = [f"<b>paper</b>: {settings}"]
    lines += [f"{esc(dd.COST_LABEL.get(c, c))} {fmt(row[c], 'int' if c == tracking.M_PARAMS else 'auto')}"
              for c in row.index if c in numbers and pd.notna(row[c])]
    return "<br>".join(lines)


def tradeoff_figure(table: pd.DataFrame, study: str, paper: pd.DataFrame | None = None,
                    costs: Sequence[str] = dd.COST_METRICS, size_by: str | None = None) -> go.Figure | None:
    """Accuracy vs each cost (log x): a colour per architecture, marker size by `size_by`,
    our Pareto front, and the paper's points (and front) where it published the same cost."""
    metric = dd.primary_metric(study)
    costs = [c for c in costs if c in table and table[c].gt(0).any()]
    if table.empty or not costs:
        return None
    size_by = size_by or get_study(study).dashboard.size_by
    sizes = pd.to_numeric(table[size_by], errors="coerce").astype(float) if size_by in table else pd.Series(dtype=float)
    lo, hi = (float(sizes.min()), float(sizes.max())) if sizes.notna().any() else (math.nan, math.nan)
    archs = sorted(set(table["arch"]) | (set(paper["arch"]) if paper is not None and "arch" in paper else set()))
    colour = colours(archs)
    fig = make_subplots(rows=1, cols=len(costs), shared_yaxes=True, horizontal_spacing=0.035,
                        subplot_titles=[dd.COST_LABEL.get(c, c) for c in costs])
    shown: set[str] = set()

    def legend_once(name: str) -> bool:
        first = name not in shown
        shown.add(name)
        return first

    for j, cost in enumerate(costs, 1):
        sub = table[table[cost].gt(0) & table[metric].notna()]
        for arch in archs:
            rows = sub[sub["arch"] == arch]
            if rows.empty:
                continue
            fig.add_trace(go.Scatter(
                x=rows[cost], y=rows[metric], mode="markers", name=arch, legendgroup=arch,
                showlegend=legend_once(arch),
                marker=dict(color=colour[arch], size=marker_sizes(rows[size_by], lo, hi) if size_by in rows else 12,
                            symbol=["diamond" if k == "trial" else "circle" for k in rows["run_kind"]],
                            line=dict(width=1, color="white"), opacity=0.9),
                hovertext=[run_hover(r, study) for r in rows.to_dict("records")],
                hovertemplate="%{hovertext}<extra></extra>", customdata=list(rows.get("url", [""] * len(rows)))),
                row=1, col=j)
        front = dd.pareto_front(sub, cost, metric)
        if len(front):
            fig.add_trace(go.Scatter(
                x=front[cost], y=front[metric], mode="lines+markers", name=FRONT_OURS, legendgroup="front",
                showlegend=legend_once(FRONT_OURS), line=dict(color="#222", width=1.8, shape="hv"),
                marker=FRONT_MARKER, hoverinfo="skip"), row=1, col=j)
        if paper is not None and cost in paper and paper[cost].notna().any():
            _paper_points(fig, paper[paper[cost].gt(0)], cost, metric, study, colour, legend_once, j)
    fig.update_xaxes(type="log")
    fig.update_yaxes(title_text=dd.primary_label(study), row=1, col=1)
    fig.update_layout(height=460, legend=dict(orientation="h", y=-0.18, x=0),
                      margin=dict(l=60, r=20, t=50, b=90))
    return fig


def _paper_points(fig, pp: pd.DataFrame, cost: str, metric: str, study: str, colour: dict, legend_once, j: int) -> None:
    """The paper's published points on one cost panel, and their Pareto front (dashed)."""
    for arch in sorted(set(pp["arch"])):
        rows = pp[pp["arch"] == arch]
        name = f"paper: {arch}"
        fig.add_trace(go.Scatter(
            x=rows[cost], y=rows[metric], mode="markers", name=name, legendgroup=name, showlegend=legend_once(name),
            marker=dict(color=colour.get(arch, "#888"), size=11, symbol="x-thin-open",
                        line=dict(width=2, color=colour.get(arch, "#888"))),
            hovertext=[paper_hover(r, study) for _, r in rows.iterrows()],
            hovertemplate="%{hovertext}<extra></extra>"), row=1, col=j)
    pfront = dd.pareto_front(pp, cost, metric)
    if len(pfront):
        fig.add_trace(go.Scatter(
            x=pfront[cost], y=pfront[metric], mode="lines", name=FRONT_PAPER, legendgroup="pfront",
            showlegend=legend_once(FRONT_PAPER), line=dict(color="#999", width=1.5, dash="dash", shape="hv"),
            hoverinfo="skip"), row=1, col=j)


def _stats(rows: pd.DataFrame, x: str, metric: str) -> list[tuple[float, float, float, int]]:
    return [(float(v), *dd.summarise(g[metric])) for v, g in rows.groupby(x)]


def _shift(sub: pd.DataFrame, curve: CurveSpec, n_groups: int) -> float:
    """How far apart the groups' points stand (side by side, not on top of each other)."""
    xs = np.sort(sub[curve.x].dropna().astype(float).unique()) * curve.x_scale
    step = float(np.min(np.diff(xs))) if len(xs) > 1 else 1.0
    return 0.12 * step if n_groups > 1 else 0.0


def _group_traces(fig, rows, name, colour, curve, metric, j, offset, shown) -> None:
    stats = _stats(rows, curve.x, metric)
    xs = [curve.x_scale * s[0] for s in stats]
    fig.add_trace(go.Scatter(
        x=[x + offset for x in xs], y=[s[1] for s in stats], mode="lines+markers", name=name, legendgroup=name,
        showlegend=name not in shown, line=dict(color=colour, width=2), marker=dict(size=9),
        error_y=dict(type="data", array=[s[2] for s in stats], visible=any(s[3] > 1 for s in stats)),
        hovertext=[f"{esc(name)}<br>{esc(curve.x_label)} {fmt(x)}: mean {fmt(m)} ± {fmt(ci)} (95% CI, {n} run(s))"
                   for x, (_, m, ci, n) in zip(xs, stats)],
        hovertemplate="%{hovertext}<extra></extra>"), row=1, col=j)
    shown.add(name)
    fig.add_trace(go.Scatter(
        x=curve.x_scale * rows[curve.x].astype(float) + offset, y=rows[metric], mode="markers", showlegend=False,
        legendgroup=name, name=f"{name} (runs)", marker=dict(color=colour, size=6, opacity=0.45),
        hovertext=[f"{esc(name)}: {fmt(v)}" for v in rows[metric]], hovertemplate="%{hovertext}<extra></extra>",
        customdata=list(rows.get("url", [""] * len(rows)))), row=1, col=j)


def _baseline_traces(fig, sub, curve, baselines, j, shown) -> None:
    for col, label in baselines:
        if col not in sub or not sub[col].notna().any():
            continue
        b = sub.groupby(curve.x)[col].mean().dropna().sort_index()
        fig.add_trace(go.Scatter(
            x=curve.x_scale * b.index.to_numpy(dtype=float), y=b.to_numpy(), mode="lines+markers", name=label,
            legendgroup=label, showlegend=label not in shown, line=dict(color="#777", dash="dash"),
            marker=dict(symbol="line-ew-open", size=18, line=dict(width=2, color="#777")),
            hovertemplate=f"{esc(label)} %{{y:.3f}}<extra></extra>"), row=1, col=j)
        shown.add(label)


def _paper_traces(fig, paper, curve, metric, colour_of, j, shown) -> None:
    if paper is None or not len(paper) or metric not in paper or curve.x not in paper:
        return
    if not curve.paper_groups:
        fig.add_trace(go.Scatter(
            x=curve.x_scale * paper[curve.x].astype(float), y=paper[metric], mode="markers", name="paper",
            legendgroup="paper", showlegend="paper" not in shown, marker=dict(symbol="star", size=13, color="#111"),
            hovertext=[f"paper: {fmt(v)}" for v in paper[metric]], hovertemplate="%{hovertext}<extra></extra>"),
            row=1, col=j)
        shown.add("paper")
        return
    for key, ref in paper.groupby(list(curve.paper_groups), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        name = "paper: " + " ".join(str(k) for k in key)
        colour = colour_of.get(key, "#888")
        ref = ref.sort_values(curve.x)
        fig.add_trace(go.Scatter(
            x=curve.x_scale * ref[curve.x].astype(float), y=ref[metric], mode="lines+markers", name=name,
            legendgroup=name, showlegend=name not in shown, line=dict(color=colour, width=1.3, dash="dash"),
            marker=dict(symbol="x-thin-open", size=10, line=dict(width=2, color=colour)),
            visible=True if key in colour_of else "legendonly",
            hovertext=[f"{esc(name)} {esc(curve.x_label)} {fmt(x)}: {fmt(v)}" for x, v in zip(ref[curve.x], ref[metric])],
            hovertemplate="%{hovertext}<extra></extra>"), row=1, col=j)
        shown.add(name)


def curve_figure(table: pd.DataFrame, curve: CurveSpec, paper: pd.DataFrame | None,
                 task: str | None = None) -> go.Figure | None:
    """Test metrics against one setting (a panel per metric): a line per group of our runs
    (mean ± 95% CI over seeds, every run faint), the baselines, the paper's points."""
    if curve.x not in table or any(c not in table for c in curve.groups):
        return None
    sub = table[table[curve.x].notna() & table["run_kind"].ne("trial")]
    for col in curve.groups:
        sub = sub[sub[col].notna()]
    if task is not None:
        sub = sub[sub["task"] == task]
        paper = paper[paper["task"] == task] if paper is not None and "task" in paper else paper
    if sub.empty:
        return None
    fig = make_subplots(rows=1, cols=len(curve.panels), horizontal_spacing=0.08,
                        subplot_titles=[title for _, title, _ in curve.panels])
    groups = sorted({tuple(r) for r in sub[list(curve.groups)].itertuples(index=False)}, key=str)
    colour_of = colours(groups)
    shift, shown = _shift(sub, curve, len(groups)), set()
    for j, (metric, _, baselines) in enumerate(curve.panels, 1):
        if metric not in sub:
            continue
        for i, key in enumerate(groups):
            # no groups: one line through every run (reduce of an empty list would be a bare True)
            rows = sub[np.logical_and.reduce([sub[c] == v for c, v in zip(curve.groups, key)])] if key else sub
            name = ", ".join(f"{c}={v}" if c != "arch" else str(v) for c, v in zip(curve.groups, key)) or "runs"
            _group_traces(fig, rows, name, colour_of[key], curve, metric, j, shift * (i - (len(groups) - 1) / 2), shown)
        _baseline_traces(fig, sub, curve, baselines, j, shown)
        _paper_traces(fig, paper, curve, metric, colour_of, j, shown)
    if curve.x_ticks and curve.x_ticks in sub:
        frames = [sub[[curve.x, curve.x_ticks]]] + ([paper[[curve.x, curve.x_ticks]]] if paper is not None
                                                     and curve.x_ticks in paper else [])
        ticks = pd.concat(frames).drop_duplicates(curve.x)
        fig.update_xaxes(tickvals=curve.x_scale * ticks[curve.x].astype(float), ticktext=list(ticks[curve.x_ticks]))
    fig.update_xaxes(title_text=curve.x_label)
    fig.update_layout(height=430, legend=dict(orientation="h", y=-0.25, x=0), margin=dict(l=60, r=20, t=50, b=100))
    return fig


def overview_figure(info: dd.DashboardData) -> go.Figure | None:
    """Index: each study's headline result against parameters, with its Pareto front."""
    studies = [s for s, t in info.studies.items() if len(t) and t[tracking.M_PARAMS].gt(0).any()]
    if not studies:
        return None
    titles = [f"{get_study(s).dashboard.title}: {dd.tasks_in_order(info.studies[s][info.studies[s][tracking.M_PARAMS].gt(0)])[0]}"
              for s in studies]
    fig = make_subplots(rows=1, cols=len(studies), horizontal_spacing=0.08, subplot_titles=titles)
    archs = sorted(set().union(*(set(info.studies[s]["arch"]) for s in studies)))
    colour = colours(archs)
    shown: set[str] = set()
    for j, study in enumerate(studies, 1):
        table = info.studies[study]
        metric = dd.primary_metric(study)
        sub = table[table[tracking.M_PARAMS].gt(0)]
        sub = sub[sub["task"] == dd.tasks_in_order(sub)[0]]  # accuracies of different tasks do not compare
        for arch in archs:
            rows = sub[sub["arch"] == arch]
            if rows.empty:
                continue
            fig.add_trace(go.Scatter(
                x=rows[tracking.M_PARAMS], y=rows[metric], mode="markers", name=arch, legendgroup=arch,
                showlegend=arch not in shown, marker=dict(color=colour[arch], size=10, line=dict(width=1, color="white")),
                hovertext=[run_hover(r, study) for r in rows.to_dict("records")],
                hovertemplate="%{hovertext}<extra></extra>", customdata=list(rows["url"])), row=1, col=j)
            shown.add(arch)
        front = dd.pareto_front(sub, tracking.M_PARAMS, metric)
        if len(front):
            fig.add_trace(go.Scatter(x=front[tracking.M_PARAMS], y=front[metric], mode="lines+markers",
                                     name=FRONT_OURS, legendgroup="front", showlegend=FRONT_OURS not in shown,
                                     line=dict(color="#222", width=1.8, shape="hv"), marker=FRONT_MARKER,
                                     hoverinfo="skip"), row=1, col=j)
            shown.add(FRONT_OURS)
        fig.update_yaxes(title_text=dd.primary_label(study), row=1, col=j)
        fig.update_xaxes(title_text="parameters", type="log", row=1, col=j)
    fig.update_layout(height=400, legend=dict(orientation="h", y=-0.25, x=0), margin=dict(l=60, r=20, t=50, b=90))
    return fig


def trials_figure(search: Search) -> go.Figure | None:
    """A search's trials in order: each trial's result coloured by its state, the best so far."""
    trials = search.trials
    if trials.empty:
        return None
    metric = search.metric
    val = metric.replace("test_", "val_", 1)
    y = trials[metric] if metric in trials else pd.Series(np.nan, index=trials.index)
    from_val = y.isna() & (trials[val].notna() if val in trials else False)
    y = y.where(~from_val, trials[val] if val in trials else np.nan)
    states = sorted(set(trials["trial_state"].replace("", "UNKNOWN")))
    state_colour = {"COMPLETE": "#2f6fdf", "PRUNED": "#e3a21a", "FAIL": "#b3261e", "RUNNING": "#888"}
    fig = go.Figure()
    x = trials["trial_number"].astype(float)
    for state in states:
        mask = trials["trial_state"].replace("", "UNKNOWN").eq(state) & y.notna()
        if not mask.any():
            continue
        rows = trials[mask]
        hover = [run_hover(r, search.study) + (f"<br>(last {val}: pruned before the test set)" if fv else "")
                 for r, fv in zip(rows.to_dict("records"), from_val[mask])]
        fig.add_trace(go.Scatter(
            x=x[mask], y=y[mask], mode="markers", name=f"trial {state.lower()}",
            marker=dict(size=10, color=state_colour.get(state, "#555"),
                        symbol=["circle-open" if fv else "circle" for fv in from_val[mask]]),
            hovertext=hover, hovertemplate="%{hovertext}<extra></extra>", customdata=list(rows["url"])))
    done = trials[metric].notna() if metric in trials else pd.Series(False, index=trials.index)
    if done.any():
        best = trials.loc[done, metric].cummax()
        fig.add_trace(go.Scatter(x=x[done], y=best, mode="lines", name="best so far",
                                 line=dict(color="#222", shape="hv", width=1.5), hoverinfo="skip"))
    fig.update_xaxes(title_text="trial number", tickformat="d", dtick=1 if len(trials) <= 25 else None)
    fig.update_yaxes(title_text=dd.primary_label(search.study))
    fig.update_layout(height=380, legend=dict(orientation="h", y=-0.25, x=0), margin=dict(l=70, r=20, t=40, b=90))
    return fig


def search_frontier_figure(search: Search, grid: pd.DataFrame) -> go.Figure | None:
    """The trials' Pareto front against the grid's, on the search's own cost axis."""
    metric, cost = search.metric, search.cost
    ours = search.trials[search.trials[metric].notna() & search.trials[cost].gt(0)] if (
        metric in search.trials and cost in search.trials) else search.trials.iloc[0:0]
    base = grid[grid[cost].gt(0) & grid[metric].notna()] if len(grid) and cost in grid else grid.iloc[0:0]
    if ours.empty and base.empty:
        return None
    fig = go.Figure()
    for rows, name, colour, symbol in ((base, "grid runs", "#9aa3b2", "circle"), (ours, "search trials", "#2f6fdf", "diamond")):
        if rows.empty:
            continue
        fig.add_trace(go.Scatter(
            x=rows[cost], y=rows[metric], mode="markers", name=name,
            marker=dict(color=colour, size=10, symbol=symbol, line=dict(width=1, color="white")),
            hovertext=[run_hover(r, search.study) for _, r in rows.iterrows()],
            hovertemplate="%{hovertext}<extra></extra>", customdata=list(rows["url"])))
    for rows, name, style in ((base, FRONT_GRID, dict(color="#9aa3b2", dash="dash")),
                              (ours, FRONT_SEARCH, dict(color="#2f6fdf"))):
        front = dd.pareto_front(rows, cost, metric)
        if len(front):
            fig.add_trace(go.Scatter(x=front[cost], y=front[metric], mode="lines+markers", name=name,
                                     line=dict(width=2, shape="hv", **style), hoverinfo="skip",
                                     marker=dict(FRONT_MARKER, color=style["color"])))
    fig.update_xaxes(title_text=dd.COST_LABEL.get(cost, cost), type="log")
    fig.update_yaxes(title_text=dd.primary_label(search.study))
    fig.update_layout(height=380, legend=dict(orientation="h", y=-0.25, x=0), margin=dict(l=70, r=20, t=40, b=90))
    return fig


