"""Dashboard pages: plotly figures and self-contained HTML, one file per study + index + search.

Each page is one HTML document with plotly.js embedded once (the first figure carries it,
the others reuse it) and images as base64 data URIs, so a page opens offline from disk and
inside the MLflow UI's artifact viewer. Points link to their run in the MLflow UI (hover
shows the address; a click opens it). Missing data (no runs, no search, no aliases) gives
a short note saying which entry point fills it, never an error.
"""
from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from dashboards import data as dd
from projects.core import tracking

PAGE_FILES = {"index": "index.html", "mammography": "mammography.html", "pathology": "pathology.html",
              "search": "search.html"}
PAGE_TITLES = {"index": "Overview", "mammography": "Mammography (mini-MIAS)",
               "pathology": "Pathology (PAIP tiles)", "search": "Architecture search"}
FRONT_OURS = "Pareto front (ours)"
FRONT_PAPER = "Pareto front (paper)"
FRONT_SEARCH = "Pareto front (search)"
FRONT_GRID = "Pareto front (grid)"
FRONT_MARKER = dict(symbol="circle-open", size=16, color="#222", line=dict(width=1.5))
MAX_SEARCHES = 5  # newest searches drawn on the search page

HOW_TO = {
    "mammography": "mlflow run . -e mammography_grid --env-manager local",
    "pathology": "mlflow run . -e pathology_grid --env-manager local",
    "search": "mlflow run . -e search -P study=pathology --env-manager local",
    "promote": "mlflow run . -e promote --env-manager local",
    "main": "mlflow run . --env-manager local",
}
PALETTE = qualitative.Plotly + qualitative.D3
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True,
                 "toImageButtonOptions": {"format": "png", "scale": 2}}
# A click on a point that carries a run address opens it (hover already shows it).
CLICK_JS = """
(function () {
  var gd = document.getElementById('{plot_id}');
  if (!gd || !gd.on) { return; }
  gd.on('plotly_click', function (ev) {
    var p = ev && ev.points && ev.points[0];
    var u = p && (Array.isArray(p.customdata) ? p.customdata[0] : p.customdata);
    if (typeof u === 'string' && /^https?:\\/\\//.test(u)) { window.open(u, '_blank', 'noopener'); }
  });
})();
"""

CSS = """
:root { --fg:#1f2430; --muted:#5b6475; --line:#dde1e8; --bg:#f7f8fa; --accent:#2f6fdf; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
header { background:#fff; border-bottom:1px solid var(--line); padding:14px 28px 10px; }
header h1 { margin:4px 0 2px; font-size:22px; }
nav a { margin-right:16px; color:var(--accent); text-decoration:none; font-weight:600; }
nav a.here { color:var(--fg); border-bottom:2px solid var(--accent); }
.meta { color:var(--muted); font-size:12px; margin:4px 0 0; }
main { padding:8px 28px 40px; max-width:1500px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 18px; margin:16px 0; }
section h2 { margin:0 0 6px; font-size:17px; }
section h3 { margin:14px 0 4px; font-size:15px; }
p.caption { color:var(--muted); margin:2px 0 8px; max-width:1100px; }
.note { background:#fff8e1; border:1px solid #f0d58c; border-radius:6px; padding:8px 12px; margin:8px 0; }
.note code, code { background:#eef1f6; padding:1px 5px; border-radius:4px; font-size:12.5px; }
table.data { border-collapse:collapse; font-size:12.5px; margin:6px 0 4px; }
table.data th, table.data td { border-bottom:1px solid var(--line); padding:3px 9px; text-align:right; white-space:nowrap; }
table.data th { background:#f0f2f6; position:sticky; top:0; }
table.data td.t, table.data th.t { text-align:left; }
.scroll { max-height:460px; overflow:auto; border:1px solid var(--line); border-radius:6px; display:inline-block; max-width:100%; }
.cards { display:flex; flex-wrap:wrap; gap:14px; }
.card { border:1px solid var(--line); border-radius:8px; padding:8px 10px; background:#fff; width:420px; }
.card.wide { width:auto; max-width:100%; }
.card img { max-width:100%; height:auto; display:block; margin-top:6px; }
.card img.overlays { width:100%; max-width:1100px; }
.card h4 { margin:0; font-size:13.5px; }
.card .small { color:var(--muted); font-size:12px; }
.pass { color:#137333; font-weight:600; } .fail { color:#b3261e; font-weight:600; }
ul.gates { margin:0; padding-left:16px; text-align:left; }
.fig { min-height:120px; }
"""


# --- small helpers ------------------------------------------------------------------------------
def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value: object, kind: str = "auto") -> str:
    """A number for a table or hover text; "–" for a missing one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
        return "–"
    try:
        if pd.isna(value):
            return "–"
    except (TypeError, ValueError):
        pass
    if isinstance(value, (int, np.integer)) or (kind == "int" and float(value).is_integer()):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if kind == "pct":
            return f"{value:.1%}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.3f}"
    return str(value)


def note(text_html: str) -> str:
    return f'<div class="note">{text_html}</div>'


def no_runs_note(what: str, key: str) -> str:
    return note(f"No {esc(what)} yet: run <code>{esc(HOW_TO[key])}</code> "
                f"(or the whole platform: <code>{esc(HOW_TO['main'])}</code>), then rebuild the dashboard.")


def link(url: str, text: str) -> str:
    return f'<a href="{esc(url)}" target="_blank" rel="noopener">{esc(text)}</a>'


def data_uri_png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def colours(keys: Iterable[object]) -> dict[object, str]:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


def marker_sizes(values: pd.Series, lo: float, hi: float, small: float = 9, large: float = 22) -> list[float]:
    out = []
    for v in values:
        if v is None or v is pd.NA or pd.isna(v) or not (math.isfinite(lo) and math.isfinite(hi)):
            out.append((small + large) / 2 if not math.isfinite(lo) else small)
        elif hi > lo:
            out.append(small + (large - small) * (float(v) - lo) / (hi - lo))
        else:
            out.append((small + large) / 2)
    return out


def run_hover(row: pd.Series, study: str) -> str:
    """Hover text: the run's settings and numbers, and its address in the MLflow UI."""
    metric = dd.PRIMARY_METRIC[study]
    lines = [f"<b>{esc(row.get('arch', ''))}</b> · {esc(row.get('run_name', ''))}"]
    if study == "pathology":
        lines.append(f"filters n={fmt(row.get('filters'))}, depth {fmt(row.get('depth'))}, "
                     f"tile {fmt(row.get('image_size'))} px")
    else:
        lines.append(f"task {esc(row.get('task', ''))}, image {fmt(row.get('image_size'))} px")
    lines.append(f"split {esc(row.get('split', ''))}, augment {esc(row.get('augment', ''))}, "
                 f"seed {fmt(row.get('seed'))}, {esc(row.get('run_kind', ''))}")
    lines.append(f"{dd.PRIMARY_LABEL[study]}: {fmt(row.get(metric))}")
    if study == "mammography":
        lines.append(f"macro-F1 {fmt(row.get(tracking.test_metric('f1_macro')))}, majority baseline "
                     f"{fmt(row.get(tracking.baseline_metric('majority_accuracy')))}")
    lines.append(f"params {fmt(row.get(tracking.M_PARAMS), 'int')}, {fmt(row.get(tracking.M_SIZE_MB))} MB, "
                 f"CPU {fmt(row.get(tracking.M_CPU_TOTAL))} s")
    if row.get("aliases"):
        lines.append(f"registry: {esc(row['aliases'])}")
    if row.get("url"):
        lines.append(f"<i>click to open: {esc(row['url'])}</i>")
    return "<br>".join(lines)


def html_table(frame: pd.DataFrame, columns: Sequence[str] | None = None, *,
               headers: dict[str, str] | None = None, kinds: dict[str, str] | None = None,
               links: dict[str, Callable[[pd.Series], str | None]] | None = None,
               raw: dict[str, Callable[[pd.Series], str]] | None = None, scroll: bool = True) -> str:
    """A plain HTML table: numbers formatted, text escaped, optional link/raw-HTML columns."""
    columns = [c for c in (columns or list(frame.columns)) if c in frame.columns or c in (raw or {})]
    headers, kinds, links, raw = headers or {}, kinds or {}, links or {}, raw or {}
    out = ['<table class="data"><thead><tr>']
    numeric = {c: c in frame and pd.api.types.is_numeric_dtype(frame[c]) for c in columns}
    for c in columns:
        out.append(f'<th class="{"" if numeric[c] else "t"}">{esc(headers.get(c, c))}</th>')
    out.append("</tr></thead><tbody>")
    for _, row in frame.iterrows():
        out.append("<tr>")
        for c in columns:
            cls = "" if numeric[c] else "t"
            if c in raw:
                cell = raw[c](row)
            else:
                text = fmt(row[c], kinds.get(c, "auto")) if numeric[c] else esc(row[c] if pd.notna(row[c]) else "")
                url = links[c](row) if c in links else None
                cell = link(url, text) if url else text
            out.append(f'<td class="{cls}">{cell}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    body = "".join(out)
    return f'<div class="scroll">{body}</div>' if scroll else body


# --- one HTML document ------------------------------------------------------------------------------
class Page:
    """Sections of one HTML file; plotly.js goes in with the first figure only."""

    def __init__(self, key: str, info: dd.DashboardData, generated: str):
        self.key, self.info, self.generated = key, info, generated
        self.parts: list[str] = []
        self.n_figures = 0

    def add(self, html_text: str) -> None:
        self.parts.append(html_text)

    def figure(self, fig: go.Figure | None) -> str:
        if fig is None:
            return note("Nothing to draw: the runs logged no numbers for this chart.")
        fig.update_layout(template="plotly_white", font=dict(size=12),
                          margin=dict(l=60, r=20, t=50, b=50), hoverlabel=dict(align="left"))
        snippet = fig.to_html(full_html=False, include_plotlyjs=self.n_figures == 0, config=PLOTLY_CONFIG,
                              div_id=f"{self.key}-fig{self.n_figures}", post_script=CLICK_JS,
                              default_height=f"{int(fig.layout.height or 450)}px")
        self.n_figures += 1
        return f'<div class="fig">{snippet}</div>'

    def render(self) -> str:
        nav = " ".join(
            f'<a href="{PAGE_FILES[k]}" class="{"here" if k == self.key else ""}">{esc(PAGE_TITLES[k])}</a>'
            for k in PAGE_FILES)
        meta = (f"tracking store: <code>{esc(self.info.tracking_uri)}</code> · MLflow UI: "
                f"{link(self.info.ui_url, self.info.ui_url)} · generated {esc(self.generated)}")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{esc(PAGE_TITLES[self.key])} · medimg dashboards</title><style>{CSS}</style></head>"
                f"<body><header><nav>{nav}</nav><h1>{esc(PAGE_TITLES[self.key])}</h1>"
                f"<p class=\"meta\">{meta}</p></header><main>{''.join(self.parts)}</main></body></html>\n")


def section(title: str, *parts: str, caption: str = "") -> str:
    cap = f'<p class="caption">{caption}</p>' if caption else ""
    return f"<section><h2>{esc(title)}</h2>{cap}{''.join(parts)}</section>"


# --- figures --------------------------------------------------------------------------------------
def tradeoff_figure(table: pd.DataFrame, study: str, paper: pd.DataFrame | None = None,
                    costs: Sequence[str] = dd.COST_METRICS, size_by: str | None = None) -> go.Figure | None:
    """Accuracy vs each cost (log x): a colour per architecture, marker size by `size_by`,
    our Pareto front, and the paper's points (and front) where it published the same cost."""
    metric = dd.PRIMARY_METRIC[study]
    costs = [c for c in costs if c in table and table[c].gt(0).any()]
    if table.empty or not costs:
        return None
    size_by = size_by or ("depth" if study == "pathology" else "image_size")
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
                hovertext=[run_hover(r, study) for _, r in rows.iterrows()],
                hovertemplate="%{hovertext}<extra></extra>", customdata=list(rows.get("url", [""] * len(rows)))),
                row=1, col=j)
        front = dd.pareto_front(sub, cost, metric)
        if len(front):
            fig.add_trace(go.Scatter(
                x=front[cost], y=front[metric], mode="lines+markers", name=FRONT_OURS, legendgroup="front",
                showlegend=legend_once(FRONT_OURS), line=dict(color="#222", width=1.8, shape="hv"),
                marker=FRONT_MARKER, hoverinfo="skip"), row=1, col=j)
        if paper is not None and cost in paper and paper[cost].notna().any():
            pp = paper[paper[cost].gt(0)]
            for arch in sorted(set(pp["arch"])):
                rows = pp[pp["arch"] == arch]
                name = f"paper: {arch}"
                fig.add_trace(go.Scatter(
                    x=rows[cost], y=rows[metric], mode="markers", name=name, legendgroup=name,
                    showlegend=legend_once(name),
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
    fig.update_xaxes(type="log")
    fig.update_yaxes(title_text=dd.PRIMARY_LABEL[study], row=1, col=1)
    fig.update_layout(height=460, legend=dict(orientation="h", y=-0.18, x=0),
                      margin=dict(l=60, r=20, t=50, b=90))
    return fig


def paper_hover(row: pd.Series, study: str) -> str:
    if study == "pathology":
        return (f"<b>paper, Table V</b>: {esc(row['arch'])} n={fmt(row['filters'])} depth {fmt(row['depth'])}<br>"
                f"Jaccard {fmt(row[dd.PRIMARY_METRIC[study]])}<br>params {fmt(row[tracking.M_PARAMS], 'int')} (Keras)"
                f"<br>{fmt(row[tracking.M_SIZE_MB])} MB (Keras file, optimizer state included)<br>"
                f"CPU load + predict 57 tiles {fmt(row[tracking.M_CPU_TOTAL])} s")
    return f"<b>paper</b>: {esc(row['task'])} {esc(row['split'])}"


def split_figure(table: pd.DataFrame, task: str, paper: pd.DataFrame) -> go.Figure | None:
    """Accuracy and macro-F1 against the split ratio: ours (mean ± 95% CI over seeds, every
    run faint), the majority baseline, the paper's numbers."""
    acc, f1 = tracking.test_metric("accuracy"), tracking.test_metric("f1_macro")
    sub = table[(table["task"] == task) & table["test_fraction"].notna() & table["run_kind"].ne("trial")]
    pp = paper[paper["task"] == task]
    if sub.empty:
        return None
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=["test accuracy", "test macro-F1"])
    variants = sorted({(a, g) for a, g in zip(sub["arch"], sub["augment"])})
    colour = colours(variants)
    shown: set[str] = set()
    for j, (metric, base) in enumerate(((acc, tracking.baseline_metric("majority_accuracy")),
                                        (f1, tracking.baseline_metric("majority_f1_macro"))), 1):
        if metric not in sub:
            continue
        for i, (arch, augment) in enumerate(variants):
            rows = sub[(sub["arch"] == arch) & (sub["augment"] == augment)]
            name = f"{arch}, augment={augment}"
            stats = [(x, *dd.summarise(g[metric])) for x, g in rows.groupby("test_fraction")]
            shift = 0.6 * (i - (len(variants) - 1) / 2)  # side by side, not on top of each other
            xs = [100 * s[0] for s in stats]
            fig.add_trace(go.Scatter(
                x=[x + shift for x in xs], y=[s[1] for s in stats], mode="lines+markers", name=name, legendgroup=name,
                showlegend=name not in shown, line=dict(color=colour[(arch, augment)], width=2),
                marker=dict(size=9),
                error_y=dict(type="data", array=[s[2] for s in stats], visible=any(s[3] > 1 for s in stats)),
                hovertext=[f"{esc(name)}<br>test share {x:.0f}%: mean {fmt(m)} ± {fmt(ci)} (95% CI, {n} run(s))"
                           for x, m, ci, n in zip(xs, [s[1] for s in stats], [s[2] for s in stats], [s[3] for s in stats])],
                hovertemplate="%{hovertext}<extra></extra>"), row=1, col=j)
            shown.add(name)
            fig.add_trace(go.Scatter(
                x=100 * rows["test_fraction"] + shift, y=rows[metric], mode="markers", showlegend=False,
                legendgroup=name, name=f"{name} (runs)",
                marker=dict(color=colour[(arch, augment)], size=6, opacity=0.45),
                hovertext=[run_hover(r, "mammography") for _, r in rows.iterrows()],
                hovertemplate="%{hovertext}<extra></extra>", customdata=list(rows.get("url", [""] * len(rows)))),
                row=1, col=j)
        if base in sub and sub[base].notna().any():
            b = sub.groupby("test_fraction")[base].mean().dropna().sort_index()
            label = "majority baseline (always the commonest class)"
            fig.add_trace(go.Scatter(
                x=100 * b.index.to_numpy(), y=b.to_numpy(), mode="lines+markers", name=label, legendgroup="base",
                showlegend=label not in shown, line=dict(color="#777", dash="dash"),
                marker=dict(symbol="line-ew-open", size=22, line=dict(width=2, color="#777")),
                hovertemplate="majority baseline %{y:.3f}<extra></extra>"), row=1, col=j)
            shown.add(label)
        if len(pp) and metric in pp:
            fig.add_trace(go.Scatter(
                x=100 * pp["test_fraction"], y=pp[metric], mode="markers", name="paper", legendgroup="paper",
                showlegend="paper" not in shown, marker=dict(symbol="star", size=13, color="#111"),
                hovertext=[f"paper {esc(s)}: {fmt(v)}" for s, v in zip(pp["split"], pp[metric])],
                hovertemplate="%{hovertext}<extra></extra>"), row=1, col=j)
            shown.add("paper")
    ticks = pd.concat([sub[["test_fraction", "split"]], pp[["test_fraction", "split"]]]).drop_duplicates("test_fraction")
    fig.update_xaxes(title_text="test share of the films (train:test)", tickvals=100 * ticks["test_fraction"],
                     ticktext=[f"{s}" for s in ticks["split"]])
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(height=420, legend=dict(orientation="h", y=-0.25, x=0), margin=dict(l=60, r=20, t=50, b=100))
    return fig


def depth_figure(table: pd.DataFrame, paper: pd.DataFrame) -> go.Figure | None:
    """Jaccard against depth, one line per (architecture, initial filters): ours (mean ±
    95% CI over seeds) solid, the paper's Table V dashed, the trivial baselines flat."""
    metric = dd.PRIMARY_METRIC["pathology"]
    sub = table[table["depth"].notna() & table["filters"].notna() & table["run_kind"].ne("trial")]
    if sub.empty:
        return None
    combos = sorted({(a, int(n)) for a, n in zip(sub["arch"], sub["filters"])}
                    | {(a, int(n)) for a, n in zip(paper["arch"], paper["filters"])})
    colour = colours(combos)
    fig = go.Figure()
    for arch, n in combos:
        rows = sub[(sub["arch"] == arch) & (sub["filters"] == n)]
        name = f"{arch} n={n}"
        if len(rows):
            stats = [(int(d), *dd.summarise(g[metric])) for d, g in rows.groupby("depth")]
            fig.add_trace(go.Scatter(
                x=[s[0] for s in stats], y=[s[1] for s in stats], mode="lines+markers", name=name,
                legendgroup=name, line=dict(color=colour[(arch, n)], width=2.5), marker=dict(size=9),
                error_y=dict(type="data", array=[s[2] for s in stats], visible=any(s[3] > 1 for s in stats)),
                hovertext=[f"{esc(name)} depth {d}: Jaccard {fmt(m)} ± {fmt(ci)} (95% CI, {k} run(s))"
                           for d, m, ci, k in stats], hovertemplate="%{hovertext}<extra></extra>"))
        ref = paper[(paper["arch"] == arch) & (paper["filters"] == n)].sort_values("depth")
        if len(ref):
            fig.add_trace(go.Scatter(
                x=ref["depth"], y=ref[metric], mode="lines+markers", name=f"paper: {name}", legendgroup=name,
                line=dict(color=colour[(arch, n)], width=1.3, dash="dash"),
                marker=dict(symbol="x-thin-open", size=10, line=dict(width=2, color=colour[(arch, n)])),
                visible=True if len(rows) else "legendonly",
                hovertext=[f"paper Table V: {esc(name)} depth {d}: Jaccard {fmt(v)}" for d, v in zip(ref["depth"], ref[metric])],
                hovertemplate="%{hovertext}<extra></extra>"))
    depths = sorted(set(sub["depth"].astype(int)) | set(paper["depth"].astype(int)))
    for col, label, dash in ((tracking.baseline_metric("jaccard_all_background"), "baseline: all background", "dot"),
                             (tracking.baseline_metric("jaccard_all_tumor"), "baseline: all tumour", "dashdot")):
        if col in sub and sub[col].notna().any():
            value = float(sub[col].mean())
            fig.add_trace(go.Scatter(x=[depths[0] - 0.2, depths[-1] + 0.2], y=[value, value], mode="lines",
                                     name=label, line=dict(color="#777", dash=dash, width=1.2),
                                     hovertemplate=f"{label}: {value:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="depth (levels of the contracting path)", tickvals=depths, dtick=1)
    fig.update_yaxes(title_text=dd.PRIMARY_LABEL["pathology"])
    fig.update_layout(height=440, legend=dict(orientation="v", x=1.01, y=1))
    return fig


def overview_figure(info: dd.DashboardData) -> go.Figure | None:
    """Index: each study's headline result against parameters, with its Pareto front."""
    studies = [s for s, t in info.studies.items() if len(t) and t[tracking.M_PARAMS].gt(0).any()]
    if not studies:
        return None
    titles = [f"{PAGE_TITLES[s]}: {tasks_in_order(info.studies[s][info.studies[s][tracking.M_PARAMS].gt(0)])[0]}"
              for s in studies]
    fig = make_subplots(rows=1, cols=len(studies), horizontal_spacing=0.08, subplot_titles=titles)
    archs = sorted(set().union(*(set(info.studies[s]["arch"]) for s in studies)))
    colour = colours(archs)
    shown: set[str] = set()
    for j, study in enumerate(studies, 1):
        table = info.studies[study]
        metric = dd.PRIMARY_METRIC[study]
        sub = table[table[tracking.M_PARAMS].gt(0)]
        sub = sub[sub["task"] == tasks_in_order(sub)[0]]  # accuracies of different tasks do not compare
        for arch in archs:
            rows = sub[sub["arch"] == arch]
            if rows.empty:
                continue
            fig.add_trace(go.Scatter(
                x=rows[tracking.M_PARAMS], y=rows[metric], mode="markers", name=arch, legendgroup=arch,
                showlegend=arch not in shown, marker=dict(color=colour[arch], size=10, line=dict(width=1, color="white")),
                hovertext=[run_hover(r, study) for _, r in rows.iterrows()],
                hovertemplate="%{hovertext}<extra></extra>", customdata=list(rows["url"])), row=1, col=j)
            shown.add(arch)
        front = dd.pareto_front(sub, tracking.M_PARAMS, metric)
        if len(front):
            fig.add_trace(go.Scatter(x=front[tracking.M_PARAMS], y=front[metric], mode="lines+markers",
                                     name=FRONT_OURS, legendgroup="front", showlegend=FRONT_OURS not in shown,
                                     line=dict(color="#222", width=1.8, shape="hv"), marker=FRONT_MARKER,
                                     hoverinfo="skip"), row=1, col=j)
            shown.add(FRONT_OURS)
        fig.update_yaxes(title_text=dd.PRIMARY_LABEL[study], row=1, col=j)
        fig.update_xaxes(title_text="parameters", type="log", row=1, col=j)
    fig.update_layout(height=400, legend=dict(orientation="h", y=-0.25, x=0), margin=dict(l=60, r=20, t=50, b=90))
    return fig


def trials_figure(search: dd.Search) -> go.Figure | None:
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
                 for (_, r), fv in zip(rows.iterrows(), from_val[mask])]
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
    fig.update_yaxes(title_text=dd.PRIMARY_LABEL[search.study])
    fig.update_layout(height=380, legend=dict(orientation="h", y=-0.25, x=0), margin=dict(l=70, r=20, t=40, b=90))
    return fig


def search_frontier_figure(search: dd.Search, grid: pd.DataFrame) -> go.Figure | None:
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
    fig.update_yaxes(title_text=dd.PRIMARY_LABEL[search.study])
    fig.update_layout(height=380, legend=dict(orientation="h", y=-0.25, x=0), margin=dict(l=70, r=20, t=40, b=90))
    return fig


# --- sections shared by pages --------------------------------------------------------------------
def runs_table_html(table: pd.DataFrame, study: str) -> str:
    metric = dd.PRIMARY_METRIC[study]
    cols = ["run_name", "arch", "task", "filters", "depth", "image_size", "split", "augment", "seed", "run_kind",
            metric] + list(dd.STUDY_METRICS[study][1:2]) + [
        tracking.M_PARAMS, tracking.M_SIZE_MB, tracking.M_CPU_TOTAL, tracking.M_LATENCY_P50, "aliases", "pareto"]
    if study == "mammography":
        cols = [c for c in cols if c not in ("filters", "depth")] + [tracking.baseline_metric("majority_accuracy")]
    frame = table.sort_values(metric, ascending=False).copy()
    on_front = set()
    for cost in dd.COST_METRICS:
        on_front |= set(dd.pareto_front(table, cost, metric)["run_id"])
    frame["pareto"] = ["✓" if r in on_front else "" for r in frame["run_id"]]
    return html_table(frame, cols, kinds={tracking.M_PARAMS: "int"},
                      links={"run_name": lambda r: r.get("url") or None},
                      headers={"run_name": "run", "pareto": "on a front"})


def gates_html(gates: dict) -> str:
    if not gates:
        return '<span class="small">–</span>'
    items = []
    for key, value in sorted(gates.items()):
        v = str(value)
        low = v.strip().lower()
        cls = "pass" if low in ("pass", "passed", "true", "ok", "yes") else "fail" if low in (
            "fail", "failed", "false", "no", "rejected") else ""
        items.append(f"<li>{esc(key)}: <span class=\"{cls}\">{esc(v[:300])}</span></li>")
    return f'<ul class="gates">{"".join(items)}</ul>'


def registry_section(info: dd.DashboardData, study: str | None) -> str:
    aliases = dd.alias_table(info.registry, study)
    title = "Registry aliases"
    caption = ("Which model version holds each alias (set only by <code>promote</code>), the run it was "
               "made from, and the gate results the promotion wrote on the version (its tags).")
    if aliases.empty:
        models = sorted(set(info.registry["model"])) if len(info.registry) else []
        extra = f" Registered models: {esc(', '.join(models))}." if models else ""
        return section(title, note(f"No registry aliases yet.{extra} Run <code>{esc(HOW_TO['promote'])}</code> "
                                   "to promote the best runs, then rebuild."), caption=caption)
    runs = info.runs.set_index("run_id") if len(info.runs) else pd.DataFrame()
    frame = aliases.copy()

    def run_cell(r: pd.Series) -> str:
        if r["run_id"] in runs.index:
            run = runs.loc[r["run_id"]]
            url = dd.run_url(info.ui_url, run["experiment_id"], r["run_id"])
            return link(url, run["run_name"] or r["run_id"][:8])
        return esc(r["run_id"][:12] or "–")

    def result_cell(r: pd.Series) -> str:
        if r["run_id"] not in runs.index:
            return "–"
        run = runs.loc[r["run_id"]]
        study_of = run["study"] if run["study"] in dd.PRIMARY_METRIC else study
        parts = []
        if study_of in dd.PRIMARY_METRIC:
            metric = dd.PRIMARY_METRIC[study_of]
            parts.append(f"{esc(dd.PRIMARY_LABEL[study_of])} {fmt(run.get(metric, np.nan))}")
        parts.append(f"{fmt(run.get(tracking.M_SIZE_MB, np.nan))} MB")
        parts.append(f"CPU {fmt(run.get(tracking.M_CPU_TOTAL, np.nan))} s")
        return f"{esc(run.get('arch', ''))}<br>" + "<br>".join(parts)

    frame["created"] = [c.strftime("%Y-%m-%d %H:%M") if pd.notna(c) else "" for c in frame["created"]]
    table = html_table(frame, ["model", "alias", "version", "run", "result", "gates", "created"],
                       raw={"run": run_cell, "result": result_cell, "gates": lambda r: gates_html(r["gates"])},
                       scroll=False)
    return section(title, table, caption=caption)


# --- pages ------------------------------------------------------------------------------------------
def tasks_in_order(table: pd.DataFrame) -> list[str]:
    """A study's tasks, the one with most runs first (mammography: 7class, then the others)."""
    counts = table["task"].value_counts()
    return sorted(counts.index, key=lambda t: (-counts[t], t))


def study_page(info: dd.DashboardData, study: str, generated: str) -> Page:
    page = Page(study, info, generated)
    table = info.studies.get(study, pd.DataFrame())
    paper = dd.paper_points(study)
    metric = dd.PRIMARY_METRIC[study]
    if table.empty:
        page.add(section("Runs", no_runs_note(f"{study} runs", study)))
    else:
        kinds = table["run_kind"].value_counts().to_dict()
        counts = ", ".join(f"{v} {esc(k or 'untagged')}" for k, v in kinds.items())
        figures = []
        tasks = tasks_in_order(table)
        for task in tasks:
            rows = table[table["task"] == task]
            heading = f"<h3>{esc(task)} ({len(rows)} runs)</h3>" if len(tasks) > 1 else ""
            figures.append(heading + page.figure(tradeoff_figure(rows, study, paper if study == "pathology" else None)))
        page.add(section(
            f"Accuracy against cost ({len(table)} runs)", *figures,
            caption=(f"{esc(dd.PRIMARY_LABEL[study])} against parameters, saved weights size and CPU time to load "
                     f"the model and predict (log scales){', one chart per task' if len(tasks) > 1 else ''}. "
                     f"One colour per architecture; marker size: "
                     f"{'depth' if study == 'pathology' else 'input image size'}; diamonds are search trials. "
                     "The black step line and rings: our Pareto front (no other run is both cheaper and better). "
                     + ("Crosses and the dashed line: the paper's Table V and its front (its sizes are Keras "
                        "files with optimizer state, about 12 bytes per parameter; ours are weights only). "
                        if study == "pathology" else "The paper reports no efficiency numbers for this study; "
                        "its accuracies are drawn against the split below. ")
                     + f"Hover for a run's settings; click a point to open it in the MLflow UI. Runs: {counts}.")))
    if study == "mammography":
        page.add(mammography_sections(page, info, table, paper))
    else:
        page.add(pathology_sections(page, info, table, paper))
    page.add(paper_section(info, study, table))
    page.add(registry_section(info, study))
    if not table.empty:
        page.add(section("All runs", runs_table_html(table, study),
                         caption="Every finished run with a result, best first; the run name opens it in the MLflow UI."))
    return page


def mammography_sections(page: Page, info: dd.DashboardData, table: pd.DataFrame, paper: pd.DataFrame) -> str:
    parts = []
    if table.empty:
        return ""
    for task in tasks_in_order(table):
        fig = split_figure(table, task, paper)
        if fig is not None:
            parts.append(f"<h3>{esc(task)}</h3>" + page.figure(fig))
    split_html = section(
        "Metrics against the split ratio", *parts,
        caption=("Lines: mean over seeds, with 95% confidence intervals when a setting was repeated; faint dots: "
                 "single runs. Dashed: the majority baseline (always predicting the commonest class; NORM is 64% "
                 "of the films). Stars: the paper. An accuracy near the baseline with a low macro-F1 is the "
                 "all-NORM collapse.")) if parts else ""
    cards = []
    best_by = dd.BEST_BY["mammography"]
    scored = table[table["run_kind"].ne("trial")]
    for (task, split, augment), group in scored.groupby(["task", "split", "augment"], sort=True):
        best = group.sort_values([best_by, dd.PRIMARY_METRIC["mammography"]], ascending=False, na_position="last").iloc[0]
        png = dd.artifact_bytes(best["run_id"], "confusion_matrix.png")
        body = f'<img alt="confusion matrix" src="{data_uri_png(png)}">' if png else confusion_csv_html(best["run_id"])
        cards.append(
            f'<div class="card"><h4>{esc(task)} · {esc(split)} · augment={esc(augment)}</h4>'
            f'<div class="small">{link(best["url"], best["run_name"] or best["run_id"][:8])} · {esc(best["arch"])} · '
            f'acc {fmt(best[dd.PRIMARY_METRIC["mammography"]])} · macro-F1 {fmt(best.get(best_by))} · '
            f'baseline {fmt(best.get(tracking.baseline_metric("majority_accuracy"), np.nan))} · '
            f'best of {len(group)}</div>{body}</div>')
    conf_html = section("Confusion matrices: best run per scenario", f'<div class="cards">{"".join(cards)}</div>',
                        caption="Best = highest test macro-F1 (accuracy alone rewards predicting NORM for every film). "
                                "Read from each run's confusion_matrix artifact.") if cards else ""
    return split_html + conf_html


def widen_overlays(png: bytes, per_row: int = 4) -> bytes:
    """The overlays artifact is a tall strip of (tile | overlay) pairs, one pair per row;
    laid out `per_row` pairs wide it fits a screen. Any other layout is returned as is."""
    try:
        import cv2

        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    except Exception:  # noqa: BLE001  (no OpenCV, or not an image)
        return png
    if image is None:
        return png
    h, w = image.shape[:2]
    tile = w // 2
    if w % 2 or tile == 0 or h % tile or h // tile <= per_row:
        return png
    pairs = [image[i * tile:(i + 1) * tile] for i in range(h // tile)]
    gap = max(2, tile // 32)
    pad = np.full((tile, gap, 3), 255, np.uint8)
    rows = []
    for start in range(0, len(pairs), per_row):
        chunk = pairs[start:start + per_row]
        chunk += [np.full_like(pairs[0], 255)] * (per_row - len(chunk))
        rows.append(np.concatenate([x for pair in chunk for x in (pair, pad)][:-1], axis=1))
        rows.append(np.full((gap, rows[-1].shape[1], 3), 255, np.uint8))
    ok, out = cv2.imencode(".png", np.concatenate(rows[:-1], axis=0))
    return out.tobytes() if ok else png


def confusion_csv_html(run_id: str) -> str:
    data = dd.artifact_bytes(run_id, "confusion_matrix.csv")
    if not data:
        return '<p class="small">no confusion_matrix artifact</p>'
    try:
        frame = pd.read_csv(io.BytesIO(data), index_col=0)
    except (ValueError, pd.errors.ParserError):
        return '<p class="small">unreadable confusion_matrix.csv</p>'
    return html_table(frame.reset_index(), scroll=False)


def pathology_sections(page: Page, info: dd.DashboardData, table: pd.DataFrame, paper: pd.DataFrame) -> str:
    if table.empty:
        return ""
    parts = []
    fig = depth_figure(table, paper)
    if fig is not None:
        parts.append(section(
            "Jaccard against depth, per initial filter count", page.figure(fig),
            caption=("Solid: our runs (mean over seeds, 95% CI when repeated); dashed crosses: the paper's Table V "
                     "for the same architecture and n (cells we did not run are hidden: click their legend entry). "
                     "Flat lines: what predicting all background or all tumour scores.")))
    aliases = dd.alias_table(info.registry, "pathology")
    champ = aliases[aliases["alias"] == "champion"]
    source, label = None, ""
    if len(champ) and champ.iloc[0]["run_id"] in set(table["run_id"]):
        source = table[table["run_id"] == champ.iloc[0]["run_id"]].iloc[0]
        label = f"champion: {esc(champ.iloc[0]['model'])} version {esc(champ.iloc[0]['version'])}"
    elif len(table):
        source = table.sort_values(dd.PRIMARY_METRIC["pathology"], ascending=False).iloc[0]
        label = (f"no champion alias yet (run <code>{esc(HOW_TO['promote'])}</code>); showing the best run "
                 "by test Jaccard instead")
    if source is not None:
        png = dd.artifact_bytes(source["run_id"], "test_overlays.png")
        body = (f'<img class="overlays" alt="test overlays" src="{data_uri_png(widen_overlays(png))}">' if png
                else '<p class="small">this run has no test_overlays.png artifact</p>')
        parts.append(section(
            "Example test overlays of the champion",
            f'<div class="card wide"><h4>{label}</h4><div class="small">'
            f'{link(source["url"], source["run_name"] or source["run_id"][:8])} · {esc(source["arch"])} '
            f'n={fmt(source["filters"])} depth {fmt(source["depth"])} · Jaccard {fmt(source[dd.PRIMARY_METRIC["pathology"]])}'
            f'</div>{body}</div>',
            caption="The run's own test_overlays.png artifact, laid out in rows: each test tile beside its overlay "
                    "(prediction in red, true tumour outlined in green)."))
    return "".join(parts)


PAPER_HEADERS = {
    "paper_jaccard": "paper Jaccard", "ours_jaccard": "ours", "ours_jaccard_ci95": "± 95% CI",
    "jaccard_diff": "ours − paper", "paper_params": "paper params", "ours_params": "ours (PyTorch)",
    "ours_params_keras": "ours (Keras count)", "paper_size_mb": "paper MB", "ours_size_mb": "ours MB",
    "paper_cpu_s": "paper CPU s", "ours_cpu_s": "ours CPU s", "paper_accuracy": "paper accuracy",
    "ours_accuracy": "ours", "ours_accuracy_ci95": "± 95% CI", "accuracy_diff": "ours − paper",
    "baseline_majority_accuracy": "majority baseline", "paper_f1_macro": "paper macro-F1",
    "ours_f1_macro": "ours", "ours_f1_macro_ci95": "± 95% CI",
}


def paper_section(info: dd.DashboardData, study: str, table: pd.DataFrame) -> str:
    ours = dd.paper_vs_ours(study, table)
    if study == "pathology":
        cols = ["arch", "filters", "depth", "runs", "paper_jaccard", "ours_jaccard", "ours_jaccard_ci95",
                "jaccard_diff", "paper_params", "ours_params", "ours_params_keras", "paper_size_mb", "ours_size_mb",
                "paper_cpu_s", "ours_cpu_s"]
        kinds = {"paper_params": "int", "ours_params": "int", "ours_params_keras": "int"}
        caption = ("Every Table V cell beside the mean of our finished runs of the same cell (search trials left "
                   "out). The paper's parameter counts are Keras totals (comparable with params_count_keras), its "
                   "sizes Keras files with optimizer state, its CPU time loading plus predicting 57 tiles.")
    else:
        cols = ["task", "split", "arch", "augment", "runs", "paper_accuracy", "ours_accuracy", "ours_accuracy_ci95",
                "accuracy_diff", "baseline_majority_accuracy", "paper_f1_macro", "ours_f1_macro", "ours_f1_macro_ci95"]
        kinds = {}
        caption = ("Each of the paper's scenarios beside the mean (± 95% CI half-width) of our runs of the same task "
                   "and split, per architecture and augmentation; the majority baseline is what always predicting "
                   "the commonest class scores on the same test films.")
    parts = [html_table(ours, cols, kinds=kinds, headers=PAPER_HEADERS)]
    grid, parent = dd.grid_comparison(info.runs, study)
    if grid is not None:
        url = dd.run_url(info.ui_url, parent["experiment_id"], parent["run_id"])
        parts.append(f"<h3>As logged by the latest grid ({link(url, parent['run_name'] or parent['run_id'][:8])}: "
                     "grid/paper_vs_ours.csv)</h3>")
        parts.append(html_table(grid))
    else:
        parts.append(note(f"No grid table yet: run <code>{esc(HOW_TO[study])}</code> for the paper's grid."))
    return section("The paper against ours", *parts, caption=caption)


def index_page(info: dd.DashboardData, generated: str) -> Page:
    page = Page("index", info, generated)
    rows = []
    for study in tracking.STUDIES:
        table = info.studies.get(study, pd.DataFrame())
        metric = dd.PRIMARY_METRIC[study]
        if table.empty:
            rows.append({"study": study, "task": "", "runs": 0, "metric": dd.PRIMARY_LABEL[study]})
            continue
        for task in tasks_in_order(table):
            runs = table[table["task"] == task]
            best = runs.sort_values(metric, ascending=False).iloc[0]
            front = dd.pareto_front(runs, tracking.M_PARAMS, metric)
            rows.append(dict(
                study=study, task=task, runs=len(runs), metric=dd.PRIMARY_LABEL[study], best=best[metric],
                best_run=best["run_name"] or best["run_id"][:8], best_url=best["url"], best_arch=best["arch"],
                front=len(front),
                smallest_on_front=(f"{front.iloc[0]['arch']} ({fmt(front.iloc[0][tracking.M_PARAMS], 'int')} "
                                   f"params, {fmt(front.iloc[0][metric])})") if len(front) else ""))
    summary = pd.DataFrame(rows)
    for col in ("best", "best_run", "best_url", "best_arch", "front", "smallest_on_front"):
        if col not in summary:
            summary[col] = np.nan if col in ("best", "front") else ""
    summary["page"] = [PAGE_FILES[s] for s in summary["study"]]
    table = html_table(summary, ["study", "page", "task", "runs", "metric", "best", "best_arch", "best_run", "front",
                                 "smallest_on_front"],
                       links={"page": lambda r: r["page"], "best_run": lambda r: r["best_url"] or None},
                       headers={"front": "runs on the params front", "smallest_on_front": "cheapest on the front"},
                       kinds={"front": "int"})
    notes = "".join(no_runs_note(f"{s} runs", s) for s in tracking.STUDIES if not len(info.studies.get(s, [])))
    page.add(section("Studies", table, notes,
                     caption="The two reproduced papers: the best held-out result, and the runs no other run beats "
                             "on both accuracy and parameter count. Details on each study's page."))
    fig = overview_figure(info)
    if fig is not None:
        page.add(section("Accuracy against parameters", page.figure(fig),
                         caption="Each study's runs with its Pareto front (log x). Hover for settings; click to open "
                                 "the run in the MLflow UI."))
    if info.searches:
        srows = pd.DataFrame([{"search": s.parent["run_name"] or s.parent["run_id"][:8], "study": s.study,
                               "trials": len(s.trials), "url": dd.run_url(info.ui_url, s.parent["experiment_id"],
                                                                          s.parent["run_id"]),
                               "metric": s.metric,  # the trials' test metric, not the search's val objective
                               "best": s.trials[s.metric].max() if s.metric in s.trials and len(s.trials) else np.nan,
                               "cost axis": s.cost} for s in info.searches])
        page.add(section("Searches", html_table(srows, ["search", "study", "trials", "metric", "best", "cost axis"],
                                                links={"search": lambda r: r["url"]}, scroll=False),
                         caption=f'Trials over time and the frontier found against the grid\'s: '
                                 f'<a href="{PAGE_FILES["search"]}">search page</a>.'))
    else:
        page.add(section("Searches", no_runs_note("architecture search", "search")))
    page.add(registry_section(info, None))
    return page


def search_page(info: dd.DashboardData, generated: str) -> Page:
    page = Page("search", info, generated)
    if not info.searches:
        page.add(section("Searches", no_runs_note("architecture search", "search")))
        return page
    for search in info.searches[:MAX_SEARCHES]:
        parent = search.parent
        grid = info.studies.get(search.study, pd.DataFrame())
        grid = grid[grid["run_kind"].isin((tracking.RUN_KIND_GRID_CHILD, tracking.RUN_KIND_SINGLE))] if len(grid) else grid
        title = f"{parent['run_name'] or parent['run_id'][:8]} · {search.study} · {len(search.trials)} trials"
        url = dd.run_url(info.ui_url, parent["experiment_id"], parent["run_id"])
        parts = [f'<p class="small">{link(url, "open the search run in the MLflow UI")} · started '
                 f'{esc(parent["start_time"].strftime("%Y-%m-%d %H:%M") if pd.notna(parent["start_time"]) else "?")} UTC · '
                 f'frontier drawn against {esc(dd.COST_LABEL.get(search.cost, search.cost))}</p>']
        if search.trials.empty:
            parts.append(note("This search has no trials yet."))
        fig = trials_figure(search)
        if fig is not None:
            parts.append("<h3>Trials over time</h3><p class=\"caption\">Each trial's test result in the order the "
                         "search ran them, coloured by state; open circles: a pruned trial's last validation value "
                         "(it never reached the test set). The line is the best result so far.</p>" + page.figure(fig))
        fig = search_frontier_figure(search, grid)
        if fig is not None:
            parts.append("<h3>Frontier found, against the grid's</h3><p class=\"caption\">The search's trials and "
                         "the grid's runs of the same study on the search's cost axis (log), each with its Pareto "
                         "front: where the blue line lies above the dashed one, the search found cheaper or better "
                         "models than the grid.</p>" + page.figure(fig))
        if len(grid) == 0:
            parts.append(note(f"No grid runs of {esc(search.study)} to compare with: run "
                              f"<code>{esc(HOW_TO[search.study])}</code>."))
        if len(search.trials):
            cols = ["trial_number", "trial_state", "run_name", "arch", "filters", "depth", search.metric,
                    search.cost, tracking.M_SIZE_MB, tracking.M_CPU_TOTAL]
            parts.append(html_table(search.trials, list(dict.fromkeys(cols)), kinds={tracking.M_PARAMS: "int"},
                                    links={"run_name": lambda r: r["url"]}, headers={"run_name": "run"}))
        page.add(section(title, *parts))
    if len(info.searches) > MAX_SEARCHES:
        page.add(note(f"{len(info.searches) - MAX_SEARCHES} older searches not drawn."))
    return page


def build_pages(info: dd.DashboardData, out: Path) -> dict[str, Path]:
    """Write every page into `out`; returns page key -> file."""
    out.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pages = [index_page(info, generated)] + [study_page(info, s, generated) for s in tracking.STUDIES] + [
        search_page(info, generated)]
    written = {}
    for page in pages:
        path = out / PAGE_FILES[page.key]
        path.write_text(page.render(), encoding="utf-8")
        written[page.key] = path
    return written
