"""Where and in what precision a model trains: the run settings `device` and `precision`.

    device:    auto | cpu | cuda | cuda:N | mps        (auto: CUDA when there is one, else the CPU)
    precision: auto | fp32 | bf16 | fp16               (mixed precision through torch.autocast;
                                                        fp16 with a gradient scaler)

`auto` precision is what the training benchmark (benchmarks/training.py) measured fastest at
equal accuracy for the model family on that kind of device, recorded once in AUTO_PRECISION
below. Measure per model family and per kind of CPU, never assume: on a 2-core AMD EPYC
(AVX-512 BF16) channels-last + bf16 trained the U-Nets 4.5-5.2x and the timm classifier 2.2x
faster than fp32, on a 2-core Xeon with AMX 3.7-5.5x and 2.0x, while on an H200 bf16 slowed
the timm classifier. A CPU without native bf16 always trains in fp32. Whatever trained the
model, what is saved is fp32 on the CPU: the papers' CPU protocol (cpu_load_s, cpu_predict_s)
times that file.
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
# "mps", "cpu-amx" (AMX tile units: bf16 matrix multiply ~5x the fp32 rate), "cpu-bf16"
# (AVX512-BF16 only: bf16 dot products, no tiles), "cpu". Sources: benchmarks/RESULTS.md,
# section 7 "Training" (images/s of each variant interleaved in one run, and the validation
# metric of fp32 vs the choice from the same seed).
AUTO_PRECISION = {
    # Intel Xeon with AMX (2026-12-02, two full runs): channels-last + bf16 3.7-4.7x (ELU-Net (8,5)), 5.5x
    # (U-Net (32,4)), 2.0x (timm resnet10t at 96 px), validation metric not below fp32's.
    ("unet", "cpu-amx"): "bf16",
    ("elunet", "cpu-amx"): "bf16",
    ("smp", "cpu-amx"): "bf16",
    ("timm", "cpu-amx"): "bf16",
    ("*", "cpu-amx"): "fp32",  # a family nobody measured: the safe choice
    # AMD EPYC with AVX512-BF16, no AMX (Zen 5, 2026-12-04, the section's full run): channels-last
    # + bf16 5.2x (ELU-Net (8,5)), 4.5x (U-Net (32,4)), 2.2x (timm resnet10t at 96 px; a probe beside
    # it: resnet18 at 128 px 2.4x, resnet50 2.1x), validation metric within fp32's seed spread. The
    # issue's earlier probe (bf16 0.56x for resnet18) ran while another process shared both cores.
    ("unet", "cpu-bf16"): "bf16",
    ("elunet", "cpu-bf16"): "bf16",
    ("smp", "cpu-bf16"): "bf16",
    ("timm", "cpu-bf16"): "bf16",
    ("*", "cpu-bf16"): "fp32",
    ("*", "cpu"): "fp32",
    ("*", "mps"): "fp32",  # not measured here: the safe choice
    # NVIDIA H200 (2026-12-04, benchmarks/RESULTS.md section 7, GPU): channels-last + bf16 2.05x
    # (U-Net (32,4)) and 2.44x (ELU-Net (8,5)) fp32 at batch 64, 1.18x / 0.97x at batch 8 (launch-bound),
    # validation metric within fp32's seed spread; the timm classifier (resnet10t, 96 px) was slower
    # in bf16 at batch 32 and 64 (0.93-0.98x) and fastest in channels-last fp32.
    ("timm", "cuda"): "fp32",
    ("*", "cuda"): "bf16",  # tensor cores; fp16 (with a scaler) where the GPU has no bf16
}


def cpu_kind_from_flags(flags: str) -> str:
    """The CPU's device kind from its /proc/cpuinfo flags: without bf16 instructions bf16 is
    emulated (slow); with AVX512-BF16 only convolutions gain; AMX tiles speed up every GEMM."""
    if re.search(r"\bamx_bf16\b", flags):
        return "cpu-amx"
    return "cpu-bf16" if re.search(r"\bavx512_bf16\b", flags) else "cpu"


@functools.lru_cache(maxsize=1)
def cpu_kind() -> str:
    try:
        return cpu_kind_from_flags(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux: no flags to read, bf16 never chosen automatically
        return "cpu"


def native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively. A CPU without bf16 instructions
    emulates it: on a 2-core AVX2-only AMD EPYC (2026-12-03) a 1024^3 bf16
    torch.mm took 2.6 s against 34 ms in fp32 (76x), a small conv training step 4.4x fp32's
    time. The benchmarks leave their bf16 variants out there (minutes of emulation measuring
    a precision that `auto` never picks on such a CPU)."""
    return cpu_kind() != "cpu"


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
        return cpu_kind()
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
