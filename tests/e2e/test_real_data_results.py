"""The real-data results command, on a MIAS-format copy of the embedded films (the public
sets are not needed to check the wiring: --quick trains 2 epochs, one seed): a job killed
mid-way resumes from its records without training a finished unit again, and the page is
rendered from the records."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from pipeline import real_data, registry_records
from projects.core import tracking
from projects.core.records import RecordStore
from projects.embedded import ensure_mias

from conftest import running_runs


def _units_by_name(exp: str) -> dict[str, list]:
    client = MlflowClient()
    out: dict[str, list] = {}
    for run in client.search_runs([tracking.ensure_experiment(exp)], "tags.mlflow.parentRunId != ''"):
        out.setdefault(run.info.run_name, []).append(run.info.status)
    return out


@pytest.mark.slow
def test_a_killed_job_resumes_without_retraining_a_finished_unit(tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(ensure_mias(), root / "mias")
    records, out = tmp_path / "records", tmp_path / "REAL_DATA.md"
    args = ["--data-root", str(root), "--blocks", "mias-roi", "--quick", "true", "--records", str(records),
            "--out", str(out)]
    store, registry = RecordStore(records / "mias-roi"), RecordStore(records / registry_records.REGISTRY)
    job = subprocess.Popen([sys.executable, "-m", "pipeline.real_data", *args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 600
        while not registry.all() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert store.all(), "the first unit never wrote its record"
    finally:
        job.send_signal(signal.SIGKILL)  # mid-way through the second unit: nothing can clean up
        job.wait(60)
    first = store.all()
    assert len(first) == 1 and first[0].status == "FINISHED"
    # promote ran after the unit, not at the job's end: the killed job kept what it decided
    assert f"mammography-roi_{first[0].settings['task']}" in {r.unit for r in registry.all()}
    assert first[0].holdout["balanced_accuracy"] is not None and first[0].commit
    # the holdout result by patient is kept: later pages pair models on it without the models
    by_unit = first[0].holdout_units
    assert by_unit["kind"].startswith("classification:") and len(by_unit["units"]) == first[0].holdout["units"]

    assert real_data.main(args) == 0  # the same command again: resumes
    recs = {r.unit: r for r in store}
    assert len(recs) == 3  # one record per task (quick: one seed)
    log = capsys.readouterr().err  # the log says what each unit measured on the holdout as it finishes
    assert "1 already recorded, 2 to measure" in log
    recorded = [line for line in log.splitlines() if " recorded after " in line]
    assert len(recorded) == 2 and all("holdout balanced_accuracy" in line for line in recorded)
    assert {u for u in recs if u != first[0].unit} == {u for u in recs for line in recorded if f" {u} recorded" in line}
    assert recs[first[0].unit].run_id == first[0].run_id  # the finished unit was not trained again
    runs = _units_by_name("mammography")
    assert runs[first[0].unit] == ["FINISHED"]
    assert all(statuses.count("FINISHED") == 1 for statuses in runs.values())
    assert running_runs() == []  # the killed unit's run was closed as FAILED, not left RUNNING
    # every unit recorded: no checkpoint of a unit in progress is left behind
    assert not list(real_data.checkpoint_dir("mias-roi").glob("*.pt"))

    got = real_data.sections(out.read_text())
    assert list(got) == ["mias-roi", "mias-film", "monuseg", "monuseg-searched", "monuseg-augmented", "monuseg-more-training",
                         "search-roi-normal-abnormal",
                         "search-roi-7class", "search-monuseg", "search-monuseg-augment", "search-monuseg-colour",
                         "Registry"]
    assert "Not measured yet" in got["monuseg"] and "Not measured yet" in got["mias-film"]
    rows = [c.split("|") for c in got["mias-roi"].splitlines() if c.startswith("| roi_")]
    assert {c[1].strip() for c in rows} == {"roi_normal_abnormal", "roi_7class", "roi_benign_malignant"}
    assert all("[" in c[3] and "[" in c[8] for c in rows)  # test-split and holdout intervals
    assert "promote" in got["Registry"]

    before = out.read_text()
    out.unlink()
    assert real_data.main(["--render", "--quick", "true", "--records", str(records), "--out", str(out)]) == 0  # no data
    assert out.read_text() == before


def test_an_unknown_block_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "mias").mkdir()
    out = subprocess.run([sys.executable, "-m", "pipeline.real_data", "--data-root", str(tmp_path),
                          "--blocks", "nope"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--blocks" in lines[0] and "nope" in lines[0] and "mias-roi" in lines[0]


@pytest.mark.slow
def test_a_real_data_search_resumes_from_its_journal_and_measures_its_winner(tmp_path):
    """pipeline/real_search.py on a MIAS-format copy of the embedded films (quick: 2 trials of 1
    epoch, one seed of the winner): the search's Optuna study is a journal beside the records,
    the winner is trained as a record scored on the holdout, and a second run trains nothing."""
    from pipeline import real_search

    root = tmp_path / "data"
    shutil.copytree(ensure_mias(), root / "mias")
    records, out = tmp_path / "records", tmp_path / "REAL_DATA.md"
    args = ["--data-root", str(root), "--searches", "search-roi-normal-abnormal", "--quick", "true",
            "--records", str(records), "--out", str(out)]
    assert real_search.main(args) == 0
    _, spec = real_search.searches(root, quick=True)["search-roi-normal-abnormal"]
    study = real_search.load(records, spec)
    assert len(real_search.finished_trials(study)) == 2 and (records / "searches" / f"{spec.name}.journal").is_file()
    winner = real_search.winner(records, spec)
    assert winner == study.best_trial.params
    (rec,) = RecordStore(records / spec.winner_block(winner).name).all()
    assert rec.status == "FINISHED" and rec.holdout["balanced_accuracy"] is not None
    assert all(rec.settings[k] == v for k, v in winner.items() if k in rec.settings)
    got = real_data.sections(out.read_text())[spec.name]
    assert "2 of 2 trials" in got and "| roi_normal_abnormal | 0 |" in got
    assert running_runs() == []
    # the winner's seed was a registry candidate: promote ran after it, the registry section shows it
    (registry,) = RecordStore(records / registry_records.REGISTRY).all()
    assert registry.unit == "mammography-roi_normal_abnormal"
    assert "mammography-roi_normal_abnormal" in real_data.sections(out.read_text())["Registry"]

    assert real_search.main(args) == 0  # again: the journal and the record say it is done
    assert len(real_search.finished_trials(real_search.load(records, spec))) == 2
    assert [r.run_id for r in RecordStore(records / spec.winner_block(winner).name).all()] == [rec.run_id]
