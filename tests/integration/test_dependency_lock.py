"""The environment is the lock, and the declared dependencies are the code's imports.

`scripts/install.sh` installs requirements/lock.txt (written by `scripts/lock.sh`) exactly:
every distribution at its pinned version, nothing more. These tests hold the running
interpreter's environment to that (importlib.metadata: no network, under a second), and
hold pyproject.toml to the code: every third-party module that the source imports comes
from a declared direct dependency (the runtime code's from `dependencies`, the tests' from
those or the `test` extra), and every declared dependency is imported or has a reason here.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from importlib.metadata import distributions, packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "lock.txt"
PYPROJECT_TOML = tomllib.loads((REPO / "pyproject.toml").read_text())
PYPROJECT = PYPROJECT_TOML["project"]
# The installed packages (as pyproject.toml lists them: projects*, registry*, ...) and scripts/.
RUNTIME_DIRS = tuple(sorted({p.split(".")[0].rstrip("*") for p in
                             PYPROJECT_TOML["tool"]["setuptools"]["packages"]["find"]["include"]}
                            | {"scripts"}))
TEST_DIRS = ("tests",)
# Comes with the venv, never installed from requirements. setuptools and wheel are locked when
# present: torch requires setuptools at run time, so it would drift unpinned.
NOT_LOCKED = {"pip"}
# Declared but never imported by name: each needs a reason, or it goes.
USED_WITHOUT_IMPORT = {
    "torchvision": "pinned beside torch (CPU build); timm and smp import it, projects/core/torchvision_compat.py shims it",
    "onnxscript": "torch.onnx.export(dynamo=True), the fallback exporter in projects/core/onnx_runtime.py",
    "psutil": "MLflow samples CPU and memory with it (system metrics of training runs, projects/core/runtime.py)",
    "psycopg": "SQLAlchemy's default driver for postgresql:// URLs (MLflow and Optuna stores)",
    "optuna-dashboard": "the optuna-dashboard command users start to watch a search",
    "pytest-timeout": "pytest plugin (the timeout setting in pyproject.toml)",
    "import-linter": "the lint-imports command (import contracts)",
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec).group(1))


def read_lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements/lock.txt: not name==version: {line!r}"
            assert norm(name) not in pins, f"requirements/lock.txt lists {name} twice"
            pins[norm(name)] = version.strip()
    return pins


def installed() -> dict[str, set[str]]:
    found = defaultdict(set)
    for dist in distributions():
        if dist.metadata["Name"]:
            found[norm(dist.metadata["Name"])].add(dist.version)
    return found


# --- the lock ---------------------------------------------------------------------------
def test_lock_is_current_with_pyproject_and_constraints():
    done = subprocess.run(["bash", str(REPO / "scripts" / "lock.sh"), "--check"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr


def test_lock_pins_cpu_torch_and_no_cuda():
    pins = read_lock()
    assert pins["torch"].endswith("+cpu"), pins["torch"]
    assert not [n for n in pins if n.startswith("nvidia-")]
    for constraint in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        constraint = constraint.split("#")[0].strip()
        if "==" in constraint:
            name, version = constraint.split("==")
            assert pins[norm(name)].split("+")[0] == version.strip(), constraint


def _lock_sync():
    """scripts/lock_sync.py, the rule scripts/install.sh syncs the environment by."""
    spec = importlib.util.spec_from_file_location("lock_sync", REPO / "scripts" / "lock_sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_environment_is_exactly_the_lock():
    # A CUDA install (scripts/install.sh --cuda) is the lock with torch/torchvision as its build.
    build = _lock_sync().build_of(next(iter(installed()["torch"])))
    pins, also = _lock_sync().expected(read_lock(), "cpu" if build == "pypi" else build)
    have = installed()
    project = norm(PYPROJECT["name"])
    wrong = {n: f"lock {v}, installed {sorted(have.get(n, [])) or 'nothing'}"
             for n, v in pins.items() if have.get(n) != {v}}
    unlocked = {n: sorted(v) for n, v in have.items()
                if n not in pins and n not in NOT_LOCKED | also | {project}}
    assert not wrong, f"installed versions differ from requirements/lock.txt (run scripts/install.sh): {wrong}"
    assert not unlocked, f"installed but not in requirements/lock.txt (run scripts/lock.sh): {unlocked}"


# --- where torch comes from ---------------------------------------------------------------
def _plan(*args: str, local_wheels: bool) -> list[str]:
    """`scripts/install.sh --plan`: the pip commands it would run, resolved offline. Without
    local wheels pip's whole configuration is isolated (no config file, no PIP_* variables),
    as on a machine that has only the public indexes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    if local_wheels:
        env = dict(os.environ)
    else:
        env["PIP_CONFIG_FILE"] = os.devnull
    env["PYTHON"] = sys.executable
    done = subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "--plan", *args],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_without_a_local_wheel_torch_comes_from_pytorchs_cpu_index():
    torch_step = _plan(local_wheels=False)[0].split()
    assert torch_step[:2] == ["pip", "install"]
    assert "--extra-index-url" in torch_step, torch_step
    assert torch_step[torch_step.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert f"torch=={read_lock()['torch']}" in torch_step  # the locked CPU build, exactly
    # and the script says what it would do next: the project, then the check against the lock
    assert _plan(local_wheels=False)[1:] == ["pip install -e .[test]",
                                             "python scripts/lock_sync.py requirements/lock.txt cpu"]


def test_a_configured_local_wheel_is_used_as_is():
    config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                            text=True, timeout=60).stdout
    if "find-links" not in config:
        pytest.skip("pip has no local wheel folder configured here")
    assert _plan(local_wheels=True)[0] == f"pip install torch=={read_lock()['torch']}"


def test_cuda_install_takes_torch_and_torchvision_from_the_cuda_index():
    base = {n: read_lock()[n].split("+")[0] for n in ("torch", "torchvision")}
    torch_step = _plan("--cuda=cu126", local_wheels=False)[0].split()
    assert torch_step == ["pip", "install", "--extra-index-url", "https://download.pytorch.org/whl/cu126",
                          f"torch=={base['torch']}+cu126", f"torchvision=={base['torchvision']}+cu126"]
    assert _plan("--cuda", local_wheels=False)[2].endswith(" cu128")
    bad = subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "--plan", "--gpu"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown option --gpu" in bad.stderr


def test_a_cuda_environment_is_the_lock_with_the_cuda_build():
    sync = _lock_sync()
    lock = read_lock()
    pins, also = sync.expected(lock, "cu128")
    assert pins["torch"] == lock["torch"].split("+")[0] + "+cu128"
    assert pins["torchvision"] == lock["torchvision"].split("+")[0] + "+cu128"
    assert {n: v for n, v in pins.items() if n not in ("torch", "torchvision")} == {
        n: v for n, v in lock.items() if n not in ("torch", "torchvision")}
    assert not also & set(lock)  # only what torch itself requires beyond the lock
    assert sync.expected(lock, "cpu") == (lock, set())


def test_logged_models_name_an_installable_torch():
    from projects.core import artifacts

    reqs = artifacts.model_pip_requirements()
    torch_pin = next(r for r in reqs if r.startswith("torch=="))
    assert "+" not in torch_pin, torch_pin  # PyPI and PyTorch's indexes both serve this name
    assert torch_pin == f"torch=={read_lock()['torch'].split('+')[0]}"
    build = read_lock()["torch"].partition("+")[2]
    assert reqs[0] == f"--extra-index-url https://download.pytorch.org/whl/{build}"
    assert artifacts.TORCH_INDEX_BASE in (REPO / "scripts" / "torch_build.sh").read_text()


def test_conda_and_mlflow_environments_install_the_lock():
    """conda.yaml (conda users) and python_env.yaml (`mlflow run` with virtualenv/uv) install
    what scripts/install.sh installs: the lock, with torch from PyTorch's CPU index."""
    import yaml

    python_env = yaml.safe_load((REPO / "python_env.yaml").read_text())
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_lists = [python_env["dependencies"],
                 next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))]
    build = read_lock()["torch"].partition("+")[2]
    for deps in pip_lists:
        assert deps == [f"--extra-index-url https://download.pytorch.org/whl/{build}",
                        "-c requirements/constraints.txt", "-c requirements/lock.txt", "-e ."]
    assert f"python={python_env['python']}" in conda["dependencies"]
    assert python_env["python"] in PYPROJECT["requires-python"]


# --- declared dependencies against the imports -------------------------------------------
def _python_sources(top: str):
    for path in sorted((REPO / top).rglob("*.py")):
        yield path, path.read_text()
    for path in sorted((REPO / top).rglob("*.sh")):  # Python run from shell heredocs
        for body in re.findall(r"<<-?\s*'?(\w+)'?[^\n]*\n(.*?)\n\s*\1\s*$", path.read_text(), re.S | re.M):
            yield path, body[1]


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("importorskip", "import_module")):
            yield node.args[0].value.split(".")[0]


def _first_party() -> set[str]:
    names = {p.name for p in REPO.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {p.stem for top in RUNTIME_DIRS + TEST_DIRS for p in (REPO / top).rglob("*.py")}
    names |= {p.parent.name for top in RUNTIME_DIRS + TEST_DIRS for p in (REPO / top).rglob("__init__.py")}
    return names | set(TEST_DIRS)


def third_party_imports(tops) -> dict[str, set[str]]:
    """module -> files importing it, for every non-stdlib, non-project module."""
    skip = set(sys.stdlib_module_names) | _first_party() | {"__future__"}
    found = defaultdict(set)
    for top in tops:
        for path, text in _python_sources(top):
            try:
                tree = ast.parse(text)
            except SyntaxError:
                if path.suffix == ".py":
                    raise
                continue  # a heredoc that is not Python
            for module in _imports(tree):
                if module not in skip:
                    found[module].add(str(path.relative_to(REPO)))
    return found


def declared(extra: str | None = None) -> set[str]:
    specs = list(PYPROJECT["dependencies"])
    if extra:
        specs += PYPROJECT["optional-dependencies"][extra]
    return {requirement_name(s) for s in specs}


def _undeclared(tops, allowed: set[str]) -> dict[str, str]:
    providers = packages_distributions()
    problems = {}
    for module, files in sorted(third_party_imports(tops).items()):
        dists = {norm(d) for d in providers.get(module, [])}
        if not dists:
            problems[module] = f"no installed distribution provides it (imported by {sorted(files)})"
        elif not dists & allowed:
            problems[module] = f"from {sorted(dists)}, not declared (imported by {sorted(files)})"
    return problems


def test_runtime_imports_come_from_declared_dependencies():
    problems = _undeclared(RUNTIME_DIRS, declared())
    assert not problems, f"add to pyproject.toml's dependencies (then scripts/lock.sh): {problems}"


def test_test_imports_come_from_declared_dependencies():
    problems = _undeclared(TEST_DIRS, declared("test"))
    assert not problems, f"add to pyproject.toml's dependencies or the test extra (then scripts/lock.sh): {problems}"


def test_every_declared_dependency_is_imported_or_has_a_reason():
    providers = packages_distributions()
    imported = {norm(d) for m in third_party_imports(RUNTIME_DIRS + TEST_DIRS) for d in providers.get(m, [])}
    unused = sorted(declared("test") - imported - set(USED_WITHOUT_IMPORT))
    assert not unused, f"declared but never imported: {unused} (drop them, or give the reason in USED_WITHOUT_IMPORT)"
