#!/usr/bin/env bash
# One install for the README, `make`, and CI: a local virtual environment in .venv exactly
# as requirements/lock.txt lists it (every package at its exact version, so two installs a
# month apart are identical), with CPU-only torch. Every pip call goes through
# requirements/constraints.txt and the lock, because torchvision pins torch exactly and an
# unconstrained timm/smp would pull a newer torch + CUDA.
# Where torch comes from: scripts/torch_build.sh (a local wheel folder pip is configured
# with, else PyTorch's CPU index). Refresh the lock after changing dependencies:
# scripts/lock.sh (see its header).
#
# Usage: scripts/install.sh [--browser] [--cuda[=cuNNN]] [--plan]
#   --browser      also Debian's chromium (the dashboard browser test, screenshots)
#   --cuda[=TAG]   GPU users: torch and torchvision as the CUDA build TAG (default below,
#                  e.g. cu126, cu128, cu130: a build PyTorch publishes for the locked torch)
#                  from PyTorch's CUDA index, plus the CUDA runtime wheels that build needs;
#                  everything else exactly as locked. Without it: the CPU build.
#   --plan         print the pip commands this install would run here and change nothing
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch_build.sh
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
LOCK=requirements/lock.txt
BUILD=cpu BROWSER="" PLAN=""
for arg in "$@"; do
  case $arg in
    --browser) BROWSER=1 ;;
    --cuda) BUILD=$TORCH_CUDA_DEFAULT ;;
    --cuda=cu[0-9]*) BUILD=${arg#--cuda=} ;;
    --plan) PLAN=1 ;;
    *) echo "[install] unknown option $arg (usage: scripts/install.sh [--browser] [--cuda[=cuNNN]] [--plan])" >&2
       exit 2 ;;
  esac
done
export PIP_DISABLE_PIP_VERSION_CHECK=1
lock_pin() { sed -n "s/^$1==\([^ #]*\).*/\1/p" "$LOCK"; }
TORCH="torch==$(lock_pin torch | cut -d+ -f1)+$BUILD"
VISION="torchvision==$(lock_pin torchvision | cut -d+ -f1)"
CONSTRAINTS=$LOCK
if [ "$BUILD" != cpu ]; then
  # The lock with torch and torchvision as this CUDA build (a temporary copy).
  VISION="$VISION+$BUILD"
  CONSTRAINTS=$(mktemp /tmp/medimg-lock-$BUILD.XXXXXX)
  trap 'rm -f "$CONSTRAINTS"' EXIT
  sed -e "s/^torch==.*/$TORCH/" -e "s/^torchvision==.*/$VISION/" "$LOCK" > "$CONSTRAINTS"
fi
export PIP_CONSTRAINT="$PWD/requirements/constraints.txt $CONSTRAINTS"
# torch first, alone (torchvision with it for a CUDA build, from the same index): with the
# locked build installed, nothing later can drag in another one.
FIRST="$TORCH"; [ "$BUILD" = cpu ] || FIRST="$TORCH $VISION"
if [ -n "$PLAN" ]; then
  SOURCE=$(torch_pip_source "$TORCH" "$PY")
  echo "pip install $SOURCE${SOURCE:+ }$FIRST"
  echo "pip install -e .[test]"
  echo "python scripts/lock_sync.py $LOCK $BUILD"
  exit 0
fi

stamp_build=""; [ "$BUILD" = cpu ] || stamp_build="$BUILD-"
stamp="$VENV/.installed-$stamp_build$(cat pyproject.toml requirements/constraints.txt "$LOCK" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  # A dependency added to pyproject.toml without a refreshed lock would install unpinned.
  PYTHON="$PY" scripts/lock.sh --check
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  SOURCE=$(torch_pip_source "$TORCH" "$VENV/bin/python")
  echo "[install] installing into $VENV ($($VENV/bin/python --version)): torch $BUILD build${SOURCE:+ from ${SOURCE##* }}"
  # shellcheck disable=SC2086  # SOURCE and FIRST are option/requirement lists
  "$VENV/bin/pip" install -q $SOURCE $FIRST
  "$VENV/bin/pip" install -q -e ".[test]"
  if [ "$BUILD" = cpu ] && "$VENV/bin/pip" list 2>/dev/null | grep -qi '^nvidia-'; then
    echo "[install] error: nvidia-* packages were installed; the constraints file was bypassed" >&2
    exit 1
  fi
  # Sync: remove what an older lock brought and this one no longer lists, then require the
  # environment to be the lock exactly (the rule tests/integration/test_dependency_lock.py checks).
  "$VENV/bin/python" scripts/lock_sync.py "$LOCK" "$BUILD"
  # A removed package may still be required by the project: the lock is then stale.
  "$VENV/bin/pip" check >/dev/null || { "$VENV/bin/pip" check >&2 || true
    echo "[install] error: broken requirements; refresh the lock (scripts/lock.sh)" >&2; exit 1; }
  rm -f "$VENV"/.installed-*; touch "$stamp"
  echo "[install] done: $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'), $(grep -vc '^#' "$LOCK") packages as locked"
fi

if [ -n "$BROWSER" ] && ! command -v chromium >/dev/null; then
  echo "[install] installing Debian's chromium for the dashboard browser test"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null) \
    || echo "[install] warning: chromium not installed; browser tests will be skipped" >&2
fi
