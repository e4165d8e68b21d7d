#!/usr/bin/env bash
# One install for the README, `make`, and CI: a local virtual environment in .venv with
# CPU-only torch 2.13.0. Every pip call goes through requirements/constraints.txt, because
# torchvision pins torch exactly and an unconstrained timm/smp would pull torch 2.15 + CUDA.
# Usage: scripts/install.sh [--browser]   (--browser: Debian's chromium for the dashboard test)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
export PIP_CONSTRAINT="$PWD/requirements/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp="$VENV/.installed-$(cat pyproject.toml requirements/constraints.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
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
  rm -f "$VENV"/.installed-*; touch "$stamp"
  echo "[install] done: $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)')"
fi

if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null; then
  echo "[install] installing Debian's chromium for the dashboard browser test"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null) \
    || echo "[install] warning: chromium not installed; browser tests will be skipped" >&2
fi
