"""The reference work's U-Net: four levels down, four up, half the original U-Net's widths."""

from __future__ import annotations

import torch
from torch import nn

from .classes import NUM_CLASSES

REFERENCE_WIDTH = 32  # 32-64-128-256-512, half of Ronneberger et al.'s 64-...-1024
DEPTH = 4
TILE = 224  # input size of the reference work; any multiple of 16 works


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with 3x3 same-padding convolutions, 2x2 max-pool down, 2x2 transposed-conv up.

    Returns per-pixel logits (N, num_classes, H, W); softmax is applied by losses and inference.
    H and W must be multiples of 16.
    """

    def __init__(self, width: int = REFERENCE_WIDTH, num_classes: int = NUM_CLASSES, in_channels: int = 3):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        self.width = width
        self.num_classes = num_classes
        chans = [width * 2**i for i in range(DEPTH + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans:
            self.down.append(_double_conv(cin, c))
            cin = c
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for c in reversed(chans[:-1]):
            self.up.append(nn.ConvTranspose2d(c * 2, c, 2, stride=2))
            self.up_conv.append(_double_conv(c * 2, c))
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_bottleneck(x)[0]

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The way down: (skip activations of each level, activations of the deepest level)."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < DEPTH:
                skips.append(x)
                x = self.pool(x)
        return skips, x

    def forward_with_bottleneck(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, activations of the deepest level)."""
        skips, bottleneck = self.encode(x)
        x = bottleneck
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips)):
            x = conv(torch.cat([up(x), skip], dim=1))
        return self.head(x), bottleneck


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
