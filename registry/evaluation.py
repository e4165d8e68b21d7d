"""Every candidate for an alias judged on the same held-out data.

Each study reserves a fixed holdout (whole patients, whole source images) that no run trains,
validates or searches on. At promotion time every shortlisted candidate and the alias's
current holder are scored on it through their logged MLflow model (pyfunc), with the inputs
prepared as that candidate's run prepared its own (image size, tiles, equalisation: from its
logged params). Each result keeps its per-unit statistics, so intervals are bootstrapped over
units and two models are compared by a paired test on the same units.

One MLflow run per evaluation (experiment `registry-evaluations`): the holdout as an
mlflow.data dataset, each candidate's holdout metrics with 95% intervals, the per-unit scores
as a table, the paired tests behind any alias move.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from projects.core import artifacts, tracking
from projects.core.study import HoldoutData, Study, get_study
from projects.core.uncertainty import PairedResult, UnitScores, paired_difference
from registry import gates as G

PREFIX = "holdout_"
BATCH = 16


def holdout_metric(metric: str) -> str:
    """The holdout's name for a rule's metric: test_accuracy -> holdout_accuracy."""
    return PREFIX + metric[len("test_"):] if metric.startswith("test_") else metric


@dataclass
class Scored:
    candidate: G.Candidate
    scores: UnitScores | None = None
    point: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    baselines: dict[str, UnitScores] = field(default_factory=dict)  # trivial predictors, same holdout
    error: str = ""

    @property
    def label(self) -> str:
        c = self.candidate
        return f"v{c.version}" if c.version else f"run {c.run_id[:8]}"


class HoldoutEvaluation:
    """Scores candidates of one policy's study on its holdout (cached per candidate and per
    data preparation)."""

    def __init__(self, study_name: str, model_name: str):
        self.study: Study = get_study(study_name)
        self.model_name = model_name
        self.data: dict[tuple, HoldoutData | None] = {}
        self.scored: dict[str, Scored] = {}
        self.pairs: list[tuple[str, str, PairedResult]] = []

    def config_of(self, candidate: G.Candidate):
        return self.study.config_cls.from_params(candidate.params)

    def holdout_for(self, candidate: G.Candidate) -> HoldoutData | None:
        config = self.config_of(candidate)
        key = tuple(getattr(config, f) for f in self.study.holdout_fields)
        if key not in self.data:
            self.data[key] = self.study.holdout(config)
        return self.data[key]

    def score(self, candidate: G.Candidate, model_uri: str) -> Scored:
        if candidate.run_id in self.scored:
            return self.scored[candidate.run_id]
        result = Scored(candidate)
        try:
            holdout = self.holdout_for(candidate)
            model = mlflow.pyfunc.load_model(model_uri)
            outputs = np.concatenate([np.asarray(model.predict(holdout.inputs[i:i + BATCH]))
                                      for i in range(0, len(holdout.inputs), BATCH)])
            config = self.config_of(candidate)
            result.scores = self.study.holdout_scores(config, holdout, outputs)
            result.baselines = {name: self.study.holdout_scores(config, holdout, out)
                                for name, out in self.study.holdout_baselines(config, holdout, outputs).items()}
            result.point = result.scores.point()
            result.intervals = result.scores.intervals()
            for name, value in result.point.items():
                candidate.metrics[PREFIX + name] = value
                low, high = result.intervals.get(name, (math.nan, math.nan))
                candidate.metrics[f"{PREFIX}{name}_ci95_low"], candidate.metrics[f"{PREFIX}{name}_ci95_high"] = low, high
        except Exception as exc:  # noqa: BLE001 - a model that cannot be scored is refused, with the reason
            result.error = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.scored[candidate.run_id] = result
        return result

    def compare(self, newcomer: G.Candidate, holder: G.Candidate, metric: str, higher_is_better: bool) -> PairedResult:
        a, b = self.scored[newcomer.run_id].scores, self.scored[holder.run_id].scores
        result = paired_difference(a, b, metric[len(PREFIX):] if metric.startswith(PREFIX) else metric,
                                   higher_is_better=higher_is_better)
        self.pairs.append((Scored(newcomer).label if not newcomer.version else f"v{newcomer.version}",
                           f"v{holder.version}" if holder.version else holder.run_id[:8], result))
        return result

    def table(self) -> pd.DataFrame:
        rows = []
        for s in self.scored.values():
            row = {"candidate": s.label, "run_id": s.candidate.run_id, "arch": s.candidate.tags.get(tracking.TAG_ARCH, ""),
                   "split": s.candidate.tags.get(tracking.TAG_SPLIT, ""), "error": s.error}
            for name, value in s.point.items():
                low, high = s.intervals.get(name, (math.nan, math.nan))
                row |= {name: value, f"{name}_ci95_low": low, f"{name}_ci95_high": high}
            rows.append(row)
        baselines = next((s.baselines for s in self.scored.values() if s.baselines), {})
        for name, scores in baselines.items():  # what every candidate had to beat, on the same units
            row = {"candidate": f"baseline: {name}", "run_id": "", "arch": name, "split": "", "error": ""}
            intervals = scores.intervals()
            for metric, value in scores.point().items():
                low, high = intervals.get(metric, (math.nan, math.nan))
                row |= {metric: value, f"{metric}_ci95_low": low, f"{metric}_ci95_high": high}
            rows.append(row)
        return pd.DataFrame(rows)

    def per_unit(self) -> pd.DataFrame:
        rows = []
        for s in self.scored.values():
            if s.scores is None:
                continue
            for unit, values in s.scores.per_unit().items():
                rows.append({"candidate": s.label, "unit": unit} | values)
        return pd.DataFrame(rows)

    def log(self, decisions: list[dict]) -> str | None:
        """The evaluation run: the holdout dataset, metrics per candidate, per-unit scores, the
        paired tests and what they decided. Returns its run id (None when nothing was scored)."""
        if not self.scored:
            return None
        client, table = MlflowClient(), self.table()
        exp = tracking.ensure_experiment(tracking.EXPERIMENTS["evaluation"])
        holdout = next(iter(d for d in self.data.values() if d is not None), None)
        with mlflow.start_run(experiment_id=exp, run_name=f"{self.model_name} holdout",
                              tags={tracking.TAG_RUN_KIND: "evaluation", tracking.TAG_STUDY: self.study.name,
                                    "model": self.model_name,
                                    tracking.TAG_HOLDOUT_DIGEST: holdout.digest if holdout else "none"},
                              nested=mlflow.active_run() is not None) as run:
            if holdout is not None:
                mlflow.log_input(artifacts.dataset_from_table(holdout.table, source=holdout.source,
                                                             name=f"{self.study.name}-holdout", digest=holdout.digest),
                                 context="holdout")
                mlflow.log_param("holdout_units", holdout.n_units)
            for s in self.scored.values():
                tracking.log_metrics_finite({f"{s.label.replace(' ', '_')}.{k}": v for k, v in s.point.items()})
            client.log_table(run.info.run_id, data=table, artifact_file="holdout_metrics.json")
            per_unit = self.per_unit()
            if len(per_unit):
                client.log_table(run.info.run_id, data=per_unit, artifact_file="holdout_per_unit.json")
            if self.pairs:
                client.log_table(run.info.run_id, data=pd.DataFrame([
                    {"newcomer": a, "holder": b, "metric": r.metric, "difference": r.difference, "ci95_low": r.low,
                     "ci95_high": r.high, "p_value": r.p_value, "units": r.n_units} for a, b, r in self.pairs]),
                    artifact_file="paired_tests.json")
            if decisions:
                client.log_table(run.info.run_id, data=pd.DataFrame(decisions), artifact_file="decisions.json")
            return run.info.run_id
