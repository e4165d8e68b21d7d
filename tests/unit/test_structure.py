"""The platform's structure, checked: layers without cycles (the import contract), study names
only where studies live, configuration declared once (every MLproject parameter is a config
setting with the same default), and no file or function grown past its size budget."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from projects.core import config as cfg
from projects.core.study import all_studies, get_study

REPO = Path(__file__).resolve().parents[2]
PLATFORM = ("projects", "registry", "dashboards", "benchmarks", "pipeline", "tools")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 420, 60  # the budget: ~400 and ~60 lines
# Kept on purpose, with the reason (the closing note of the restructuring lists them too).
LONG_FILES = {
    "tools/loadtest.py": "the tracking-server load test is one self-contained tool (workers, faults, report)",
    "benchmarks/runtimes.py": "one benchmark section: eight runtime variants, each prepare/load pair short",
    "projects/embedded/mias.py": "the MIAS-format generator: lesion drawing per class",
}
LONG_FUNCTIONS = {
    "benchmarks/__main__.py:main": "the benchmark run's lifecycle: parent run, sections, tables, markdown",
    "benchmarks/runtimes.py:_measure_model": "one model's measurement protocol, step by step",
    "benchmarks/runtimes.py:_section": "one report table builder",
    "projects/pathology/bench_pipeline.py:run": "one benchmark section's measurement and report",
    "projects/pathology/bench_tracking.py:run": "one benchmark section: two tracked loops and their report",
    "tools/loadtest.py:run_worker": "one load-test worker's loop",
    "tools/loadtest.py:verify": "the load test's verification report",
}


def python_files():
    for top in PLATFORM:
        yield from sorted((REPO / top).rglob("*.py"))


def test_import_contract_holds():
    """core -> studies -> search / registry / dashboards -> benchmarks -> pipeline; no cycles."""
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_study_is_named_outside_its_folder():
    """A study's name appears only in its own package, the study registry (pyproject entry
    points), policies, tests and docs: the platform looks studies up, never names them."""
    names = [s.name for s in all_studies()]
    word = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    found = []
    for path in python_files():
        rel = path.relative_to(REPO).as_posix()
        if any(rel.startswith(f"projects/{n}/") for n in names):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if word.search(node.value):
                    found.append(f"{rel}:{node.lineno}: {node.value[:60]!r}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                if any(word.search(m) for m in mods):
                    found.append(f"{rel}:{node.lineno}: import {mods}")
    assert not found, "\n".join(found)


def _mlproject() -> dict:
    return yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]


def _same(param_default, value) -> bool:
    if isinstance(value, bool):
        return str(param_default).lower() == str(value).lower()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(param_default) == float(value)
    if isinstance(value, list):
        return str(param_default) == ",".join(map(str, value))
    return str(param_default) == str(value)


# Settings that are deliberately not MLproject parameters of an entry point, with the reason.
# (Settings declared with cli_flag=False are code-only knobs and never parameters.) The grid
# entry points carry every setting of the grid itself and the base settings a grid is usually
# varied by; any other base setting stays reachable through `python -m projects.<study> grid`.
NOT_PARAMETERS: dict[str, str] = {}


def _entry_settings(study, entry: str) -> tuple[dict, dict, set[str]]:
    """(settings the entry point's command accepts, their defaults, those it must declare)."""
    settings = {n: leaf for n, leaf in study.config_cls.settings().items() if leaf.cli}
    defaults = {n: leaf.default for n, leaf in settings.items()}
    required = set(settings)
    if entry.endswith("_grid"):  # the grid's own settings, and its base config's
        own = {n: leaf for n, leaf in cfg.leaf_map(study.grid_cls).items() if leaf.cli and n != "base"}
        settings |= own
        defaults |= {n: getattr(study.grid_cls(), n) for n in own}
        required = set(own)
    return settings, defaults, required - set(NOT_PARAMETERS)


@pytest.mark.parametrize("study_name", ["mammography", "pathology"])
@pytest.mark.parametrize("suffix", ["", "_grid"])
def test_mlproject_parameters_and_config_settings_match_both_ways(study_name, suffix):
    """Every MLproject parameter is a setting with the same default, passed to the command; and
    every setting is a parameter (or listed in NOT_PARAMETERS with its reason), so what a run
    can be configured with is what `mlflow run` can reach."""
    study = get_study(study_name)
    entry = study.name + suffix
    point = _mlproject()[entry]
    settings, defaults, required = _entry_settings(study, entry)
    for name, spec in point["parameters"].items():
        assert name in settings, f"MLproject {entry}: parameter {name} is not a setting of {study.name}"
        assert _same(spec["default"], defaults[name]), \
            f"MLproject {entry}: {name} defaults to {spec['default']!r}, the config to {defaults[name]!r}"
        assert f"--{name.replace('_', '-')} {{{name}}}" in point["command"], f"{entry}: {name} not passed"
    missing = sorted(required - set(point["parameters"]))
    assert not missing, f"MLproject {entry}: settings that `mlflow run` cannot reach: {missing}"


def test_every_exception_to_the_parameter_rule_is_a_setting():
    known = {n for s in all_studies() for n in s.config_cls.settings()}
    assert set(NOT_PARAMETERS) <= known, set(NOT_PARAMETERS) - known


def _function_lengths(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1, node.lineno


def test_files_and_functions_stay_small():
    long_files, long_functions = [], []
    for path in python_files():
        rel = path.relative_to(REPO).as_posix()
        n = len(path.read_text().splitlines())
        if n > MAX_FILE_LINES and rel not in LONG_FILES:
            long_files.append(f"{rel}: {n} lines")
        for name, length, line in _function_lengths(path):
            if length > MAX_FUNCTION_LINES and f"{rel}:{name}" not in LONG_FUNCTIONS:
                long_functions.append(f"{rel}:{line} {name}: {length} lines")
    assert not long_files and not long_functions, "\n".join(long_files + long_functions)


def test_every_exception_to_the_size_budget_is_still_needed():
    """An exception whose file or function has come back under the budget is removed."""
    stale = [f for f in LONG_FILES if len((REPO / f).read_text().splitlines()) <= MAX_FILE_LINES]
    lengths: dict[str, int] = {}
    for path in python_files():
        for name, n, _ in _function_lengths(path):  # two functions may share a name: the longest counts
            key = f"{path.relative_to(REPO).as_posix()}:{name}"
            lengths[key] = max(n, lengths.get(key, 0))
    stale += [f for f in LONG_FUNCTIONS if lengths.get(f, 0) <= MAX_FUNCTION_LINES]
    assert not stale, f"no longer over the budget, drop them from the lists: {stale}"


def test_test_modules_have_unique_names():
    """pytest imports test files by basename (rootdir mode, no __init__.py): two files of the
    same name in different folders stop the whole suite at collection."""
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
