"""The registry store as promotion reads and writes it: candidates, versions, aliases,
registration, and the guards against concurrent writers (retries, a local file lock).

Races: with a local store (sqlite or file) a promotion holds an exclusive file lock next to
the database for the whole decision, so concurrent promotions run one after the other. For
any store (a tracking server too) every write that can lose a race on a unique row is
repeated (`retry_conflicts`) and every alias move is verified after the write
(registry.audit.reconcile).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from projects.core import access, tracking
from projects.core.errors import InputError
from projects.core.study import get_study
from registry import gates as G
from registry.policy import Policy, find_policy

TAG_POLICY = "policy"  # registered-model tag: the policy file that maintains its aliases
LOCK_ENV = "MEDIMG_REGISTRY_LOCK"  # "0" disables the local-store file lock (tests of the race repair)
# Run tags copied onto a version when it is registered.
VERSION_RUN_TAGS = (tracking.TAG_STUDY, tracking.TAG_TASK, tracking.TAG_ARCH, tracking.TAG_SPLIT,
                    tracking.TAG_AUGMENT, tracking.TAG_SEED, tracking.TAG_DATASET_DIGEST,
                    tracking.TAG_RUN_KIND, tracking.TAG_GIT_COMMIT, tracking.TAG_HOLDOUT_DIGEST)
KEY_METRICS = ("accuracy", "f1_macro", "jaccard", "accuracy_minus_baseline", "jaccard_minus_baseline")


def vlabel(version: str | None) -> str:
    if version is None:
        return "-"
    return version if not str(version).isdigit() else f"v{version}"


# Messages of a write that lost a race on a unique key or a lock, per backend: SQLite,
# PostgreSQL, MySQL/MariaDB. Such a write is safe to repeat once the other writer committed.
_CONFLICT_MARKERS = ("UNIQUE constraint", "IntegrityError", "duplicate key", "Duplicate entry",
                     "database is locked", "could not serialize", "deadlock detected", "Deadlock found")


def _is_conflict(exc: Exception) -> bool:
    return any(marker in str(exc) for marker in _CONFLICT_MARKERS)


def retry_conflicts(write, *args, attempts: int = 8, **kwargs):
    """Run one registry write, repeating it when a concurrent writer won a race on the same row.

    MLflow's SQL stores implement tag and alias writes as read-then-insert (or
    delete-then-insert): two promotions writing the same version tag or alias at once can
    make the second insert hit the unique key (seen in CI: `UNIQUE constraint failed:
    model_version_tags`). Repeating the write after the other one committed makes it an
    update; verify-after-write (`reconcile`) then settles which value stands.
    """
    for attempt in range(attempts):
        try:
            return write(*args, **kwargs)
        except MlflowException as exc:
            if not _is_conflict(exc) or attempt == attempts - 1:
                raise
        time.sleep(0.02 * (attempt + 1) + random.random() * 0.05)


def set_alias(client: MlflowClient, name: str, alias: str, version) -> None:
    retry_conflicts(client.set_registered_model_alias, name, alias, version)


# --- reading the store -----------------------------------------------------------------------
def find_candidates(client: MlflowClient, policy: Policy) -> list[G.Candidate]:
    """FINISHED runs of the policy's study/task that logged a full model, plus its filter."""
    exp_ids = []
    for name in policy.candidates.experiments:
        exp = client.get_experiment_by_name(name)
        if exp is not None and exp.lifecycle_stage == "active":
            exp_ids.append(exp.experiment_id)
    if not exp_ids:
        return []
    query = (f"tags.{tracking.TAG_STUDY} = '{policy.study}' and tags.{tracking.TAG_TASK} = '{policy.task}' "
             f"and tags.{tracking.TAG_CANDIDATE} = 'true' and attributes.status = 'FINISHED'")
    since = []
    if policy.candidates.since is not None:
        since.append(policy.candidates.since.timestamp() * 1000)
    if policy.candidates.max_age_days:
        since.append((time.time() - policy.candidates.max_age_days * 86400) * 1000)
    if since:
        query += f" and attributes.start_time >= {int(max(since))}"
    if policy.candidates.filter:
        query += f" and {policy.candidates.filter}"
    try:
        runs = client.search_runs(exp_ids, query, max_results=policy.candidates.max_results,
                                  order_by=["attributes.start_time DESC"])
    except MlflowException as exc:
        raise InputError(policy.path, f"candidates: MLflow rejected the search filter: {exc.message}") from None
    return [candidate_from_run(run) for run in runs]


def candidate_from_run(run) -> G.Candidate:
    return G.Candidate(run_id=run.info.run_id, experiment_id=run.info.experiment_id,
                       run_name=run.info.run_name or "", start_time=int(run.info.start_time or 0),
                       metrics=dict(run.data.metrics), tags=dict(run.data.tags), params=dict(run.data.params))


def registered_model(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def aliases(model) -> dict[str, str]:
    return {} if model is None else {a: str(v) for a, v in (model.aliases or {}).items()}


def alias_holder(client: MlflowClient, name: str, alias: str) -> str | None:
    return aliases(registered_model(client, name)).get(alias)


def versions_by_run(client: MlflowClient, name: str) -> dict[str, Any]:
    """run id -> its lowest-numbered version (the canonical one when a race made two)."""
    out: dict[str, Any] = {}
    for mv in client.search_model_versions(f"name = '{name}'", max_results=10000):
        if mv.run_id and (mv.run_id not in out or int(mv.version) < int(out[mv.run_id].version)):
            out[mv.run_id] = mv
    return out


def version_tags(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, version).tags)


# --- registration ---------------------------------------------------------------------------
def register_run(run_id: str, name: str | None = None, client: MlflowClient | None = None):
    """The registered version made from a run: reused if one exists, else created.

    Any finished run that logged a full MLflow model (single, grid child, search trial) can
    be registered. The version carries the run's key metrics and efficiency numbers as tags
    and a description naming the data, split and architecture.
    """
    client = client or MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise InputError("--register", f"no run {run_id!r} in {mlflow.get_tracking_uri()}") from None
    tags = run.data.tags
    if tags.get(tracking.TAG_CANDIDATE) != "true":
        raise InputError("--register", f"run {run_id} logged no full MLflow model "
                                       f"(tag {tracking.TAG_CANDIDATE} is not 'true')")
    if run.info.status != "FINISHED":
        raise InputError("--register", f"run {run_id} is {run.info.status}, not FINISHED")
    if name is None:
        if not tags.get(tracking.TAG_STUDY) or not tags.get(tracking.TAG_TASK):
            raise InputError("--register", f"run {run_id} has no {tracking.TAG_STUDY}/{tracking.TAG_TASK} tags")
        name = get_study(tags[tracking.TAG_STUDY]).model_name(tags[tracking.TAG_TASK])
    existing = versions_for_run(client, name, run_id) if registered_model(client, name) else []
    if existing:
        return existing[0]
    try:
        policy = find_policy(name)
    except InputError:
        policy = None  # a model no policy maintains can still hold versions
    ensure_registered_model(client, name, policy)
    source, model_id = _model_source(client, run)
    mv = retry_conflicts(client.create_model_version, name, source, run_id=run_id, tags=_registration_tags(run),
                                     description=describe_run(run), model_id=model_id)
    # Two registrations of one run may race: the lowest version wins and the other is removed
    # by the process that created it (anyone who sees the higher one also sees the lower one).
    canonical = versions_for_run(client, name, run_id)[0]
    if str(canonical.version) != str(mv.version):
        with contextlib.suppress(MlflowException):
            client.delete_model_version(name, mv.version)
        return canonical
    return mv


def versions_for_run(client: MlflowClient, name: str, run_id: str) -> list:
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return sorted(found, key=lambda mv: int(mv.version))


def _model_source(client: MlflowClient, run) -> tuple[str, str | None]:
    """`models:/<logged model id>` for MLflow 3 logged models, else the run's artifact path."""
    best = None
    for output in (run.outputs.model_outputs if run.outputs else []) or []:
        try:
            logged = client.get_logged_model(output.model_id)
        except MlflowException:
            continue
        if logged.name == tracking.MODEL_ARTIFACT and (best is None or output.step >= best[1]):
            best = (logged.model_id, output.step)
    if best is not None:
        return f"models:/{best[0]}", best[0]
    # What runs:/<id>/<artifact> resolves to: the artifact under the run's artifact root.
    return f"{run.info.artifact_uri.rstrip('/')}/{tracking.MODEL_ARTIFACT}", None


def _fmt_num(value: float) -> str:
    return f"{value:.6g}"


def _registration_tags(run) -> dict[str, str]:
    tags = {k: run.data.tags[k] for k in VERSION_RUN_TAGS if run.data.tags.get(k)}
    metrics = run.data.metrics
    for key, value in sorted(metrics.items()):
        if (key.startswith(("test_", "baseline_")) or key in tracking.EFFICIENCY_METRICS
                or key in (tracking.M_PARAMS_KERAS, tracking.M_SIZE_WITH_OPT_MB)) and math.isfinite(value):
            tags[key] = _fmt_num(value)
    if run.data.params.get(G.P_IMAGE_SHAPE):
        tags[G.P_IMAGE_SHAPE] = run.data.params[G.P_IMAGE_SHAPE]
    tags["run_name"] = run.info.run_name or ""
    return tags


def describe_run(run) -> str:
    """One paragraph naming the data, split and architecture a version was trained on."""
    t, p, m = run.data.tags, run.data.params, run.data.metrics
    arch = t.get(tracking.TAG_ARCH, "?")
    extra = ", ".join(f"{k} {t[k]}" for k in ("filters", "depth") if t.get(k))
    data = p.get("data_root") or p.get("data") or "?"
    lines = [
        f"{t.get(tracking.TAG_STUDY, '?')} / {t.get(tracking.TAG_TASK, '?')}: {arch}"
        + (f" ({extra})" if extra else "") + f", input {p.get(G.P_IMAGE_SHAPE, '?')}.",
        f"Data: {data} (dataset_digest {t.get(tracking.TAG_DATASET_DIGEST, '?')[:16]}); "
        f"split {t.get(tracking.TAG_SPLIT, '?')}; augment {t.get(tracking.TAG_AUGMENT, '?')}; "
        f"seed {t.get(tracking.TAG_SEED, '?')}.",
    ]
    results = [f"{tracking.test_metric(k)} {m[tracking.test_metric(k)]:.4f}" + _interval(m, tracking.test_metric(k))
               for k in KEY_METRICS if tracking.test_metric(k) in m]
    eff = [f"{k} {m[k]:.4g}" for k in (tracking.M_SIZE_MB, tracking.M_CPU_TOTAL, tracking.M_LATENCY_P50) if k in m]
    if results:
        lines.append("Test: " + ", ".join(results) + ".")
    if eff:
        lines.append("Efficiency: " + ", ".join(eff) + ".")
    lines.append(f"From run {run.info.run_name or ''} ({run.info.run_id}, "
                 f"{t.get(tracking.TAG_RUN_KIND, 'run')}, commit {t.get(tracking.TAG_GIT_COMMIT, '?')[:12]}).")
    return "\n".join(lines)


def _interval(metrics: dict[str, float], name: str) -> str:
    low, high = metrics.get(tracking.ci_low(name)), metrics.get(tracking.ci_high(name))
    return f" (95% CI {low:.3f}-{high:.3f})" if low is not None and high is not None else ""


def ensure_registered_model(client: MlflowClient, name: str, policy: Policy | None) -> None:
    if registered_model(client, name) is not None:
        return
    tags, description = {}, ""
    if policy is not None:
        tags = {tracking.TAG_STUDY: policy.study, tracking.TAG_TASK: policy.task,
                TAG_POLICY: f"registry/policies/{policy.path.name}"}
        rules = "\n".join(f"- {r.alias}: {r.describe()}" for r in policy.aliases)
        description = (f"{policy.description}\n\nAliases are set only by `python -m registry.promote` "
                       f"(MLproject entry point `promote`) from registry/policies/{policy.path.name}:\n{rules}")
    try:
        retry_conflicts(client.create_registered_model, name, tags=tags, description=description or None)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


# --- permissions --------------------------------------------------------------------------------
def check_can_manage(client: MlflowClient, name: str, policy: Policy) -> None:
    """Refuse a promotion before it writes anything when the server would refuse its writes.

    On a server with authentication (docs/team.md) moving an alias or tagging a version needs
    MANAGE on the registered model (the `registry` role). A promotion writes holdout
    evaluations, versions and audit tags before the alias, so a user without that permission
    would leave those behind and then fail. The probe is a write the promotion makes anyway,
    the model's `policy` tag rewritten with its own value: if the server accepts it, it
    accepts the alias moves. A model not registered yet has nothing to probe; the team setup
    (`python -m tools.team_users setup`) registers every policy's model, so that no user who
    may merely create models ends up owning one.
    """
    model = registered_model(client, name)
    if model is None:
        return
    value = (model.tags or {}).get(TAG_POLICY) or f"registry/policies/{policy.path.name}"
    try:
        client.set_registered_model_tag(name, TAG_POLICY, value)
    except MlflowException as exc:
        if access.is_refusal(exc):
            raise InputError("--model", f"{name}: " + access.refusal_line(exc, "move its aliases")
                             + "; nothing was changed") from None
        raise


# --- locking ------------------------------------------------------------------------------------
def _local_lock_path(name: str) -> Path | None:
    """The lock file of `name`'s promotions on a local store; None for servers (verify-after-write
    only). It lies in the system's temporary folder, named by a digest of the store's resolved
    path and the model, so nothing is left beside the user's store; every process promoting
    into that store on this machine finds the same file (a local store is one machine's)."""
    if os.environ.get(LOCK_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    uri = mlflow.get_registry_uri() or mlflow.get_tracking_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            return None
        store = Path(unquote(path.split("?")[0]))
    elif parsed.scheme in ("", "file"):
        store = Path(unquote(parsed.path if parsed.scheme else uri))
    else:
        return None
    if not store.parent.is_dir():
        return None
    key = hashlib.sha256(f"{store.resolve()}\0{name}".encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / "medimg-promote-locks" / f"{key}.lock"


@contextlib.contextmanager
def promotion_lock(name: str) -> Iterator[None]:
    """One promotion of `name` at a time per local store, across processes (flock; released
    by the kernel when a holder dies, so a stale file never blocks)."""
    path = _local_lock_path(name)
    try:
        import fcntl
    except ImportError:  # not POSIX: verify-after-write only
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    # Shared by every user of this machine: the folder is sticky and world-writable like /tmp,
    # and flock needs only read access to a file another user created.
    try:
        path.parent.mkdir()
        path.parent.chmod(0o1777)
    except FileExistsError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


