"""The only door to a library's private API: a version check that fails loudly.

Where MLflow offers no public way to do what the platform needs, the code reaches its
private API through `private_attr`, which names the reason and the upstream issue it waits
for, and refuses any version but the one it was checked against (the lock's). An upgrade
then stops with that sentence instead of breaking silently: check the code still works with
the new version, then move TESTED. tests/unit/test_structure.py fails on a private MLflow or
Optuna import anywhere else.
"""
from __future__ import annotations

import importlib
import importlib.metadata

# distribution -> the release series the private uses below were checked against
TESTED = {"mlflow": "3.17"}


class PrivateApiVersionError(RuntimeError):
    pass


def check_version(dist: str, what: str, reason: str, waits_for: str) -> None:
    installed = importlib.metadata.version(dist)
    series = ".".join(installed.split(".")[:2])
    if series != TESTED[dist]:
        raise PrivateApiVersionError(
            f"{what} is private {dist} API, checked with {dist} {TESTED[dist]}.x only, and {dist} "
            f"{installed} is installed: {reason} (waits for {waits_for}). Check that code against "
            f"{dist} {installed}, then set TESTED in projects/core/private_api.py")


def private_attr(module: str, name: str, *, dist: str, reason: str, waits_for: str):
    """`module.name` after the version check; the module itself, to patch, when name is ''."""
    what = f"{module}.{name}" if name else module
    check_version(dist, what, reason, waits_for)
    mod = importlib.import_module(module)
    return getattr(mod, name) if name else mod
