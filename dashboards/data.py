"""Dashboard data: runs and registry read through MLflow's API into tidy pandas tables.

Works against any tracking URI (the embedded SQLite store, a tracking server): everything
goes through `MlflowClient`. One row per run, one column per setting or number:

    runs = load_runs()                       # every run of the study and search experiments
    table = study_table("pathology", runs)   # finished runs of one study that have a result
    front = pareto_front(table, "params_count", "test_jaccard")

Names (tags, metrics, experiments) come from `projects.core.tracking`; what each study
measures and published, from its `Study` (projects.core.study). No training code runs.
"""
from __future__ import annotations

import math
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from projects.core import store_read, tracking
from projects.core.stats import summarise  # noqa: F401 (the pages' mean / CI / count)
from dashboards.searches import Search, search_objectives, searches
from dashboards.registry_view import alias_table, registry_by_run, registry_versions  # noqa: F401 (pages read alias_table here)
from projects.core.study import get_study, study_names

# --- what "accuracy" and "cost" mean on the pages --------------------------------------------
# Each study says it (projects.core.study): the y axis of its trade-off charts is its
# headline held-out metric; "best run" of a scenario is by its best_by metric.
def primary_metric(study: str) -> str:
    return get_study(study).headline.test_metric


def primary_label(study: str) -> str:
    return get_study(study).headline.label


def best_by(study: str) -> str:
    return get_study(study).headline.best_metric


def study_metrics(study: str) -> tuple[str, ...]:
    return get_study(study).dashboard.metrics


COST_METRICS = (tracking.M_PARAMS, tracking.M_SIZE_MB, tracking.M_CPU_TOTAL)
COST_LABEL = {
    tracking.M_PARAMS: "parameters",
    tracking.M_PARAMS_KERAS: "parameters (Keras count)",
    tracking.M_SIZE_MB: "model size (MB)",
    tracking.M_CPU_TOTAL: "CPU load + predict (s)",
    tracking.M_LATENCY_P50: "CPU latency p50 (ms)",
}
EFFICIENCY = tracking.EFFICIENCY_METRICS + (tracking.M_PARAMS_KERAS, tracking.M_SIZE_WITH_OPT_MB)

# run_kind values (tags written by the grids, the search driver and the main job)
TRAINED_KINDS = tracking.TRAINED_RUN_KINDS
PARENT_KINDS = tracking.PARENT_RUN_KINDS
TAG_PARENT = tracking.TAG_PARENT_RUN
TAG_RUN_NAME = "mlflow.runName"
TAG_TRIAL_NUMBER = tracking.TAG_TRIAL_NUMBER
TAG_TRIAL_STATE = tracking.TAG_TRIAL_STATE
TAG_DEPTH = "depth"
TAG_FILTERS = "filters"

# Experiments whose runs are never models to compare.
SKIP_EXPERIMENTS = (tracking.EXPERIMENTS["dashboard"], tracking.EXPERIMENTS["benchmark"])

# The columns every tidy table has, in this order (metrics follow).
SETTING_COLUMNS = ("run_id", "run_name", "experiment_id", "experiment", "status", "start_time",
                   "end_time", "parent_run_id", "study", "task", "data_set", "arch", "depth", "filters",
                   "image_size", "split", "test_fraction", "augment", "seed", "run_kind",
                   "dataset_digest", "trial_number", "trial_state", "aliases", "registered")
INT_COLUMNS = ("depth", "filters", "image_size", "seed", "trial_number")


def client() -> MlflowClient:
    tracking.setup_tracking()
    return MlflowClient()


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI, in the model-training view (projects.core.tracking)."""
    return tracking.ui_run_url(experiment_id, run_id, ui_url)


def split_test_fraction(split: object) -> float:
    """"80:20" -> 0.2 (the test share of a train:test ratio); anything else -> NaN."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*", str(split or ""))
    if not match:
        return float("nan")
    train, test = float(match.group(1)), float(match.group(2))
    return test / (train + test) if train + test > 0 else float("nan")


def redact_uri(uri: str) -> str:
    """A tracking URI fit for a page: any password replaced by ***."""
    return re.sub(r"(//[^:/@]+:)[^@/]*@", r"\1***@", uri)


# --- runs -------------------------------------------------------------------------------------
def _experiments(mlc: MlflowClient) -> dict[str, str]:
    """experiment id -> name, for every active experiment holding comparable runs."""
    return {e.experiment_id: e.name for e in mlc.search_experiments(view_type=ViewType.ACTIVE_ONLY)
            if e.name not in SKIP_EXPERIMENTS}


PAGE_SIZE = 1000  # runs per search request


def _search_all(mlc: MlflowClient, experiment_ids: Sequence[str]) -> list:
    """Every active run, page by page; a store of more than one page says on stderr how far it
    is (a large store takes a while, and the dashboard shows nothing until it is read)."""
    runs, token, started = [], None, time.monotonic()
    while True:
        page = mlc.search_runs(list(experiment_ids), "", ViewType.ACTIVE_ONLY, max_results=PAGE_SIZE,
                               page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            if len(runs) > PAGE_SIZE:
                print(f"[dashboards] read {len(runs)} runs in {time.monotonic() - started:.1f} s",
                      file=sys.stderr, flush=True)
            return runs
        print(f"[dashboards] reading the store: {len(runs)} runs so far ({time.monotonic() - started:.1f} s)",
              file=sys.stderr, flush=True)


def _to_int(value: object) -> float | int | None:
    try:
        number = float(value)  # "5", "5.0", 5
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def load_runs(mlc: MlflowClient | None = None, registry: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every active run outside the dashboard/benchmark experiments: one tidy row each.

    Columns: SETTING_COLUMNS, then every metric the runs logged (latest value). A run's
    study comes from its `study` tag, else from its parent's (search trials, grid children).
    `aliases` lists the registry aliases held by a version made from the run ("" if none).
    """
    mlc = mlc or client()
    experiments = _experiments(mlc)
    if not experiments:
        return _empty_runs()
    runs = store_read.read_runs(mlc.tracking_uri, list(experiments)) or _search_all(mlc, list(experiments))
    if registry is None:
        registry = registry_versions(mlc)
    by_run = registry_by_run(registry)
    declared = _declared_columns()  # once: it walks every study's dashboard spec (was once per run)
    rows = []
    for run in runs:
        tags, params, info = run.data.tags, run.data.params, run.info
        row = {
            "run_id": info.run_id,
            "run_name": tags.get(TAG_RUN_NAME, info.run_name or ""),
            "experiment_id": info.experiment_id,
            "experiment": experiments.get(info.experiment_id, ""),
            "status": info.status,
            "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True) if info.start_time else pd.NaT,
            "end_time": pd.to_datetime(info.end_time, unit="ms", utc=True) if info.end_time else pd.NaT,
            "parent_run_id": tags.get(TAG_PARENT, ""),
            "study": tags.get(tracking.TAG_STUDY, params.get("study", "")),
            "task": tags.get(tracking.TAG_TASK, params.get("task", "")),
            "data_set": data_set_name(params),
            "arch": tags.get(tracking.TAG_ARCH, params.get("arch", "")),
            "depth": _to_int(tags.get(TAG_DEPTH, params.get("depth"))),
            "filters": _to_int(tags.get(TAG_FILTERS, params.get("filters"))),
            "image_size": _to_int(params.get("image_size", params.get("tile_size"))),
            "split": tags.get(tracking.TAG_SPLIT, params.get("split", "")),
            "augment": tags.get(tracking.TAG_AUGMENT, ""),
            "seed": _to_int(tags.get(tracking.TAG_SEED, params.get("seed"))),
            "run_kind": tags.get(tracking.TAG_RUN_KIND, ""),
            "dataset_digest": tags.get(tracking.TAG_DATASET_DIGEST, ""),
            "trial_number": _to_int(tags.get(TAG_TRIAL_NUMBER)),
            "trial_state": tags.get(TAG_TRIAL_STATE, ""),
        }
        for col in declared:  # settings a study's pages show beyond the common ones
            row[col] = tags.get(col, params.get(col))
        row["test_fraction"] = split_test_fraction(row["split"])
        held = by_run.get(info.run_id, [])
        row["aliases"] = ", ".join(sorted({a for _, _, aliases in held for a in aliases}))
        row["registered"] = ", ".join(f"{m} v{v}" for m, v, _ in held)
        row.update({k: float(v) for k, v in run.data.metrics.items() if k not in row and k != "url"})
        rows.append(row)
    if not rows:
        return _empty_runs()
    frame = pd.DataFrame(rows)
    # Runs without a study tag (search trials of an older driver) inherit their parent's.
    study_of = dict(zip(frame["run_id"], frame["study"]))
    missing = frame["study"].eq("") & frame["parent_run_id"].ne("")
    frame.loc[missing, "study"] = frame.loc[missing, "parent_run_id"].map(study_of).fillna("")
    return _tidy(frame)


def _declared_columns() -> list[str]:
    """Settings the registered studies' dashboards name that are not common columns (a plug-in
    study's own knobs): read from each run's tags, else its params."""
    names = []
    for study in study_names():
        spec = get_study(study).dashboard
        names += [spec.size_by, *spec.run_columns] + [c for curve in spec.curves for c in (curve.x, *curve.groups)]
    return [n for n in dict.fromkeys(names) if n and n not in SETTING_COLUMNS]


def _empty_runs() -> pd.DataFrame:
    return _tidy(pd.DataFrame(columns=list(SETTING_COLUMNS)))


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    for col in SETTING_COLUMNS:
        if col not in frame:
            frame[col] = pd.Series(dtype=object)
    for col in INT_COLUMNS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    frame["test_fraction"] = pd.to_numeric(frame["test_fraction"], errors="coerce").astype(float)
    for col in ("start_time", "end_time"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    text = [c for c in SETTING_COLUMNS if c not in INT_COLUMNS + ("test_fraction", "start_time", "end_time")]
    for col in text:
        frame[col] = frame[col].fillna("").astype(str)
    declared = [c for c in _declared_columns() if c in frame]
    for col in declared:
        numbers = pd.to_numeric(frame[col], errors="coerce")
        frame[col] = numbers if numbers.notna().sum() == frame[col].notna().sum() else frame[col].fillna("").astype(str)
    metrics = sorted(c for c in frame.columns if c not in SETTING_COLUMNS and c not in declared)
    for col in metrics:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    frame = frame[list(SETTING_COLUMNS) + declared + metrics]
    return frame.sort_values("start_time", kind="stable").reset_index(drop=True)


def study_table(study: str, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Finished runs of one study that trained a model and have its headline result.

    Only runs that trained a model count (run_kind single, grid_child or trial, or untagged
    older runs): parents, launchers and the main job are left out; search trials are kept
    (their `run_kind` says so). Every metric the study names and every efficiency number is a
    column, NaN where a run did not log it.
    """
    runs = load_runs() if runs is None else runs
    primary = primary_metric(study)
    if primary not in runs:
        runs = runs.assign(**{primary: np.nan})
    keep = (runs["study"].eq(study) & runs["status"].eq("FINISHED") & runs[primary].notna()
            & runs["run_kind"].isin(TRAINED_KINDS + ("",)))
    table = runs[keep].copy()
    headline = study_metrics(study)[:1]
    with_ci = (*headline, *(tracking.ci_low(m) for m in headline), *(tracking.ci_high(m) for m in headline))
    for col in study_metrics(study) + EFFICIENCY + with_ci:
        if col not in table:
            table[col] = np.nan
    dropped = [c for c in table.columns if c not in SETTING_COLUMNS and table[c].isna().all()
               and c not in study_metrics(study) + EFFICIENCY]
    return table.drop(columns=dropped).reset_index(drop=True)


def with_urls(table: pd.DataFrame, ui_url: str) -> pd.DataFrame:
    """Adds a `url` column: each run's page in the MLflow UI."""
    out = table.copy()
    out["url"] = [run_url(ui_url, e, r) for e, r in zip(out["experiment_id"], out["run_id"])]
    return out


# Pareto fronts: dashboards/pareto.py (re-exported here: the pages call dd.pareto_front)
from dashboards.pareto import pareto_front, pareto_mask  # noqa: E402,F401


# --- the papers' numbers: dashboards/paper.py (re-exported here: the pages call dd.paper_points)
from dashboards.paper import PaperStudy, has_paper, paper_points, paper_vs_ours  # noqa: E402,F401


# --- artifacts ------------------------------------------------------------------------------------
def artifact_bytes(run_id: str, path: str) -> bytes | None:
    """One artifact file of a run, or None when the run has none by that name."""
    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
            file = Path(local)
            return file.read_bytes() if file.is_file() else None
    except Exception:  # noqa: BLE001  (missing artifact, unreachable artifact store)
        return None


GRID_PARENTS_TRIED = 10  # newest finished grid parents asked for their comparison table


def grid_comparison(runs: pd.DataFrame, study: str) -> tuple[pd.DataFrame | None, pd.Series | None]:
    """The latest finished grid parent's own `grid/paper_vs_ours.csv`, and that parent's row.

    Only the GRID_PARENTS_TRIED newest are asked: each miss is a download request, and a store
    of many grids without the table (1,001 runs, 77 parents) spent 12 s on misses."""
    import io

    parents = runs[runs["study"].eq(study) & runs["run_kind"].eq(tracking.RUN_KIND_GRID_PARENT)
                   & runs["status"].eq("FINISHED")]
    newest = parents.sort_values("start_time", ascending=False).head(GRID_PARENTS_TRIED)
    for parent in (row for _, row in newest.iterrows()):
        data = artifact_bytes(parent["run_id"], "grid/paper_vs_ours.csv")
        if data:
            try:
                return pd.read_csv(io.BytesIO(data)), parent
            except (ValueError, pd.errors.ParserError):
                continue
    return None, None


# --- everything the pages need ----------------------------------------------------------------------
@dataclass
class DashboardData:
    tracking_uri: str
    ui_url: str
    runs: pd.DataFrame
    registry: pd.DataFrame
    studies: dict[str, pd.DataFrame] = field(default_factory=dict)
    searches: list[Search] = field(default_factory=list)


def collect(ui_url: str = "http://127.0.0.1:5000") -> DashboardData:
    """Read the store once: all runs, the registry, a tidy table per study, the searches."""
    uri = tracking.setup_tracking()
    mlc = MlflowClient()
    registry = registry_versions(mlc)
    runs = load_runs(mlc, registry)
    studies = {s: with_urls(study_table(s, runs), ui_url) for s in study_names()}
    found = searches(runs, search_objectives(mlc, runs))
    for s in found:
        s.trials = with_urls(s.trials, ui_url)
    return DashboardData(redact_uri(uri), ui_url, runs, registry, studies, found)


def data_set_name(params: dict) -> str:
    """The data set a run was trained and tested on, as a reader names it: the data folder's
    name ('embedded' for the embedded sets), with the shrink factor when its images were shrunk.
    Runs on different data sets have different test sets: the pages never rank them together."""
    name = Path(str(params.get("data") or "")).name
    factor = _to_int(params.get("downsample"))
    return f"{name}, shrunk {factor}x" if name and factor and factor > 1 else name


def data_sets_in_order(table: pd.DataFrame) -> list[str]:
    """The data sets of a study's runs: those whose runs hold a registry alias first (where the
    champion is), then the one with most runs."""
    counts = table["data_set"].value_counts()
    aliased = set(table.loc[table["aliases"].fillna("").ne(""), "data_set"])
    return sorted(counts.index, key=lambda t: (t not in aliased, -counts[t], t))


def tasks_in_order(table: pd.DataFrame) -> list[str]:
    """A study's tasks, the one with most runs first."""
    counts = table["task"].value_counts()
    return sorted(counts.index, key=lambda t: (-counts[t], t))
