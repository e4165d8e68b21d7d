"""Test-time augmentation for tiles: the mean tumour probability over the 8 flips and quarter
turns of each tile, each view's map turned back before averaging.

Tissue has no preferred orientation, so the 8 views are equally valid inputs, and averaging
them steadies the pixels one view gets wrong (nucleus borders, mostly). It costs 8 forward
passes; the run's CPU timings and the logged model include it. The output is the logit of the
mean probability, so every caller that applies a sigmoid, a BCE or a threshold reads it as it
reads the bare network's logits.
"""
from __future__ import annotations

import torch
from torch import nn

EPS = 1e-6  # keeps the logit of a probability of exactly 0 or 1 finite


class DihedralMean(nn.Module):
    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=x.device)
        for k in range(4):
            turned = torch.rot90(x, k, (2, 3))
            for flipped in (False, True):
                view = torch.flip(turned, (3,)) if flipped else turned
                prob = torch.sigmoid(self.network(view).float())
                prob = torch.flip(prob, (3,)) if flipped else prob
                total = total + torch.rot90(prob, -k, (2, 3))
        mean = (total / 8).clamp(EPS, 1 - EPS)
        return torch.log(mean) - torch.log1p(-mean)


def deployed(network: nn.Module, tta: bool) -> nn.Module:
    """The model a run evaluates, times and logs: the network, or its 8-view mean."""
    return DihedralMean(network) if tta else network
