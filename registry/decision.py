"""One policy applied once: candidates, gates, the holdout, then each alias in order.

For each alias (in dependency order, the champion first): rank the candidates by the alias's
rule - on the study's fixed holdout, every candidate scored on the same units (evaluation:
holdout, the default), or only among candidates sharing the policy's `compare_within` tags -
walk down the ranking and take the first candidate that passes every gate; refused
candidates are listed with the reason. The gates and their order come from the policy and
the gate plug-ins (registry/gates/): this module runs each stage's chain, naming no gate but
the holdout's. An alias with a `significance` level (the champion:
0.05) leaves its current holder only for a newcomer that is better on the holdout by a paired
bootstrap test on the same units, or, with `prefer_cheaper`, not worse beyond a tolerance and
strictly cheaper. Only then is the run registered, the alias set and the move recorded
(registry.audit).
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from projects.core import tracking
from registry import audit, store
from registry import gates as G
from registry.evaluation import HoldoutEvaluation, holdout_metric
from registry.gates.holdout_clean import GATE_HOLDOUT
from registry.policy import AliasRule, Policy
from registry.store import vlabel

from registry.report import (MOVED, NONE, REFUSED, REMOVED, UNCHANGED, WOULD_MOVE, WOULD_REMOVE,  # noqa: F401
                             Decision, ModelReport, who)


class Promotion:
    """One policy applied once (see the module docstring); the context its gates run in
    (registry.gates.Context: policy, evaluation, gated, decided, cache, metric, holder, model_uri)."""

    def __init__(self, client: MlflowClient, policy: Policy, dry_run: bool):
        self.client, self.policy, self.dry_run = client, policy, dry_run
        self.name = policy.model
        self.candidates = store.find_candidates(client, policy)
        model = store.registered_model(client, self.name)
        self.holders: dict[str, str | None] = {a: store.aliases(model).get(a) for a in policy.alias_names()}
        self.versions = store.versions_by_run(client, self.name) if model else {}
        for c in self.candidates:
            mv = self.versions.get(c.run_id)
            if mv is not None:
                c.version, c.version_tags = str(mv.version), dict(mv.tags)
        self.by_version = {c.version: c for c in self.candidates if c.version}
        self.refused_all: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.cache: dict = {}  # the gates' own (the smoke results, the Pareto front)
        self.chain = policy.chain()
        self.passed: dict[str, list[str]] = {}  # run id -> the gates passed before any alias
        self.decided: dict[str, G.Candidate | None] = {}
        self.evaluation = HoldoutEvaluation(policy.study, self.name) if policy.evaluation.mode == "holdout" else None
        self.gated: list[G.Candidate] = []  # empty while the first stage runs (a gate may read it)
        self.gated = self._cheap_gates()
        self.clean_holders: set[str] = set()
        if self.evaluation is not None and self.gated:
            self._score_on_holdout()

    def run_stage(self, stage: str, c: G.Candidate, rule: AliasRule | None = None) -> Iterator[G.GateResult]:
        """The stage's gates on one candidate, in the chain's order, until one fails."""
        for gate, settings in self.chain:
            if gate.stage == stage:
                result = gate.check(c, settings, self, rule)
                if result is not None:
                    yield result
                    if not result.passed:
                        return

    def _passes(self, stage: str, c: G.Candidate) -> bool:
        """Gates before any alias: a refusal holds for every alias; what passed is kept for the record."""
        for result in self.run_stage(stage, c):
            if not result.passed:
                self.refused_all.append((who(c), str(result)))
                return False
            self.passed.setdefault(c.run_id, []).append(result.gate)
        return True

    def _cheap_gates(self) -> list[G.Candidate]:
        return [c for c in self.candidates if self._passes(G.CANDIDATE, c)]

    # --- the holdout ---------------------------------------------------------------------------
    def model_uri(self, c: G.Candidate) -> str:
        return f"models:/{self.name}/{c.version}" if c.version else c.model_uri

    def _score_on_holdout(self) -> None:
        """The shortlist (best by their own test metric) and the current holders, each scored on
        the holdout; a candidate that trained on holdout units, or cannot be scored, is refused."""
        rule, n = self.policy.aliases[0], self.policy.evaluation.shortlist
        sign = -1.0 if rule.goal == "max" else 1.0
        ranked = sorted(self.gated, key=lambda c: (sign * (c.value(rule.metric) or 0.0), c.start_time))
        shortlist, scored = ranked[:n], []
        for c in ranked[n:]:
            self.refused_all.append((who(c), f"outside the holdout shortlist of {n} (by its own {rule.metric})"))
        started = time.monotonic()
        for i, c in enumerate(shortlist, 1):
            # Loading and scoring a model takes seconds each: say where it is (stderr, one line each).
            print(f"[promote] {self.name}: scoring {i}/{len(shortlist)} on the holdout: {who(c)} "
                  f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
            if self._passes(G.HOLDOUT, c):
                scored.append(c)
        clean = G.get_gate(GATE_HOLDOUT)
        for version in {v for v in self.holders.values() if v}:
            holder = self.holder_candidate(version)
            if holder is not None and clean.check(holder, None, self).passed:
                self.clean_holders.add(holder.run_id)
        if not scored and self.evaluation.data and all(v is None for v in self.evaluation.data.values()):
            self.notes.append("this study's data keeps no holdout (holdout_fraction 0): set `evaluation: "
                              "{mode: compare_within, compare_within: [split]}` in the policy to compare candidates")
        self.gated = scored

    def metric(self, name: str) -> str:
        """A rule's metric as candidates are compared on it: the holdout's, where it has one."""
        if self.evaluation is None:
            return name
        mapped = holdout_metric(name)
        return mapped if mapped != name and any(c.value(mapped) is not None for c in self.gated) else name

    # --- candidates and holders -----------------------------------------------------------------
    def holder(self, alias: str) -> G.Candidate | None:
        """The alias's holder before this promotion."""
        return self.holder_candidate(self.holders.get(alias))

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
                cand = store.candidate_from_run(self.client.get_run(mv.run_id))
        if cand is None:  # the run is gone: what registration copied onto the version
            metrics = {}
            for key, value in mv.tags.items():
                with contextlib.suppress(ValueError):
                    metrics[key] = float(value)
            cand = G.Candidate(mv.run_id or "", "", "", int(mv.creation_timestamp or 0), metrics, dict(mv.tags), {})
        cand.version, cand.version_tags = str(mv.version), dict(mv.tags)
        self.by_version[version] = cand
        return cand

    def _group(self, pool: list[G.Candidate], rule: AliasRule) -> list[G.Candidate]:
        """compare_within: only candidates sharing the tags compete - the holder's group, or
        without a holder the group with the most candidates (the most evidence)."""
        keys = self.policy.evaluation.compare_within

        def group(c: G.Candidate) -> tuple:
            return tuple(c.tags.get(k, c.version_tags.get(k, "")) for k in keys)

        holder = self.holder_candidate(self.holders.get(rule.alias))
        if holder is not None:
            target = group(holder)
        else:
            sizes: dict[tuple, int] = {}
            for c in pool:
                sizes[group(c)] = sizes.get(group(c), 0) + 1
            target = max(sizes, key=lambda g: (sizes[g], g)) if sizes else ()
        return [c for c in pool if group(c) == target]

    def eligible(self, rule: AliasRule) -> tuple[list[G.Candidate], str]:
        pool = list(self.gated)
        if not self.candidates:
            return [], "no candidate runs (FINISHED, registry_candidate=true) match the policy"
        if not pool:
            return [], ("no candidate passed the metrics, baseline and holdout gates" if self.evaluation
                        else "no candidate passed the metrics and baseline gates")
        if self.policy.evaluation.mode == "compare_within":
            pool = self._group(pool, rule)
        if rule.within:
            ref = self.decided.get(rule.within.of)
            ref_value = ref.value(self.metric(rule.within.metric)) if ref else None
            if ref_value is None:
                return [], f"{rule.within.of} has no holder to compare with"
            tol = rule.within.tolerance + 1e-12
            metric = self.metric(rule.within.metric)
            if rule.within.goal == "max":
                pool = [c for c in pool if (c.value(metric) or -1e300) >= ref_value - tol]
            else:
                pool = [c for c in pool if (c.value(metric) or 1e300) <= ref_value + tol]
        for name, bound in rule.floor:
            pool = [c for c in pool if c.value(name) is not None and c.value(name) >= bound]
        for name, bound in rule.ceiling:
            pool = [c for c in pool if c.value(name) is not None and c.value(name) <= bound]
        if rule.newer_than:
            ref = self.decided.get(rule.newer_than)
            if ref is None:
                return [], f"{rule.newer_than} has no holder to compare with"
            pool = [c for c in pool if c.start_time > ref.start_time]
        metric = self.metric(rule.metric)
        pool = [c for c in pool if c.value(metric) is not None]
        if not pool:
            return [], f"no gated candidate meets the rule ({self.rule_text(rule)})"
        before = self.holders.get(rule.alias)
        sign = -1.0 if rule.goal == "max" else 1.0
        pool.sort(key=lambda c: (sign * c.value(metric), 0 if before and c.version == before else 1,
                                 c.start_time, c.run_id))
        return pool, ""

    # --- the decision -----------------------------------------------------------------------------
    def _first_passing(self, ranked: list[G.Candidate], rule: AliasRule, d: Decision) -> None:
        for c in ranked:
            passed, failed = list(self.passed.get(c.run_id, [])), None
            for result in self.run_stage(G.ALIAS, c, rule):
                if not result.passed:
                    failed = result
                    break
                passed.append(result.gate)
            if failed is not None:
                d.refused.append((who(c), str(failed)))
                if self.policy.on_gate_failure == "refuse":
                    break
                continue
            d.target, d.value = c, c.value(self.metric(rule.metric))
            d.gates = G.passed_text(passed)
            return

    def _significant(self, rule: AliasRule, d: Decision) -> bool:
        """Whether the newcomer may replace the holder (and why, in d.significance)."""
        holder = self.holder_candidate(d.before)
        if rule.significance is None or holder is None or d.target.run_id == holder.run_id:
            return True
        if self.evaluation is None:
            d.significance = "no paired test: candidates are compared within groups, not on shared held-out units"
            return True
        if holder.run_id not in self.clean_holders:
            d.significance = (f"{vlabel(holder.version)} is not comparable on the holdout (trained on it, or cannot "
                              "be scored): replaced without a paired test")
            return True
        metric = self.metric(rule.metric)
        test = self.evaluation.compare(d.target, holder, metric, higher_is_better=rule.goal == "max")
        better = test.difference > 0 and test.p_value < rule.significance
        d.significance = f"{who(d.target)} vs {vlabel(holder.version)} on the holdout: {test.describe()}"
        if better:
            d.significance += f"; better at level {rule.significance:g}"
            return True
        cheaper = rule.prefer_cheaper
        if cheaper is not None and test.low >= -cheaper.tolerance \
                and (d.target.value(cheaper.cost) or float("inf")) < (holder.value(cheaper.cost) or float("inf")):
            d.significance += (f"; not worse than -{cheaper.tolerance:g} and cheaper in {cheaper.cost} "
                               f"({d.target.value(cheaper.cost):.4g} < {holder.value(cheaper.cost):.4g})")
            return True
        d.significance += f"; not better beyond chance at level {rule.significance:g}: the holder stays"
        return False

    def rule_text(self, rule: AliasRule) -> str:
        """The rule in words with the metrics it was decided on: under holdout evaluation
        `highest holdout_accuracy`, not the policy's `test_accuracy` (whose value is not shown).
        What the audit and the version record as the alias's rule."""
        return rule.describe(self.metric)

    def decide(self, rule: AliasRule) -> Decision:
        before = self.holders.get(rule.alias)
        d = Decision(rule.alias, self.rule_text(rule), before, before, NONE, goal=rule.goal)
        ranked, why_none = self.eligible(rule)
        if not ranked:
            d.note = why_none
            if rule.when_none == "remove" and before:
                d.status, d.after = (WOULD_REMOVE if self.dry_run else REMOVED), None
                d.note += "; the policy removes the alias then (when_none: remove)"
            self.decided[rule.alias] = self.holder_candidate(d.after)
            return d
        self._first_passing(ranked, rule, d)
        if d.target is None:
            d.status = REFUSED
            d.note = ("the best candidate failed a gate (on_gate_failure: refuse); the alias stays"
                      if self.policy.on_gate_failure == "refuse" else "every candidate failed a gate; the alias stays")
            self.decided[rule.alias] = self.holder_candidate(before)
            return d
        if not self._significant(rule, d):
            d.status, d.target = UNCHANGED, self.holder_candidate(before)
            d.value = d.target.value(self.metric(rule.metric))
        elif d.target.version is not None and d.target.version == before:
            d.status = UNCHANGED
        else:
            d.status = WOULD_MOVE if self.dry_run else MOVED
            d.after = d.target.version or "new version"
        self.decided[rule.alias] = d.target
        return d

    def compared(self, rule: AliasRule, d: Decision) -> str:
        names = [self.metric(m) for m in rule.metrics()]
        data = {vlabel(d.after): {m: d.target.value(m) for m in names}}
        prev = self.holder_candidate(d.before)
        if prev is not None:
            data[f"previous {vlabel(d.before)}"] = {m: prev.value(m) for m in names}
        for ref in rule.references():
            holder = self.decided.get(ref)
            if holder is not None:
                data[f"{ref} {vlabel(holder.version)}"] = {m: holder.value(m) for m in names}
        return json.dumps(data, separators=(",", ":"))

    def decision_rows(self, rule: AliasRule, d: Decision) -> list[dict]:
        """The comparison behind a move, as table rows (the audit record's `decision` table)."""
        rows = []
        for label, c in (("newcomer", d.target), ("previous", self.holder_candidate(d.before))):
            if c is None:
                continue
            row = {"role": label, "version": vlabel(c.version), "run_id": c.run_id, "arch": c.tags.get(tracking.TAG_ARCH, "")}
            row |= {m: c.value(m) for m in dict.fromkeys([self.metric(rule.metric), *rule.metrics()])}
            rows.append(row)
        return rows

    def apply(self, rule: AliasRule, d: Decision, evaluation_run: str | None) -> None:
        client, name = self.client, self.name
        if d.status == UNCHANGED:
            audit.reconcile(client, name, rule.alias)
            return
        if d.status == REMOVED:
            previous = store.alias_holder(client, name, rule.alias)
            if previous is not None:
                store.retry_conflicts(client.delete_registered_model_alias, name, rule.alias)
                audit.append(client, name, rule.alias, {
                    "version": None, "previous": previous, "at": audit.now(), "kind": "remove",
                    "policy": self.policy.ref, "rule": f"{d.rule}: {d.note}", "by": audit.by()})
            audit.reconcile(client, name, rule.alias)
            return
        if d.status != MOVED:
            return
        target = d.target
        if target.version is None:
            store.ensure_registered_model(client, name, self.policy)
            mv = store.register_run(target.run_id, name, client)
            target.version, target.version_tags = str(mv.version), dict(mv.tags)
            self.by_version[target.version] = target
        previous = store.alias_holder(client, name, rule.alias)  # fresh: a concurrent promotion may have moved it
        d.after = target.version
        if previous == target.version:
            d.status, d.note = UNCHANGED, "a concurrent promotion had already moved it here"
            audit.reconcile(client, name, rule.alias)
            return
        d.before = previous
        entry = {"version": target.version, "previous": previous, "at": audit.now(), "kind": "promote",
                 "policy": self.policy.ref, "rule": d.rule, "metric": self.metric(rule.metric),
                 "value": f"{d.value:.6g}", "compared": self.compared(rule, d), "gates": d.gates, "by": audit.by(),
                 "significance": d.significance or None, "evaluation_run": evaluation_run}
        audit.write_version_audit(client, name, rule.alias, entry)
        store.set_alias(client, name, rule.alias, target.version)
        audit.append(client, name, rule.alias, entry, self.decision_rows(rule, d))
        if not audit.reconcile(client, name, rule.alias):
            d.note = "the audit could not be verified after 10 attempts (heavy concurrent promotion?)"
        final = store.alias_holder(client, name, rule.alias)
        if final != target.version:
            d.after = final
            d.note = f"a concurrent promotion moved it on to {vlabel(final)}"
        self.holders[rule.alias] = d.after

    def run(self) -> ModelReport:
        decisions = [self.decide(rule) for rule in self.policy.aliases]
        evaluation_run = None
        if self.evaluation is not None and not self.dry_run:
            evaluation_run = self.evaluation.log([{"alias": d.alias, "status": d.status, "from": vlabel(d.before),
                                                   "to": vlabel(d.after), "rule": d.rule, "significance": d.significance}
                                                  for d in decisions])
        if not self.dry_run:
            for rule, d in zip(self.policy.aliases, decisions):
                self.apply(rule, d, evaluation_run)
        return ModelReport(self.name, self.policy.ref, self.dry_run, len(self.candidates), decisions,
                           self.refused_all, self.notes, evaluation_run)
