"""A mammography grid over the paper's four splits plus a search, then `promote`: every
shortlisted candidate, whatever split or trial it came from, is scored on the study's one
fixed holdout, and the champion is the best there (not the luckiest small test set).
(That the champion then moves only for a newcomer better by the paired test is shown on
constructed candidates in tests/integration/test_holdout_promotion.py.)"""
from __future__ import annotations

import re

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from projects.core import tracking
from projects.core.grid import plan_grid, run_grid
from projects.core.study import get_study
from projects.search import driver
from registry import promote as P
from registry.policy import find_policy, load_policy

from conftest import running_runs

STUDY = get_study("mammography")
NAME = STUDY.model_name("7class")
SPLITS = ["90:10", "80:20", "70:30", "75:25"]


def policy_without_the_baseline_gate(tmp_path):
    """The repository's policy, minus `beats_baseline`: 2-epoch models at 32 px do not beat the
    majority class reliably, and what this test checks is which data judges them."""
    text = find_policy(NAME).path.read_text()
    text = re.sub(r"  beats_baseline:.*?\n(    .*\n)+", "", text)
    path = tmp_path / f"{NAME}.yaml"
    path.write_text(text)
    policy = load_policy(path)
    assert policy.gates.beats_baseline is None
    return policy


@pytest.mark.slow
def test_grid_over_four_splits_and_a_search_are_judged_on_one_holdout(tmp_path):
    base = STUDY.config_cls.of(arch="resnet10t", image_size=32, epochs=2, batch_size=32, lr=1e-3,
                               class_weighted=True, cpu_predict_n=4, onnx_timing=False, progress=False)
    grid = STUDY.grid_cls(base=base, splits=SPLITS, augment_options=[False], benign_malignant=False)
    with tracking.study_run(STUDY.experiment, "grid"):
        run_grid(STUDY, grid, plan_grid(STUDY, grid))
    driver.run_search(driver.SearchSettings(study=STUDY.name, base=base, n_trials=1, epochs=2, pruner="none",
                                            space="arch=resnet10t,image_size=32", seed=0, settle_s=0.0,
                                            plots=False))

    report = P.promote_model(NAME, policy=policy_without_the_baseline_gate(tmp_path))
    logged = mlflow.artifacts.load_dict(f"runs:/{report.evaluation_run}/holdout_metrics.json")
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    # beside the candidates, the constant answer they are measured against, on the same patients
    assert list(table.loc[table["candidate"].str.startswith("baseline: "), "candidate"]) == ["baseline: majority"]
    table = table[~table["candidate"].str.startswith("baseline: ")]
    # the four split runs and the search's trial, all on the same holdout patients
    assert set(SPLITS) <= set(table["split"]) and len(table) == 5, table
    scored = table[table["error"].fillna("") == ""]
    assert len(scored) == 5
    assert (scored["accuracy_ci95_low"] <= scored["accuracy"]).all()
    assert (scored["accuracy"] <= scored["accuracy_ci95_high"]).all()
    digests = {MlflowClient().get_run(r).data.tags[tracking.TAG_HOLDOUT_DIGEST] for r in scored["run_id"]}
    evaluation = MlflowClient().get_run(report.evaluation_run)
    assert digests == {evaluation.data.tags[tracking.TAG_HOLDOUT_DIGEST]}
    # the champion is the best on the holdout, whatever its own test set said
    champion = MlflowClient().get_model_version_by_alias(NAME, "champion").run_id
    best = scored["accuracy"].max()
    assert scored.loc[scored["run_id"] == champion, "accuracy"].iloc[0] == best
    decision = next(d for d in report.decisions if d.alias == "champion")
    assert decision.value == pytest.approx(best)  # the value it was ranked by is the holdout's
    assert int(evaluation.data.params["holdout_units"]) > 0
    assert running_runs() == []
