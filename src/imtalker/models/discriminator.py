"""Two-scale StyleGAN2 discriminator, used only to train the renderer (docs/architecture.md §6).

`scale1` judges the image at full resolution, `scale2` the image downsampled by 2 (bilinear). Attribute names
are the published state-dict keys without the `disc.` prefix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from imtalker.config import DiscriminatorConfig
from imtalker.models.layers import ConvLayer, EqualLinear

STDDEV_GROUP = 4  # minibatch standard deviation: samples per group
STDDEV_FEATURES = 1  # minibatch standard deviation: appended channels
FINAL_SIZE = 4  # spatial side after the last residual block


class DiscriminatorResBlock(nn.Module):
    """StyleGAN2 residual block halving the resolution: (conv2(conv1(x)) + skip(x)) / sqrt(2).

    Args:
        in_ch: input channels.
        out_ch: output channels.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, activate=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


def minibatch_stddev(x: torch.Tensor, group_size: int = STDDEV_GROUP, features: int = STDDEV_FEATURES) -> torch.Tensor:
    """Append the minibatch standard deviation as extra channels (StyleGAN2).

    Samples are grouped as the published code does (sample i belongs to group i mod (B / group)). The group is
    min(B, group_size); when B is not a multiple of it, the largest divisor of B below it is used instead (the
    published code fails on such batches).

    Args:
        x: (B, C, H, W) features.
        group_size: the largest group.
        features: channels appended (C must be divisible by it).

    Returns:
        (B, C + features, H, W).
    """
    batch, channels, height, width = x.shape
    group = min(batch, group_size)
    while batch % group:
        group -= 1
    std = x.view(group, -1, features, channels // features, height, width)
    std = torch.sqrt(std.var(0, unbiased=False) + 1e-8)  # (B/group, features, C/features, H, W)
    std = std.mean(dim=(2, 3, 4), keepdim=True).squeeze(2)  # (B/group, features, 1, 1)
    std = std.repeat(group, 1, height, width)  # (B, features, H, W)
    return torch.cat([x, std], dim=1)


class StyleGAN2Discriminator(nn.Module):
    """One StyleGAN2 discriminator for square images of a power-of-two size.

    Args:
        image_size: side of the input images (a power of two, at least 4).
        config: channel widths by resolution.
    """

    def __init__(self, image_size: int, config: DiscriminatorConfig):
        super().__init__()
        if image_size < FINAL_SIZE or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= {FINAL_SIZE}, got {image_size}")
        self.image_size = image_size
        in_ch = config.width(image_size)
        blocks: list[nn.Module] = [ConvLayer(3, in_ch, 1)]
        size = image_size
        while size > FINAL_SIZE:
            size //= 2
            out_ch = config.width(size)
            blocks.append(DiscriminatorResBlock(in_ch, out_ch))
            in_ch = out_ch
        self.convs = nn.Sequential(*blocks)
        width = config.width(FINAL_SIZE)
        self.final_conv = ConvLayer(in_ch + STDDEV_FEATURES, width, 3)
        self.final_linear = nn.Sequential(
            EqualLinear(width * FINAL_SIZE**2, width, activation=True),
            EqualLinear(width, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Score images.

        Args:
            images: (B, 3, S, S) with S = image_size.

        Returns:
            (B, 1) logits.
        """
        x = self.convs(images)  # (B, C, 4, 4)
        x = self.final_conv(minibatch_stddev(x))  # (B, C', 4, 4)
        return self.final_linear(x.flatten(1))  # (B, 1)


class MultiScaleDiscriminator(nn.Module):
    """`scale1` on the full image, `scale2` on the image downsampled by 2 (bilinear, align_corners False).

    Args:
        config: sizes; the default is the published 512-pixel discriminator.
    """

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = config if config is not None else DiscriminatorConfig()
        size = self.config.image_size
        if size < 2 * FINAL_SIZE or size & (size - 1):
            raise ValueError(f"image_size must be a power of two >= {2 * FINAL_SIZE}, got {size}")
        self.scale1 = StyleGAN2Discriminator(size, self.config)
        self.scale2 = StyleGAN2Discriminator(size // 2, self.config)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Score images at two scales.

        Args:
            images: (B, 3, S, S) float images in [0, 1], S = config.image_size.

        Returns:
            [logits of scale1 (B, 1), logits of scale2 (B, 1)].

        Raises:
            ValueError: if `images` is not a floating-point (B, 3, S, S) tensor.
        """
        size = self.config.image_size
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != (3, size, size):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must have shape (B, 3, {size}, {size}), got {got}")
        if not images.is_floating_point():
            raise ValueError(f"images must be a floating-point tensor, got dtype {images.dtype}")
        if images.shape[0] == 0:
            raise ValueError("images must hold at least one image, got an empty batch")
        half = F.interpolate(images, scale_factor=0.5, mode="bilinear", align_corners=False)  # (B, 3, S/2, S/2)
        return [self.scale1(images), self.scale2(half)]
