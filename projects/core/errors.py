"""The one error type for bad user input (files, parameters).

Entry points catch it, print `error: <file>: <problem>` on one line, mark the run failed
and exit non-zero; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input the user can fix: names the file (or parameter) and the problem."""

    def __init__(self, where: str | Path | None, problem: str):
        self.where = str(where) if where is not None else None
        self.problem = problem
        super().__init__(f"{self.where}: {problem}" if self.where else problem)
