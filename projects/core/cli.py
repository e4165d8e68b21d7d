"""Small helpers shared by the entry-point scripts (argument types, clean error exits)."""
from __future__ import annotations

import argparse
import errno
import functools
import sys
from collections.abc import Callable

from projects.core.errors import InputError


def str2bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


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


# Where a write fails for a reason the user fixes (disk full, permissions, read-only mount):
# a clear line and exit code 1 instead of a traceback. Any other OSError is a bug.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device (disk full?)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system or the process's file-size limit (disk full?)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a component of the path is not a folder",
}


def environment_error_line(exc: OSError) -> str:
    """`error: <file>: <what> (<strerror>); <what to do>` for the errnos above."""
    where = exc.filename or "a file of the run"
    what = ENVIRONMENT_ERRNOS[exc.errno]
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    todo = "free space there" if full else "check that location's permissions"
    return (f"error: {where}: {what} ({exc.strerror or exc}); {todo}, or point MEDIMG_STORE, "
            "MEDIMG_CACHE or the experiment's artifact location elsewhere")


def _tell_launcher(line: str) -> None:
    """Under `mlflow run` the launcher made a run before this process started (it ends FAILED
    when we exit non-zero): give it the reason, so the UI says why it holds nothing."""
    import os

    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient().set_tag(run_id, "error", line[:5000])
    except Exception:  # the one line on stderr is what counts; never a second error
        pass


def entry_point(func: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Bad input -> one line on stderr and exit code 2; an unwritable or full store -> one line
    and exit code 1. Either way the run was already marked FAILED. A tracking server that
    refuses a request (no or wrong user, a missing permission) -> one line naming the
    permission, exit code 2."""

    @functools.wraps(func)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return func(argv) or 0
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            _tell_launcher(f"error: {exc}")
            return 2
        except OSError as exc:
            if exc.errno not in ENVIRONMENT_ERRNOS:
                raise
            print(environment_error_line(exc), file=sys.stderr)
            return 1
        except Exception as exc:  # noqa: BLE001 (only a server's refusal is handled; the rest re-raised)
            from projects.core import access  # imports mlflow: not at module level, cli is imported first

            if not access.is_refusal(exc):
                raise
            print(f"error: {access.refusal_line(exc)}", file=sys.stderr)
            return 2

    return wrapper
