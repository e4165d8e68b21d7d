"""Every study's command line, generated from its config: one run, or its grid.

    python -m projects.<study> [run] [--<setting> VALUE ...]     (MLproject entry point <study>)
    python -m projects.<study> grid [--<setting> VALUE ...]      (MLproject entry point <study>_grid)

The flags are the config's settings (projects.core.config), so a setting is declared once.
Data problems fail in `prepare` before a run exists; a run that fails later ends FAILED.
"""
from __future__ import annotations

import argparse
import sys

from projects.core import cli, config, device, tracking
from projects.core.grid import plan_grid, run_grid
from projects.core.study import Study


def study_parser(study: Study, prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    config.add_arguments(parser, study.config_cls)
    return parser


def run_main(study: Study, argv: list[str] | None = None) -> int:
    """One run of the study with the settings given on the command line."""
    args = study_parser(study, study.name, f"One {study.name} run (MLproject entry point `{study.name}`).").parse_args(argv)
    cfg = study.config_cls.from_args(args)
    device.check_device(cfg.device)  # `cuda` on a machine without one: one line, before any run
    study.check(cfg)
    prepared = study.prepare(cfg)  # bad settings or data fail here, before a run exists
    with tracking.study_run(study.experiment, study.run_name(cfg), tags=tracking.process_tags(),
                            system_metrics=True):
        result = study.run(cfg, prepared)
    shown = (study.headline.test_metric,) + study.headline.baselines
    print(f"run {result.run_id}: " + ", ".join(f"{k}={result.metrics[k]:.3f}" for k in shown if k in result.metrics))
    return 0


def grid_main(study: Study, argv: list[str] | None = None) -> int:
    """The study's grid: one child run per cell under one parent."""
    parser = study_parser(study, f"{study.name}_grid", f"The {study.name} grid (MLproject entry point "
                                                      f"`{study.name}_grid`): one child run per cell.")
    config.add_arguments(parser, study.grid_cls, skip=("base",))
    args = parser.parse_args(argv)
    base = study.config_cls.from_args(args)
    grid = study.grid_cls(base=base, **config.values_from_args(study.grid_cls, args))
    plan = plan_grid(study, grid)  # every cell checked, its data prepared: before the parent run
    with tracking.study_run(study.experiment, study.grid_run_name(grid), tags=tracking.process_tags()):
        run_grid(study, grid, plan)
    return 0


def main_for(study: Study, argv: list[str] | None = None) -> int:
    """`python -m projects.<study> [run|grid] ...` (argv: the command line after the module;
    default sys.argv[1:]): returns the process exit code; a bad setting is one line and 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "grid":
        return cli.entry_point(lambda a: grid_main(study, a))(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    return cli.entry_point(lambda a: run_main(study, a))(argv)
