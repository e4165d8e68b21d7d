"""Bring an environment to requirements/lock.txt and check it is the lock exactly.

Run by scripts/install.sh with the venv's python; tests/integration/test_dependency_lock.py
holds the running environment to the same rule (`expected`).

    python scripts/lock_sync.py LOCK BUILD     BUILD: cpu (the lock as written) or cu<NNN>

The lock is resolved with CPU-only torch (torch==X+cpu from PyTorch's CPU index). A CUDA
install (scripts/install.sh --cuda) takes torch and torchvision as X+cu<NNN> from PyTorch's
CUDA index instead; the CUDA runtime wheels that build requires (nvidia-*, triton) are then
expected too, and nothing else differs from the lock.
"""
from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, distributions

# Packages PyTorch publishes per build (local label +cpu, +cu128); the rest is the same build.
PER_BUILD = ("torch", "torchvision")
# Never removed: pip, setuptools and wheel come with the venv (setuptools is still checked
# against the lock), the project is installed editable.
UNLOCKED = {"pip", "setuptools", "wheel", "medimg-platform"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path) -> dict[str, str]:
    pins = {}
    for line in open(path):
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[norm(name)] = version.strip()
    return pins


def installed() -> dict[str, str]:
    return {norm(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"]}


def build_of(version: str) -> str:
    return version.partition("+")[2] or "pypi"


def _requirement_closure(root: str) -> set[str]:
    """Every distribution `root` requires, transitively, as installed here (markers not
    evaluated: a name allowed that this platform does not install costs nothing)."""
    seen, todo = set(), [root]
    while todo:
        try:
            dist = distribution(todo.pop())
        except PackageNotFoundError:
            continue
        for spec in dist.requires or []:
            if "extra ==" in spec:  # an optional extra of root's, not installed by the build
                continue
            name = norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec).group(1))
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def expected(lock: dict[str, str], build: str) -> tuple[dict[str, str], set[str]]:
    """(name -> version the environment must have, names it may have besides) for `build`."""
    if build == "cpu":
        return dict(lock), set()
    pins = {n: (f"{v.split('+')[0]}+{build}" if n in PER_BUILD else v) for n, v in lock.items()}
    return pins, _requirement_closure("torch") - set(lock)


def main(lock_path: str, build: str) -> None:
    pins, allowed = expected(read_lock(lock_path), build)
    extra = sorted(set(installed()) - set(pins) - allowed - UNLOCKED)
    if extra:
        print("[install] removing what the lock no longer lists:", " ".join(extra))
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *extra], check=True)
    have = installed()
    bad = [f"{n}: lock {v}, installed {have.get(n, 'nothing')}" for n, v in sorted(pins.items())
           if have.get(n) != v]
    if bad:
        sys.exit(f"[install] error: the environment differs from {lock_path} ({build} build):\n  "
                 + "\n  ".join(bad))


if __name__ == "__main__":
    main(*sys.argv[1:3])
