"""Small helpers shared by the entry-point scripts (argument types, clean error exits)."""
from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from projects.errors import InputError


def str2bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in str(text).replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def str_list(text: str) -> list[str]:
    return [x.strip() for x in str(text).replace(";", ",").split(",") if x.strip()]


def integer(text: str) -> int:
    """An integer; "3.0" is accepted because MLproject float parameters arrive that way."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def entry_point(func: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Bad input -> one line on stderr and exit code 2; the run was already marked FAILED."""

    @functools.wraps(func)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return func(argv) or 0
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapper
