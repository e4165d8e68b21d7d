"""Build the dashboard pages and log them as artifacts of a `dashboard` run.

    from dashboards.build import build, build_and_log
    index = build_and_log()               # <repo>/dashboards/out/index.html, logged to MLflow
    index = build(Path("/tmp/d"))         # the files only, nothing logged
"""
from __future__ import annotations

import sys
from pathlib import Path

import mlflow

from dashboards import data as dd
from dashboards import pages
from projects.core import runtime, tracking

DEFAULT_OUT = runtime.REPO_ROOT / "dashboards" / "out"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
ARTIFACT_DIR = "dashboard"  # the pages' folder inside the dashboard run's artifacts
RUN_KIND = "dashboard"


def _resolve(out: Path | str | None) -> Path:
    return DEFAULT_OUT if out is None or str(out) == "" else Path(out).expanduser().resolve()


def build(out: Path | str | None = None, ui_url: str = DEFAULT_UI_URL) -> Path:
    """Read the tracking store and write index.html + one page per study + search.html
    into `out` (default <repo>/dashboards/out); returns the index path."""
    return _build(out, ui_url)[1]["index"]


def _build(out: Path | str | None, ui_url: str) -> tuple[dd.DashboardData, dict[str, Path]]:
    info = dd.collect(ui_url)
    return info, pages.build_pages(info, _resolve(out))


def build_and_log(out: Path | str | None = None, ui_url: str = DEFAULT_UI_URL) -> Path:
    """`build`, then log the pages as artifacts (folder `dashboard/`) of a run in the
    dashboards experiment, so the MLflow UI opens them too; returns the index path.

    The store is read before the run starts, so the dashboard run never shows in itself.
    Under `mlflow run . -e dashboard` the launcher's run is adopted.
    """
    out = _resolve(out)
    info, written = _build(out, ui_url)
    tags = {tracking.TAG_RUN_KIND: RUN_KIND} | tracking.process_tags()
    with tracking.study_run(tracking.EXPERIMENTS["dashboard"], "dashboard", tags=tags):
        # "out" is what `mlflow run -P out=...` logged as given; the resolved folder is a param of its own.
        tracking.log_params_once({"ui_url": ui_url, "out_dir": str(out), "tracking_uri": info.tracking_uri[:500]})
        metrics = {f"runs_{study}": float(len(table)) for study, table in info.studies.items()}
        metrics["searches"] = float(len(info.searches))
        metrics["registry_versions"] = float(len(info.registry))
        mlflow.log_metrics(metrics)
        for path in written.values():
            mlflow.log_artifact(str(path), ARTIFACT_DIR)
    print(f"dashboard: {len(written)} pages in {out} (logged to MLflow under {ARTIFACT_DIR}/)", file=sys.stderr)
    return written["index"]
