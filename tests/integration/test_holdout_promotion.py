"""Promotion on the study's holdout: every candidate scored on the same patients through its
logged model, intervals by patient, and a champion that moves only for a newcomer better by a
paired test. Candidates are constructed so that their holdout accuracy is exactly known: a
model that looks each holdout film up and answers the class the test chose for it."""
from __future__ import annotations

import time

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from torch import nn

from projects.core import artifacts, tracking
from projects.core.study import get_study
from registry import audit
from registry import promote as P

STUDY = get_study("mammography")
CONFIG = STUDY.config_cls(image_size=32, task="7class")
NAME = STUDY.model_name("7class")


class Lookup(nn.Module):
    """Class probabilities stored per film, answered for the nearest stored film."""

    def __init__(self, films: np.ndarray, labels: np.ndarray, n_classes: int):
        super().__init__()
        self.register_buffer("films", torch.from_numpy(films).flatten(1))
        self.register_buffer("probs", torch.nn.functional.one_hot(torch.from_numpy(labels), n_classes).float())

    def forward(self, x):
        distance = torch.cdist(x.flatten(1), self.films)
        return self.probs[distance.argmin(1)]


@pytest.fixture(scope="module")
def holdout():
    return STUDY.holdout(CONFIG)


def answers(holdout, right_patients: set[str]) -> np.ndarray:
    """The true class on the films of `right_patients`, a wrong one elsewhere."""
    wrong = (holdout.targets + 1) % 7
    return np.where([u in right_patients for u in holdout.units], holdout.targets, wrong)


def log_lookup(holdout, labels: np.ndarray, *, own_accuracy: float, digest: str | None = None, seed: int = 0) -> str:
    """A FINISHED candidate run of the mammography study with a Lookup model; its own test
    numbers are good (it passes the cheap gates), its holdout accuracy is what `labels` make it."""
    tracking.setup_tracking()
    model = Lookup(holdout.inputs, labels.astype(np.int64), 7).eval()
    example = holdout.inputs[:2]
    with torch.inference_mode():
        output = model(torch.from_numpy(example)).numpy()
    with mlflow.start_run(experiment_id=tracking.ensure_experiment(STUDY.experiment), run_name=f"lookup-{seed}") as run:
        mlflow.set_tags({tracking.TAG_STUDY: STUDY.name, tracking.TAG_TASK: "7class", tracking.TAG_ARCH: "lookup",
                         tracking.TAG_SPLIT: "80:20", tracking.TAG_AUGMENT: "false", tracking.TAG_SEED: str(seed),
                         tracking.TAG_GIT_COMMIT: "test", tracking.TAG_DATASET_DIGEST: "digest-1",
                         tracking.TAG_RUN_KIND: "single", tracking.TAG_HOLDOUT_DIGEST: digest or holdout.digest})
        mlflow.log_params({"image_shape": "1x32x32", "image_size": 32, "task": "7class", "data": "embedded"})
        mlflow.log_metrics({"test_accuracy": own_accuracy, "test_f1_macro": 0.5, "test_accuracy_minus_baseline": 0.1,
                            tracking.M_SIZE_MB: 0.1, tracking.M_CPU_TOTAL: 0.1, tracking.M_LATENCY_P50: 1.0})
        mlflow.pytorch.log_model(model, name=tracking.MODEL_ARTIFACT, input_example=example,
                                 signature=infer_signature(example, output),
                                 pip_requirements=artifacts.model_pip_requirements())
        mlflow.set_tag(tracking.TAG_CANDIDATE, "true")
    time.sleep(0.01)
    return run.info.run_id


def holder(alias: str = "champion") -> str | None:
    try:
        return MlflowClient().get_model_version_by_alias(NAME, alias).run_id
    except mlflow.exceptions.MlflowException:
        return None


def champion_decision(report):
    return next(d for d in report.decisions if d.alias == "champion")


def test_the_holdout_is_fixed_by_the_data_and_never_split(holdout):
    assert holdout.n_units >= 10 and len(holdout.inputs) == len(holdout.targets) == len(holdout.units)
    again = STUDY.holdout(STUDY.config_cls(image_size=32, task="7class", seed=5, split="90:10"))
    assert again.digest == holdout.digest  # another seed or split: the same patients
    prepared = STUDY.prepare(STUDY.config_cls(image_size=32, task="7class", seed=3))
    used = {f for ids in prepared.ids.values() for f in ids}
    assert not used & set(holdout.table["film"])  # no run of any split sees a holdout film
    assert prepared.holdout_digest == holdout.digest


def test_champion_is_chosen_on_the_holdout_and_moves_only_for_a_significant_newcomer(holdout):
    patients = sorted(set(holdout.units))
    base = set(patients[: int(0.75 * len(patients))])  # above the majority class (~0.65) on the holdout
    first = log_lookup(holdout, answers(holdout, base), own_accuracy=0.70, seed=1)
    report = P.promote_model(NAME)
    assert champion_decision(report).status == P.MOVED and holder() == first

    # One more patient right (its own test accuracy is far higher): not beyond chance.
    one_more = log_lookup(holdout, answers(holdout, base | {patients[-1]}), own_accuracy=0.99, seed=2)
    report = P.promote_model(NAME)
    d = champion_decision(report)
    assert d.status == P.UNCHANGED and holder() == first, report.table()
    assert "not better beyond chance" in d.significance and "p = " in d.significance

    # Nearly every patient right: better by the paired test, the champion moves.
    strong = log_lookup(holdout, answers(holdout, set(patients[:-1])), own_accuracy=0.75, seed=3)
    report = P.promote_model(NAME)
    d = champion_decision(report)
    assert d.status == P.MOVED and holder() == strong, report.table()
    assert "better at level 0.05" in d.significance

    # What the evaluation run shows: every shortlisted candidate's holdout metrics with intervals.
    run = MlflowClient().get_run(report.evaluation_run)
    assert run.data.tags[tracking.TAG_HOLDOUT_DIGEST] == holdout.digest
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/holdout_metrics.json")  # an MLflow table
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    assert {first, one_more, strong} <= set(table["run_id"])
    row = table[table["run_id"] == strong].iloc[0]
    assert row["accuracy_ci95_low"] <= row["accuracy"] <= row["accuracy_ci95_high"]
    assert row["accuracy"] == pytest.approx((len(patients) - 1) / len(patients), abs=0.1)
    # ... and the audit trail records the paired test behind the move.
    trail = audit.history(NAME, "champion")
    assert [e["kind"] for e in trail] == ["promote", "promote"] and "p = " in trail[-1]["significance"]
    assert trail[-1]["evaluation_run"] == report.evaluation_run
    # The rule recorded names the metric it ranked: the holdout's, not the policy's test_accuracy.
    assert trail[-1]["rule"] == d.rule == "highest holdout_accuracy" and trail[-1]["metric"] == "holdout_accuracy"
    version = MlflowClient().get_model_version_by_alias(NAME, "champion")
    assert version.tags[audit.promotion_key("champion", "rule")] == "highest holdout_accuracy"


def test_a_candidate_that_trained_on_the_holdout_is_refused(holdout):
    everything = log_lookup(holdout, holdout.targets, own_accuracy=0.99, digest="none", seed=4)
    report = P.promote_model(NAME)
    assert holder() is None
    assert any("holdout_clean" in why and "trained on all the data" in why for _, why in report.refused_all)
    assert everything not in {r for r in (holder(),)}


def test_a_candidate_no_better_than_the_commonest_class_on_the_holdout_is_refused(holdout, capsys):
    """Its own test side said it beat its baseline (a dozen patients can say that of a constant
    answer); on the holdout it answers the commonest class for every film and is refused."""
    commonest = np.full_like(holdout.targets, np.bincount(holdout.targets).argmax())
    constant = log_lookup(holdout, commonest, own_accuracy=0.80, seed=5)
    capsys.readouterr()
    report = P.promote_model(NAME)
    # progress while it scores: one stderr line per shortlisted candidate, naming it
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[promote]")]
    assert len(progress) == 1 and f"{NAME}: scoring 1/1 on the holdout: run {constant[:8]}" in progress[0], progress
    assert holder() is None, report.table()
    why = dict(report.refused_all)
    reason = next(r for who, r in report.refused_all if constant[:8] in who)
    assert "holdout_baseline" in reason and "does not beat the majority predictor" in reason, why
    assert "accuracy 0.6458" in reason and "24 patients" in reason and "paired p = " in reason, reason
    # The evaluation run shows the baseline beside the candidates, on the same patients.
    logged = mlflow.artifacts.load_dict(f"runs:/{report.evaluation_run}/holdout_metrics.json")
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    row = table[table["candidate"] == "baseline: majority"].iloc[0]
    assert row["accuracy"] == pytest.approx(np.mean(commonest == holdout.targets))

    # A model above the commonest class on the holdout passes the same gate, and says by how much.
    patients = sorted(set(holdout.units))
    good = log_lookup(holdout, answers(holdout, set(patients[:20])), own_accuracy=0.70, seed=6)
    report = P.promote_model(NAME)
    d = champion_decision(report)
    assert d.status == P.MOVED and holder() == good, report.table()
    assert "holdout_baseline" in d.gates and d.rule == "highest holdout_accuracy"
