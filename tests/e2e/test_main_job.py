"""The `main` job end to end (smoke profile): every stage runs, the summary is printed, the
dashboard pages exist and are logged, nothing is left RUNNING. The quick profile's own time
budget is measured by hand (README), not here."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from projects.core import tracking
from projects.core.study import get_study, study_names
from conftest import running_runs

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_main_job_smoke_profile_runs_every_stage(tmp_path):
    out = tmp_path / "dash"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--profile", "smoke", "--dashboard-out", str(out)],
                          cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("1/5 mammography grid", "2/5 pathology grid", "3/5 architecture search",
                  "4/5 registry promotion", "5/5 dashboard"):
        assert f"=== {stage} ===" in proc.stderr, stage
    summary = proc.stdout
    assert "main (smoke) finished in" in summary
    assert "baseline" in summary and "Jaccard" in summary
    assert "search: " in summary and "registry: " in summary
    assert f"dashboard: {out / 'index.html'}" in summary
    assert "mlflow ui --backend-store-uri" in summary
    assert {"index.html", "mammography.html", "pathology.html"} <= {p.name for p in out.iterdir()}

    client = MlflowClient()
    main_exp = client.get_experiment_by_name(tracking.EXPERIMENTS["main"])
    (main_run,) = client.search_runs([main_exp.experiment_id])
    assert main_run.info.status == "FINISHED"
    assert main_run.data.metrics["total_s"] > 0 and "mammography_s" in main_run.data.metrics
    dash_runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                   filter_string=f"tags.{tracking.TAG_RUN_KIND} = 'dashboard'")
    assert dash_runs, "dashboard run not logged"
    logged = {a.path for a in client.list_artifacts(dash_runs[0].info.run_id, "dashboard")}
    assert "dashboard/index.html" in logged
    # every trained model of the job logged both CPU runtimes
    patho = client.search_runs([client.get_experiment_by_name(get_study("pathology").experiment).experiment_id],
                               "attributes.status = 'FINISHED' and metrics.test_jaccard >= 0")
    assert patho and all("cpu_total_s_onnx" in r.data.metrics for r in patho)
    assert running_runs() == []
