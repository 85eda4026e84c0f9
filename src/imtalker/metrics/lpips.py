"""LPIPS (Zhang et al. 2018, v0.1): a learned perceptual distance between two images.

Both images go through an ImageNet backbone (AlexNet or VGG16, in torchvision's `features.N` state-dict layout, so
torchvision's published files load unchanged); at five layers the features are scaled to unit length along the
channels, their squared difference is weighted per channel by a linear head (the `lpips` wheel's `lin{k}.model.1`
weights) and averaged over space, and the five layer scores are summed. Inputs are [0, 1] images; they are mapped to
[-1, 1] and then through the fixed scaling layer the published heads were trained with.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .files import find_metric_file, load_strict, read_state_dict

# The scaling layer of lpips v0.1: (x - shift) / scale on [-1, 1] images, ImageNet statistics in that range.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet `features` (indices are the state-dict keys)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),  # 0, 1
        nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),  # 2, 3, 4
        nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),  # 5, 6, 7
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),  # 8, 9
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),  # 10, 11
        nn.MaxPool2d(3, 2))  # 12


def vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 `features` (configuration D; indices are the state-dict keys)."""
    layers, channels = [], 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
    return nn.Sequential(*layers)


# Per backbone: the layers, the indices after which LPIPS taps the features (relu1..relu5), their widths.
BACKBONES = {
    "alex": (alexnet_features, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256)),
    "vgg": (vgg16_features, (3, 8, 15, 22, 29), (64, 128, 256, 512, 512)),
}


class LinearHead(nn.Module):
    """A 1x1 convolution to one channel without bias; `model.1` is the published key (`model.0` was dropout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS with an AlexNet (`net="alex"`, the paper's default) or VGG16 backbone; call with two (B, 3, H, W) image
    batches in [0, 1] to get (B,) distances (0 for identical images)."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        build, self.taps, channels = BACKBONES[net]
        self.features = build()
        for k, width in enumerate(channels):
            setattr(self, f"lin{k}", LinearHead(width))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def tapped(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five tapped feature maps, each scaled to unit length along the channels."""
        x = ((2 * images - 1) - self.shift) / self.scale
        maps = []
        for index, layer in enumerate(self.features[: self.taps[-1] + 1]):
            x = layer(x)
            if index in self.taps:
                # lpips adds 1e-10 to the norm, not under the root: kept so flat (zero) features stay zero
                maps.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return maps

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        total = 0
        for k, (a, b) in enumerate(zip(self.tapped(fake), self.tapped(real))):
            total = total + getattr(self, f"lin{k}")((a - b).square()).mean((1, 2, 3))
        return total


def load_lpips(net: str = "alex", backbone: str | os.PathLike | None = None, heads: str | os.PathLike | None = None,
               folder: str | os.PathLike | None = None) -> LPIPS:
    """LPIPS from a torchvision backbone file and the lpips wheel's linear heads: `backbone` and `heads`, or the
    files under their published names in `folder` (`files.METRIC_FILES`)."""
    model = LPIPS(net)
    backbone_path = find_metric_file(f"lpips_{net}", backbone, folder, suffixes=(".safetensors",))
    heads_path = find_metric_file(f"lpips_{net}_heads", heads, folder, suffixes=(".safetensors",))
    state = {k: v for k, v in read_state_dict(backbone_path).items() if k.startswith("features.")}
    state.update(read_state_dict(heads_path))
    return load_strict(model, state, f"{backbone_path} + {heads_path}")
