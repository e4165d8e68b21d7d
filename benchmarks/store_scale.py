"""How `promote`, the dashboards and a search's warm start grow with the store (issue 30).

A store is filled through the MLflow client with N runs shaped like the platform's: grid
parents with 12 children each, search parents with trials (a tenth of the runs), every
trained run with the metrics (with their per-epoch and system-metric histories), params and
tags of a real pathology grid child (benchmarks/store_scale_run.json, taken from a
`python -m pipeline --profile smoke` store), configs and scores varied; a fifth of the
trained runs are registry candidates with a logged model (its metadata: promotion reads
runs and logged models, the weights only for the shortlisted few).

Then, each in its own process (peak memory = that process's max RSS):
- `promote`: `python -m registry.promote --model pathology-tumor --dry-run true`, the
  candidates compared within their split (no holdout data needed at this size), no smoke test
  (the filled models hold no weights; loading one costs the same in any store);
- dashboards: `python -m dashboards --no-log`;
- warm start: projects.search.warm.seed_from_runs for a pathology search whose training
  settings match the filled runs (every run is read and checked).

Backends: SQLite (the laptop store, no server) and PostgreSQL behind the team server
(scripts/team_server.sh). Growth 1k -> 10k is each time's ratio; 10x is linear.

    python -m benchmarks.store_scale --runs 1000 --backends sqlite             # ~10 minutes here
    python -m benchmarks.store_scale --runs 1000,10000 --backends sqlite,postgres --json rows.json

Not one of `python -m benchmarks`' default sections: a fill takes minutes (about 0.35 s per
run on two busy cores), too long for the quick run every section makes in the test suite.
`run(quick, ...)` has the section's interface for when it is wired in.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from projects.core import store_read
from projects.core.bench import Section, Table, load_average

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).with_name("store_scale_run.json")
CHILDREN_PER_PARENT = 12
TRIAL_SHARE = 0.1  # of all runs: search trials (with their parents)
CANDIDATE_SHARE = 0.2  # of trained runs: registry candidates with a logged model
TARGET_S, TARGET_MB = 30.0, 2048
# The SQLite store is written in memory-backed /dev/shm: through the client on disk a fill
# spends most of its time waiting for fsync (89 runs: 13.0 s in /tmp, 4.0 s in /dev/shm, side
# by side on 2 cores), an hour at 10,000 runs. What is timed are reads, which come from the
# page cache either way. PostgreSQL's store gets synchronous_commit off for the same reason.
FAST_DIR = Path("/dev/shm")
PG_ADMIN = os.environ.get("MEDIMG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


# --- filling -----------------------------------------------------------------------------------
def _template() -> dict:
    return json.loads(TEMPLATE.read_text())


def _study():
    """The study the template run belongs to (named by its tag, looked up, never named here)."""
    from projects.core.study import get_study

    return get_study(_template()["child"]["tags"]["study"])


def _child_batch(tpl: dict, rng: random.Random, kind: str, extra_tags: dict[str, str]):
    from mlflow.entities import Metric, Param, RunTag

    arch = rng.choice(["unet", "elunet"])
    filters, depth = rng.choice([2, 4, 8, 16, 32]), rng.choice([3, 4, 5])
    params = dict(tpl["child"]["params"], arch=arch, filters=str(filters), depth=str(depth),
                  lr=rng.choice(["0.001", "0.0003", "0.0001"]))
    quality = rng.uniform(-0.1, 0.1)
    now = int(time.time() * 1000)
    metrics = []
    for key, history in tpl["child"]["metrics"].items():
        for step, value in history:
            if key.startswith(("test_", "val_jaccard")) and "baseline" not in key:
                value = min(1.0, max(0.0, value + quality))
            elif key in ("model_size_mb", "cpu_latency_ms_p50", "cpu_total_s", "params_keras"):
                value = value * filters * depth / 16
            metrics.append(Metric(key, float(value), now + step, int(step)))
    tags = dict(tpl["child"]["tags"], arch=arch, depth=str(depth), filters=str(filters), run_kind=kind,
                seed=str(rng.randint(0, 2)), **extra_tags)
    return metrics, [Param(k, str(v)) for k, v in params.items()], [RunTag(k, v) for k, v in tags.items()]


def fill(uri: str, n_runs: int, seed: int = 0, threads: int | None = None) -> dict[str, float]:
    """N runs into the store at `uri` (grid parents + children, search parents + trials).

    A server takes 4 clients at once; SQLite one (its single writer lock makes more wait)."""
    threads = threads or (1 if uri.startswith("sqlite") else 4)
    from mlflow.entities import LoggedModelOutput
    from mlflow.tracking import MlflowClient

    from projects.core import tracking

    tpl, client, study = _template(), MlflowClient(tracking_uri=uri, registry_uri=uri), _study()
    started = time.perf_counter()
    names = {"grid": study.experiment, "search": tracking.EXPERIMENTS["search"]}
    exp = {key: (client.get_experiment_by_name(name) or client.get_experiment(client.create_experiment(name)))
           .experiment_id for key, name in names.items()}
    n_trial_runs = int(n_runs * TRIAL_SHARE)
    searches = max(1, n_trial_runs // 50)
    grid_parents = max(1, (n_runs - n_trial_runs - searches) // (CHILDREN_PER_PARENT + 1))
    plan = []  # (experiment, parent tags, child kind, n children, extra child tags)
    for g in range(grid_parents):
        plan.append((exp["grid"], dict(tpl["parent"]["tags"], run_kind="grid_parent"), "grid_child",
                     CHILDREN_PER_PARENT, {}))
    for s in range(searches):
        name = f"scale-search-{s}"
        plan.append((exp["search"], {"study": study.name, "task": tpl["child"]["tags"]["task"],
                                     "run_kind": "search_parent", "search_name": name}, "trial", n_trial_runs // searches, {"search_name": name}))

    def one_group(index: int) -> int:
        experiment, parent_tags, kind, n_children, extra = plan[index]
        rng = random.Random(seed * 1_000_003 + index)
        parent = client.create_run(experiment, tags=parent_tags, run_name=f"{kind}-parent-{index}")
        made = 1
        for c in range(n_children):
            metrics, params, tags = _child_batch(tpl, rng, kind, {**extra, "mlflow.parentRunId": parent.info.run_id})
            candidate = rng.random() < CANDIDATE_SHARE
            if not candidate:
                tags = [t for t in tags if t.key != "registry_candidate"]
            run = client.create_run(experiment, run_name=f"{kind}-{index}-{c}", tags={t.key: t.value for t in tags})
            client.log_batch(run.info.run_id, metrics=metrics, params=params)
            if candidate:
                model = client.create_logged_model(experiment, name="model", source_run_id=run.info.run_id)
                client.log_outputs(run.info.run_id, [LoggedModelOutput(model.model_id, step=0)])
            client.set_terminated(run.info.run_id, "FINISHED")
            made += 1
        client.set_terminated(parent.info.run_id, "FINISHED")
        return made

    with ThreadPoolExecutor(max_workers=threads) as pool:
        made = sum(pool.map(one_group, range(len(plan))))
    return {"runs": made, "fill_s": time.perf_counter() - started}


# --- timing --------------------------------------------------------------------------------------
# The modules are imported before the clock starts: imports (torch, MLflow, plotly: 10-20 s on
# a busy machine) do not grow with the store and would hide what does.
_MEASURE = """
import resource, runpy, sys, time
import projects, mlflow, pandas, plotly, torch
import registry.promote, dashboards.build, projects.search.warm, benchmarks.store_scale
benchmarks.store_scale._study()
sys.argv = {argv!r}
t0 = time.perf_counter()
code = 0
try:
    {call}
except SystemExit as exc:
    code = exc.code or 0
print("MEASURED", time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code, flush=True)
"""


def _policy_dir(tmp: Path) -> Path:
    """The repository's policies, candidates compared within their split (no holdout data),
    no smoke test."""
    import yaml

    from registry import policy

    folder = tmp / "policies"
    folder.mkdir(exist_ok=True)
    for path in sorted(policy.POLICY_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        data["evaluation"] = {"mode": "compare_within", "compare_within": ["split"]}
        # The filled logged models hold no weights: every smoke test would fail and promotion
        # would load candidate after candidate (0.5 s each, measured: 94 loads, 53 of 96 s at
        # 1,000 runs). That cost is per tried candidate, not per run in the store.
        data.setdefault("gates", {})["smoke_predict"] = False
        (folder / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def warm_start_once() -> int:
    """seed_from_runs for a search of the template's study with the filled runs' training settings."""
    import optuna

    from projects.search import context, warm
    from projects.search.settings import SearchSettings

    params, study = _template()["child"]["params"], _study()
    base = study.config_cls.from_params(params)
    settings = SearchSettings(study=study.name, base=base, n_trials=1, epochs=int(params["epochs"]),
                              objectives=("accuracy",), space="arch=unet|elunet,filters=2:32,depth=3:5",
                              storage="", plots=False, settle_s=0.0)
    ctx = context.build_context(settings)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ctx.study = optuna.create_study(directions=[o.direction for o in ctx.objectives])
    return warm.seed_from_runs(ctx)


def measure(uri: str, what: str, tmp: Path, env_extra: dict[str, str] | None = None) -> dict[str, float]:
    calls = {
        "promote": (["registry.promote", "--model", _study().model_name(_template()["child"]["tags"]["task"]),
                     "--dry-run", "true"],
                    "runpy.run_module('registry.promote', run_name='__main__')"),
        "dashboards": (["dashboards", "--no-log", "--out", str(tmp / "dash")],
                       "runpy.run_module('dashboards', run_name='__main__')"),
        "warm_start": (["warm"], "from benchmarks.store_scale import warm_start_once; print('WARM', warm_start_once())"),
    }
    argv, call = calls[what]
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, MLFLOW_REGISTRY_URI=uri, PYTHONPATH=str(REPO),
               OMP_WAIT_POLICY="PASSIVE", MEDIMG_POLICY_DIR=str(_policy_dir(tmp)), MEDIMG_STORE=str(tmp / "store"),
               **(env_extra or {}))
    done = subprocess.run([sys.executable, "-c", _MEASURE.format(argv=argv, call=call)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=3600)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("MEASURED")), None)
    if line is None or line.split()[3] != "0":
        raise RuntimeError(f"{what} failed on {uri}: {done.stdout[-1500:]}\n{done.stderr[-3000:]}")
    _, seconds, rss_kb, _ = line.split()
    out = {"s": float(seconds), "peak_mb": int(rss_kb) / 1024}
    warm = next((ln for ln in done.stdout.splitlines() if ln.startswith("WARM")), None)
    if warm:
        out["seeded"] = int(warm.split()[1])
    return out


# --- backends -------------------------------------------------------------------------------------
class Backend:
    def __init__(self, kind: str, tmp: Path):
        self.kind, self.tmp, self.server_home, self.dbname = kind, tmp, None, None
        self.uri, self.db_url = "", ""  # the tracking URI clients use; the database behind a server

    def __enter__(self) -> "Backend":
        if self.kind == "sqlite":
            self.uri = f"sqlite:///{self.tmp / 'mlflow.db'}"
            return self
        from urllib.parse import urlsplit

        import psycopg

        admin = urlsplit(PG_ADMIN)
        self.dbname = f"medimg_scale_{uuid.uuid4().hex[:8]}"
        self.db_url = f"postgresql://{admin.username or 'postgres'}@{admin.hostname}:{admin.port or 5432}/{self.dbname}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:  # made here, before the server connects
            conn.execute(f"CREATE DATABASE {self.dbname}")
            # A throwaway store: its commits need not wait for the disk (what is timed are reads)
            conn.execute(f"ALTER DATABASE {self.dbname} SET synchronous_commit TO off")
        self.server_home = self.tmp / "team"
        self.port = _free_port()
        done = self._script("start", "--db", self.db_url, "--timeout", "300")
        if done.returncode != 0:
            raise RuntimeError(done.stdout + done.stderr)
        self.uri = f"http://127.0.0.1:{self.port}"
        return self

    def _script(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(REPO / "scripts" / "team_server.sh"), args[0], "--port", str(self.port),
                               "--home", str(self.server_home), *args[1:]], capture_output=True, text=True,
                              timeout=600)

    def __exit__(self, *exc) -> None:
        if self.kind == "sqlite":
            return
        self._script("stop")
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            for name in (self.dbname, self.dbname + "_optuna"):
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WHAT = ("promote", "dashboards", "warm_start")
DIRECT = ("dashboards", "warm_start")  # readers that may read a server's database (MEDIMG_STORE_DB)


def scale(sizes: list[int], backends: list[str], log=print) -> list[dict]:
    rows = []
    for backend in backends:
        for n in sizes:
            where = FAST_DIR if backend == "sqlite" and FAST_DIR.is_dir() else None
            with tempfile.TemporaryDirectory(prefix=f"scale-{backend}-{n}-", dir=where) as tmp, \
                    Backend(backend, Path(tmp)) as store:
                uri = store.uri
                log(f"[benchmarks] store_scale: filling {n} runs on {backend} ...")
                row = {"backend": backend, "n": n, "load_before": load_average()} | fill(uri, n)
                log(f"[benchmarks] store_scale: {row['runs']} runs in {row['fill_s']:.0f} s; timing ...")
                for what in WHAT:
                    result = measure(uri, what, Path(tmp))
                    row[what] = result["s"]
                    row[what + "_mb"] = result["peak_mb"]
                    log(f"[benchmarks] store_scale: {backend} {n}: {what} {result['s']:.1f} s, "
                        f"{result['peak_mb']:.0f} MB")
                if store.db_url:  # the team's readers given the server's database (MEDIMG_STORE_DB)
                    for what in ("dashboards", "warm_start"):
                        result = measure(uri, what, Path(tmp), {store_read.STORE_DB_ENV: store.db_url})
                        row[what + "_db"], row[what + "_db_mb"] = result["s"], result["peak_mb"]
                        log(f"[benchmarks] store_scale: {backend} {n}: {what} reading the database "
                            f"{result['s']:.1f} s, {result['peak_mb']:.0f} MB")
                row["load_after"] = load_average()
                rows.append(row)
    return rows


def table(rows: list[dict]) -> Table:
    t = Table("Store scale: promote (dry run), dashboards, warm start on stores of N runs", [
        "backend", "runs", "fill s", *(f"{w} s" for w in WHAT), *(f"{w} MB" for w in WHAT),
        *(f"{w} reading the database s / MB" for w in DIRECT), "load before/after"])
    for r in rows:
        direct = [f"{r[w + '_db']:.1f} / {r[w + '_db_mb']:.0f}" if w + "_db" in r else "-" for w in DIRECT]
        t.add(r["backend"], r["runs"], round(r["fill_s"]), *(round(r[w], 1) for w in WHAT),
              *(round(r[w + "_mb"]) for w in WHAT), *direct, f"{r['load_before']} / {r['load_after']}")
    for backend in sorted({r["backend"] for r in rows}):
        mine = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["n"])
        if len(mine) >= 2:
            a, b = mine[0], mine[-1]
            growth = ", ".join(f"{w} x{b[w] / max(a[w], 1e-9):.1f}" for w in (*WHAT, *(d + "_db" for d in DIRECT))
                               if w in a and w in b)
            t.notes.append(f"{backend}: growth {a['runs']} -> {b['runs']} runs (x{b['runs'] / a['runs']:.1f}): {growth}")
    t.notes.append(f"targets at 10,000 runs on PostgreSQL: each < {TARGET_S:g} s, peak < {TARGET_MB} MB, "
                   "growth no worse than linear")
    return t


def run(quick: bool, experiment_id: str | None = None, log=print) -> Section:
    sizes, backends = ([1000], ["sqlite"]) if quick else ([1000, 10000], ["sqlite", "postgres"])
    rows = scale(sizes, backends, log)
    sec = Section("store_scale")
    sec.tables.append(table(rows))
    for r in rows:
        for w in (w for w in (*WHAT, *(d + "_db" for d in DIRECT)) if w in r):
            sec.metrics[f"store_scale.{r['backend']}.{r['n']}.{w}_s"] = r[w]
            sec.metrics[f"store_scale.{r['backend']}.{r['n']}.{w}_mb"] = r[w + "_mb"]
    last = rows[-1]
    sec.headline.append(f"{last['runs']} runs on {last['backend']}: " + ", ".join(
        f"{w} {last[w]:.1f} s / {last[w + '_mb']:.0f} MB" for w in WHAT))
    return sec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="1000", help="comma-separated store sizes")
    parser.add_argument("--backends", default="sqlite", help="sqlite,postgres")
    parser.add_argument("--json", default="", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = scale([int(x) for x in args.runs.split(",")], args.backends.split(","),
                 log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows).render())
    print(table(rows).render(markdown=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
