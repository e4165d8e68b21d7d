"""HTML and plotly building blocks of the dashboard pages: formatting, tables, one page.

A page is one HTML document with plotly.js embedded once (the first figure carries it, the
others reuse it) and images as base64 data URIs, so it opens offline from disk and inside
the MLflow UI's artifact viewer.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Iterable, Sequence

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

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

    def __init__(self, key: str, nav: Sequence[tuple[str, str, str]], meta: str, generated: str):
        """nav: (key, file, title) of every page; meta: the header line under the title."""
        self.key, self.nav, self.meta, self.generated = key, list(nav), meta, generated
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
        nav = " ".join(f'<a href="{file}" class="{"here" if k == self.key else ""}">{esc(title)}</a>'
                       for k, file, title in self.nav)
        title = next(t for k, _, t in self.nav if k == self.key)
        meta = f"{self.meta} · generated {esc(self.generated)}"
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{esc(title)} · medimg dashboards</title><style>{CSS}</style></head>"
                f"<body><header><nav>{nav}</nav><h1>{esc(title)}</h1>"
                f"<p class=\"meta\">{meta}</p></header><main>{''.join(self.parts)}</main></body></html>\n")


def section(title: str, *parts: str, caption: str = "") -> str:
    cap = f'<p class="caption">{caption}</p>' if caption else ""
    return f"<section><h2>{esc(title)}</h2>{cap}{''.join(parts)}</section>"


# --- images ---------------------------------------------------------------------------------------
def widen_overlays(png: bytes, per_row: int = 4) -> bytes:
    """A tall strip of (tile | overlay) pairs, one pair per row, laid out `per_row` pairs
    wide so it fits a screen. Any other layout is returned as is."""
    try:
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    except Exception:  # noqa: BLE001  (not an image)
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


