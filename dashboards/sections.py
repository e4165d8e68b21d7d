"""Sections of the dashboard pages, drawn from what each study declares (its DashboardSpec):
runs table, registry aliases, metric-against-setting charts, image galleries, paper-vs-ours.

Missing data (no runs, no aliases) gives a short note saying which entry point fills it,
never an error.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from dashboards import data as dd
from dashboards.figures import curve_figure
from dashboards.html import Page, data_uri_png, esc, fmt, html_table, link, note, section, widen_overlays
from projects.core import tracking
from projects.core.specs.dashboard import GallerySpec
from projects.core.study import get_study, study_names


def how_to(key: str) -> str:
    """The command that fills a page's data: a study's grid, a search, promote, the main job."""
    if key in study_names():
        return f"mlflow run . -e {key}_grid --env-manager local"
    if key == "search":
        return f"mlflow run . -e search -P study=<{'|'.join(study_names())}> --env-manager local"
    if key == "promote":
        return "mlflow run . -e promote --env-manager local"
    return "mlflow run . --env-manager local"


def no_runs_note(what: str, key: str) -> str:
    return note(f"No {esc(what)} yet: run <code>{esc(how_to(key))}</code> "
                f"(or the whole platform: <code>{esc(how_to('main'))}</code>), then rebuild the dashboard.")


def runs_table_html(table: pd.DataFrame, study: str) -> str:
    metric = dd.primary_metric(study)
    spec = get_study(study).dashboard
    cols = (["run_name", *(["data_set"] if table["data_set"].nunique() > 1 else []), "arch", *spec.run_columns, "seed", "run_kind", metric, tracking.ci_low(metric),
             tracking.ci_high(metric), tracking.M_TEST_UNITS] + list(spec.metrics[1:2])
            + [tracking.M_PARAMS, tracking.M_SIZE_MB, tracking.M_CPU_TOTAL, tracking.M_LATENCY_P50, "aliases", "pareto"]
            + list(get_study(study).headline.baselines[:1]))
    several = table["data_set"].nunique() > 1  # then grouped by data set, best first within each
    frame = table.sort_values(["data_set", metric] if several else [metric], ascending=[True, False] if several else False).copy()
    on_front = set()
    for _, rows in table.groupby("data_set"):  # a front compares runs on one test set only
        for cost in dd.COST_METRICS:
            on_front |= set(dd.pareto_front(rows, cost, metric)["run_id"])
    frame["pareto"] = ["✓" if r in on_front else "" for r in frame["run_id"]]
    return html_table(frame, list(dict.fromkeys(cols)), kinds={tracking.M_PARAMS: "int", tracking.M_TEST_UNITS: "int"},
                      links={"run_name": lambda r: r.get("url") or None},
                      headers={"run_name": "run", "pareto": "on a front", "data_set": "data set", tracking.ci_low(metric): "95% low",
                               tracking.ci_high(metric): "95% high", tracking.M_TEST_UNITS: "test units"})


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


def _result_cell(run: pd.Series, study: str | None) -> str:
    parts = []
    study_of = run["study"] if run["study"] in study_names() else study
    if study_of:
        parts.append(f"{esc(dd.primary_label(study_of))} {fmt(run.get(dd.primary_metric(study_of), np.nan))}")
    parts.append(f"{fmt(run.get(tracking.M_SIZE_MB, np.nan))} MB")
    parts.append(f"CPU {fmt(run.get(tracking.M_CPU_TOTAL, np.nan))} s")
    return f"{esc(run.get('arch', ''))}<br>" + "<br>".join(parts)


def registry_section(info: dd.DashboardData, study: str | None) -> str:
    aliases = dd.alias_table(info.registry, study)
    title = "Registry aliases"
    caption = ("Which model version holds each alias (set only by <code>promote</code>), the run it was "
               "made from, and the gate results the promotion wrote on the version (its tags).")
    if aliases.empty:
        models = sorted(set(info.registry["model"])) if len(info.registry) else []
        extra = f" Registered models: {esc(', '.join(models))}." if models else ""
        return section(title, note(f"No registry aliases yet.{extra} Run <code>{esc(how_to('promote'))}</code> "
                                   "to promote the best runs, then rebuild."), caption=caption)
    runs = info.runs.set_index("run_id") if len(info.runs) else pd.DataFrame()

    def run_cell(r: pd.Series) -> str:
        if r["run_id"] in runs.index:
            run = runs.loc[r["run_id"]]
            return link(dd.run_url(info.ui_url, run["experiment_id"], r["run_id"]), run["run_name"] or r["run_id"][:8])
        return esc(r["run_id"][:12] or "–")

    frame = aliases.copy()
    frame["created"] = [c.strftime("%Y-%m-%d %H:%M") if pd.notna(c) else "" for c in frame["created"]]
    table = html_table(frame, ["model", "alias", "version", "run", "result", "gates", "created"],
                       raw={"run": run_cell, "gates": lambda r: gates_html(r["gates"]),
                            "result": lambda r: _result_cell(runs.loc[r["run_id"]], study)
                            if r["run_id"] in runs.index else "–"},
                       scroll=False)
    return section(title, table, caption=caption)


def curve_sections(page: Page, table: pd.DataFrame, study: str, paper: pd.DataFrame) -> str:
    out = []
    for curve in get_study(study).dashboard.curves:
        tasks = dd.tasks_in_order(table) if curve.per_task else [None]
        parts = []
        for task in tasks:
            fig = curve_figure(table, curve, paper, task)
            if fig is not None:
                parts.append((f"<h3>{esc(task)}</h3>" if task is not None else "") + page.figure(fig))
        if parts:
            out.append(section(curve.title, *parts, caption=curve.caption))
    return "".join(out)


def _image_html(run_id: str, gallery: GallerySpec) -> str:
    png = dd.artifact_bytes(run_id, gallery.artifact)
    alt = gallery.artifact.rsplit(".", 1)[0].replace("_", " ")
    if png:
        css = ' class="overlays"' if gallery.strip else ""
        return f'<img{css} alt="{esc(alt)}" src="{data_uri_png(widen_overlays(png) if gallery.strip else png)}">'
    if gallery.csv_fallback:
        data = dd.artifact_bytes(run_id, gallery.csv_fallback)
        try:
            return html_table(pd.read_csv(io.BytesIO(data), index_col=0).reset_index(), scroll=False)
        except (TypeError, ValueError, pd.errors.ParserError):
            return f'<p class="small">no readable {esc(gallery.csv_fallback)}</p>'
    return f'<p class="small">this run has no {esc(gallery.artifact)} artifact</p>'


def _card(run: pd.Series, study: str, heading: str, extra: str, gallery: GallerySpec, wide: bool = False) -> str:
    metric, best_by = dd.primary_metric(study), dd.best_by(study)
    numbers = [f"{esc(dd.primary_label(study))} {fmt(run.get(metric))}"]
    if best_by != metric:
        numbers.append(f"{esc(best_by)} {fmt(run.get(best_by))}")
    numbers += [f"{esc(b)} {fmt(run.get(b, np.nan))}" for b in get_study(study).headline.baselines[:1]]
    return (f'<div class="card{" wide" if wide else ""}"><h4>{heading}</h4><div class="small">'
            f'{link(run["url"], run["run_name"] or run["run_id"][:8])} · {esc(run["arch"])} · '
            + " · ".join(numbers) + (f" · {extra}" if extra else "") + f"</div>{_image_html(run['run_id'], gallery)}</div>")


def gallery_sections(info: dd.DashboardData, table: pd.DataFrame, study: str) -> str:
    """Per gallery: the best run of each group, or the champion's image (else the best run's)."""
    out = []
    metric, best_by = dd.primary_metric(study), dd.best_by(study)
    for gallery in get_study(study).dashboard.galleries:
        if table.empty:
            continue
        if gallery.group_by:
            cards = []
            scored = table[table["run_kind"].ne("trial")]
            for key, group in scored.groupby(list(gallery.group_by), sort=True):
                best = group.sort_values([best_by, metric], ascending=False, na_position="last").iloc[0]
                heading = " · ".join(f"{c}={v}" if c == "augment" else esc(v)
                                     for c, v in zip(gallery.group_by, key if isinstance(key, tuple) else (key,)))
                cards.append(_card(best, study, heading, f"best of {len(group)}", gallery))
            body = f'<div class="cards">{"".join(cards)}</div>'
        else:
            aliases = dd.alias_table(info.registry, study)
            champ = aliases[aliases["alias"] == "champion"]
            if len(champ) and champ.iloc[0]["run_id"] in set(table["run_id"]):
                source = table[table["run_id"] == champ.iloc[0]["run_id"]].iloc[0]
                label = f"champion: {esc(champ.iloc[0]['model'])} version {esc(champ.iloc[0]['version'])}"
            elif len(champ):  # the champion was trained on another data set (a page section per data set)
                source = table.sort_values(metric, ascending=False).iloc[0]
                label = (f"the best run on this data set by {esc(dd.primary_label(study))} (the champion, "
                         f"{esc(champ.iloc[0]['model'])} version {esc(champ.iloc[0]['version'])}, was trained on another)")
            else:
                source = table.sort_values(metric, ascending=False).iloc[0]
                label = (f"no champion alias yet (run <code>{esc(how_to('promote'))}</code>); showing the best run "
                         f"by {esc(dd.primary_label(study))} instead")
            body = _card(source, study, label, "", gallery, wide=True)
        out.append(section(gallery.title, body, caption=gallery.caption))
    return "".join(out)


def paper_section(info: dd.DashboardData, study: str, table: pd.DataFrame, with_grid: bool = True) -> str:
    """The paper's rows beside ours (a study with a paper: dashboards.paper.PaperStudy), and the
    latest grid's table (with_grid: once per page, it is not one data set's)."""
    spec = get_study(study).dashboard
    ours = dd.paper_vs_ours(study, table)
    parts = [] if ours is None else [html_table(ours, list(spec.paper_columns), headers=dict(spec.paper_headers),
                                                kinds={c: "int" for c in spec.paper_int_columns})]
    if not with_grid:
        return section("The paper against ours", *parts, caption=spec.paper_caption) if parts else ""
    grid, parent = dd.grid_comparison(info.runs, study)
    if grid is not None:
        url = dd.run_url(info.ui_url, parent["experiment_id"], parent["run_id"])
        parts.append(f"<h3>As logged by the latest grid ({link(url, parent['run_name'] or parent['run_id'][:8])}: "
                     "grid/paper_vs_ours.csv)</h3>")
        parts.append(html_table(grid))
    else:
        parts.append(note(f"No grid table yet: run <code>{esc(how_to(study))}</code> for the "
                          + ("paper's grid." if ours is not None else "grid.")))
    return section("The paper against ours" if ours is not None else "The latest grid", *parts, caption=spec.paper_caption)
