"""MLflow and Optuna through their public APIs only: a private one (a `_name`, or a module
outside the documented ones) is reached through projects.core.private_api.private_attr, with
its reason and the upstream issue it waits for, and fails loudly on an untested version."""
from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

import optuna
import pytest

from projects.core import private_api
from projects.search.warm import _inside

REPO = Path(__file__).resolve().parents[2]
CODE = ("projects", "registry", "dashboards", "benchmarks", "pipeline", "tools", "scripts", "tests")
# The modules their reference documentation lists (mlflow.org/docs/latest/api_reference,
# optuna.readthedocs.io/en/stable/reference); anything deeper is internal.
PUBLIC = {
    "mlflow": {"mlflow", "mlflow.tracking", "mlflow.client", "mlflow.entities", "mlflow.entities.model_registry",
               "mlflow.exceptions", "mlflow.models", "mlflow.pytorch", "mlflow.pyfunc", "mlflow.artifacts",
               "mlflow.data", "mlflow.projects", "mlflow.environment_variables", "mlflow.config",
               "mlflow.onnx", "mlflow.deployments", "mlflow.metrics",
               # documented: mlflow.types (ColSpec, Schema, ParamSpec; mlflow.types.schema.Array) and
               # mlflow.server.get_app_client, the door to the basic-auth app's client
               "mlflow.types", "mlflow.types.schema", "mlflow.server"},
    "optuna": {"optuna", "optuna.trial", "optuna.study", "optuna.storages", "optuna.storages.journal",
               "optuna.samplers", "optuna.pruners", "optuna.distributions", "optuna.visualization",
               "optuna.exceptions", "optuna.importance", "optuna.logging", "optuna.artifacts"},
}


def _private(module: str, names=()) -> str | None:
    top = module.split(".")[0]
    if top not in PUBLIC:
        return None
    if module not in PUBLIC[top] or any(part.startswith("_") for part in module.split(".")):
        return f"module {module}"
    bad = [n for n in names if n.startswith("_")]
    return f"{module}.{bad[0]}" if bad else None


ALL_PUBLIC = {m for modules in PUBLIC.values() for m in modules}


@functools.lru_cache(maxsize=None)
def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _private_chain(dotted: str) -> str | None:
    """mlflow.utils.x and optuna.distributions._y are internal; mlflow.entities.Metric.x and
    optuna.trial.TrialState.COMPLETE are public (a public module, then its attributes)."""
    parts = dotted.split(".")
    i = 1
    while i < len(parts) and ".".join(parts[:i + 1]) in ALL_PUBLIC:
        i += 1
    if i == len(parts):
        return None
    name = ".".join(parts[:i + 1])
    if parts[i].startswith("_"):
        return name
    return f"module {name}" if _is_module(name) else None


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def private_uses(path: Path) -> list[str]:
    tree, found = ast.parse(path.read_text()), []
    for node in ast.walk(tree):
        hit = None
        if isinstance(node, ast.Import):
            hit = next(filter(None, (_private(a.name) for a in node.names)), None)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            hit = _private(node.module, [a.name for a in node.names])
        elif isinstance(node, ast.Attribute) and not isinstance(getattr(node, "ctx", None), ast.Store):
            dotted = _dotted(node)
            if dotted and dotted.split(".")[0] in PUBLIC:
                hit = _private_chain(dotted)
        if hit:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {hit}")
    return found


def test_no_private_mlflow_or_optuna_api_outside_the_guard():
    found = [use for top in CODE for path in sorted((REPO / top).rglob("*.py"))
             if path.name != "test_public_apis.py" for use in private_uses(path)]
    assert not found, ("private MLflow/Optuna API used directly; use a public one, or reach it through "
                       "projects.core.private_api.private_attr with the reason:\n" + "\n".join(found))


def test_the_check_finds_each_kind_of_private_use():
    for source, public in (("from mlflow.utils.search_utils import SearchUtils", False),
                           ("from mlflow.projects import _parse_kubernetes_config", False),
                           ("import mlflow.system_metrics.system_metrics_monitor", False),
                           ("import mlflow\nx = mlflow.utils.rest_utils.http_request", False),
                           ("import optuna\nx = optuna.distributions._convert_old_distribution_to_new_distribution", False),
                           ("from mlflow.entities import Metric, RunStatus", True),
                           ("import mlflow\nmlflow.log_metric('a', 1.0)", True),
                           ("from optuna.trial import TrialState", True)):
        probe = REPO / "tests" / "unit" / "_probe_public_apis.py"
        try:
            probe.write_text(source)
            assert (private_uses(probe) == []) is public, source
        finally:
            probe.unlink()


def test_every_guarded_private_use_gives_its_reason_and_upstream_issue():
    calls = []
    for top in CODE:
        for path in sorted((REPO / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "private_attr":
                    kw = {k.arg: k.value for k in node.keywords}
                    calls.append(path.name)
                    assert ast.unparse(kw.get("reason", ast.Constant(""))).strip("'\" "), f"{path}:{node.lineno}"
                    waits_for = ast.unparse(kw.get("waits_for", ast.Constant("")))
                    assert waits_for.strip("'\" "), f"{path}:{node.lineno}: no waits_for"
                    if "tests" not in path.relative_to(REPO).parts:  # the platform's own: an issue
                        assert "mlflow/mlflow#" in waits_for, f"{path}:{node.lineno}: name the upstream issue"
    assert {"http_retry.py", "policy.py"} <= set(calls)


def test_an_untested_version_stops_with_the_reason(monkeypatch):
    assert private_api.private_attr("mlflow.utils.search_utils", "SearchUtils", dist="mlflow",
                                    reason="r", waits_for="w").__name__ == "SearchUtils"
    monkeypatch.setitem(private_api.TESTED, "mlflow", "0.1")
    with pytest.raises(private_api.PrivateApiVersionError) as err:
        private_api.private_attr("mlflow.utils.search_utils", "SearchUtils", dist="mlflow",
                                 reason="no public filter parser", waits_for="mlflow/mlflow#6410")
    assert "no public filter parser" in str(err.value) and "mlflow/mlflow#6410" in str(err.value)
    assert "checked with mlflow 0.1.x only" in str(err.value)


@pytest.mark.parametrize("dist, value, inside", [
    (optuna.distributions.FloatDistribution(0.0, 1.0), 0.5, True),
    (optuna.distributions.FloatDistribution(0.0, 1.0), 1.5, False),
    (optuna.distributions.FloatDistribution(0.0, 1.0, step=0.25), 0.75, True),
    (optuna.distributions.FloatDistribution(0.0, 1.0, step=0.25), 0.3, False),
    (optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True), 1e-3, True),
    (optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True), 1.0, False),
    (optuna.distributions.IntDistribution(1, 9, step=2), 3, True),
    (optuna.distributions.IntDistribution(1, 9, step=2), 4, False),
    (optuna.distributions.IntDistribution(1, 9), 2.5, False),
    (optuna.distributions.IntDistribution(1, 9), float("nan"), False),
    (optuna.distributions.CategoricalDistribution(["unet", "elunet"]), "elunet", True),
    (optuna.distributions.CategoricalDistribution(["unet", "elunet"]), "resnet", False),
    (optuna.distributions.FloatDistribution(0.0, 1.0), "x", False),
])
def test_a_warm_start_value_is_inside_the_search_space_as_optuna_samples_it(dist, value, inside):
    assert _inside(dist, value) is inside
