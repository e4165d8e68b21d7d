"""The registry as the dashboards read it: every version of every registered model, and one
row per (model, alias) with the version's gate results. Read through MlflowClient, generically:
whatever `promote` wrote."""
from __future__ import annotations

import sys

import pandas as pd
from mlflow.tracking import MlflowClient

from projects.core import tracking
from projects.core.study import study_of_model

# --- registry -----------------------------------------------------------------------------------
REGISTRY_COLUMNS = ("model", "version", "run_id", "aliases", "status", "created", "tags")


def registry_versions(mlc: MlflowClient | None = None) -> pd.DataFrame:
    """Every version of every registered model: model, version, run_id, aliases (list), tags.

    An unreachable or absent registry gives an empty table, not an error: the pages say
    "no aliases yet" instead.
    """
    if mlc is None:
        tracking.setup_tracking()
        mlc = MlflowClient()
    rows = []
    try:
        models = list(_all_registered_models(mlc))
        for rm in models:
            aliases_of: dict[str, list[str]] = {}
            for alias, version in (getattr(rm, "aliases", None) or {}).items():
                aliases_of.setdefault(str(version), []).append(alias)
            for mv in _all_versions(mlc, rm.name):
                rows.append({
                    "model": rm.name,
                    "version": str(mv.version),
                    "run_id": mv.run_id or "",
                    "aliases": sorted(aliases_of.get(str(mv.version), [])),
                    "status": str(mv.status or ""),
                    "created": pd.to_datetime(mv.creation_timestamp, unit="ms", utc=True)
                    if mv.creation_timestamp else pd.NaT,
                    "tags": dict(mv.tags or {}),
                })
    except Exception as exc:  # noqa: BLE001  (a store without a registry)
        print(f"dashboards: registry not readable ({type(exc).__name__}: {exc})", file=sys.stderr)
        rows = []
    return pd.DataFrame(rows, columns=list(REGISTRY_COLUMNS))


def _all_registered_models(mlc: MlflowClient):
    token = None
    while True:
        page = mlc.search_registered_models(max_results=200, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _all_versions(mlc: MlflowClient, name: str):
    token = None
    safe = name.replace("'", "\\'")
    while True:
        page = mlc.search_model_versions(f"name = '{safe}'", max_results=200, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def registry_by_run(registry: pd.DataFrame) -> dict[str, list[tuple[str, str, list[str]]]]:
    out: dict[str, list[tuple[str, str, list[str]]]] = {}
    for row in registry.itertuples(index=False):
        if row.run_id:
            out.setdefault(row.run_id, []).append((row.model, row.version, list(row.aliases)))
    return out


def alias_table(registry: pd.DataFrame, study: str | None = None) -> pd.DataFrame:
    """One row per (model, alias): which version holds it, its run, and its gate results.

    `gates` are the version's tags that speak about this alias (`promotion.<alias>.*`) and
    any tag naming a gate; `other_tags` the rest. Read generically: whatever promote wrote.
    """
    rows = []
    for row in registry.itertuples(index=False):
        if study and not _model_of_study(row.model, study):
            continue
        for alias in row.aliases:
            prefix = f"promotion.{alias}."
            gates = {k[len(prefix):]: v for k, v in row.tags.items() if k.startswith(prefix)}
            gates |= {k: v for k, v in row.tags.items()
                      if "gate" in k.lower() and not k.startswith("promotion.")}
            other = {k: v for k, v in row.tags.items()
                     if not k.startswith("promotion.") and "gate" not in k.lower()}
            rows.append({"model": row.model, "alias": alias, "version": row.version,
                         "run_id": row.run_id, "created": row.created,
                         "gates": gates, "other_tags": other})
    return pd.DataFrame(rows, columns=["model", "alias", "version", "run_id", "created", "gates", "other_tags"])


def _model_of_study(model: str, study: str) -> bool:
    found = study_of_model(model)
    return found is not None and found[0].name == study
