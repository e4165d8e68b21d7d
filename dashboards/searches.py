"""The dashboards' search data: each search parent with its trials, and the cost its frontier
is drawn against (the search page and the overview's table read it)."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from mlflow.tracking import MlflowClient

from projects.core import tracking
from projects.core.study import get_study, study_names


@dataclass
class Search:
    """One search (parent run) with its trials and the cost its frontier is drawn against."""

    parent: pd.Series
    trials: pd.DataFrame
    study: str
    metric: str
    cost: str


def searches(runs: pd.DataFrame, objectives: dict[str, str] | None = None) -> list[Search]:
    """Every search parent with its trials (children with run_kind=trial), newest first.

    `objectives`: parent run id -> its `objectives` param ("accuracy,model_size_mb"); the
    efficiency objective named there is the cost its frontier is drawn against.
    """
    out = []
    parents = runs[runs["run_kind"].eq(tracking.RUN_KIND_SEARCH_PARENT)]
    for _, parent in parents.sort_values("start_time", ascending=False).iterrows():
        trials = runs[runs["parent_run_id"].eq(parent["run_id"]) & runs["run_kind"].eq("trial")].copy()
        study = parent["study"] or (trials["study"].iloc[0] if len(trials) else "")
        if study not in study_names():
            continue
        if trials["trial_number"].isna().all():
            trials["trial_number"] = pd.array(range(len(trials)), dtype="Int64")
        trials = trials.sort_values(["trial_number", "start_time"], kind="stable").reset_index(drop=True)
        cost = search_cost((objectives or {}).get(parent["run_id"], ""))
        out.append(Search(parent, trials, study, get_study(study).headline.test_metric, cost))
    return out


def search_cost(objectives: str) -> str:
    """The efficiency objective a search optimised (named in its `objectives`, e.g.
    "val_jaccard,model_size_mb"), else parameters."""
    named = [x.strip() for x in str(objectives).split(",")]
    for name in named:
        if name in (tracking.M_PARAMS_KERAS,) + tracking.EFFICIENCY_METRICS:
            return name
    return tracking.M_PARAMS


def search_objectives(mlc: MlflowClient, runs: pd.DataFrame) -> dict[str, str]:
    """Search parents' `objectives` param (params are not in the tidy table)."""
    out = {}
    for run_id in runs.loc[runs["run_kind"].eq(tracking.RUN_KIND_SEARCH_PARENT), "run_id"]:
        try:
            params = mlc.get_run(run_id).data.params
        except Exception:  # noqa: BLE001
            continue
        out[run_id] = str(params.get("objectives") or params.get("search.objectives") or "")
    return out
