"""Search (issue #6): spaces, objectives, pruning, parent/child runs, resume, workers.

Fast tests run tiny pathology searches in-process (8 embedded images of 128 px, 64 px tiles,
2-4 filters); the slow ones drive the CLI in subprocesses: the Done-when structure, a
SIGKILL mid-trial followed by a resume, and workers sharing a PostgreSQL study.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from projects.core import tracking
from projects.core.errors import InputError
from projects.pathology.config import PathologyConfig
from projects.core import space as spaces
from projects.core.specs.pipeline import SearchPlan
from projects.core.study import get_study
from projects.search import admission, driver, factories
from projects.search import settings as search_settings
from projects.search.names import TAG_BEST


def default_space(name: str) -> spaces.Space:
    study = get_study(name)
    return spaces.parse_space(name, study.default_space, study.config_cls)


PATHOLOGY, MAMMOGRAPHY = default_space("pathology"), default_space("mammography")
from projects.search.__main__ import main as search_main
from tests.conftest import running_runs

REPO = Path(__file__).resolve().parents[2]
TINY_BASE = PathologyConfig(data="embedded", embedded_images=8, embedded_size=128, tile_size=64, epochs=2,
                            batch_size=8, cpu_predict_n=4, log_model=False, progress=False)
TINY_BASE_ARG = ("embedded_images=8,embedded_size=128,tile_size=64,batch_size=8,cpu_predict_n=4,"
                 "log_model=false,progress=false")
TINY_SPACE = "arch=unet|elunet,depth=2:3,filters=2:4"


def tiny(**kw) -> driver.SearchSettings:
    defaults = dict(study="pathology", base=TINY_BASE, n_trials=3, epochs=2, space=TINY_SPACE, seed=0,
                    settle_s=0.0, plots=False, pruner="none")
    return driver.SearchSettings(**(defaults | kw))


class PruneNumbers(optuna.pruners.BasePruner):
    """Deterministic pruning for tests: prune the listed trial numbers at their first epoch."""

    def __init__(self, numbers):
        self.numbers = set(numbers)

    def prune(self, study, trial) -> bool:
        return trial.number in self.numbers


def children(parent_id: str) -> list:
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def parents(name: str) -> list:
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.search_name = '{name}' and tags.run_kind = 'search_parent'")


def load(name: str, storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=factories.open_storage(factories.resolve_storage_url(storage or ""), 60, 2))


def finished_numbers(study) -> list[int]:
    return [t.number for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]


def artifact_paths(run_id: str, path: str) -> list[str]:
    return sorted(a.path for a in MlflowClient().list_artifacts(run_id, path))


# --- spaces ----------------------------------------------------------------------------------
def test_default_spaces_are_declared_and_round_trip():
    for study, cls in (("pathology", PathologyConfig), ("mammography", None)):
        space = default_space(study)
        if cls is None:
            from projects.mammography.config import MammographyConfig as cls
        again = spaces.apply_overrides(space, space.text(), cls)
        assert again == space, study
    patho = PATHOLOGY
    assert set(patho.names()) == {"arch", "depth", "filters", "lr", "batch_size", "equalization"}
    assert patho.get("filters").values() == (4, 8, 16, 32)
    assert any(str(a).startswith("smp:") for a in patho.get("arch").values())
    mammo = MAMMOGRAPHY
    assert set(mammo.get("arch").values()) >= {"resnet18", "resnet34", "resnet50", "resnet101"}
    assert mammo.get("image_size").values() == (64, 128, 256)


def test_space_overrides_are_typed_by_the_config():
    space = spaces.apply_overrides(PATHOLOGY, "depth=3:5,filters=4:16,arch=unet|smp:Unet:resnet18,"
                                                     "lr=1e-3,augment_flips=true|false,threshold=0.3:0.7",
                                   PathologyConfig)
    assert space.get("depth") == spaces.IntRange("depth", 3, 5)
    assert space.get("filters") == spaces.Pow2("filters", 4, 16)  # keeps the powers-of-two scale
    assert space.get("arch").values() == ("unet", "smp:Unet:resnet18")  # colons of an smp spec kept
    assert space.get("lr") == spaces.Fixed("lr", 1e-3)
    assert space.get("augment_flips").values() == (True, False)
    assert space.get("threshold") == spaces.FloatRange("threshold", 0.3, 0.7)
    assert spaces.apply_overrides(PATHOLOGY, "lr=1e-5:1e-1", PathologyConfig).get("lr").log
    assert "lr" not in space.searched() and "depth" in space.searched()


@pytest.mark.parametrize("bad", ["nosuch=1:2", "depth=5:3", "depth", "filters=0:8:pow2", "lr=0:1:log",
                                 "depth=a:b", "batch_size=2.5"])
def test_bad_space_overrides_are_input_errors(bad):
    with pytest.raises(InputError):
        spaces.apply_overrides(PATHOLOGY, bad, PathologyConfig)


def test_depth_is_narrowed_to_what_the_tile_can_be_halved_to():
    space = spaces.apply_overrides(PATHOLOGY, "arch=unet|elunet,depth=2:7", PathologyConfig)
    fitted = get_study("pathology").narrow_space(space, dataclasses.replace(TINY_BASE, tile_size=16))
    assert fitted.get("depth") == spaces.IntRange("depth", 2, 5)  # 16 -> 8 -> 4 -> 2 -> 1
    with pytest.raises(InputError, match="cannot halve|no depth"):
        get_study("pathology").narrow_space(spaces.apply_overrides(space, "depth=6:7", PathologyConfig),
                           dataclasses.replace(TINY_BASE, tile_size=24))


def test_objectives_pruners_samplers_and_storage_resolve():
    adapter = get_study("pathology")
    objs = search_settings.resolve_objectives(["accuracy", "model_size_mb"], adapter)
    assert [(o.metric, o.direction) for o in objs] == [("val_jaccard", "maximize"), ("model_size_mb", "minimize")]
    assert search_settings.resolve_objectives(["accuracy"], get_study("mammography"))[0].metric == "val_f1_macro"
    for bad in (["test_jaccard"], ["model_size_mb"], ["accuracy", "accuracy"], ["speed"]):
        with pytest.raises(InputError):
            search_settings.resolve_objectives(bad, adapter)
    kinds = {"median": optuna.pruners.MedianPruner, "median:startup=1,warmup=1": optuna.pruners.MedianPruner,
             "percentile:10": optuna.pruners.PercentilePruner, "sha": optuna.pruners.SuccessiveHalvingPruner,
             "hyperband": optuna.pruners.HyperbandPruner, "threshold:lower=0.2": optuna.pruners.ThresholdPruner,
             "none": optuna.pruners.NopPruner}
    for spec, cls in kinds.items():
        assert isinstance(factories.build_pruner(spec, 5, 20, False)[0], cls), spec
    assert factories.build_pruner("median:startup=1", 5, 20, False)[0]._n_startup_trials == 1
    # Optuna cannot prune multi-objective trials: the pruner is switched off, and said so.
    pruner, text = factories.build_pruner("median", 5, 20, True)
    assert isinstance(pruner, optuna.pruners.NopPruner) and "multi-objective" in text
    with pytest.raises(InputError):
        factories.build_pruner("fancy", 5, 20, False)
    assert isinstance(factories.build_sampler("auto", 2, 20, 0)[0], optuna.samplers.TPESampler)
    assert isinstance(factories.build_sampler("nsga2", 2, 20, 0)[0], optuna.samplers.NSGAIISampler)
    # Default storage: SQLite beside the tracking store's mlflow.db.
    store = Path(os.environ["MEDIMG_STORE"])
    assert factories.default_storage_url() == f"sqlite:///{store / 'optuna.db'}"
    assert factories.resolve_storage_url("journal:x/j.log").startswith("journal:/")
    assert factories.safe_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(InputError):
        factories.resolve_storage_url("not a url")


def test_cli_show_space_and_bad_input(capsys):
    assert search_main(["--study", "pathology", "--show-space", "--space", "depth=3:4,arch=unet|elunet"]) == 0
    out = capsys.readouterr().out
    assert "depth=3:4" in out and "filters=4:32:pow2" in out
    assert search_main(["--study", "pathology", "--space", "nosuch=1", "--n-trials", "1"]) == 2
    assert search_main(["--study", "pathology", "--objectives", "test_jaccard"]) == 2
    assert search_main(["--show-space"]) == 2  # which study? (no study is a default)
    assert "error: --study: name the study to search" in capsys.readouterr().err
    assert running_runs() == []


def test_a_setting_given_in_base_is_not_searched_unless_space_names_it(capsys):
    """`--base filters=16` once let the default space search filters anyway (search-monuseg-colour's
    first trial trained 32 filters); now --base fixes it, and --space naming it still searches it."""
    argv = ["--study", "pathology", "--show-space", "--base", "filters=16,equalization=hist,tile_size=64"]
    assert search_main(argv) == 0
    out = capsys.readouterr().out
    assert "--base fixes filters=16, equalization=hist: not searched" in out  # tile_size is not an axis
    space = out.split("--space ")[-1]
    assert "filters=16," in space and "equalization=hist" in space and "depth=3:" in space
    assert search_main([*argv, "--space", "filters=8|16"]) == 0
    out = capsys.readouterr().out
    assert "--base fixes equalization=hist:" in out and "filters=8|16" in out.split("--space ")[-1]


# --- in-process searches ------------------------------------------------------------------------
def test_single_objective_search_structure_pruning_and_resume():
    settings = tiny(name="single", n_trials=3, pruner=PruneNumbers({1}), plots=True)
    summary = driver.run_search(settings)
    assert (summary.n_complete, summary.n_pruned) == (2, 1)
    parent = MlflowClient().get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED"
    tags, params, metrics = parent.data.tags, parent.data.params, parent.data.metrics
    assert tags["run_kind"] == "search_parent" and tags["search_name"] == "single"
    assert params["search.space"].startswith("arch=unet|elunet,depth=2:3,filters=2:4:pow2")
    assert params["search.objectives"] == "val_jaccard" and params["search.n_trials"] == "3"
    assert params["search.pruner"] == "PruneNumbers" and "TPESampler" in params["search.sampler"]
    assert params["base.tile_size"] == "64" and params["search.epochs_per_trial"] == "2"
    assert tags["best_trial"] == str(summary.best_trial) and tags["best_run_id"] == summary.best_run_id
    assert metrics["n_trials_complete"] == 2 and metrics["n_trials_pruned"] == 1
    assert metrics["search_epochs_total"] == 5 and metrics["search_epochs_unpruned"] == 6
    assert metrics["search_cpu_s_total"] > 0
    # Artifacts: the trial table and offline plots (plotly.js inlined, no CDN).
    assert artifact_paths(parent.info.run_id, "search") == ["search/plots", "search/summary.txt", "search/trials.csv",
                                                            "search/trials.json"]
    # The parent's run page: a markdown description linking the best trials' runs in the
    # model-training view; its charts show the search trial by trial (written live).
    note = tags["mlflow.note.content"]
    assert note.startswith("**Search `single`** (pathology; maximize `val_jaccard`): ended, 3/3 trials done")
    assert "2 complete, 1 pruned" in note and "| trial | val_jaccard | arch | depth | filters |" in note
    assert f"/runs/{summary.best_run_id}?workflowType=machine_learning" in note
    progress = MlflowClient().get_metric_history(parent.info.run_id, "n_trials_complete")
    assert sorted({m.step for m in progress}) == [1, 2, 3] and progress[-1].value == 2
    best_curve = MlflowClient().get_metric_history(parent.info.run_id, "best_val_jaccard")
    assert best_curve[-1].value == pytest.approx(max(m.value for m in best_curve))
    plots = artifact_paths(parent.info.run_id, "search/plots")
    for name in ("optimization_history", "param_importances", "intermediate_values"):
        assert f"search/plots/{name}.html" in plots
    local = Path(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="search"))
    html = (local / "plots" / "optimization_history.html").read_text()
    assert len(html) > 1_000_000 and "cdn.plot.ly" not in html.split("<body>")[-1][:2000]
    import pandas as pd

    table = pd.read_csv(local / "trials.csv")
    assert sorted(table["state"]) == ["COMPLETE", "COMPLETE", "PRUNED"]

    kids = children(parent.info.run_id)
    assert len(kids) == 3
    by_number = {int(r.data.tags["trial_number"]): r for r in kids}
    assert sorted(by_number) == [0, 1, 2]
    for n, run in by_number.items():  # names a person can read in the run list
        p = run.data.params
        assert run.info.run_name == f"t{n:03d}-{p['arch']}-n{p['filters']}-d{p['depth']}"
    pruned = by_number[1]
    assert pruned.data.tags["trial_state"] == "PRUNED" and pruned.info.status == "KILLED"
    assert pruned.data.tags["pruned_at_epoch"] == "1"
    history = MlflowClient().get_metric_history(pruned.info.run_id, "val_jaccard")
    assert [m.step for m in history] == [1]  # its curve is there, up to where it stopped
    for n in (0, 2):
        run = by_number[n]
        assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "COMPLETE"
        assert run.info.experiment_id == parent.info.experiment_id
        # same params / metrics as a normal training run, efficiency included
        assert run.data.params["arch"] in ("unet", "elunet") and run.data.params["tile_size"] == "64"
        for key in (*tracking.EFFICIENCY_METRICS, "test_jaccard", "baseline_jaccard_all_tumor", "val_jaccard"):
            assert key in run.data.metrics, key
        assert run.data.tags["run_kind"] == "trial" and run.data.tags[tracking.TAG_DATASET_DIGEST]
        assert run.data.tags["search_best"] == str(n == summary.best_trial).lower()
    study = load("single")
    best = study.best_trial
    assert best.user_attrs["mlflow_run_id"] == summary.best_run_id
    assert MlflowClient().get_run(summary.best_run_id).data.metrics["objective_val_jaccard"] == best.value

    # Resume: the same name with a higher target adds only the missing trial, same parent.
    again = driver.run_search(tiny(name="single", n_trials=4, pruner="none"))
    assert again.parent_run_id == summary.parent_run_id
    assert (again.n_complete + again.n_pruned) == 4
    assert sorted(finished_numbers(load("single"))) == [0, 1, 2, 3]
    assert len(children(summary.parent_run_id)) == 4
    parent = MlflowClient().get_run(summary.parent_run_id)
    assert parent.data.params["search.n_trials"] == "3"  # params are immutable ...
    assert parent.data.tags["resumed_with.search.n_trials"] == "4"  # ... a resume says what changed
    assert len(parents("single")) == 1 and running_runs() == []
    # Nothing left to do: a third run trains nothing.
    third = driver.run_search(tiny(name="single", n_trials=4))
    assert len(children(summary.parent_run_id)) == 4 and third.n_complete + third.n_pruned == 4
    # A resume with another definition is refused before anything runs.
    with pytest.raises(InputError, match="different"):
        driver.run_search(tiny(name="single", n_trials=5, space="arch=unet,depth=2,filters=2"))


@pytest.mark.slow  # >10 s: left out of `make test-fast` (CI runs it)
def test_multi_objective_pareto_constraints_and_rejections():
    # filters 2 fits a 6,000-parameter budget, filters 8 does not: rejected before training.
    settings = tiny(name="multi", n_trials=2, objectives=("accuracy", "params_count"), plots=True,
                    space="arch=elunet,depth=2,filters=2|8", max_params=6000, max_size_mb=1.0,
                    pruner="median")
    summary = driver.run_search(settings)
    assert summary.n_complete == 2 and summary.pareto_trials
    parent = MlflowClient().get_run(summary.parent_run_id)
    tags = parent.data.tags
    assert tags["pareto_trials"] == ",".join(str(n) for n in summary.pareto_trials)
    assert all(tags[f"pareto.trial_{n:03d}"] for n in summary.pareto_trials)
    assert parent.data.params["search.directions"] == "maximize,minimize"
    assert "multi-objective" in parent.data.params["search.pruner"]
    plots = artifact_paths(parent.info.run_id, "search/plots")
    assert "search/plots/pareto_front.html" in plots and "search/plots/optimization_history.html" in plots
    metrics = parent.data.metrics
    assert metrics["pareto_size"] == len(summary.pareto_trials) and metrics["best_params_count"] <= 6000
    assert "Pareto-optimal trials" in tags["mlflow.note.content"]
    study = load("multi")
    rejected = [t for t in study.get_trials() if t.user_attrs.get("rejected")]
    assert all(t.params["filters"] == 8 and t.state.name == "FAIL" for t in rejected)
    assert all("mlflow_run_id" not in t.user_attrs for t in rejected)  # never trained, no run
    kids = children(parent.info.run_id)
    assert len(kids) == 2
    for run in kids:
        assert run.data.metrics["params_count"] <= 6000
        assert run.data.tags["pareto_optimal"] in ("true", "false")
        assert run.data.tags["feasible"] == "true"
    # Constraints are Optuna constraints (feasibility), not penalties on the values.
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert all("max_size_mb" in t.constraints and t.constraints["max_size_mb"] <= 0 for t in complete)
    assert {t.number for t in study.best_trials} == set(summary.pareto_trials)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_trials(storage: str, study_name: str) -> list[dict]:
    """Start `python -m projects.search.watch` (what `make optuna-dashboard` runs) on the
    storage, read the study's trials from optuna-dashboard's API, stop it."""
    import json
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "projects.search.watch", "--storage", storage, "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, studies = time.time() + 60, None
        while studies is None:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < deadline, "optuna-dashboard did not answer within 60 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
            except OSError:
                time.sleep(0.3)
        (study,) = [s for s in studies if s["study_name"] == study_name]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=10) as r:
            return json.load(r)["trials"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow  # >10 s: left out of `make test-fast` (CI runs it)
def test_optuna_dashboard_opens_a_finished_search_from_the_default_storage():
    summary = driver.run_search(tiny(name="watched", n_trials=2, epochs=1))
    trials = dashboard_trials("", "watched")
    assert sorted(t["number"] for t in trials) == [0, 1]
    assert {t["state"] for t in trials} == {"Complete"} and summary.n_complete == 2
    for t in trials:
        assert {p["name"] for p in t["params"]} >= {"arch", "depth", "filters"} and len(t["values"]) == 1
        assert "mlflow_run_id" in {a["key"] for a in t["user_attrs"]}  # the trial's run in MLflow


def test_journal_storage_and_infeasible_trials_are_never_best(tmp_path):
    journal = f"journal:{tmp_path / 'j.log'}"
    summary = driver.run_search(tiny(name="infeasible", n_trials=1, epochs=1, max_latency_ms=1e-9, storage=journal))
    assert (tmp_path / "j.log").stat().st_size > 0
    (trial,) = dashboard_trials(journal, "infeasible")  # the dashboard opens a journal file too
    assert trial["state"] == "Complete" and len(trial["values"]) == 1
    assert summary.n_complete == 1 and summary.best_trial is None
    assert "best_trial" not in MlflowClient().get_run(summary.parent_run_id).data.tags
    for t in load("infeasible", journal).get_trials():
        assert t.constraints["max_latency_ms"] > 0
    for run in children(summary.parent_run_id):
        assert run.data.tags["feasible"] == "false"


def test_a_journal_resumed_in_another_store_keeps_its_earlier_trials_and_writes_the_parent(tmp_path, capsys):
    """The real-data searches commit their journal and resume it in a later session's store,
    where the earlier trials' runs do not exist: their results count, the parent is written."""
    journal = f"journal:{tmp_path / 'j.log'}"
    first = driver.run_search(tiny(name="travels", n_trials=1, epochs=1, storage=journal))
    assert first.n_complete == 1
    other = f"sqlite:///{tmp_path / 'other.db'}"
    mlflow.set_tracking_uri(other)
    os.environ["MLFLOW_TRACKING_URI"] = other  # conftest's monkeypatch restores it after the test
    capsys.readouterr()
    resumed = driver.run_search(tiny(name="travels", n_trials=2, epochs=1, storage=journal))
    assert "progress not written" not in capsys.readouterr().err
    assert resumed.n_complete == 2 and resumed.parent_run_id != first.parent_run_id
    tags = MlflowClient().get_run(resumed.parent_run_id).data.tags
    assert tags["best_trial"] == str(resumed.best_trial) and tags["search_state"] == "complete"
    (here,) = children(resumed.parent_run_id)  # only the new trial ran against this store
    assert here.data.tags[TAG_BEST] == str(resumed.best_trial == 1).lower()


def test_a_trial_of_a_dead_process_is_failed_and_retried():
    """What a resume finds after a SIGKILL, made without one: a RUNNING trial and run whose
    process no longer exists."""
    tracking.setup_tracking()
    ctx = driver.build_context(tiny(name="dead", n_trials=1, epochs=1))
    study = driver.open_study(ctx)
    with pytest.warns(UserWarning, match="Heartbeat"):  # ask() outside optimize(), on purpose
        trial = study.ask()
    params = ctx.space.sample(trial)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", dead.pid)
    exp = tracking.ensure_experiment(tracking.EXPERIMENTS["search"])
    stale = MlflowClient().create_run(exp, tags={"search_name": "dead", "trial_number": "0", "trial_state": "RUNNING",
                                                 "host": socket.gethostname(), "pid": str(dead.pid)})
    trial.set_user_attr("mlflow_run_id", stale.info.run_id)

    summary = driver.run_search(tiny(name="dead", n_trials=1, epochs=1))
    study = load("dead")
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[0] == "FAIL"
    retried = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE" and retried[0].params == params
    assert summary.n_complete == 1
    run = MlflowClient().get_run(stale.info.run_id)
    assert run.info.status == "FAILED" and run.data.tags["trial_state"] == "FAIL"
    retry_run = MlflowClient().get_run(retried[0].user_attrs["mlflow_run_id"])
    assert retry_run.data.tags["retry_of_trial"] == "0"
    assert running_runs() == []


@pytest.mark.slow  # >10 s: left out of `make test-fast` (CI runs it)
def test_epoch_budget_and_timeout_stop_the_search():
    summary = driver.run_search(tiny(name="budget", n_trials=10, epochs=1, epoch_budget=2))
    assert summary.total_epochs == 2 and summary.n_complete == 2  # 1 + 1 >= 2: stops after two
    parent = MlflowClient().get_run(summary.parent_run_id)
    assert parent.data.tags["search_state"] == "incomplete"
    summary = driver.run_search(tiny(name="timeout", n_trials=10, timeout=0.01))
    assert summary.n_complete <= 1


def test_main_job_search_returns_a_summary():
    line = driver.main_job_search("pathology", dataclasses.replace(TINY_BASE, epochs=1),
                                   SearchPlan(n_trials=1, epochs=1, space="arch=unet|elunet,depth=3:5,filters=4:16"))
    assert isinstance(line, str) and "parent run" in line and "complete" in line
    assert running_runs() == []


# --- subprocesses: the CLI, SIGKILL + resume, workers ------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "projects.search", "--study", "pathology", "--base", TINY_BASE_ARG,
            "--space", TINY_SPACE, *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_cli_done_when_structure_with_aggressive_pruning():
    """The Done-when shape: one parent, 8 children, pruned ones KILLED with their curves."""
    out = subprocess.run(_cli("--n-trials", "8", "--epochs", "2", "--name", "done-when", "--seed", "0",
                              "--pruner", "percentile:1,startup=1"),
                         capture_output=True, text=True, timeout=900, env=_env(), cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    (parent,) = parents("done-when")
    kids = children(parent.info.run_id)
    assert len(kids) == 8
    states = sorted(r.data.tags["trial_state"] for r in kids)
    assert set(states) <= {"COMPLETE", "PRUNED"} and "PRUNED" in states, states
    for run in kids:
        expected = "KILLED" if run.data.tags["trial_state"] == "PRUNED" else "FINISHED"
        assert run.info.status == expected
        assert MlflowClient().get_metric_history(run.info.run_id, "val_loss")
    assert sorted(int(r.data.tags["trial_number"]) for r in kids) == list(range(8))
    assert parent.data.tags["best_run_id"] in {r.info.run_id for r in kids}
    assert "search/plots/optimization_history.html" in artifact_paths(parent.info.run_id, "search/plots")
    assert running_runs() == []


def _wait_for_running_trial(name: str, timeout: float = 300) -> str:
    """Until a trial run of the search has logged an epoch (so the kill lands mid-trial)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                      filter_string=f"tags.search_name = '{name}' and tags.run_kind = 'trial' "
                                                    "and attributes.status = 'RUNNING'")
        except Exception:  # the store is being created by the child
            runs = []
        for run in runs:
            if "val_loss" in run.data.metrics:
                return run.info.run_id
        time.sleep(0.3)
    raise AssertionError("no trial started")


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume_finishes_without_duplicates():
    name = "killed"
    # Many epochs: the kill lands while the first trial trains.
    first = subprocess.Popen(_cli("--n-trials", "3", "--epochs", "15", "--name", name, "--seed", "1",
                                  "--pruner", "none", "--plots", "false"),
                             env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        killed_run = _wait_for_running_trial(name)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    study = load(name)
    assert [t.state.name for t in study.get_trials()] == ["RUNNING"]
    killed_params = study.get_trials()[0].params

    out = subprocess.run(_cli("--n-trials", "3", "--epochs", "2", "--name", name, "--seed", "1",
                              "--pruner", "none", "--plots", "false"),
                         capture_output=True, text=True, timeout=900, env=_env(), cwd=REPO)
    # epochs differ from the killed run's: a resume must keep the definition
    assert out.returncode == 2 and "different epochs" in out.stderr
    out = subprocess.run(_cli("--n-trials", "3", "--epochs", "15", "--name", name, "--seed", "1",
                              "--pruner", "none", "--plots", "false", "--base", TINY_BASE_ARG + ",patience=1"),
                         capture_output=True, text=True, timeout=900, env=_env(), cwd=REPO)
    assert out.returncode == 2, out.stderr[-2000:]  # the base config is part of the definition too
    out = subprocess.run(_cli("--n-trials", "3", "--epochs", "15", "--name", name, "--seed", "1",
                              "--pruner", "none", "--plots", "false"),
                         capture_output=True, text=True, timeout=1200, env=_env(), cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]

    study = load(name)
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL"  # the killed one
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 3 and len({t.number for t in done}) == 3
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].params == killed_params and retry[0].state.name == "COMPLETE"

    (parent,) = parents(name)
    assert parent.info.status == "FINISHED"
    killed = MlflowClient().get_run(killed_run)
    assert killed.info.status == "FAILED" and killed.data.tags["trial_state"] == "FAIL"
    kids = [r for r in children(parent.info.run_id) if r.data.tags["trial_state"] in ("COMPLETE", "PRUNED")]
    numbers = [int(r.data.tags["trial_number"]) for r in kids]
    assert sorted(numbers) == sorted(t.number for t in done)  # one run per finished trial
    assert running_runs() == []


def _postgres_admin():
    psycopg = pytest.importorskip("psycopg")
    for user in ("postgres", "root"):
        try:
            conn = psycopg.connect(host="127.0.0.1", port=5432, dbname="test", user=user, connect_timeout=3,
                                   autocommit=True)
            return conn, user
        except psycopg.Error:
            continue
    pytest.skip("PostgreSQL on 127.0.0.1:5432 (database test) is not reachable")


@pytest.fixture
def postgres_url():
    """A fresh database per test (created and dropped here), so runs never collide."""
    conn, user = _postgres_admin()
    db = f"search_{uuid.uuid4().hex[:10]}"
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {db}")
    except Exception as exc:  # no CREATEDB right: fall back to unique study names in `test`
        conn.close()
        pytest.skip(f"cannot create a database: {exc}")
    try:
        yield f"postgresql://{user}@127.0.0.1:5432/{db}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        conn.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_and_two_launchers_share_a_postgres_study(postgres_url):
    """`--n-workers 2` on one launcher plus a second launcher (another machine, as far as the
    study can tell): one parent, exactly n_trials finished trials, one run each."""
    name = "pg-workers"
    # Machines share a tracking server; here the test's SQLite store, created before the two
    # launchers start (two processes creating MLflow's tables at once collide).
    tracking.setup_tracking()
    tracking.ensure_experiment(tracking.EXPERIMENTS["search"])
    common = ("--n-trials", "6", "--epochs", "2", "--name", name, "--storage", postgres_url, "--seed", "3",
              "--pruner", "none", "--plots", "false")
    a = subprocess.Popen(_cli(*common, "--n-workers", "2"), env=_env(), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    b = subprocess.Popen(_cli(*common, "--n-workers", "1"), env=_env(), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_a, err_a = a.communicate(timeout=900)
    out_b, err_b = b.communicate(timeout=900)
    assert a.returncode == 0, err_a[-3000:]
    assert b.returncode == 0, err_b[-3000:]

    study = load(name, postgres_url)
    trials = study.get_trials()
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 6
    assert all(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in trials)
    assert all(t.user_attrs.get("surplus") for t in trials if t.state.name == "FAIL")
    assert len({t.user_attrs["pid"] for t in done}) >= 2  # several workers did the work

    (parent,) = parents(name)
    kids = children(parent.info.run_id)
    numbers = [int(r.data.tags["trial_number"]) for r in kids]
    assert len(numbers) == len(set(numbers)) == 6  # no duplicate, none lost
    assert sorted(numbers) == sorted(t.number for t in done)
    assert {r.info.run_id for r in kids} == {t.user_attrs["mlflow_run_id"] for t in done}
    assert running_runs() == []
    optuna.delete_study(study_name=name, storage=factories.resolve_storage_url(postgres_url))


@pytest.mark.slow
def test_mammography_search_runs_the_mammography_study():
    from projects.mammography.config import MammographyConfig

    base = MammographyConfig(image_size=64, epochs=1, batch_size=16, cpu_predict_n=4, log_model=False,
                             progress=False)
    summary = driver.run_search(driver.SearchSettings(
        study="mammography", base=base, n_trials=1, epochs=1, space="arch=resnet18,image_size=64", seed=0,
        settle_s=0.0, plots=False, pruner="median"))
    assert summary.n_complete == 1 and summary.objectives == ["val_f1_macro"]
    (run,) = children(summary.parent_run_id)
    assert run.data.params["arch"] == "resnet18" and run.data.params["image_size"] == "64"
    assert run.data.tags["study"] == "mammography" and "params_count" in run.data.metrics
    assert "val_f1_macro" in run.data.metrics and running_runs() == []


def test_duplicate_configs_are_skipped_not_retrained():
    """A re-proposed config is not trained again (no compute, no MLflow run, not counted), an
    untried one is queued instead, and a space with nothing left untried ends the search."""
    before = {t.ident for t in threading.enumerate()}
    summary = driver.run_search(tiny(name="dupes", n_trials=3, epochs=1, sampler="random",
                                     space="arch=unet|elunet,depth=2,filters=2,lr=0.001,batch_size=8,equalization=none"))
    # No thread outlives the runs it served: MLflow's async queue for stepped images kept three
    # per run for the life of the process, hundreds over a test session, and slowed it down.
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.name.startswith("MLflowAsync")]
    assert not left, left
    assert summary.n_complete == 2 and summary.n_failed == 0  # only two distinct configs exist
    assert summary.n_duplicate >= 1 and "duplicates skipped" in summary.line()
    study = load("dupes")
    trained = {t.number: t for t in study.trials if t.state.name == "COMPLETE"}
    assert sorted(t.params["arch"] for t in trained.values()) == ["elunet", "unet"]
    copies = [t for t in study.trials if t.state.name == "FAIL"]
    assert copies and all(t.user_attrs["duplicate_of"] in trained for t in copies)
    assert all(t.params == trained[t.user_attrs["duplicate_of"]].params for t in copies)
    assert all(not t.user_attrs.get("mlflow_run_id") for t in copies)
    assert len(children(summary.parent_run_id)) == 2 and summary.total_epochs == 2
    assert MlflowClient().get_run(summary.parent_run_id).data.metrics["n_trials_duplicate"] == summary.n_duplicate
    assert copies[-1].user_attrs.get("space_exhausted") is True  # the last copy found nothing untried


@pytest.mark.slow  # >10 s: left out of `make test-fast` (CI runs it)
def test_a_duplicate_queues_an_untried_config():
    """TPE keeps proposing its best cell once it exploits; each copy queues an untried cell,
    so n_trials distinct configs get trained while any are left."""
    space = "arch=unet|elunet,depth=2|3,filters=2|4,lr=0.001,batch_size=8,equalization=none"  # 8 cells
    summary = driver.run_search(tiny(name="fresh", n_trials=6, epochs=1, sampler="tpe:startup=2", space=space))
    study = load("fresh")
    trained = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(trained) == 6 and summary.n_complete + summary.n_pruned == 6
    assert len({admission.config_key(t.params) for t in trained}) == 6  # all distinct
    assert summary.n_duplicate >= 1  # (seed 0: TPE did re-propose, so the queueing was exercised)
    for copy in (t for t in study.trials if t.user_attrs.get("duplicate_of") is not None):
        queued = [t for t in study.trials if t.user_attrs.get("queued_after_duplicate") == copy.number]
        assert len(queued) == 1 and admission.config_key(queued[0].params) != admission.config_key(copy.params)


FIXED = "lr=0.001,batch_size=8,equalization=hist"  # the rest of the default space, held fixed


def test_a_small_discrete_space_is_enumerated_without_repeats():
    space = f"arch=unet|elunet,depth=2,filters=2|4,{FIXED}"  # 4 configs, 4 trials: brute force, each once
    summary = driver.run_search(tiny(name="enumerated", n_trials=4, epochs=1, space=space))
    assert summary.n_complete == 4 and summary.n_duplicate == 0
    study = load("enumerated")
    tried = [(t.params["arch"], t.params["filters"]) for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert sorted(tried) == [("elunet", 2), ("elunet", 4), ("unet", 2), ("unet", 4)]
    assert "BruteForceSampler" in MlflowClient().get_run(summary.parent_run_id).data.params["search.sampler"]


def test_a_search_seeded_with_earlier_runs_does_not_retrain_them():
    space = f"arch=unet|elunet,depth=2,filters=2,{FIXED}"
    first = driver.run_search(tiny(name="earlier", n_trials=2, epochs=1, space=space))
    trained = {r.info.run_id for r in children(first.parent_run_id)}
    assert len(trained) == 2
    # Same space, same training settings: both configs come from the store, none is trained;
    # a named config outside them is queued first and is the only one trained.
    second = driver.run_search(tiny(name="later", n_trials=3, epochs=1, warm_start=True,
                                    space=f"arch=unet|elunet,depth=2,filters=2|4,{FIXED}",
                                    enqueue="arch=elunet,filters=4"))
    kids = children(second.parent_run_id)
    assert len(kids) == 1 and kids[0].data.params["arch"] == "elunet" and kids[0].data.params["filters"] == "4"
    study = load("later")
    seeded = [t for t in study.get_trials() if t.user_attrs.get("warm_start_run")]
    assert {t.user_attrs["warm_start_run"] for t in seeded} == trained
    assert all(t.state.name == "COMPLETE" and t.values for t in seeded)
    assert MlflowClient().get_run(second.parent_run_id).data.tags["warm_started_trials"] == "2"
    # Runs trained with other settings (here: 2 epochs, not 1) are not theirs to reuse.
    third = driver.run_search(tiny(name="other-epochs", n_trials=1, epochs=2, warm_start=True, space=space))
    assert len(children(third.parent_run_id)) == 1
