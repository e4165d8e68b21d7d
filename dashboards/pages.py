"""Dashboard pages: an overview, one page per registered study, and the searches.

Every study page is drawn from what the study declares (projects.core.study): its headline
metric, trade-off charts against cost, its metric-against-setting charts, image galleries,
the paper against ours, the registry's aliases and the runs table. Points link to their run
in the MLflow UI.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from dashboards import data as dd
from dashboards.searches import Search
from dashboards.figures import (FRONT_GRID, FRONT_OURS, FRONT_PAPER, FRONT_SEARCH, overview_figure,  # noqa: F401
                                search_frontier_figure, tradeoff_figure, trials_figure)
from dashboards.html import Page, esc, fmt, html_table, link, note, section
from dashboards.sections import (curve_sections, gallery_sections, how_to, no_runs_note, paper_section,
                                 registry_section, runs_table_html)
from projects.core import tracking
from projects.core.study import get_study, study_names

MAX_SEARCHES = 5  # newest searches drawn on the search page


def page_files() -> dict[str, str]:
    """Page key -> file name: the overview, one page per study, the searches."""
    return {"index": "index.html"} | {s: f"{s}.html" for s in study_names()} | {"search": "search.html"}


def page_titles() -> dict[str, str]:
    return {"index": "Overview"} | {s: get_study(s).dashboard.title for s in study_names()} | {
        "search": "Architecture search"}


def new_page(key: str, info: dd.DashboardData, generated: str) -> Page:
    files, titles = page_files(), page_titles()
    meta = (f"tracking store: <code>{esc(info.tracking_uri)}</code> · MLflow UI: "
            f"{link(info.ui_url, info.ui_url)}")
    return Page(key, [(k, files[k], titles[k]) for k in files], meta, generated)


def _tradeoff_section(page: Page, table: pd.DataFrame, study: str, paper: pd.DataFrame) -> str:
    spec = get_study(study).dashboard
    kinds = table["run_kind"].value_counts().to_dict()
    counts = ", ".join(f"{v} {esc(k or 'untagged')}" for k, v in kinds.items())
    figures, tasks = [], dd.tasks_in_order(table)
    for task in tasks:
        rows = table[table["task"] == task]
        heading = f"<h3>{esc(task)} ({len(rows)} runs)</h3>" if len(tasks) > 1 else ""
        figures.append(heading + page.figure(tradeoff_figure(rows, study, paper if spec.paper_on_tradeoff else None)))
    return section(
        f"Accuracy against cost ({len(table)} runs)", *figures,
        caption=(f"{esc(dd.primary_label(study))} against parameters, saved weights size and CPU time to load "
                 f"the model and predict (log scales){', one chart per task' if len(tasks) > 1 else ''}. "
                 f"One colour per architecture; marker size: {esc(spec.size_label)}; diamonds are search trials. "
                 "The black step line and rings: our Pareto front (no other run is both cheaper and better). "
                 + ("Crosses and the dashed line: the paper's points and its front. " if spec.paper_on_tradeoff
                    else "The paper reports no efficiency numbers for this study. " if dd.has_paper(study) else "")
                 + f"Hover for a run's settings; click a point to open it in the MLflow UI. Runs: {counts}."))


def study_page(info: dd.DashboardData, study: str, generated: str) -> Page:
    page = new_page(study, info, generated)
    table = info.studies.get(study, pd.DataFrame())
    paper = dd.paper_points(study)
    if table.empty:
        page.add(section("Runs", no_runs_note(f"{study} runs", study)))
        page.add(paper_section(info, study, table))
    sets = [] if table.empty else dd.data_sets_in_order(table)
    for i, name in enumerate(sets):  # runs on different data sets have different test sets: never one chart
        rows = table[table["data_set"] == name]
        page.add(section(f"Data set: {name or 'unnamed'} ({len(rows)} runs)",
                         caption="The sections up to the next data set show only runs trained and tested on this "
                                 "data set" + ("; runs on another one are ranked on their own." if len(sets) > 1 else ".")))
        page.add(_tradeoff_section(page, rows, study, paper))
        page.add(curve_sections(page, rows, study, paper))
        page.add(gallery_sections(info, rows, study))
        page.add(paper_section(info, study, rows, with_grid=i == 0))
    page.add(registry_section(info, study))
    if not table.empty:
        page.add(section("All runs", runs_table_html(table, study),
                         caption="Every finished run with a result, best first; the run name opens it in the MLflow UI."))
    return page


def _study_rows(info: dd.DashboardData) -> pd.DataFrame:
    rows = []
    for study in study_names():
        table = info.studies.get(study, pd.DataFrame())
        metric = dd.primary_metric(study)
        if table.empty:
            rows.append({"study": study, "task": "", "runs": 0, "metric": dd.primary_label(study)})
            continue
        for task in dd.tasks_in_order(table):
            runs = table[table["task"] == task]
            best = runs.sort_values(metric, ascending=False).iloc[0]
            front = dd.pareto_front(runs, tracking.M_PARAMS, metric)
            rows.append(dict(
                study=study, task=task, runs=len(runs), metric=dd.primary_label(study), best=best[metric],
                best_run=best["run_name"] or best["run_id"][:8], best_url=best["url"], best_arch=best["arch"],
                front=len(front),
                smallest_on_front=(f"{front.iloc[0]['arch']} ({fmt(front.iloc[0][tracking.M_PARAMS], 'int')} "
                                   f"params, {fmt(front.iloc[0][metric])})") if len(front) else ""))
    summary = pd.DataFrame(rows)
    for col in ("best", "best_run", "best_url", "best_arch", "front", "smallest_on_front"):
        if col not in summary:
            summary[col] = np.nan if col in ("best", "front") else ""
    summary["page"] = [page_files()[s] for s in summary["study"]]
    return summary


def _searches_section(info: dd.DashboardData) -> str:
    if not info.searches:
        return section("Searches", no_runs_note("architecture search", "search"))
    srows = pd.DataFrame([{"search": s.parent["run_name"] or s.parent["run_id"][:8], "study": s.study,
                           "trials": len(s.trials), "url": dd.run_url(info.ui_url, s.parent["experiment_id"],
                                                                      s.parent["run_id"]),
                           "metric": s.metric,  # the trials' test metric, not the search's val objective
                           "best": s.trials[s.metric].max() if s.metric in s.trials and len(s.trials) else np.nan,
                           "cost axis": s.cost} for s in info.searches])
    return section("Searches", html_table(srows, ["search", "study", "trials", "metric", "best", "cost axis"],
                                          links={"search": lambda r: r["url"]}, scroll=False),
                   caption=f'Trials over time and the frontier found against the grid\'s: '
                           f'<a href="{page_files()["search"]}">search page</a>.')


def index_page(info: dd.DashboardData, generated: str) -> Page:
    page = new_page("index", info, generated)
    table = html_table(_study_rows(info), ["study", "page", "task", "runs", "metric", "best", "best_arch", "best_run",
                                           "front", "smallest_on_front"],
                       links={"page": lambda r: r["page"], "best_run": lambda r: r["best_url"] or None},
                       headers={"front": "runs on the params front", "smallest_on_front": "cheapest on the front"},
                       kinds={"front": "int"})
    notes = "".join(no_runs_note(f"{s} runs", s) for s in study_names() if not len(info.studies.get(s, [])))
    page.add(section("Studies", table, notes,
                     caption="Each study's best held-out result, and the runs no other run beats on both accuracy "
                             "and parameter count. Details on each study's page."))
    fig = overview_figure(info)
    if fig is not None:
        page.add(section("Accuracy against parameters", page.figure(fig),
                         caption="Each study's runs with its Pareto front (log x). Hover for settings; click to open "
                                 "the run in the MLflow UI."))
    page.add(_searches_section(info))
    page.add(registry_section(info, None))
    return page


def _search_parts(page: Page, info: dd.DashboardData, search: Search) -> list[str]:
    parent = search.parent
    grid = info.studies.get(search.study, pd.DataFrame())
    grid = grid[grid["run_kind"].isin((tracking.RUN_KIND_GRID_CHILD, tracking.RUN_KIND_SINGLE))] if len(grid) else grid
    url = dd.run_url(info.ui_url, parent["experiment_id"], parent["run_id"])
    started = parent["start_time"].strftime("%Y-%m-%d %H:%M") if pd.notna(parent["start_time"]) else "?"
    parts = [f'<p class="small">{link(url, "open the search run in the MLflow UI")} · started {esc(started)} UTC · '
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
                          f"<code>{esc(how_to(search.study))}</code>."))
    if len(search.trials):
        settings = list(get_study(search.study).dashboard.run_columns) if search.study in study_names() else []
        cols = ["trial_number", "trial_state", "run_name", "arch", *settings, search.metric,
                search.cost, tracking.M_SIZE_MB, tracking.M_CPU_TOTAL]
        parts.append(html_table(search.trials, list(dict.fromkeys(cols)), kinds={tracking.M_PARAMS: "int"},
                                links={"run_name": lambda r: r["url"]}, headers={"run_name": "run"}))
    return parts


def search_page(info: dd.DashboardData, generated: str) -> Page:
    page = new_page("search", info, generated)
    if not info.searches:
        page.add(section("Searches", no_runs_note("architecture search", "search")))
        return page
    for search in info.searches[:MAX_SEARCHES]:
        parent = search.parent
        title = f"{parent['run_name'] or parent['run_id'][:8]} · {search.study} · {len(search.trials)} trials"
        page.add(section(title, *_search_parts(page, info, search)))
    if len(info.searches) > MAX_SEARCHES:
        page.add(note(f"{len(info.searches) - MAX_SEARCHES} older searches not drawn."))
    return page


def build_pages(info: dd.DashboardData, out: Path) -> dict[str, Path]:
    """Write every page into `out`; returns page key -> file."""
    out.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pages = [index_page(info, generated)] + [study_page(info, s, generated) for s in study_names()] + [
        search_page(info, generated)]
    files, written = page_files(), {}
    for page in pages:
        path = out / files[page.key]
        path.write_text(page.render(), encoding="utf-8")
        written[page.key] = path
    return written
