"""`pathology` and `pathology_grid` entry points (see MLproject): the flags are the study
config's settings (projects.core.entry)."""
from __future__ import annotations

from projects.core import cli, entry
from projects.pathology.study import STUDY


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    return entry.run_main(STUDY, argv)


@cli.entry_point
def grid_main(argv: list[str] | None = None) -> int:
    return entry.grid_main(STUDY, argv)
