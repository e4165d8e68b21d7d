"""Under `mlflow run` the launcher's run (MLFLOW_RUN_ID) is adopted, and the runs nested in it
are new child runs: the first one used to resume the launcher's run itself (a grid's first
cell and the benchmark's first section were logged into their parent)."""
from __future__ import annotations

import os

import mlflow
from mlflow.tracking import MlflowClient

from projects.core import tracking


def test_nested_runs_of_an_adopted_launcher_run_are_children(monkeypatch):
    launcher = MlflowClient().create_run(experiment_id="0").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launcher)
    with tracking.study_run("some-study", "grid") as parent:
        assert parent.info.run_id == launcher
        children = []
        for name in ("cell-1", "cell-2"):
            with mlflow.start_run(run_name=name, nested=True) as child:
                children.append(child.info.run_id)
    assert launcher not in children and len(set(children)) == 2
    for run_id in children:
        assert MlflowClient().get_run(run_id).data.tags["mlflow.parentRunId"] == launcher
    assert os.environ["MLFLOW_RUN_ID"] == launcher  # still there for what reads it after the run
    assert MlflowClient().get_run(launcher).info.status == "FINISHED"
