"""Promotion policies: one readable YAML file per registered model, parsed strictly.

A policy names the runs that may become versions (candidates), the gates every candidate
must pass, and the aliases it maintains with the rule that picks each one. The format is
documented in registry/README.md; `load_policy(path)` turns a file into frozen dataclasses
and raises `InputError(<file>, <problem>)` for anything it does not understand, so a typo
never silently changes what gets promoted.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from projects.core import tracking
from projects.core.errors import InputError
from projects.core.private_api import private_attr
from projects.core.study import all_studies, get_study, study_names

POLICY_DIR = Path(__file__).resolve().parent / "policies"
POLICY_DIR_ENV = "MEDIMG_POLICY_DIR"  # another folder in place of registry/policies/ (a team's own policies)
CHAMPION = "champion"  # the alias the data-digest gate compares against

_ALIAS_RE = re.compile(r"^[A-Za-z][\w\-]*$")  # MLflow: alphanumerics, _ and -; not v<digits>
_METRIC_RE = re.compile(r"^[A-Za-z][\w.\-/]*$")
# Metric names follow projects.core.tracking's conventions: held-out results, baselines,
# per-epoch curves, and the efficiency numbers.
_METRIC_PREFIXES = ("test_", "baseline_", "val_", "cpu_")
_KNOWN_METRICS = frozenset(tracking.EFFICIENCY_METRICS + (
    tracking.M_PARAMS_KERAS, tracking.M_SIZE_WITH_OPT_MB, tracking.M_TRAIN_LOSS,
    tracking.M_VAL_LOSS, "train_seconds", "best_epoch", "epochs_run"))


@dataclass(frozen=True)
class Candidates:
    """Which runs may be promoted (always also: FINISHED, study/task tags, registry_candidate)."""
    experiments: tuple[str, ...]
    filter: str = ""  # extra MLflow search filter, ANDed to the fixed part
    max_age_days: float = 0.0  # 0: any age
    since: dt.datetime | None = None  # only runs started at or after this (UTC)
    max_results: int = 1000


@dataclass(frozen=True)
class BaselineGate:
    """`metric` must be strictly above every entry of `above` (metric names or numbers). Under
    holdout evaluation the candidate must also beat the study's trivial predictors on the
    holdout (registry/evaluation.py); with `significance`, by a paired test at that level."""
    metric: str
    above: tuple[str | float, ...]
    significance: float | None = None

    def describe(self) -> str:
        text = f"{self.metric} > " + " and ".join(str(a) for a in self.above)
        return text + (f" (on the holdout at level {self.significance:g})" if self.significance else "")


@dataclass(frozen=True)
class ParetoSpec:
    """A candidate is on the front when no other has accuracy >= and every cost <= (one strict)."""
    accuracy: str
    costs: tuple[str, ...]


@dataclass(frozen=True)
class Gates:
    required_metrics: tuple[str, ...]
    beats_baseline: BaselineGate | None
    pareto: ParetoSpec | None
    smoke_predict: bool = True
    probabilities: bool = True  # smoke outputs must lie in [0, 1]
    allow_data_change: bool = False  # candidates may differ from the champion's dataset_digest


@dataclass(frozen=True)
class Within:
    metric: str
    of: str  # alias
    tolerance: float
    goal: str  # the direction `metric` is good in: max | min


@dataclass(frozen=True)
class PreferCheaper:
    """Also move when the newcomer is not worse than the holder by more than `tolerance` (the
    paired interval's lower end) and strictly cheaper in `cost`."""
    cost: str
    tolerance: float


@dataclass(frozen=True)
class Evaluation:
    """How candidates are compared: on the study's fixed holdout (scored at promotion, every
    candidate on the same units), or only within groups that share the given tags (their own
    test sets are then comparable: the paper's per-split view)."""
    mode: str = "holdout"  # holdout | compare_within
    compare_within: tuple[str, ...] = ()
    shortlist: int = 10  # candidates scored on the holdout: the best by their own test metric


@dataclass(frozen=True)
class AliasRule:
    alias: str
    goal: str  # max | min
    metric: str
    within: Within | None = None
    floor: tuple[tuple[str, float], ...] = ()
    ceiling: tuple[tuple[str, float], ...] = ()
    newer_than: str | None = None
    pareto: bool = False
    when_none: str = "keep"  # keep | remove: what happens when no candidate fits the rule
    # Move away from an existing holder only when the newcomer is better on the same held-out
    # units by a paired test at this level (None: no test). The champion's default: 0.05.
    significance: float | None = None
    prefer_cheaper: PreferCheaper | None = None

    def metrics(self) -> tuple[str, ...]:
        names = [self.metric] + [m for m, _ in self.floor] + [m for m, _ in self.ceiling]
        if self.within:
            names.append(self.within.metric)
        return tuple(dict.fromkeys(names))

    def references(self) -> tuple[str, ...]:
        refs = []
        if self.within:
            refs.append(self.within.of)
        if self.newer_than:
            refs.append(self.newer_than)
        return tuple(refs)

    def describe(self) -> str:
        """The rule in words; recorded on the version that an alias moves to."""
        parts = [f"{'highest' if self.goal == 'max' else 'lowest'} {self.metric}"]
        if self.within:
            sign = "-" if self.within.goal == "max" else "+"
            op = ">=" if self.within.goal == "max" else "<="
            parts.append(f"where {self.within.metric} {op} {self.within.of} {sign} {self.within.tolerance:g}")
        for name, value in self.floor:
            parts.append(f"where {name} >= {value:g}")
        for name, value in self.ceiling:
            parts.append(f"where {name} <= {value:g}")
        if self.newer_than:
            parts.append(f"started after {self.newer_than}")
        if self.pareto:
            parts.append("on the Pareto front")
        return " ".join(parts)


@dataclass(frozen=True)
class Policy:
    path: Path
    model: str
    study: str
    task: str
    description: str
    candidates: Candidates
    gates: Gates
    aliases: tuple[AliasRule, ...]  # in dependency order (references come first)
    on_gate_failure: str = "next"  # next | refuse
    sha: str = ""  # first 12 hex of the file's sha256: which text decided a promotion
    evaluation: Evaluation = Evaluation()

    @property
    def ref(self) -> str:
        return f"{self.path.name}@{self.sha}"

    def alias(self, name: str) -> AliasRule:
        for rule in self.aliases:
            if rule.alias == name:
                return rule
        raise InputError(self.path, f"no alias {name!r} in this policy (has {', '.join(self.alias_names())})")

    def alias_names(self) -> list[str]:
        return [rule.alias for rule in self.aliases]

    def all_metrics(self) -> tuple[str, ...]:
        names = list(self.gates.required_metrics)
        if self.gates.beats_baseline:
            names.append(self.gates.beats_baseline.metric)
            names += [a for a in self.gates.beats_baseline.above if isinstance(a, str)]
        if self.gates.pareto:
            names += [self.gates.pareto.accuracy, *self.gates.pareto.costs]
        for rule in self.aliases:
            names += rule.metrics()
        return tuple(dict.fromkeys(names))


# --- parsing ------------------------------------------------------------------------------
class _Reader:
    """Typed access to one mapping of the file; every problem names the key path."""

    def __init__(self, path: Path, data: Any, where: str):
        self.path, self.where = path, where
        if not isinstance(data, Mapping):
            self.fail(f"expected a mapping, got {_kind(data)}")
        self.data = dict(data)
        self.seen: set[str] = set()

    def fail(self, problem: str):
        raise InputError(self.path, f"{self.where}: {problem}" if self.where else problem)

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, default: Any = ..., required: bool = False) -> Any:
        self.seen.add(name)
        if name not in self.data or self.data[name] is None:
            if required or default is ...:
                raise InputError(self.path, f"{self.key(name)}: required")
            return default
        return self.data[name]

    def string(self, name: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> str:
        value = self.get(name, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str):
            raise InputError(self.path, f"{self.key(name)}: expected text, got {_kind(value)}")
        if choices and value not in choices:
            raise InputError(self.path, f"{self.key(name)}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    def number(self, name: str, default: Any = ..., minimum: float | None = None) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(self.path, f"{self.key(name)}: expected a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            raise InputError(self.path, f"{self.key(name)}: must be at least {minimum:g}, got {value!r}")
        return float(value)

    def boolean(self, name: str, default: Any = ...) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise InputError(self.path, f"{self.key(name)}: expected true or false, got {value!r}")
        return value

    def string_list(self, name: str, default: Any = ...) -> tuple[str, ...]:
        value = self.get(name, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise InputError(self.path, f"{self.key(name)}: expected a list of names, got {value!r}")
        return tuple(value)

    def sub(self, name: str, default: Any = ...) -> _Reader | None:
        value = self.get(name, default)
        if value is None:
            return None
        return _Reader(self.path, value, self.key(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen, key=str)
        if unknown:
            allowed = ", ".join(sorted(self.seen))
            self.fail(f"unknown key {unknown[0]!r} (allowed here: {allowed})")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _metric(reader: _Reader, name: str, value: Any) -> str:
    where = reader.key(name)
    if not isinstance(value, str) or not _METRIC_RE.match(value):
        raise InputError(reader.path, f"{where}: expected a metric name, got {value!r}")
    if not (value.startswith(_METRIC_PREFIXES) or value in _KNOWN_METRICS):
        raise InputError(reader.path, f"{where}: unknown metric {value!r} (metrics are test_*, baseline_*, "
                                      f"val_*, cpu_* or one of {', '.join(sorted(_KNOWN_METRICS))})")
    return value


def _metrics(reader: _Reader, name: str, default: Any = ...) -> tuple[str, ...]:
    values = reader.string_list(name, default)
    return tuple(_metric(reader, name, v) for v in values)


def _pick(reader: _Reader) -> tuple[str, str]:
    text = reader.string("pick")
    parts = text.split()
    if len(parts) != 2 or parts[0] not in ("max", "min"):
        reader.fail(f"pick: expected 'max <metric>' or 'min <metric>', got {text!r}")
    return parts[0], _metric(reader, "pick", parts[1])


def _bounds(reader: _Reader, name: str) -> tuple[tuple[str, float], ...]:
    sub = reader.sub(name, None)
    if sub is None:
        return ()
    out = []
    for key in list(sub.data):
        out.append((_metric(sub, str(key), key), sub.number(str(key))))
    sub.done()
    return tuple(out)


def _parse_alias(path: Path, alias: Any, data: Any, goals: dict[str, str]) -> AliasRule:
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias) or re.match(r"^[vV]\d+$", alias) \
            or alias.lower() == "latest":
        raise InputError(path, f"aliases: invalid alias name {alias!r} (letters, digits, _ and -; "
                               "not 'latest' or v<number>)")
    r = _Reader(path, data, f"aliases.{alias}")
    goal, metric = _pick(r)
    within = None
    w = r.sub("within", None)
    if w is not None:
        w_metric = _metric(w, "metric", w.string("metric"))
        of = w.string("of")
        tolerance = w.number("tolerance", minimum=0.0)
        w.done()
        within = Within(w_metric, of, tolerance, goals.get(w_metric, "max"))
    newer_than = r.string("newer_than", None)
    pareto = r.boolean("pareto", False)
    when_none = r.string("when_none", "keep", choices=("keep", "remove"))
    significance = _significance(r, alias)
    cheaper = None
    c = r.sub("prefer_cheaper", None)
    if c is not None:
        cheaper = PreferCheaper(_metric(c, "cost", c.string("cost")), c.number("tolerance", 0.0, minimum=0.0))
        c.done()
    rule = AliasRule(alias, goal, metric, within, _bounds(r, "floor"), _bounds(r, "ceiling"),
                     newer_than, pareto, when_none, significance, cheaper)
    r.done()
    return rule


def _significance(r: _Reader, alias: str) -> float | None:
    """`significance: 0.05` | `{level: 0.05}` | `none`; the champion's default is 0.05."""
    raw = r.get("significance", 0.05 if alias == CHAMPION else None)
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "off")) or raw is False:
        return None
    if isinstance(raw, Mapping):
        s = r.sub("significance")
        level = s.number("level", 0.05)
        s.done()
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        level = float(raw)
    else:
        r.fail(f"significance: expected a level like 0.05, {{level: 0.05}} or none, got {raw!r}")
    if not 0 < level < 1:
        r.fail(f"significance: the level must be in (0, 1), got {level}")
    return level


def _order_aliases(path: Path, rules: list[AliasRule]) -> tuple[AliasRule, ...]:
    """Aliases that others refer to (within.of, newer_than) are decided first."""
    by_name = {rule.alias: rule for rule in rules}
    for rule in rules:
        for ref in rule.references():
            if ref not in by_name:
                raise InputError(path, f"aliases.{rule.alias}: refers to alias {ref!r}, which this policy "
                                       f"does not define (defines {', '.join(by_name)})")
            if ref == rule.alias:
                raise InputError(path, f"aliases.{rule.alias}: refers to itself")
    ordered: list[AliasRule] = []
    visiting: set[str] = set()

    def visit(rule: AliasRule) -> None:
        if rule in ordered:
            return
        if rule.alias in visiting:
            raise InputError(path, f"aliases.{rule.alias}: circular reference between aliases")
        visiting.add(rule.alias)
        for ref in rule.references():
            visit(by_name[ref])
        visiting.discard(rule.alias)
        ordered.append(rule)

    for rule in sorted(rules, key=lambda r: r.alias != CHAMPION):  # the data gate needs the champion
        visit(rule)
    return tuple(ordered)


def parse_policy(path: Path, text: str) -> Policy:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML: {str(exc).splitlines()[0]}") from None
    r = _Reader(path, data, "")
    model = r.string("model")
    study_name = r.string("study", choices=tuple(study_names()))
    task = r.string("task", choices=get_study(study_name).tasks)
    expected = get_study(study_name).model_name(task)
    if model != expected:
        r.fail(f"model: study {study_name!r} task {task!r} registers as {expected!r}, not {model!r}")
    if path.suffix in (".yaml", ".yml") and path.stem != model:
        r.fail(f"the file must be named {model}.yaml (one policy per registered model)")
    description = r.string("description", "")
    candidates = _parse_candidates(path, r.sub("candidates", {}), get_study(study_name).experiment)
    gates = _parse_gates(r.sub("gates", {}))
    evaluation = _parse_evaluation(r.sub("evaluation", {}))
    rules = _parse_aliases(path, r, gates)
    on_failure = r.string("on_gate_failure", "next", choices=("next", "refuse"))
    r.done()
    sha = hashlib.sha256(text.encode()).hexdigest()[:12]
    return Policy(path, model, study_name, task, description, candidates, gates, _order_aliases(path, rules),
                  on_failure, sha, evaluation)


def _parse_candidates(path: Path, c: _Reader, experiment: str) -> Candidates:
    experiments = c.string_list("experiments", (experiment, tracking.EXPERIMENTS["search"]))
    extra = c.string("filter", "").strip()
    max_age = c.number("max_age_days", 0.0, minimum=0.0)
    since = _since(c, c.get("since", None))
    max_results = int(c.number("max_results", 1000, minimum=1))
    c.done()
    if extra:
        _check_filter(path, extra)
    return Candidates(experiments, extra, max_age, since, max_results)


def _since(c: _Reader, raw: Any) -> dt.datetime | None:
    if raw is None:
        return None
    since = None
    if isinstance(raw, dt.datetime):
        since = raw
    elif isinstance(raw, dt.date):
        since = dt.datetime(raw.year, raw.month, raw.day)
    elif isinstance(raw, str):
        try:
            since = dt.datetime.fromisoformat(raw)
        except ValueError:
            c.fail(f"since: expected a date like 2025-01-31, got {raw!r}")
    else:
        c.fail(f"since: expected a date like 2025-01-31, got {raw!r}")
    return since.replace(tzinfo=dt.timezone.utc) if since.tzinfo is None else since


def _parse_gates(g: _Reader) -> Gates:
    required = _metrics(g, "required_metrics", ())
    b = g.sub("beats_baseline", None)
    baseline = _parse_baseline(b) if b is not None else None
    pareto = None
    p = g.sub("pareto", None)
    if p is not None:
        pareto = ParetoSpec(_metric(p, "accuracy", p.string("accuracy")), _metrics(p, "costs"))
        if not pareto.costs:
            p.fail("costs: name at least one cost metric (model_size_mb, cpu_latency_ms_p50, ...)")
        p.done()
    smoke = g.get("smoke_predict", True)
    probabilities = True
    if isinstance(smoke, Mapping):
        s = g.sub("smoke_predict")
        probabilities = s.boolean("probabilities", True)
        s.done()
        smoke = True
    elif not isinstance(smoke, bool):
        g.fail(f"smoke_predict: expected true, false or {{probabilities: true|false}}, got {smoke!r}")
    data_change = g.string("data_change", "refuse", choices=("refuse", "allow"))
    g.done()
    return Gates(required, baseline, pareto, bool(smoke), probabilities, data_change == "allow")


def _parse_baseline(b: _Reader) -> BaselineGate:
    b_metric = _metric(b, "metric", b.string("metric"))
    above_raw = b.get("above")
    above_raw = above_raw if isinstance(above_raw, list) else [above_raw]
    above: list[str | float] = []
    for item in above_raw:
        if isinstance(item, str):
            above.append(_metric(b, "above", item))
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item):
            above.append(float(item))
        else:
            b.fail(f"above: expected metric names or numbers, got {item!r}")
    if not above:
        b.fail("above: name at least one baseline metric or number")
    level = b.get("significance", None)
    if level is not None and (isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1):
        b.fail(f"significance: expected a level in (0, 1) like 0.05, got {level!r}")
    b.done()
    return BaselineGate(b_metric, tuple(above), float(level) if level is not None else None)


def _parse_evaluation(e: _Reader) -> Evaluation:
    mode = e.string("mode", "holdout", choices=("holdout", "compare_within"))
    within = tuple(e.string_list("compare_within", ()))
    shortlist = int(e.number("shortlist", 10, minimum=1))
    e.done()
    if mode == "compare_within" and not within:
        e.fail("compare_within: name the tags candidates must share (e.g. [split]) for mode compare_within")
    return Evaluation(mode, within, shortlist)


def _parse_aliases(path: Path, r: _Reader, gates: Gates) -> list[AliasRule]:
    raw_aliases = r.get("aliases", required=True)
    if not isinstance(raw_aliases, Mapping) or not raw_aliases:
        r.fail("aliases: expected a mapping of alias name -> rule, with at least one alias")
    goals = {}
    for data in raw_aliases.values():  # the direction each metric is good in, from the picks
        if isinstance(data, Mapping) and isinstance(data.get("pick"), str) and len(data["pick"].split()) == 2:
            goal, name = data["pick"].split()
            goals.setdefault(name, goal)
    if gates.pareto:
        goals.setdefault(gates.pareto.accuracy, "max")
    rules = [_parse_alias(path, alias, data, goals) for alias, data in raw_aliases.items()]
    for rule in rules:
        if rule.pareto and gates.pareto is None:
            r.fail(f"aliases.{rule.alias}: pareto: true needs gates.pareto (accuracy and costs)")
    if CHAMPION not in {rule.alias for rule in rules} and not gates.allow_data_change:
        r.fail(f"gates.data_change: refuse compares with the {CHAMPION!r} alias, which this policy "
               "does not define (define it or set data_change: allow)")
    return rules


def _check_filter(path: Path, text: str) -> None:
    """Parse the extra filter the way MLflow will, so a bad one fails at load time."""
    from mlflow.exceptions import MlflowException

    # MLflow parses filters publicly only inside a search on a store; a policy is checked
    # before any store is opened, so its private parser is used.
    SearchUtils = private_attr(
        "mlflow.utils.search_utils", "SearchUtils", dist="mlflow",
        reason="MLflow has no public filter-string parser, and a policy's candidates.filter is "
               "checked when the policy is read, before any store is opened (registry/policy.py)",
        waits_for="mlflow/mlflow#6410 (a public, programmatic search-filter API)")
    try:
        clauses = SearchUtils.parse_search_filter(text)
    except MlflowException as exc:
        raise InputError(path, f"candidates.filter: {exc.message}") from None
    allowed = {"metric": SearchUtils.VALID_METRIC_COMPARATORS, "parameter": SearchUtils.VALID_PARAM_COMPARATORS,
               "tag": SearchUtils.VALID_TAG_COMPARATORS}
    for clause in clauses:
        valid = allowed.get(clause.get("type"))
        if valid is not None and str(clause.get("comparator", "")).upper() not in valid:
            raise InputError(path, f"candidates.filter: comparator {clause.get('comparator')!r} is not valid for "
                                   f"{clause['type']} {clause.get('key')!r} (use one of {', '.join(sorted(valid))})")
    if text.split()[-1].lower() in ("and", "or"):
        raise InputError(path, f"candidates.filter: ends with {text.split()[-1]!r}")


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(path, f"cannot read the policy: {exc.strerror or exc}") from None
    return parse_policy(path, text)


def policy_dirs() -> list[Path]:
    """registry/policies/ (or $MEDIMG_POLICY_DIR), then every folder a registered study declares."""
    main = Path(os.environ[POLICY_DIR_ENV]) if os.environ.get(POLICY_DIR_ENV) else POLICY_DIR
    return [main] + [Path(d) for study in all_studies() for d in study.policy_dirs]


def policy_files(directory: Path | None = None) -> list[Path]:
    folders = [directory] if directory is not None else policy_dirs()
    return sorted((p for folder in folders for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml")),
                  key=lambda p: p.name)


def load_policies(directory: Path | None = None) -> dict[str, Policy]:
    policies: dict[str, Policy] = {}
    for path in policy_files(directory):
        policy = load_policy(path)
        if policy.model in policies:
            raise InputError(path, f"a second policy for {policy.model} "
                                   f"(first: {policies[policy.model].path.name})")
        policies[policy.model] = policy
    return policies


def find_policy(model: str, directory: Path | None = None) -> Policy:
    policies = load_policies(directory)
    if model not in policies:
        known = ", ".join(sorted(policies)) or "none"
        where = directory or ", ".join(str(d) for d in policy_dirs())
        raise InputError("--model", f"no policy for {model!r} in {where} (policies: {known})")
    return policies[model]


__all__ = ["AliasRule", "BaselineGate", "CHAMPION", "Candidates", "Gates", "POLICY_DIR", "ParetoSpec",
           "Policy", "Within", "find_policy", "load_policies", "load_policy", "parse_policy",
           "policy_files"]
