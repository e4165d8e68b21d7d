#!/usr/bin/env bash
# One install for the README, `make`, and CI: a local virtual environment in .venv with
# CPU-only torch 2.13.0, exactly as requirements/lock.txt lists it (every package at its
# exact version, so two installs a month apart are identical). Every pip call goes through
# requirements/constraints.txt and the lock, because torchvision pins torch exactly and an
# unconstrained timm/smp would pull torch 2.15 + CUDA.
# Refresh the lock after changing dependencies: scripts/lock.sh (see its header).
# Usage: scripts/install.sh [--browser]   (--browser: Debian's chromium for the dashboard test)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
LOCK=requirements/lock.txt
export PIP_CONSTRAINT="$PWD/requirements/constraints.txt $PWD/$LOCK"
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp="$VENV/.installed-$(cat pyproject.toml requirements/constraints.txt "$LOCK" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  # A dependency added to pyproject.toml without a refreshed lock would install unpinned.
  PYTHON="$PY" scripts/lock.sh --check
  echo "[install] creating $VENV with $($PY --version)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  # torch first, alone: its CPU wheel is a local file, and with it installed nothing else
  # can drag in a CUDA build.
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q -e ".[test]"
  if "$VENV/bin/pip" list 2>/dev/null | grep -qi '^nvidia-'; then
    echo "[install] error: nvidia-* packages were installed; the constraints file was bypassed" >&2
    exit 1
  fi
  # Sync: remove what an older lock brought and this one no longer lists, then require the
  # environment to be the lock exactly (the same check as tests/integration/test_dependency_lock.py).
  "$VENV/bin/python" - "$LOCK" <<'PYEOF'
import re, subprocess, sys
from importlib.metadata import distributions

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

lock = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, _, version = line.partition("==")
        lock[norm(name)] = version.strip()
keep = {"pip", "setuptools", "wheel", "medimg-platform"}
installed = lambda: {norm(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"]}
extra = sorted(set(installed()) - set(lock) - keep)
if extra:
    print("[install] removing what the lock no longer lists:", " ".join(extra))
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *extra], check=True)
have = installed()
bad = [f"{n}: lock {v}, installed {have.get(n, 'nothing')}" for n, v in sorted(lock.items())
       if have.get(n) != v]
if bad:
    sys.exit("[install] error: the environment differs from requirements/lock.txt:\n  "
             + "\n  ".join(bad))
PYEOF
  # A removed package may still be required by the project: the lock is then stale.
  "$VENV/bin/pip" check >/dev/null || { "$VENV/bin/pip" check >&2 || true
    echo "[install] error: broken requirements; refresh the lock (scripts/lock.sh)" >&2; exit 1; }
  rm -f "$VENV"/.installed-*; touch "$stamp"
  echo "[install] done: $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'), $(grep -vc '^#' "$LOCK") packages as locked"
fi

if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null; then
  echo "[install] installing Debian's chromium for the dashboard browser test"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null) \
    || echo "[install] warning: chromium not installed; browser tests will be skipped" >&2
fi
