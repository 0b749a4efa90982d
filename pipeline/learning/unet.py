"""A small U-Net for training from scratch on a few hundred corrected photos on CPU (``train.arch: unet_small``).

MobileNetV3 segmenters are built for ImageNet-pretrained backbones; from random weights, on a few hundred
photos and a CPU budget of minutes, they learn little beyond the centre prior. This network is the opposite
trade: four resolution levels of two 3x3 convolutions (BatchNorm + ReLU) with skip connections
(Ronneberger et al., 2015), ``width`` channels at full resolution doubling per level, and an image-level
context branch at the bottleneck (global average pooling, as in DeepLabV3's ASPP) so every pixel sees the
whole scene: whether a region is *the* salient object depends on the rest of the image. About 0.5 M
parameters at ``width`` 16; any input size works (the decoder resizes to each skip connection).

Its input may carry extra channels (the saliency priors of ``train.priors``): ``in_channels`` is RGB + priors.
``forward(x)`` returns ``{"out": logits}`` of shape ``(N, num_classes, H, W)``, like torchvision's segmenters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class SmallUNet(nn.Module):
    """U-Net over four scales (1, 1/2, 1/4, 1/8) with global context at 1/8."""

    def __init__(self, num_classes: int = 1, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        if in_channels < 1 or width < 1 or num_classes < 1:
            raise ValueError(f"need in_channels, width, num_classes >= 1, got {in_channels}, {width}, {num_classes}")
        w = (width, 2 * width, 4 * width, 8 * width)
        self.in_channels = in_channels
        self.enc = nn.ModuleList([_block(in_channels, w[0]), _block(w[0], w[1]), _block(w[1], w[2]),
                                  _block(w[2], w[3])])
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(w[3], w[3], 1), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(2 * w[3], w[3], 1, bias=False), nn.BatchNorm2d(w[3]), nn.ReLU(inplace=True))
        self.dec = nn.ModuleList([_block(w[3] + w[2], w[2]), _block(w[2] + w[1], w[1]), _block(w[1] + w[0], w[0])])
        self.head = nn.Conv2d(w[0], num_classes, 1)

    def widen_input(self, in_channels: int) -> None:
        """Accept ``in_channels`` inputs: the first convolution's existing weights are kept, new channels start
        from the layer's default initialisation (same contract as the MobileNetV3 segmenters)."""
        conv = self.enc[0][0]
        wide = nn.Conv2d(in_channels, conv.out_channels, 3, padding=1, bias=False)
        keep = min(in_channels, conv.in_channels)
        with torch.no_grad():
            wide.weight[:, :keep] = conv.weight[:, :keep]
        self.enc[0][0] = wide
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        skips = []
        for k, block in enumerate(self.enc):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        ctx = self.context(x).expand_as(x)
        x = self.fuse(torch.cat([x, ctx], dim=1))
        for block, skip in zip(self.dec, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return {"out": self.head(x)}
