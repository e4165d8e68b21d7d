"""Where and in what precision a model trains: the run settings `device` and `precision`.

    device:    auto | cpu | cuda | cuda:N | mps        (auto: CUDA when there is one, else the CPU)
    precision: auto | fp32 | bf16 | fp16               (mixed precision through torch.autocast;
                                                        fp16 with a gradient scaler)

`auto` precision is what the training benchmark (benchmarks/training.py) measured fastest at
equal accuracy for the model family on that kind of device, recorded once in AUTO_PRECISION
below. Measure per model family, never assume: on this project's 2-core AMD EPYC (AVX-512
BF16), channels-last + bf16 trained ELU-Net (8,5) and U-Net (32,4) 2.9x faster than fp32,
while bf16 made a timm resnet18 at 128 px slower (0.56x). A CPU without native bf16 always
trains in fp32. Whatever trained the model, what is saved is fp32 on the CPU: the papers'
CPU protocol (cpu_load_s, cpu_predict_s) times that file.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import torch

from projects.core.errors import InputError

DEVICES = "auto | cpu | cuda | cuda:N | mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# (model family, device kind) -> precision; "*" matches any family. Device kinds: "cuda",
# "mps", "cpu-bf16" (a CPU with AVX512-BF16 or AMX), "cpu". Sources: benchmarks/RESULTS.md,
# section "training" (images/s of each variant and the validation metric of fp32 vs the
# choice, from the same seed).
AUTO_PRECISION = {
    ("unet", "cpu-bf16"): "bf16",
    ("elunet", "cpu-bf16"): "bf16",
    ("smp", "cpu-bf16"): "bf16",
    ("timm", "cpu-bf16"): "fp32",  # bf16 autocast made resnet18 slower on this CPU (0.56x)
    ("*", "cpu-bf16"): "fp32",
    ("*", "cpu"): "fp32",
    ("*", "mps"): "fp32",  # not measured here: the safe choice
    ("*", "cuda"): "bf16",  # tensor cores; fp16 (with a scaler) where the GPU has no bf16
}


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX on this CPU (Linux: /proc/cpuinfo); without them bf16 is emulated, slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def check_device(spec: str) -> None:
    """One line naming the setting when the device does not exist here (before any run)."""
    resolve_device(spec)


def resolve_device(spec: str) -> torch.device:
    text = str(spec).strip().lower()
    if text in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError("device", "mps was asked for, but this machine has no Apple GPU (use auto or cpu)")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not match:
        raise InputError("device", f"unknown device {spec!r}; use {DEVICES}")
    if not torch.cuda.is_available():
        raise InputError("device", f"{spec} was asked for, but this machine has no CUDA GPU (use auto or cpu)")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise InputError("device", f"{spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def device_kind(device: torch.device) -> str:
    if device.type == "cpu":
        return "cpu-bf16" if cpu_has_native_bf16() else "cpu"
    return device.type


def resolve_precision(spec: str, family: str, device: torch.device) -> str:
    """The precision a run trains in: `spec`, or for auto the measured choice for the family on
    this kind of device (AUTO_PRECISION)."""
    text = str(spec).strip().lower()
    if text not in PRECISIONS:
        raise InputError("precision", f"unknown precision {spec!r}; use {' | '.join(PRECISIONS)}")
    kind = device_kind(device)
    if text == "auto":
        text = AUTO_PRECISION.get((family, kind), AUTO_PRECISION.get(("*", kind), "fp32"))
        if text == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            text = "fp16"
    if text == "fp16" and device.type == "cpu":
        raise InputError("precision", "fp16 mixed precision is for GPUs; on a CPU use bf16 or fp32")
    return text


def autocast(device: torch.device, precision: str):
    """The forward pass's mixed-precision context (a no-op for fp32)."""
    dtype = DTYPES[precision]
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str):
    """Loss scaling for fp16 (bf16 keeps fp32's exponent range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
