"""segmentation-models-pytorch (smp 0.6) models behind a one-string spec.

    build_smp("smp:Unet:resnet18")              # smp's defaults (encoder_depth 5)
    build_smp("smp:UnetPlusPlus:resnet34", 4)   # encoder_depth=4, decoder_channels 4 long

The architecture is any smp architecture class name (case-insensitive); the encoder any smp
encoder name or "tu-<timm model>". Always `encoder_weights=None`: nothing may download
weights (the platform runs offline), so every encoder starts from random initialisation.
in_channels=3, classes=1, no activation: the model returns LOGITS (B, 1, H, W); the caller
applies `torch.sigmoid`.

Every user mistake (unknown architecture or encoder, a depth the encoder cannot do) becomes
one `InputError` line naming what is valid, instead of a traceback from inside smp.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence

from torch import nn

from projects.core.errors import InputError

PREFIX = "smp"


def _smp():
    # Imported lazily: smp pulls in timm and torchvision (seconds), which unet/elunet users
    # never need. `projects` (imported by our package) has installed the torchvision shim.
    import segmentation_models_pytorch

    return segmentation_models_pytorch


def architectures() -> dict[str, type]:
    """smp's architecture classes by lower-case name."""
    return dict(_smp().MODEL_ARCHITECTURES_MAPPING)


def parse_spec(spec: str) -> tuple[type, str]:
    """'smp:<Architecture>:<encoder>' -> (architecture class, encoder name), or InputError."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        raise InputError(None, f"bad smp model spec {spec!r}: expected 'smp:<Architecture>:<encoder>', e.g. 'smp:Unet:resnet18'")
    _, arch_name, encoder = parts
    archs = architectures()
    if arch_name.lower() not in archs:
        valid = ", ".join(a.__name__ for a in archs.values())
        raise InputError(None, f"unknown smp architecture {arch_name!r} in {spec!r}; valid: {valid}")
    if not _encoder_exists(encoder):
        valid = ", ".join(_smp().encoders.get_encoder_names())
        raise InputError(None, f"unknown smp encoder {encoder!r} in {spec!r}; valid: tu-<any timm model>, {valid}")
    return archs[arch_name.lower()], encoder


def _encoder_exists(name: str) -> bool:
    if name.startswith("tu-"):
        import timm

        return timm.is_model(name[3:])
    return name in _smp().encoders.get_encoder_names()


def decoder_channels_for(depth: int) -> tuple[int, ...]:
    """smp's default (256, 128, 64, 32, 16) generalised to `depth` blocks: halving from the
    deepest block down to 16 at full resolution, so the head sees the same 16 channels at
    every depth (depth 3 -> (64, 32, 16))."""
    return tuple(16 * 2**k for k in reversed(range(depth)))


def build_smp(spec: str, depth: int | None = None) -> nn.Module:
    """Build an smp model from 'smp:<Architecture>:<encoder>' with random weights.

    depth, when given, becomes `encoder_depth` (and, for the architectures whose
    `decoder_channels` is one width per block, `decoder_channels_for(depth)`).
    Returns logits; raises InputError for anything smp would reject.
    """
    cls, encoder = parse_spec(spec)
    kwargs: dict = dict(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=1)
    params = inspect.signature(cls.__init__).parameters
    if depth is not None:
        if "encoder_depth" not in params:
            raise InputError(None, f"smp architecture {cls.__name__} has no encoder depth to set; leave depth unset")
        kwargs["encoder_depth"] = depth
        default_channels = params["decoder_channels"].default if "decoder_channels" in params else None
        if isinstance(default_channels, Sequence):
            kwargs["decoder_channels"] = decoder_channels_for(depth)
    try:
        return cls(**kwargs)
    except (ValueError, KeyError, AssertionError, NotImplementedError) as exc:
        # smp/timm signal bad combinations (depth out of range, encoder unsupported by this
        # architecture, ...) with these; anything else is a bug and keeps its traceback.
        problem = " ".join(str(exc).split()) or type(exc).__name__
        where = f"{spec!r}" + (f" with depth {depth}" if depth is not None else "")
        raise InputError(None, f"smp cannot build {where}: {problem}") from exc


@functools.lru_cache(maxsize=64)
def smp_output_stride(spec: str, depth: int | None = None) -> int:
    """The encoder's output stride (what tile sizes must be divisible by) for this spec.

    Read from a built model because it depends on the encoder, the depth and dilation
    (DeepLabV3 dilates to 8/16); cached, as building can take a second.
    """
    model = build_smp(spec, depth)
    return int(model.encoder.output_stride)
