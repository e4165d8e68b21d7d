"""The alias history: one MLflow run per alias move, in the `registry-audit` experiment.

Each move (promote, rollback, remove, or a reconcile after a race) is a small run whose tags
say what moved where, when, by whom and by which rule; the decision behind it (the compared
values, the paired test) is the run's `decision` table, which the MLflow UI shows. Nothing
grows: a record is a handful of short tags (each under the 5000-character limit that
PostgreSQL enforces on MLflow's tag columns), so an alias moved a thousand times has a
thousand small records, readable in the UI's runs table of that experiment and by
`history()`, oldest first. Rollback and verify-after-write read the same history.

The registered model's description links to the history; the version tags
`promotion.<alias>.*` say why a version holds (or held) an alias.
"""
from __future__ import annotations

import json
import time

from mlflow.entities import RunStatus, RunTag
from mlflow.tracking import MlflowClient

from projects.core import tracking

TAG_PREFIX = "audit."
ENTRY_FIELDS = ("version", "previous", "at", "kind", "policy", "rule", "metric", "value", "gates", "by",
                "evaluation_run", "significance")
TAG_MODEL, TAG_ALIAS = TAG_PREFIX + "model", TAG_PREFIX + "alias"
MAX_TAG = 4000  # below PostgreSQL's VARCHAR(5000) for tag values, with room for multi-byte text
NONE = "none"


def experiment_id(client: MlflowClient) -> str:
    return tracking.ensure_experiment(tracking.EXPERIMENTS["audit"])


def _text(value) -> str:
    return NONE if value is None else str(value)[:MAX_TAG]


def _entry(run) -> dict:
    tags = run.data.tags
    entry = {key: tags.get(TAG_PREFIX + key, "") for key in ENTRY_FIELDS}
    for key in ("version", "previous"):
        entry[key] = None if entry[key] in ("", NONE) else entry[key]
    entry["compared"] = tags.get(TAG_PREFIX + "compared", "")
    entry["record_run"] = run.info.run_id
    return entry


def read_history(client: MlflowClient, name: str, alias: str) -> list[dict]:
    """Every move of `name@alias`, oldest first (by the time written, then the run's own)."""
    exp = client.get_experiment_by_name(tracking.EXPERIMENTS["audit"])
    if exp is None:
        return []
    query = f"tags.`{TAG_MODEL}` = '{name}' and tags.`{TAG_ALIAS}` = '{alias}'"
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    runs.sort(key=lambda r: (r.data.tags.get(TAG_PREFIX + "at", ""), r.info.start_time or 0, r.info.run_id))
    return [_entry(r) for r in runs]


def append(client: MlflowClient, name: str, alias: str, entry: dict, decision: list[dict] | None = None) -> str:
    """One record of a move; `decision`: rows of the comparison behind it (a table in the UI)."""
    history = read_history(client, name, alias)
    last = history[-1] if history else None
    if last and str(last.get("version")) == str(entry.get("version")) and last.get("at") == entry.get("at"):
        return last["record_run"]  # the same move, written already (a retried call)
    tags = [RunTag(TAG_MODEL, name), RunTag(TAG_ALIAS, alias),
            RunTag("mlflow.runName", f"{name}@{alias} -> {_label(entry.get('version'))} ({entry.get('kind', '')})"),
            RunTag(tracking.TAG_RUN_KIND, "audit")]
    tags += [RunTag(TAG_PREFIX + key, _text(entry.get(key))) for key in ENTRY_FIELDS if key in entry]
    if entry.get("compared"):
        tags.append(RunTag(TAG_PREFIX + "compared", _text(entry["compared"])))
    run = client.create_run(experiment_id(client), start_time=int(time.time() * 1000))
    client.log_batch(run.info.run_id, tags=tags)
    if decision:
        client.log_table(run.info.run_id, data=_columns(decision), artifact_file="decision.json")
    client.log_text(run.info.run_id, json.dumps(entry | {"model": name, "alias": alias}, indent=1, default=str),
                    "entry.json")
    client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
    return run.info.run_id


def _columns(rows: list[dict]) -> dict[str, list]:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: [row.get(k) for row in rows] for k in keys}


def _label(version) -> str:
    return "none" if version is None else f"v{version}"


def history(name: str, alias: str, client: MlflowClient | None = None) -> list[dict]:
    """The alias's audit trail, oldest first."""
    return read_history(client or MlflowClient(), name, alias)


def history_markdown(name: str, alias: str, client: MlflowClient | None = None, last: int = 20) -> str:
    """The latest moves as a small markdown table (the registered model's description)."""
    rows = read_history(client or MlflowClient(), name, alias)[-last:]
    if not rows:
        return f"`{alias}`: no moves yet."
    lines = [f"| when (UTC) | {alias} | from | how | rule |", "|---|---|---|---|---|"]
    for e in reversed(rows):
        rule = (e.get("rule") or "").replace("|", "/")[:120]
        lines.append(f"| {e.get('at', '')[:19]} | {_label(e.get('version'))} | {_label(e.get('previous'))} | "
                     f"{e.get('kind', '')} | {rule} |")
    return "\n".join(lines)
