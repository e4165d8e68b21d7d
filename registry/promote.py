"""`promote`: move each registered model's aliases by its written policy, and roll them back.

    python -m registry.promote                       # every policy in registry/policies/
    python -m registry.promote --model pathology-tumor --dry-run true
    python -m registry.promote --model pathology-tumor --rollback champion
    python -m registry.promote --rollback pathology-tumor champion

For each alias of a policy (in dependency order, the champion first): rank the candidate
runs by the alias's rule, walk down the ranking and take the first candidate that passes
every gate (registry.gates); refused candidates are listed with the reason. Only then is the
run registered (an existing version of the same run is reused, so there is one version per
run and a second promotion changes nothing), the alias set, and the audit written:

- on the version: tags `promotion.<alias>.{policy,rule,metric,value,compared,gates,
  previous_version,at,kind,by}`;
- on the registered model: tag `audit.<alias>`, a JSON list of those entries (the last 50),
  oldest first: the trail rollback reads.

Races: with a local store (sqlite or file) a promotion holds an exclusive file lock next to
the database for the whole decision, so concurrent promotions run one after the other. For
any store (a tracking server too) every write is followed by verify-after-write: re-read the
alias and, until they agree, repair the audit so its last entry and the holder's tags
describe the version that actually holds the alias. Every process that writes does so, so
the last one leaves a consistent state, and every version an alias is ever set to has passed
its gates in the process that set it.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import random
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from projects.core import cli, tracking
from projects.core.errors import InputError
from projects.core.study import get_study
from registry import gates as G
from registry.policy import CHAMPION, AliasRule, Policy, find_policy, load_policies

# --- names on the registry (the registry's own; run names come from projects.core.tracking) ----
HISTORY_LIMIT = 50
AUDIT_FIELDS = ("policy", "rule", "metric", "value", "compared", "gates", "previous_version", "at", "kind", "by")
TAG_POLICY = "policy"  # registered-model tag: the policy file that maintains its aliases
LOCK_ENV = "MEDIMG_REGISTRY_LOCK"  # "0" disables the local-store file lock (tests of the race repair)
# Run tags copied onto a version when it is registered.
VERSION_RUN_TAGS = (tracking.TAG_STUDY, tracking.TAG_TASK, tracking.TAG_ARCH, tracking.TAG_SPLIT,
                    tracking.TAG_AUGMENT, tracking.TAG_SEED, tracking.TAG_DATASET_DIGEST,
                    tracking.TAG_RUN_KIND, tracking.TAG_GIT_COMMIT)
KEY_METRICS = ("accuracy", "f1_macro", "jaccard", "accuracy_minus_baseline", "jaccard_minus_baseline")


def audit_key(alias: str) -> str:
    """Registered-model tag holding the alias's history (JSON list, oldest first)."""
    return f"audit.{alias}"


def promotion_key(alias: str, name: str) -> str:
    """Version tag recording why the version holds (or held) the alias."""
    return f"promotion.{alias}.{name}"


def rolled_back_key(alias: str) -> str:
    """Version tag set when rollback moved the alias away from the version: blocks it there."""
    return f"rolled_back.{alias}"


# --- results ------------------------------------------------------------------------------
MOVED, WOULD_MOVE, UNCHANGED, REFUSED, NONE, REMOVED, WOULD_REMOVE, ROLLED_BACK, WOULD_ROLL_BACK = (
    "moved", "would move", "unchanged", "refused", "no candidates", "removed", "would remove",
    "rolled back", "would roll back")


@dataclass
class Decision:
    alias: str
    rule: str
    before: str | None
    after: str | None
    status: str
    value: float | None = None
    target: G.Candidate | None = None
    refused: list[tuple[str, str]] = field(default_factory=list)  # (candidate, reason)
    note: str = ""
    gates: str = ""  # the gates the chosen candidate passed

    @property
    def changed(self) -> bool:
        return self.status in (MOVED, REMOVED, ROLLED_BACK)


@dataclass
class ModelReport:
    model: str
    policy_ref: str
    dry_run: bool
    n_candidates: int
    decisions: list[Decision]
    refused_all: list[tuple[str, str]]  # refused for every alias (metrics, baseline)

    def summary(self) -> str:
        if not self.n_candidates and not any(d.before for d in self.decisions):
            return f"{self.model}: no candidates"
        parts = []
        for d in self.decisions:
            target = _vlabel(d.after)
            if d.status in (MOVED, WOULD_MOVE, ROLLED_BACK, WOULD_ROLL_BACK):
                parts.append(f"{d.alias}->{target}" + (" (dry run)" if d.status.startswith("would") else ""))
            elif d.status in (REMOVED, WOULD_REMOVE):
                parts.append(f"{d.alias} removed" + (" (dry run)" if d.status == WOULD_REMOVE else ""))
            elif d.after:
                parts.append(f"{d.alias}={target} ({d.status})")
            else:
                parts.append(f"{d.alias}: {d.status}")
        return f"{self.model}: " + ", ".join(parts)

    def table(self) -> str:
        head = (f"{self.model}  (policy {self.policy_ref}, {self.n_candidates} candidate run"
                f"{'' if self.n_candidates == 1 else 's'}{', DRY RUN: nothing changed' if self.dry_run else ''})")
        rows = [("alias", "from", "to", "status", "value", "rule")]
        for d in self.decisions:
            rows.append((d.alias, _vlabel(d.before), _vlabel(d.after) if d.after or d.target else "-",
                         d.status, "-" if d.value is None else f"{d.value:.4g}", d.rule))
        if not self.n_candidates and all(d.status == NONE and not d.before for d in self.decisions):
            return f"{head}\n  no candidate runs (FINISHED, {tracking.TAG_CANDIDATE}=true) match the policy; nothing moved"
        lines = [head] + _columns(rows)
        for d in self.decisions:
            if d.note:
                lines.append(f"  {d.alias}: {d.note}")
            for who, why in d.refused:
                lines.append(f"  {d.alias}: refused {who}: {why}")
        for who, why in self.refused_all:
            lines.append(f"  refused for every alias: {who}: {why}")
        return "\n".join(lines)


def _vlabel(version: str | None) -> str:
    if version is None:
        return "-"
    return version if not str(version).isdigit() else f"v{version}"


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


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


def _set_alias(client: MlflowClient, name: str, alias: str, version) -> None:
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
    return [_candidate_from_run(run) for run in runs]


def _candidate_from_run(run) -> G.Candidate:
    return G.Candidate(run_id=run.info.run_id, experiment_id=run.info.experiment_id,
                       run_name=run.info.run_name or "", start_time=int(run.info.start_time or 0),
                       metrics=dict(run.data.metrics), tags=dict(run.data.tags), params=dict(run.data.params))


def _registered_model(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _aliases(model) -> dict[str, str]:
    return {} if model is None else {a: str(v) for a, v in (model.aliases or {}).items()}


def _alias_holder(client: MlflowClient, name: str, alias: str) -> str | None:
    return _aliases(_registered_model(client, name)).get(alias)


def _versions_by_run(client: MlflowClient, name: str) -> dict[str, Any]:
    """run id -> its lowest-numbered version (the canonical one when a race made two)."""
    out: dict[str, Any] = {}
    for mv in client.search_model_versions(f"name = '{name}'", max_results=10000):
        if mv.run_id and (mv.run_id not in out or int(mv.version) < int(out[mv.run_id].version)):
            out[mv.run_id] = mv
    return out


def _version_tags(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, version).tags)


def _read_history(client: MlflowClient, name: str, alias: str) -> list[dict]:
    model = _registered_model(client, name)
    if model is None:
        return []
    text = model.tags.get(audit_key(alias))
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


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
    existing = _versions_for_run(client, name, run_id) if _registered_model(client, name) else []
    if existing:
        return existing[0]
    try:
        policy = find_policy(name)
    except InputError:
        policy = None  # a model no policy maintains can still hold versions
    _ensure_registered_model(client, name, policy)
    source, model_id = _model_source(client, run)
    mv = retry_conflicts(client.create_model_version, name, source, run_id=run_id, tags=_registration_tags(run),
                                     description=describe_run(run), model_id=model_id)
    # Two registrations of one run may race: the lowest version wins and the other is removed
    # by the process that created it (anyone who sees the higher one also sees the lower one).
    canonical = _versions_for_run(client, name, run_id)[0]
    if str(canonical.version) != str(mv.version):
        with contextlib.suppress(MlflowException):
            client.delete_model_version(name, mv.version)
        return canonical
    return mv


def _versions_for_run(client: MlflowClient, name: str, run_id: str) -> list:
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
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    return RunsArtifactRepository.get_underlying_uri(f"runs:/{run.info.run_id}/{tracking.MODEL_ARTIFACT}"), None


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
    results = [f"{tracking.test_metric(k)} {m[tracking.test_metric(k)]:.4f}" for k in KEY_METRICS
               if tracking.test_metric(k) in m]
    eff = [f"{k} {m[k]:.4g}" for k in (tracking.M_SIZE_MB, tracking.M_CPU_TOTAL, tracking.M_LATENCY_P50) if k in m]
    if results:
        lines.append("Test: " + ", ".join(results) + ".")
    if eff:
        lines.append("Efficiency: " + ", ".join(eff) + ".")
    lines.append(f"From run {run.info.run_name or ''} ({run.info.run_id}, "
                 f"{t.get(tracking.TAG_RUN_KIND, 'run')}, commit {t.get(tracking.TAG_GIT_COMMIT, '?')[:12]}).")
    return "\n".join(lines)


def _ensure_registered_model(client: MlflowClient, name: str, policy: Policy | None) -> None:
    if _registered_model(client, name) is not None:
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


# --- locking ------------------------------------------------------------------------------------
def _local_lock_path(name: str) -> Path | None:
    """A lock file beside a local store; None for servers (verify-after-write only)."""
    if os.environ.get(LOCK_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    uri = mlflow.get_registry_uri() or mlflow.get_tracking_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            return None
        db = Path(unquote(path.split("?")[0]))
        return db.with_name(f"{db.name}.promote-{name}.lock")
    if parsed.scheme in ("", "file"):
        root = Path(unquote(parsed.path if parsed.scheme else uri))
        return root / f".promote-{name}.lock"
    return None


@contextlib.contextmanager
def _promotion_lock(name: str) -> Iterator[None]:
    path = _local_lock_path(name)
    try:
        import fcntl
    except ImportError:  # not POSIX: verify-after-write only
        fcntl = None
    if path is None or fcntl is None or not path.parent.is_dir():
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- audit ------------------------------------------------------------------------------------
def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _by() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _write_version_audit(client: MlflowClient, name: str, alias: str, entry: dict) -> None:
    for key in AUDIT_FIELDS:
        value = entry.get("previous") if key == "previous_version" else entry.get(key)
        retry_conflicts(client.set_model_version_tag, name, entry["version"], promotion_key(alias, key),
                        "none" if value is None else str(value))


def _append_history(client: MlflowClient, name: str, alias: str, entry: dict) -> None:
    history = _read_history(client, name, alias)
    if history and history[-1].get("version") == entry["version"] and history[-1].get("at") == entry["at"]:
        return
    history = (history + [entry])[-HISTORY_LIMIT:]
    retry_conflicts(client.set_registered_model_tag, name, audit_key(alias), json.dumps(history, separators=(",", ":")))


def _entry_from_tags(version: str, alias: str, tags: dict[str, str]) -> dict | None:
    if not tags.get(promotion_key(alias, "at")):
        return None
    entry = {"version": version}
    for key in AUDIT_FIELDS:
        value = tags.get(promotion_key(alias, key))
        if key == "previous_version":
            entry["previous"] = None if value in (None, "", "none") else value
        else:
            entry[key] = value
    return entry


def _tags_match(entry: dict, alias: str, tags: dict[str, str]) -> bool:
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
        holder = _alias_holder(client, name, alias)
        history = _read_history(client, name, alias)
        last = history[-1] if history else None
        if holder is None:
            if last is None or last.get("version") is None:
                return True
            _append_history(client, name, alias, {
                "version": None, "previous": last.get("version"), "at": _now(), "kind": "reconcile",
                "rule": "alias found removed without an audit entry", "by": _by()})
        else:
            tags = _version_tags(client, name, holder)
            if last is None or str(last.get("version")) != holder:
                entry = _entry_from_tags(holder, alias, tags)
                if entry is None or (last is not None and entry.get("at", "") < last.get("at", "")):
                    entry = {"version": holder, "previous": None if last is None else last.get("version"),
                             "at": _now(), "kind": "reconcile", "policy": "", "rule":
                             "found holding the alias without an audit entry", "by": _by()}
                _append_history(client, name, alias, entry)
            elif not _tags_match(last, alias, tags):
                _write_version_audit(client, name, alias, last)
            else:
                return True
        time.sleep(0.05 * (attempt + 1))
    return False


def history(name: str, alias: str, client: MlflowClient | None = None) -> list[dict]:
    """The alias's audit trail, oldest first."""
    return _read_history(client or MlflowClient(), name, alias)


# --- the decision -------------------------------------------------------------------------------
class _Promotion:
    """One policy applied once: candidates, cheap gates, then each alias in order."""

    def __init__(self, client: MlflowClient, policy: Policy, dry_run: bool):
        self.client, self.policy, self.dry_run = client, policy, dry_run
        self.name = policy.model
        self.candidates = find_candidates(client, policy)
        model = _registered_model(client, self.name)
        self.holders: dict[str, str | None] = {a: _aliases(model).get(a) for a in policy.alias_names()}
        self.versions = _versions_by_run(client, self.name) if model else {}
        for c in self.candidates:
            mv = self.versions.get(c.run_id)
            if mv is not None:
                c.version, c.version_tags = str(mv.version), dict(mv.tags)
        self.by_version = {c.version: c for c in self.candidates if c.version}
        self.refused_all: list[tuple[str, str]] = []
        self.gated: list[G.Candidate] = []
        required = policy.all_metrics()
        for c in self.candidates:
            for result in (G.check_metrics(c, required), G.check_baseline(c, policy.gates.beats_baseline)):
                if not result.passed:
                    self.refused_all.append((self._who(c), str(result)))
                    break
            else:
                self.gated.append(c)
        self._front: set[str] | None = None  # built on first use: see front()
        self.smoke_cache: dict[str, G.GateResult] = {}
        self.decided: dict[str, G.Candidate | None] = {}

    def _who(self, c: G.Candidate) -> str:
        name = c.run_name or c.tags.get(tracking.TAG_ARCH, "")
        if c.version:
            return f"v{c.version} (run {c.run_id[:8]}{' ' + name if name else ''})"
        return f"run {c.run_id[:8]}" + (f" ({name})" if name else "")

    def holder_candidate(self, version: str | None) -> G.Candidate | None:
        """The candidate behind a version, even when its run is no longer a candidate."""
        if version is None:
            return None
        if version in self.by_version:
            return self.by_version[version]
        try:
            mv = self.client.get_model_version(self.name, version)
        except MlflowException:
            return None
        cand = None
        if mv.run_id:
            with contextlib.suppress(MlflowException):
                cand = _candidate_from_run(self.client.get_run(mv.run_id))
        if cand is None:  # the run is gone: what registration copied onto the version
            metrics = {}
            for key, value in mv.tags.items():
                with contextlib.suppress(ValueError):
                    metrics[key] = float(value)
            cand = G.Candidate(mv.run_id or "", "", "", int(mv.creation_timestamp or 0), metrics, dict(mv.tags), {})
        cand.version, cand.version_tags = str(mv.version), dict(mv.tags)
        self.by_version[version] = cand
        return cand

    def eligible(self, rule: AliasRule) -> tuple[list[G.Candidate], str]:
        pool = list(self.gated)
        if not self.candidates:
            return [], "no candidate runs (FINISHED, registry_candidate=true) match the policy"
        if not pool:
            return [], "no candidate passed the metrics and baseline gates"
        if rule.within:
            ref = self.decided.get(rule.within.of)
            ref_value = ref.value(rule.within.metric) if ref else None
            if ref_value is None:
                return [], f"{rule.within.of} has no holder to compare with"
            tol = rule.within.tolerance + 1e-12
            if rule.within.goal == "max":
                pool = [c for c in pool if c.value(rule.within.metric) >= ref_value - tol]
            else:
                pool = [c for c in pool if c.value(rule.within.metric) <= ref_value + tol]
        for name, bound in rule.floor:
            pool = [c for c in pool if c.value(name) is not None and c.value(name) >= bound]
        for name, bound in rule.ceiling:
            pool = [c for c in pool if c.value(name) is not None and c.value(name) <= bound]
        if rule.newer_than:
            ref = self.decided.get(rule.newer_than)
            if ref is None:
                return [], f"{rule.newer_than} has no holder to compare with"
            pool = [c for c in pool if c.start_time > ref.start_time]
        pool = [c for c in pool if c.value(rule.metric) is not None]
        if not pool:
            return [], f"no gated candidate meets the rule ({rule.describe()})"
        before = self.holders.get(rule.alias)
        sign = -1.0 if rule.goal == "max" else 1.0
        pool.sort(key=lambda c: (sign * c.value(rule.metric), 0 if before and c.version == before else 1,
                                 c.start_time, c.run_id))
        return pool, ""

    def smoke(self, c: G.Candidate) -> G.GateResult:
        if c.run_id not in self.smoke_cache:
            gates = self.policy.gates
            uri = f"models:/{self.name}/{c.version}" if c.version else c.model_uri
            self.smoke_cache[c.run_id] = G.smoke_predict(uri, c.params.get(G.P_IMAGE_SHAPE)
                                                         or c.version_tags.get(G.P_IMAGE_SHAPE),
                                                         gates.probabilities)
        return self.smoke_cache[c.run_id]

    def front(self) -> set[str]:
        """The Pareto front of the gated candidates whose models work. A model that fails the
        smoke gate must not dominate (and so hide) a working one: front members are
        smoke-tested and the front is rebuilt without the broken ones until it holds."""
        if self._front is None:
            spec, pool = self.policy.gates.pareto, list(self.gated)
            while True:
                front = G.pareto_front(pool, spec) if spec else set()
                broken = ({c.run_id for c in pool if c.run_id in front and not self.smoke(c).passed}
                          if self.policy.gates.smoke_predict else set())
                if not broken:
                    break
                pool = [c for c in pool if c.run_id not in broken]
            self._front = front
        return self._front

    def gate_chain(self, c: G.Candidate, rule: AliasRule) -> Iterator[G.GateResult]:
        gates = self.policy.gates
        if CHAMPION in self.policy.alias_names():
            # The champion is compared with the champion it would replace; every other alias
            # with the champion this promotion has just decided on.
            reference = (self.holder_candidate(self.holders.get(CHAMPION)) if rule.alias == CHAMPION
                         else self.decided.get(CHAMPION))
            label = _vlabel(reference.version) if reference and reference.version else "(new)"
            yield G.check_data(c, reference, label, gates.allow_data_change)
        yield G.check_not_rolled_back(c, rule.alias, rolled_back_key(rule.alias))
        if rule.pareto and gates.pareto:
            yield G.check_pareto(c, self.front(), gates.pareto)
        if gates.smoke_predict:
            yield self.smoke(c)

    def decide(self, rule: AliasRule) -> Decision:
        before = self.holders.get(rule.alias)
        d = Decision(rule.alias, rule.describe(), before, before, NONE)
        ranked, why_none = self.eligible(rule)
        if not ranked:
            d.note = why_none
            if rule.when_none == "remove" and before:
                d.status, d.after = (WOULD_REMOVE if self.dry_run else REMOVED), None
                d.note += "; the policy removes the alias then (when_none: remove)"
            self.decided[rule.alias] = self.holder_candidate(d.after)
            return d
        for c in ranked:
            passed = []
            failed = None
            for result in self.gate_chain(c, rule):
                if not result.passed:
                    failed = result
                    break
                passed.append(result.gate)
            if failed is not None:
                d.refused.append((self._who(c), str(failed)))
                if self.policy.on_gate_failure == "refuse":
                    break
                continue
            d.target, d.value = c, c.value(rule.metric)
            d.gates = "passed: " + ", ".join([G.GATE_METRICS, G.GATE_BASELINE] + passed)
            break
        if d.target is None:
            d.status = REFUSED
            d.note = ("the best candidate failed a gate (on_gate_failure: refuse); the alias stays"
                      if self.policy.on_gate_failure == "refuse" else "every candidate failed a gate; the alias stays")
            self.decided[rule.alias] = self.holder_candidate(before)
            return d
        if d.target.version is not None and d.target.version == before:
            d.status = UNCHANGED
        else:
            d.status = WOULD_MOVE if self.dry_run else MOVED
            d.after = d.target.version or "new version"
        self.decided[rule.alias] = d.target
        return d

    def compared(self, rule: AliasRule, d: Decision) -> str:
        names = rule.metrics()
        data = {_vlabel(d.after): {m: d.target.value(m) for m in names}}
        prev = self.holder_candidate(d.before)
        if prev is not None:
            data[f"previous {_vlabel(d.before)}"] = {m: prev.value(m) for m in names}
        for ref in rule.references():
            holder = self.decided.get(ref)
            if holder is not None:
                data[f"{ref} {_vlabel(holder.version)}"] = {m: holder.value(m) for m in names}
        return json.dumps(data, separators=(",", ":"))

    def apply(self, rule: AliasRule, d: Decision) -> None:
        client, name = self.client, self.name
        if d.status == UNCHANGED:
            reconcile(client, name, rule.alias)
            return
        if d.status == REMOVED:
            previous = _alias_holder(client, name, rule.alias)
            if previous is not None:
                retry_conflicts(client.delete_registered_model_alias, name, rule.alias)
                _append_history(client, name, rule.alias, {
                    "version": None, "previous": previous, "at": _now(), "kind": "remove",
                    "policy": self.policy.ref, "rule": f"{rule.describe()}: {d.note}", "by": _by()})
            reconcile(client, name, rule.alias)
            return
        if d.status != MOVED:
            return
        target = d.target
        if target.version is None:
            _ensure_registered_model(client, name, self.policy)
            mv = register_run(target.run_id, name, client)
            target.version, target.version_tags = str(mv.version), dict(mv.tags)
            self.by_version[target.version] = target
        previous = _alias_holder(client, name, rule.alias)  # fresh: a concurrent promotion may have moved it
        d.after = target.version
        if previous == target.version:
            d.status, d.note = UNCHANGED, "a concurrent promotion had already moved it here"
            reconcile(client, name, rule.alias)
            return
        d.before = previous
        entry = {"version": target.version, "previous": previous, "at": _now(), "kind": "promote",
                 "policy": self.policy.ref, "rule": rule.describe(), "metric": rule.metric,
                 "value": _fmt_num(d.value), "compared": self.compared(rule, d), "gates": d.gates, "by": _by()}
        _write_version_audit(client, name, rule.alias, entry)
        _set_alias(client, name, rule.alias, target.version)
        _append_history(client, name, rule.alias, entry)
        if not reconcile(client, name, rule.alias):
            d.note = "the audit could not be verified after 10 attempts (heavy concurrent promotion?)"
        final = _alias_holder(client, name, rule.alias)
        if final != target.version:
            d.after = final
            d.note = f"a concurrent promotion moved it on to {_vlabel(final)}"
        self.holders[rule.alias] = d.after

    def run(self) -> ModelReport:
        decisions = []
        for rule in self.policy.aliases:
            d = self.decide(rule)
            if not self.dry_run:
                self.apply(rule, d)
            decisions.append(d)
        return ModelReport(self.name, self.policy.ref, self.dry_run, len(self.candidates), decisions,
                           self.refused_all)


def promote_model(name: str, dry_run: bool = False, *, policy: Policy | None = None,
                  client: MlflowClient | None = None, out: TextIO | None = None) -> ModelReport:
    """Apply one registered model's policy; prints and returns the table of what moved."""
    tracking.setup_tracking()
    policy = policy or find_policy(name)
    client = client or MlflowClient()
    with contextlib.nullcontext() if dry_run else _promotion_lock(name):
        report = _Promotion(client, policy, dry_run).run()
    print(report.table(), file=out or sys.stdout, flush=True)
    return report


def promote_all(dry_run: bool = False, out: TextIO | None = None) -> str:
    """Every policy in registry/policies/; returns a one-line summary per model, joined by '; '."""
    tracking.setup_tracking()
    reports = [promote_model(name, dry_run, policy=policy, out=out)
               for name, policy in sorted(load_policies().items())]
    return "; ".join(r.summary() for r in reports)


def _previous_holder(hist: list[dict], holder: str) -> tuple[bool, bool, str | None]:
    """Replay the trail as a stack (promote pushes, rollback pops): what was there before.

    Returns (the trail ends on the holder, it has a previous holder, that holder or None).
    """
    stack: list[str | None] = []
    for e in hist:
        version = e.get("version")
        version = None if version is None else str(version)
        if e.get("kind") == "rollback":
            if stack and stack[-1] == (None if e.get("previous") is None else str(e["previous"])):
                stack.pop()
        if not stack or stack[-1] != version:
            stack.append(version)
    if not stack or stack[-1] != holder:
        return False, False, None
    return True, len(stack) >= 2, stack[-2] if len(stack) >= 2 else None


def rollback(name: str, alias: str, dry_run: bool = False, *, client: MlflowClient | None = None,
             out: TextIO | None = None) -> Decision:
    """Move `alias` of `name` back to its previous holder, from the audit trail.

    The version it moves away from gets the tag `rolled_back.<alias>`, which the
    `not_rolled_back` gate reads: later promotions will not put it back on that alias.
    """
    tracking.setup_tracking()
    policy = find_policy(name)
    policy.alias(alias)  # an alias this policy maintains, or InputError
    client = client or MlflowClient()
    with contextlib.nullcontext() if dry_run else _promotion_lock(name):
        if _registered_model(client, name) is None:
            raise InputError("--model", f"{name} is not registered yet (nothing to roll back)")
        holder = _alias_holder(client, name, alias)
        if holder is None:
            raise InputError("--rollback", f"{name} has no alias {alias!r} to roll back")
        complete, found, target = _previous_holder(_read_history(client, name, alias), holder)
        if not complete:  # the trail does not end on the holder: its own tags name its predecessor
            prev = _version_tags(client, name, holder).get(promotion_key(alias, "previous_version"))
            found, target = prev not in (None, "", "none"), prev
        if not found:
            raise InputError("--rollback", f"{name}@{alias} ({_vlabel(holder)}) has no previous holder "
                                           "in the audit trail")
        d = Decision(alias, f"rollback of {_vlabel(holder)}", holder, target,
                     WOULD_ROLL_BACK if dry_run else ROLLED_BACK)
        old = _version_tags(client, name, target) if target is not None else {}
        gates = ""
        if target is not None and policy.gates.smoke_predict:
            # It passed every gate when it was promoted; its artifact must still load.
            smoke = G.smoke_predict(f"models:/{name}/{target}", old.get(G.P_IMAGE_SHAPE), policy.gates.probabilities)
            if not smoke.passed:
                d.status, d.after = REFUSED, holder
                d.refused.append((_vlabel(target), str(smoke)))
                d.note = "the previous holder fails its smoke test; the alias stays"
            earlier = old.get(promotion_key(alias, "gates"), "")
            gates = f"passed: {G.GATE_SMOKE} (re-checked for the rollback)" + (f"; when promoted {earlier}" if earlier else "")
        if d.status == ROLLED_BACK:
            at = _now()
            retry_conflicts(client.set_model_version_tag, name, holder, rolled_back_key(alias), at)
            entry = {"version": target, "previous": holder, "at": at, "kind": "rollback", "policy": policy.ref,
                     "rule": f"rollback of {_vlabel(holder)} to its previous holder",
                     "metric": old.get(promotion_key(alias, "metric"), ""),
                     "value": old.get(promotion_key(alias, "value"), ""),
                     "compared": old.get(promotion_key(alias, "compared"), ""), "gates": gates, "by": _by()}
            if target is None:
                retry_conflicts(client.delete_registered_model_alias, name, alias)
            else:
                _write_version_audit(client, name, alias, entry)
                _set_alias(client, name, alias, target)
            _append_history(client, name, alias, entry)
            reconcile(client, name, alias)
            d.after = _alias_holder(client, name, alias)
    report = ModelReport(name, policy.ref, dry_run, 0, [d], [])
    print(report.table(), file=out or sys.stdout, flush=True)
    return d


def _log_to_launcher_run(text: str) -> None:
    """Under `mlflow run`, keep the table on the launcher's run (Artifacts tab)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        client = MlflowClient()
        client.log_text(run_id, text, "promotion.txt")
        client.set_tag(run_id, tracking.TAG_RUN_KIND, "promotion")
    except (MlflowException, OSError) as exc:
        print(f"warning: could not log the promotion table to run {run_id}: {exc}", file=sys.stderr)


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m registry.promote", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all", help="registered model name, or 'all' (every policy)")
    parser.add_argument("--dry-run", type=cli.str2bool, nargs="?", const=True, default=False,
                        help="show the table of what would move; change nothing")
    parser.add_argument("--rollback", nargs="*", default=[], metavar="[MODEL] ALIAS",
                        help="move ALIAS back to its previous holder (empty: promote)")
    parser.add_argument("--register", metavar="RUN_ID", default="",
                        help="register one finished run as a version (no alias moves)")
    args = parser.parse_args(argv)
    tracking.setup_tracking()
    rollback_args = [a for a in args.rollback if a.strip()]
    if args.register:
        mv = register_run(args.register, None if args.model == "all" else args.model)
        print(f"{mv.name} {_vlabel(mv.version)} <- run {mv.run_id}")
        return 0
    if rollback_args:
        if len(rollback_args) == 2:
            model, alias = rollback_args
            if args.model not in ("all", model):
                raise InputError("--rollback", f"names model {model!r} but --model is {args.model!r}")
        elif len(rollback_args) == 1:
            model, alias = args.model, rollback_args[0]
            if model == "all":
                raise InputError("--rollback", "name the model: --model <name> --rollback <alias> "
                                               "(or --rollback <model> <alias>)")
        else:
            raise InputError("--rollback", f"expected [MODEL] ALIAS, got {' '.join(rollback_args)!r}")
        buffer = _Tee(sys.stdout)
        d = rollback(model, alias, dry_run=args.dry_run, out=buffer)
        _log_to_launcher_run(buffer.text())
        return 1 if d.status == REFUSED else 0
    buffer = _Tee(sys.stdout)
    if args.model == "all":
        summary = promote_all(args.dry_run, out=buffer)
    else:
        summary = promote_model(args.model, args.dry_run, out=buffer).summary()
    print(f"summary: {summary}", file=buffer)
    _log_to_launcher_run(buffer.text())
    return 0


class _Tee:
    """stdout that also remembers what was written (the table logged to the launcher run)."""

    def __init__(self, stream: TextIO):
        self.stream, self.parts = stream, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def text(self) -> str:
        return "".join(self.parts)


if __name__ == "__main__":
    sys.exit(main())
