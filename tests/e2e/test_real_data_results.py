"""The real-data results command, on a MIAS-format copy of the embedded films (the public
sets are not needed to check the wiring: --quick trains 2 epochs, one seed)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from pipeline import real_data
from projects.core import tracking
from projects.embedded import ensure_mias

from conftest import running_runs


@pytest.mark.slow
def test_quick_roi_block_writes_its_section_with_intervals_and_promotes(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(ensure_mias(), root / "mias")
    out = tmp_path / "REAL_DATA.md"
    out.write_text("\n".join(real_data.HEADER + ["## monuseg", "", "kept from an earlier run", ""]))
    assert real_data.main(["--data-root", str(root), "--blocks", "mias-roi", "--quick", "true",
                           "--out", str(out)]) == 0
    text = out.read_text()
    got = real_data.sections(text)
    assert list(got) == ["mias-roi", "monuseg", "Registry"]
    assert "kept from an earlier run" in got["monuseg"]
    cells = [line.split("|") for line in got["mias-roi"].splitlines() if line.startswith("| ")]
    rows = [c for c in cells if c[2].strip().isdigit()]  # task, seed, metric [interval], ...
    assert {c[1].strip() for c in rows} == {"roi_normal_abnormal", "roi_7class", "roi_benign_malignant"}
    assert all("[" in c[3] and "]" in c[3] for c in rows)  # every balanced accuracy has its interval
    assert "promote" in got["Registry"]
    # every run finished, one parent per task with its children
    parents = MlflowClient().search_runs([tracking.ensure_experiment("mammography")],
                                         "tags.mlflow.runName LIKE 'real-mias-roi-%'")
    assert len(parents) == 3 and running_runs() == []


def test_an_unknown_block_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "mias").mkdir()
    out = subprocess.run([sys.executable, "-m", "pipeline.real_data", "--data-root", str(tmp_path),
                          "--blocks", "nope"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--blocks" in lines[0] and "nope" in lines[0] and "mias-roi" in lines[0]
