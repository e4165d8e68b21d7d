"""The trainer template's own arithmetic and order (projects/core/trainer.py); the whole run
through it is tested by every study's end-to-end tests and the toy study (test_third_study)."""
from __future__ import annotations

import pytest

from projects.core.trainer import Trainer, _chain, margins


def test_minus_baseline_is_the_margin_over_the_best_baseline():
    test = {"jaccard": 0.7, "accuracy": 0.9}
    base = {"all_background": 0.4, "all_tumor": 0.55, "majority": 0.8}
    out = margins(test, base, {"jaccard": ("all_background", "all_tumor"), "accuracy": ("majority",),
                               "f1_macro": ("majority",)})
    assert out == pytest.approx({"jaccard_minus_baseline": 0.7 - 0.55, "accuracy_minus_baseline": 0.9 - 0.8})


def test_the_studys_epoch_work_runs_before_a_search_trials_pruning():
    calls = []
    study_hook = lambda epoch, metrics: calls.append(("study", epoch))  # noqa: E731
    pruning = lambda epoch, metrics: calls.append(("prune", epoch))  # noqa: E731
    _chain(study_hook, pruning)(3, {})
    assert calls == [("study", 3), ("prune", 3)]
    assert _chain(None, pruning) is pruning and _chain(study_hook, None) is study_hook and _chain(None, None) is None


def test_a_run_outside_an_active_mlflow_run_is_refused():
    class Prepared:
        digest = "d"

    with pytest.raises(RuntimeError, match="needs an active MLflow run"):
        Trainer().run_training(config=None, prepared=Prepared())
