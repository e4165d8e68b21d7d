"""Classifiers: any timm architecture, single-channel input, random init by default."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from projects.core.errors import InputError

# Films are scaled to [0, 1]; a fixed normalisation keeps the logged model self-contained.
_MEAN, _STD = 0.5, 0.25


class GrayscaleClassifier(nn.Module):
    """A timm backbone on normalised single-channel films; returns class logits."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, films: torch.Tensor) -> torch.Tensor:
        return self.backbone((films - _MEAN) / _STD)


class ClassProbabilities(nn.Module):
    """What the logged MLflow model computes: (B, 1, H, W) films in [0, 1] -> probabilities."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, films: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(films), dim=1)


class DihedralMean(nn.Module):
    """Test-time augmentation: the mean class probabilities over the 8 flips and quarter turns
    of each input, as log-probabilities (argmax and cross-entropy read them like logits). A
    region has no preferred orientation; averaging its views steadies a small model's votes
    (the ROI study evaluated this way). The logged model and its CPU timings include it."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for k in range(4):
            turned = torch.rot90(x, k, (2, 3))
            total = total + torch.softmax(self.classifier(turned), 1) + torch.softmax(
                self.classifier(torch.flip(turned, (3,))), 1)
        return torch.log(total / 8)


def deployed(classifier: nn.Module, tta: bool) -> nn.Module:
    """The model a run evaluates, times and logs: the classifier, or its 8-view mean."""
    return DihedralMean(classifier) if tta else classifier


def check_pretrained_download(arch: str, host: str = "huggingface.co", timeout_s: float = 3.0) -> None:
    """One line before any run when timm's published weights cannot be had: the arch has none,
    the process is offline by setting (HF_HUB_OFFLINE, the platform's default), or the hub does
    not answer within a few seconds (instead of huggingface_hub's ~45-s retries)."""
    import socket

    import timm

    if not timm.list_pretrained(arch) and not timm.list_pretrained(f"{arch}.*"):
        raise InputError("pretrained", f"timm publishes no weights for {arch!r}; train from scratch or pass weights=")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise InputError("pretrained", "downloading timm weights needs HF_HUB_OFFLINE=0 (the platform sets 1 so that "
                                       "nothing downloads by accident); or pass weights=/local/file")
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as exc:
        raise InputError("pretrained", f"{host} cannot be reached ({exc.__class__.__name__}): this machine is "
                                       "offline; pass weights=/local/file") from None


def build_classifier(arch: str, num_classes: int, weights: str = "", pretrained: bool = False) -> GrayscaleClassifier:
    import timm

    if not timm.is_model(arch):
        similar = timm.list_models(f"*{arch.split('_')[0][:6]}*")[:8]
        hint = f" (similar: {', '.join(similar)})" if similar else ""
        raise InputError("arch", f"unknown timm architecture {arch!r}{hint}")
    kwargs = dict(num_classes=num_classes, in_chans=1)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise InputError(path, "weights file not found")
        # timm adapts the first conv to one channel and resets the classifier itself.
        try:
            backbone = timm.create_model(arch, pretrained=True,
                                         pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        except (RuntimeError, ValueError, KeyError, EOFError, OSError, AttributeError,
                __import__("pickle").UnpicklingError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise InputError(path, f"not a {arch} weights file timm can load ({first})") from None
    else:  # pretrained: checked reachable before the run (check_pretrained_download)
        backbone = timm.create_model(arch, pretrained=pretrained, **kwargs)
    return GrayscaleClassifier(backbone)
