"""Pathology segmentation models (Study 2): U-Net, ELU-Net and any smp architecture.

    model = build_model("elunet", filters=8, depth=5)     # or "unet", or "smp:Unet:resnet18"
    logits = model(x)                                     # (B, 1, H, W); torch.sigmoid for p
    count_params_keras(model)                             # comparable with the paper's Table V

count_params (trainable, PyTorch) and count_params_keras (Keras' total: every weight plus
each batch norm's two moving statistics, i.e. 4 per BN channel) are projects.core.efficiency's,
re-exported here.

All models take RGB (B, 3, H, W) with H, W divisible by `min_input_multiple(arch, depth)`
and return LOGITS of shape (B, 1, H, W); the caller applies `torch.sigmoid`.
"""
from __future__ import annotations

from torch import nn

from projects.core.efficiency import count_params, count_params_keras  # defined once, shared
from projects.core.errors import InputError
from projects.pathology.models.elunet import UPSAMPLE_MODES, ELUNet
from projects.pathology.models.smp_models import PREFIX as SMP_PREFIX
from projects.pathology.models.smp_models import build_smp, smp_output_stride
from projects.pathology.models.unet import UNet

ARCHS = ("unet", "elunet")
MIN_DEPTH, MAX_DEPTH = 2, 7

__all__ = [
    "ARCHS",
    "ELUNet",
    "UNet",
    "build_model",
    "build_smp",
    "count_params",
    "count_params_keras",
    "is_smp",
    "min_input_multiple",
    "model_family",
]


def is_smp(arch: str) -> bool:
    return arch.startswith(SMP_PREFIX + ":")


def _check(arch: str, filters: int, depth: int, upsample: str) -> None:
    if not (arch in ARCHS or is_smp(arch)):
        raise InputError(None, f"unknown arch {arch!r}: use one of {', '.join(ARCHS)} or 'smp:<Architecture>:<encoder>' (e.g. 'smp:Unet:resnet18')")
    if not isinstance(depth, int) or not MIN_DEPTH <= depth <= MAX_DEPTH:
        raise InputError(None, f"depth must be an integer from {MIN_DEPTH} to {MAX_DEPTH}, got {depth!r}")
    if not isinstance(filters, int) or filters < 1:
        raise InputError(None, f"filters must be a positive integer, got {filters!r}")
    if upsample not in UPSAMPLE_MODES:
        raise InputError(None, f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {upsample!r}")


def build_model(arch: str, filters: int, depth: int, upsample: str = "bilinear") -> nn.Module:
    """The model named by `arch`, returning logits (B, 1, H, W).

    arch: "unet" (the paper's Keras U-Net), "elunet" (ELU-Net as its paper's figure) or
    "smp:<Architecture>:<encoder>". filters is n (first-level width; ignored by smp, whose
    encoder fixes its widths); depth the levels of the contracting path (for smp the
    `encoder_depth`, which smp encoders allow only up to 5); upsample is ELU-Net's
    parameter-free upsampling, "bilinear" or "nearest". Bad values raise InputError.
    """
    _check(arch, filters, depth, upsample)
    if arch == "unet":
        return UNet(filters, depth)
    if arch == "elunet":
        return ELUNet(filters, depth, upsample=upsample)
    return build_smp(arch, depth)


def model_family(arch: str) -> str:
    """unet | elunet | smp: what the automatic training precision is chosen by (projects/core/device.py)."""
    return "smp" if is_smp(arch) else arch


def min_input_multiple(arch: str, depth: int) -> int:
    """What tile height and width must be divisible by: 2^(depth-1) for unet/elunet (one
    halving per max-pool), the encoder's output stride for smp (builds the model once)."""
    _check(arch, 1, depth, "bilinear")
    if arch in ARCHS:
        return 2 ** (depth - 1)
    return smp_output_stride(arch, depth)
