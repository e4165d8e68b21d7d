"""Every active run of some experiments, read straight from a SQL tracking store (the
dashboards read every run; a search's warm start every finished run of its study).

Why not `MlflowClient.search_runs`: it has no column projection and builds an ORM object per
metric, param and tag (a platform run has about 120 of them): on a 1,000-run store that is
12 of the dashboards' 33 profiled seconds and 11.6 of a warm start's 15, growing with every
run (benchmarks/RESULTS.md, section 10). Four SELECTs over MLflow's tables (runs, latest_metrics, params, tags) return the
same values in about a tenth of the time. The schema is MLflow's, not a public API: the
pinned MLflow version fixes it, tests/integration/test_dashboards.py checks this reader
against `search_runs` on a filled store, and any SQL error falls back to `search_runs` with
one line on stderr. A tracking server (http, the team store) is read through its API unless
MEDIMG_STORE_DB names its database (docs/team.md).
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


@dataclass
class RunInfo:
    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None


@dataclass
class RunData:
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class StoreRun:
    """The parts of an `mlflow.entities.Run` the dashboards read (info and data)."""
    info: RunInfo
    data: RunData


# A team server's database, for readers that may read it directly (a read-only role is
# enough): a tracking server answers search_runs through the same ORM, and at 10,000 runs its
# REST pages cost minutes (benchmarks/RESULTS.md, section 10). Writes still go to the server.
STORE_DB_ENV = "MEDIMG_STORE_DB"


def readable(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in SQL_SCHEMES


def database_of(uri: str) -> str:
    """The SQL database to read for a tracking URI: itself, or for a server the database named
    by MEDIMG_STORE_DB ("" when there is none)."""
    if readable(uri):
        return uri
    db = os.environ.get(STORE_DB_ENV, "")
    return db if readable(db) else ""


def read_runs(uri: str, experiment_ids: Sequence[str], status: str | None = None,
              tags: dict[str, str] | None = None) -> list[StoreRun] | None:
    """Active runs of the experiments, newest first (search_runs' order), optionally only those
    with this status and these tag values; None when the store is not a SQL database or the
    read failed (the caller then uses search_runs)."""
    db = database_of(uri)
    if not db or not experiment_ids:
        return None
    try:
        runs = _read(db, [int(e) for e in experiment_ids])
    except Exception as exc:  # noqa: BLE001 - any schema or driver surprise: the API still works
        print(f"[store] reading {db.split(':', 1)[0]} tables directly failed ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0][:200]}); reading through search_runs", file=sys.stderr)
        return None
    return [r for r in runs if (status is None or r.info.status == status)
            and all(r.data.tags.get(k) == v for k, v in (tags or {}).items())]


def _read(uri: str, experiment_ids: list[int]) -> list[StoreRun]:
    import sqlalchemy as sa

    engine = sa.create_engine(uri)
    ids = sa.bindparam("ids", expanding=True)
    active = "SELECT run_uuid FROM runs WHERE lifecycle_stage = 'active' AND experiment_id IN :ids"
    try:
        with engine.connect() as conn:
            def rows(sql: str):
                return conn.execute(sa.text(sql).bindparams(ids), {"ids": experiment_ids}).all()

            infos = rows("SELECT run_uuid, name, experiment_id, status, start_time, end_time FROM runs "
                         "WHERE lifecycle_stage = 'active' AND experiment_id IN :ids")
            metrics = rows(f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({active})")
            params = rows(f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({active})")
            tags = rows(f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({active})")
    finally:
        engine.dispose()
    runs = {r[0]: StoreRun(RunInfo(r[0], r[1] or "", str(r[2]), r[3], r[4], r[5]), RunData()) for r in infos}
    for run_id, key, value, is_nan in metrics:
        if run_id in runs:
            runs[run_id].data.metrics[key] = math.nan if is_nan else float(value)
    for table, target in ((params, "params"), (tags, "tags")):
        for run_id, key, value in table:
            if run_id in runs:
                getattr(runs[run_id].data, target)[key] = value
    # search_runs' default order: newest start first, then run id
    return sorted(runs.values(), key=lambda r: (-(r.info.start_time or 0), r.info.run_id))
