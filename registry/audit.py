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

import datetime as dt
import json
import os
import socket
import time

from mlflow.entities import RunStatus, RunTag
from mlflow.tracking import MlflowClient

from projects.core import tracking
from registry import store
from registry.gates.not_rolled_back import rolled_back_key  # noqa: F401 (the gate owns its tag)

# Version tags: why a version holds (or held) an alias, and which alias it was rolled back from.
VERSION_FIELDS = ("policy", "rule", "metric", "value", "compared", "gates", "previous_version", "at", "kind", "by",
                  "significance")


def promotion_key(alias: str, name: str) -> str:
    """Version tag recording why the version holds (or held) the alias."""
    return f"promotion.{alias}.{name}"


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


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def by() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def write_version_audit(client: MlflowClient, name: str, alias: str, entry: dict) -> None:
    for key in VERSION_FIELDS:
        value = entry.get("previous") if key == "previous_version" else entry.get(key)
        if key == "significance" and value is None:
            continue
        store.retry_conflicts(client.set_model_version_tag, name, entry["version"], promotion_key(alias, key),
                              _text(value))


def entry_from_tags(version: str, alias: str, tags: dict[str, str]) -> dict | None:
    if not tags.get(promotion_key(alias, "at")):
        return None
    entry = {"version": version}
    for key in VERSION_FIELDS:
        value = tags.get(promotion_key(alias, key))
        if key == "previous_version":
            entry["previous"] = None if value in (None, "", "none") else value
        else:
            entry[key] = value
    return entry


def tags_match(entry: dict, alias: str, tags: dict[str, str]) -> bool:
    previous = "none" if entry.get("previous") is None else str(entry["previous"])
    return (tags.get(promotion_key(alias, "at")) == entry.get("at")
            and tags.get(promotion_key(alias, "previous_version")) == previous
            and tags.get(promotion_key(alias, "kind")) == entry.get("kind"))


def reconcile(client: MlflowClient, name: str, alias: str, attempts: int = 10) -> bool:
    """Verify-after-write: make the history's last entry and the holder's tags match the holder.

    Returns True once a full read finds them consistent. Safe to run at any time and from
    any number of processes: it only writes when it finds a mismatch.
    """
    for attempt in range(attempts):
        holder = store.alias_holder(client, name, alias)
        history = read_history(client, name, alias)
        last = history[-1] if history else None
        if holder is None:
            if last is None or last.get("version") is None:
                return True
            append(client, name, alias, {
                "version": None, "previous": last.get("version"), "at": now(), "kind": "reconcile",
                "rule": "alias found removed without an audit entry", "by": by()})
        else:
            tags = store.version_tags(client, name, holder)
            if last is None or str(last.get("version")) != holder:
                entry = entry_from_tags(holder, alias, tags)
                if entry is None or (last is not None and entry.get("at", "") < last.get("at", "")):
                    entry = {"version": holder, "previous": None if last is None else last.get("version"),
                             "at": now(), "kind": "reconcile", "policy": "", "rule":
                             "found holding the alias without an audit entry", "by": by()}
                append(client, name, alias, entry)
            elif not tags_match(last, alias, tags):
                write_version_audit(client, name, alias, last)
            else:
                return True
        time.sleep(0.05 * (attempt + 1))
    return False


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
