"""Promotion policies: one readable YAML file per registered model, parsed strictly.

A policy names the runs that may become versions (candidates), the gates every candidate
must pass, and the aliases it maintains with the rule that picks each one. The format is
documented in registry/README.md and published as a JSON schema (registry/policies/
schema.json, `python -m registry.policy --schema`); the file is validated by pydantic models
(the gates' part is built from the registered gate plug-ins, registry/gates/), and
`load_policy(path)` raises `InputError(<file>, <key path>: <problem>)` - one line - for
anything it does not understand, so a typo never silently changes what gets promoted.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from projects.core import tracking
from projects.core.errors import InputError
from projects.core.private_api import private_attr
from projects.core.study import all_studies, get_study, study_names
from registry import gates as G
from registry.gates.baseline import BaselineGate  # noqa: F401 (a policy's part, importable from here)
from registry.gates.pareto import ParetoSpec  # noqa: F401
from registry.policy_errors import one_line
from registry.policy_file import AliasSpec, Candidates, Evaluation, PreferCheaper, file_model, schema
from registry.policy_types import CHAMPION

POLICY_DIR = Path(__file__).resolve().parent / "policies"
SCHEMA_FILE = POLICY_DIR / "schema.json"
POLICY_DIR_ENV = "MEDIMG_POLICY_DIR"  # another folder in place of registry/policies/ (a team's own policies)


# --- the parsed policy ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Within:
    metric: str
    of: str  # alias
    tolerance: float
    goal: str  # the direction `metric` is good in: max | min


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
        return tuple(ref for ref in (self.within.of if self.within else None, self.newer_than) if ref)

    def describe(self, metric=lambda name: name) -> str:
        """The rule in words, each metric named by `metric` (the holdout's where it was ranked
        on the holdout: registry.decision); recorded on the version that an alias moves to."""
        parts = [f"{'highest' if self.goal == 'max' else 'lowest'} {metric(self.metric)}"]
        if self.within:
            sign = "-" if self.within.goal == "max" else "+"
            op = ">=" if self.within.goal == "max" else "<="
            parts.append(f"where {metric(self.within.metric)} {op} {self.within.of} {sign} {self.within.tolerance:g}")
        for name, value in self.floor:
            parts.append(f"where {metric(name)} >= {value:g}")
        for name, value in self.ceiling:
            parts.append(f"where {metric(name)} <= {value:g}")
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
    gates: Any  # the file's `gates:` part: one attribute per gate key (file_model())
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

    def chain(self) -> list[tuple[G.Gate, Any]]:
        """Every gate with its setting in this policy, in the order they run."""
        return [(g, g.settings(self)) for g in G.chain(self.gates.order)]

    @functools.cached_property
    def _metrics(self) -> tuple[str, ...]:
        names = [m for gate, settings in self.chain() for m in gate.metrics(settings)]
        for rule in self.aliases:
            names += rule.metrics()
        return tuple(dict.fromkeys(names))

    def all_metrics(self) -> tuple[str, ...]:
        """Every metric the gates and the alias rules name (the `metrics` gate requires them)."""
        return self._metrics


# --- parsing --------------------------------------------------------------------------------------
def _rule(alias: str, spec: AliasSpec, goals: dict[str, str]) -> AliasRule:
    goal, metric = spec.pick.split()
    within = (Within(spec.within.metric, spec.within.of, spec.within.tolerance, goals.get(spec.within.metric, "max"))
              if spec.within else None)
    significance = spec.significance if "significance" in spec.model_fields_set else (
        0.05 if alias == CHAMPION else None)
    return AliasRule(alias, goal, metric, within, tuple(spec.floor.items()), tuple(spec.ceiling.items()),
                     spec.newer_than, spec.pareto, spec.when_none, significance, spec.prefer_cheaper)


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


def _check_study(path: Path, file: Any) -> None:
    studies = study_names()
    if file.study not in studies:
        raise InputError(path, f"study: expected one of {', '.join(studies)}, got {file.study!r}")
    study = get_study(file.study)
    if file.task not in study.tasks:
        raise InputError(path, f"task: expected one of {', '.join(study.tasks)}, got {file.task!r}")
    expected = study.model_name(file.task)
    if file.model != expected:
        raise InputError(path, f"model: study {file.study!r} task {file.task!r} registers as {expected!r}, "
                               f"not {file.model!r}")
    if path.suffix in (".yaml", ".yml") and path.stem != file.model:
        raise InputError(path, f"the file must be named {file.model}.yaml (one policy per registered model)")


def _check_gates(path: Path, file: Any) -> None:
    known = {g.name for g in G.all_gates()}
    for name in file.gates.order or ():
        if name not in known:
            raise InputError(path, f"gates.order: unknown gate {name!r} (gates: {', '.join(sorted(known))})")
    for gate in G.all_gates():
        trouble = gate.check_policy(getattr(file.gates, gate.key) if gate.key else None, file.aliases)
        if trouble:
            raise InputError(path, trouble)


def parse_policy(path: Path, text: str) -> Policy:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML: {str(exc).splitlines()[0]}") from None
    model = file_model()
    try:
        file = model.model_validate(data)
    except ValidationError as exc:
        raise InputError(path, one_line(exc, model)) from None
    _check_study(path, file)
    _check_gates(path, file)
    goals: dict[str, str] = {}
    for spec in file.aliases.values():  # the direction each metric is good in, from the picks
        goal, name = spec.pick.split()
        goals.setdefault(name, goal)
    if getattr(file.gates, "pareto", None):
        goals.setdefault(file.gates.pareto.accuracy, "max")
    rules = [_rule(alias, spec, goals) for alias, spec in file.aliases.items()]
    candidates = file.candidates
    if not candidates.experiments:
        candidates = candidates.model_copy(update={"experiments": (get_study(file.study).experiment,
                                                                   tracking.EXPERIMENTS["search"])})
    if candidates.filter:
        _check_filter(path, candidates.filter)
    sha = hashlib.sha256(text.encode()).hexdigest()[:12]
    return Policy(path, file.model, file.study, file.task, file.description, candidates, file.gates,
                  _order_aliases(path, rules), file.on_gate_failure, sha, file.evaluation)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m registry.policy", description="Check policy files, or "
                                     "write the policy JSON schema (registry/policies/schema.json).")
    parser.add_argument("files", nargs="*", type=Path, help="policy files to check (default: every policy)")
    parser.add_argument("--schema", action="store_true", help=f"write the schema to {SCHEMA_FILE.name} "
                                                              "beside the policies (or --out)")
    parser.add_argument("--out", type=Path, default=SCHEMA_FILE, help="where --schema writes (- : stdout)")
    args = parser.parse_args(argv)
    if args.schema:
        text = json.dumps(schema(), indent=2) + "\n"
        if str(args.out) == "-":
            sys.stdout.write(text)
        else:
            args.out.write_text(text)
            print(f"wrote {args.out}")
        return 0
    try:
        for path in args.files or policy_files():
            print(f"{load_policy(path).ref}: ok")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["AliasRule", "BaselineGate", "CHAMPION", "Candidates", "Evaluation", "POLICY_DIR", "ParetoSpec",
           "Policy", "PreferCheaper", "Within", "file_model", "find_policy", "load_policies", "load_policy",
           "parse_policy", "policy_files", "schema"]

if __name__ == "__main__":
    sys.exit(main())
