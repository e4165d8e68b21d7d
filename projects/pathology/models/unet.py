"""U-Net as the Keras U-Net the pathology paper trained (Study 2, Table V).

This is the widely copied Keras U-Net (Ronneberger et al. 2015 with 'same' padding), not the
torchvision/smp style: no batch norm, convolutions with bias, nearest-neighbour upsampling
followed by a 2x2 convolution instead of a transposed convolution, and a two-step head
(3x3 conv to 2 channels + ReLU, then 1x1 conv to 1). Those details are what make the
parameter counts equal Table V exactly:

    depth 4: 1878 n^2 +  96 n + 5   (n=32: 1,926,149   n=64:  7,698,437)
    depth 5: 7574 n^2 + 152 n + 5   (n=32: 7,760,645   n=64: 31,032,837)

`forward` returns LOGITS (B, 1, H, W). The paper's last layer is a sigmoid; the caller applies
`torch.sigmoid` (or trains with `BCEWithLogitsLoss`, which is the numerically stable form of
sigmoid + binary cross-entropy). The sigmoid has no parameters, so counts are unaffected.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from projects.core.errors import InputError


def keras_init_(module: nn.Module) -> None:
    """Keras' default initialisation: Glorot-uniform kernels, zero biases.

    So a reproduction starts from the same kind of weights as the paper's Keras models
    (PyTorch's default is a scaled Kaiming-uniform with non-zero biases).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_input_size(x: torch.Tensor, multiple: int) -> None:
    """Refuse a tile whose height/width is not divisible by `multiple`.

    Each max-pool halves the size; an odd size would silently lose a row/column and the
    skip concatenation would fail later with an unreadable shape error. Skipped while
    tracing/compiling (ONNX export, torch.compile), as smp does: there shapes may be symbolic.
    """
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise InputError(
            None,
            f"input tile {h}x{w} is not divisible by {multiple} "
            f"(2^(depth-1) for this model): use a tile size that is a multiple of {multiple}",
        )


class DoubleConv(nn.Sequential):
    """Two 3x3 'same' convolutions with bias, each followed by ReLU (no batch norm)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )


class UpConv(nn.Module):
    """Keras `Conv2D(c, 2, padding='same')(UpSampling2D(2)(x))` + ReLU.

    Keras 'same' padding for an even kernel puts the extra row/column after the input
    (pad 0 before, 1 after), so the 2x2 convolution keeps the upsampled size.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.pad(x, (0, 1, 0, 1))  # (left, right, top, bottom): Keras 'same' for k=2
        return F.relu(self.conv(x), inplace=True)


class UNet(nn.Module):
    """The Keras U-Net of Study 2.

    Args:
        filters: n, the width of the first level; level i (1..depth) has n * 2^(i-1) channels.
        depth: number of levels of the contracting path (the deepest has n * 2^(depth-1)).

    Input (B, 3, H, W) with H and W divisible by `min_input_multiple` = 2^(depth-1);
    output LOGITS (B, 1, H, W) — apply `torch.sigmoid` for the paper's probabilities.
    """

    def __init__(self, filters: int = 64, depth: int = 5, in_channels: int = 3):
        super().__init__()
        widths = [filters * 2**i for i in range(depth)]
        self.filters, self.depth = filters, depth
        self.min_input_multiple = 2 ** (depth - 1)

        self.encoder = nn.ModuleList()
        prev = in_channels
        for c in widths:
            self.encoder.append(DoubleConv(prev, c))
            prev = c
        self.pool = nn.MaxPool2d(2)

        # Decoder levels from depth-1 down to 1, stored deepest first (the order they run).
        self.up = nn.ModuleList(UpConv(widths[i + 1], widths[i]) for i in reversed(range(depth - 1)))
        self.decoder = nn.ModuleList(DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(depth - 1)))

        # The Keras U-Net's head: 3x3 conv to 2 channels + ReLU, then 1x1 conv to 1 (+ sigmoid,
        # left to the caller).
        self.head = nn.Sequential(
            nn.Conv2d(filters, 2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2, 1, 1),
        )
        keras_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.min_input_multiple)
        skips = []
        for i, block in enumerate(self.encoder):
            if i:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck is x itself, not a skip
        for up, block in zip(self.up, self.decoder):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
