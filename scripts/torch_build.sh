# Sourced by scripts/install.sh and scripts/lock.sh: where torch's builds come from.
#
# PyPI has no CPU-only torch for Linux (its Linux wheels are CUDA builds, with gigabytes of
# nvidia-* wheels); PyTorch publishes the CPU build as <version>+cpu, and each CUDA build as
# <version>+cu<NNN>, on its own wheel indexes (https://pytorch.org/get-started/locally/:
# `pip install torch --index-url https://download.pytorch.org/whl/cpu`). Every other package
# comes from PyPI. A pip configured with a local folder of wheels (find-links) that holds
# the pinned build installs from there, with no network.
TORCH_INDEX_BASE=https://download.pytorch.org/whl
TORCH_CUDA_DEFAULT=cu128

# torch_pip_source SPEC PYTHON: the pip options that make SPEC (torch==X+cpu, torch==X+cu128)
# installable, on stdout: nothing when pip's own configuration already finds that exact build
# (asked offline: --no-index keeps the configured find-links folders and drops every index),
# else PyTorch's index for the build's local label.
torch_pip_source() {
  local spec=$1 py=$2 build=${1##*+}
  if "$py" -m pip install --dry-run --no-index --no-deps --ignore-installed -q "$spec" \
       >/dev/null 2>&1; then
    return 0
  fi
  echo "--extra-index-url $TORCH_INDEX_BASE/$build"
}
