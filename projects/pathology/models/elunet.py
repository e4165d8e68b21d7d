"""ELU-Net (Deng et al., "ELU-Net: An Efficient and Lightweight U-Net for Medical Image
Segmentation", IEEE Access 2022), built as the paper's figure draws it.

Topology, for depth d and level widths c_i = n * 2^(i-1) (i = 1..d):

* encoder level i: node [3x3 conv (bias) -> BN -> ReLU] x 2; 2x2 max-pool between levels;
  level d is the bottleneck.
* decoder node i (i = d-1 down to 1) concatenates branches, each a parameter-free upsample
  followed by a 3x3 conv (bias, no BN) to c_i channels:
    - the same-scale encoder level i (no upsample, just the conv);
    - every deeper encoder level j, i < j <= d-1, upsampled x2^(j-i) (the "deep skip
      connections" that are ELU-Net's contribution);
    - the decoder node below (i+1) upsampled x2; the bottleneck stands in for it at i = d-1;
  then the same [conv -> BN -> ReLU] x 2 node, c_i channels out.
* head: 1x1 conv n -> 1.

`forward` returns LOGITS (B, 1, H, W); the paper ends in a sigmoid, which the caller applies
(`torch.sigmoid`, or `BCEWithLogitsLoss` for training). Parameter counts are unaffected.

Parameter count, counted as Keras does (4 per batch-norm channel: gamma, beta and the two
moving statistics; see `count_params_keras`):

    d=4:  2457 n^2 +  266 n + 1
    d=5: 10062 n^2 +  529 n + 1     (n=4: 163,109 = Table V exactly)
    d=6: 40635 n^2 + 1056 n + 1

Only Table V's (4, 5) cell matches. The paper's other eight ELU-Net cells fit no uniform
variant we tried (learned transposed-conv upsampling, BN in the branches, VGG-style 3-conv
encoder levels, identity same-scale branch, full-scale UNet3+ skips, bottleneck as an extra
deep skip, 1 or 3 convs per node, 3x3 head: none matches more than that one cell). Read per
depth, the paper's numbers are themselves quadratic in n with constant 1:
d=4: 3177 n^2 + 305 n + 1 (all three cells), d=6: 36027 n^2 + 976 n + 1 (all three),
d=5: 10008 n^2 + 523 n + 1 for n=8 and 16 but not n=4 -- so the authors' depth-4 and depth-6
models were each consistent but differently built from this figure, and their (4, 5) row
does not share the structure of their (8, 5) and (16, 5) rows. We keep the figure's model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from projects.pathology.models.unet import check_input_size, keras_init_

UPSAMPLE_MODES = ("bilinear", "nearest")


class ConvBNReLU(nn.Sequential):
    """3x3 'same' conv with bias -> batch norm -> ReLU (a Keras Conv2D + BatchNormalization).

    eps=1e-3 is Keras' default. Momentum stays PyTorch's 0.1 (Keras' 0.99 would be 0.01
    here): the platform's CPU runs are short, and slow-moving statistics would leave
    eval-mode predictions poor after few steps. Neither changes the parameter count.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels, eps=1e-3),
            nn.ReLU(inplace=True),
        )


class Node(nn.Sequential):
    """An encoder or decoder node of the figure: [conv -> BN -> ReLU] x 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels))


class Branch(nn.Module):
    """One input of a decoder node: upsample x`scale` (no parameters), then a 3x3 conv (bias,
    no BN) to the node's width. scale 1 is the same-scale skip: the conv alone."""

    def __init__(self, in_channels: int, out_channels: int, scale: int, mode: str):
        super().__init__()
        self.scale, self.mode = scale, mode
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale > 1:
            # align_corners=False is Keras/TF2's bilinear UpSampling2D (half-pixel centres).
            align = False if self.mode == "bilinear" else None
            x = F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=align)
        return self.conv(x)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode}"


class DecoderNode(nn.Module):
    """Decoder node i: branches from encoder levels i..d-1 and from the node below, fused."""

    def __init__(self, level: int, widths: list[int], mode: str):
        super().__init__()
        d = len(widths)
        c = widths[level - 1]
        self.level = level
        # Encoder levels level..d-1 (1-based): the same-scale skip, then the deep skips.
        self.skips = nn.ModuleList(
            Branch(widths[j - 1], c, 2 ** (j - level), mode) for j in range(level, d)
        )
        # The node below (or the bottleneck, when level == d-1), one scale coarser.
        self.below = Branch(widths[level], c, 2, mode)
        self.fuse = Node((len(self.skips) + 1) * c, c)

    def forward(self, encoder: list[torch.Tensor], below: torch.Tensor) -> torch.Tensor:
        same_and_deeper = encoder[self.level - 1 : -1]  # levels i..d-1; the bottleneck is not a skip
        parts = [branch(x) for branch, x in zip(self.skips, same_and_deeper, strict=True)]
        parts.append(self.below(below))
        return self.fuse(torch.cat(parts, dim=1))


class ELUNet(nn.Module):
    """ELU-Net as the paper's figure (see the module docstring for the topology).

    Args:
        filters: n, the first level's width; level i has n * 2^(i-1) channels.
        depth: number of levels of the contracting path (the bottleneck has n * 2^(depth-1)).
        upsample: "bilinear" (default) or "nearest"; parameter-free either way.

    Input (B, 3, H, W) with H and W divisible by `min_input_multiple` = 2^(depth-1);
    output LOGITS (B, 1, H, W) -- apply `torch.sigmoid` for the paper's probabilities.
    """

    def __init__(self, filters: int = 8, depth: int = 5, upsample: str = "bilinear", in_channels: int = 3):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        widths = [filters * 2**i for i in range(depth)]
        self.filters, self.depth, self.upsample = filters, depth, upsample
        self.min_input_multiple = 2 ** (depth - 1)

        self.encoder = nn.ModuleList()
        prev = in_channels
        for c in widths:
            self.encoder.append(Node(prev, c))
            prev = c
        self.pool = nn.MaxPool2d(2)
        # Deepest first, the order they run.
        self.decoder = nn.ModuleList(DecoderNode(i, widths, upsample) for i in range(depth - 1, 0, -1))
        self.head = nn.Conv2d(filters, 1, 1)
        keras_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.min_input_multiple)
        features = []
        for i, node in enumerate(self.encoder):
            if i:
                x = self.pool(x)
            x = node(x)
            features.append(x)
        for node in self.decoder:  # x starts as the bottleneck
            x = node(features, x)
        return self.head(x)
