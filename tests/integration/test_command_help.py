"""`--help` of every command the platform has: each module run as `python -m <module>` (found by
its `if __name__ == "__main__"`) and each study's subcommands (`run`, `grid`), exits 0 and
prints a usage line; every flag with a fixed set of values lists them.

The modules run in this process (runpy, as `python -m` runs them) rather than in a subprocess
each: twenty fresh interpreters importing torch would cost minutes on two cores.
"""
from __future__ import annotations

import ast
import contextlib
import io
import runpy
import sys
from pathlib import Path

import pytest

from projects.core import config, entry
from projects.core.study import all_studies

REPO = Path(__file__).resolve().parents[2]
# runpy warns that a module it runs was imported before (by its package): harmless for --help.
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
PLATFORM = ("projects", "registry", "dashboards", "benchmarks", "pipeline", "tools")
# Modules with a __main__ block that is not a command, with the reason.
NOT_COMMANDS = {"projects.core.onnx_runtime": "a smoke check of the ONNX timing protocol, no options"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__main__" else parts)


def _has_main_block(path: Path) -> bool:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return True
    return False


def commands() -> list[tuple[str, ...]]:
    mains = {_module_name(p): p for top in PLATFORM for p in (REPO / top).rglob("*.py")
             if p.name == "__main__.py" or _has_main_block(p)}
    out = []
    for module in sorted(set(mains) - set(NOT_COMMANDS)):
        out.append((module,))
        if "entry.main_for" in mains[module].read_text():  # a study's command: python -m <it> [run|grid]
            out += [(module, "run"), (module, "grid")]
    return out


def run_help(module: str, *sub: str) -> tuple[int, str]:
    argv, out = sys.argv, io.StringIO()
    sys.argv = [module, *sub, "--help"]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(module, run_name="__main__", alter_sys=False)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue()


def test_every_command_is_found():
    found = {c[0] for c in commands()}
    assert {"benchmarks", "dashboards", "pipeline", "registry.promote", "projects.search"} <= found, found
    grids = {c[0] for c in commands() if c[1:] == ("grid",)}
    assert {f"projects.{s.name}" for s in all_studies() if (REPO / "projects" / s.name).is_dir()} <= grids, grids


@pytest.mark.parametrize("command", commands(), ids=" ".join)
def test_help_of_every_command_exits_0_with_usage(command):
    code, text = run_help(*command)
    assert code == 0, f"python -m {' '.join(command)} --help exited {code}:\n{text[-3000:]}"
    assert "usage:" in text and "--help" in text, text[:2000]


@pytest.mark.parametrize("study", all_studies(), ids=lambda s: s.name)
def test_help_lists_the_allowed_values_of_every_setting_that_has_them(study):
    parser = entry.study_parser(study, study.name, "")
    config.add_arguments(parser, study.grid_cls, skip=("base",))
    helps = {a.dest: a.help for a in parser._actions}
    for name, leaf in study.config_cls.settings().items():
        if leaf.cli and leaf.choices:
            assert all(str(c) in helps[name] for c in leaf.choices), f"--{name}: {helps[name]}"
        if leaf.cli and leaf.type is bool:
            assert "true" in helps[name] and "false" in helps[name], f"--{name}: {helps[name]}"
