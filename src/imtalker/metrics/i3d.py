"""FVD's feature network: the Inflated 3D ConvNet (I3D, Carreira & Zisserman 2017) trained on Kinetics-400.

The layout and names are those of the pytorch-i3d port (`InceptionI3d`), so its published `rgb_imagenet.pt` loads
unchanged. Every convolution and pool pads like TensorFlow's "SAME" (computed from the input size, more at the end
than at the start), as the original graph did. FVD's features are the 400 Kinetics logits averaged over time, on
clips of 16 frames resized to 224 x 224 and mapped to [-1, 1], as the reference FVD does.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .files import find_metric_file, load_strict, read_state_dict

CLIP_FRAMES = 16
INPUT_SIZE = 224
FEATURES = 400


def same_padding(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Zero-pad (B, C, T, H, W) like TensorFlow's SAME padding: the output side is ceil(side / stride)."""
    pads = []
    for side, k, s in zip(x.shape[2:], kernel, stride):
        total = max(k - s, 0) if side % s == 0 else max(k - side % s, 0)
        pads.append((total // 2, total - total // 2))
    (t0, t1), (h0, h1), (w0, w1) = pads
    return F.pad(x, (w0, w1, h0, h1, t0, t1))


class Unit3D(nn.Module):
    """SAME-padded 3D convolution, then BatchNorm (eps 0.001) and ReLU (the logits layer has a bias and neither)."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(same_padding(x, self.kernel, self.stride))
        return x if self.logits else F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # zeros pad here, as in the port: the inputs are ReLU outputs, so a zero never wins over a real value
        return F.max_pool3d(same_padding(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1. `widths` are their six widths."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """(B, 3, T, H, W) videos in [0, 1] at 224 px -> (B, 400) Kinetics logits averaged over time."""

    def __init__(self, num_classes: int = FEATURES):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(192, (64, 96, 128, 16, 32, 32))
        self.Mixed_3c = InceptionModule(256, (128, 128, 192, 32, 96, 64))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(480, (192, 96, 208, 16, 48, 64))
        self.Mixed_4c = InceptionModule(512, (160, 112, 224, 24, 64, 64))
        self.Mixed_4d = InceptionModule(512, (128, 128, 256, 24, 64, 64))
        self.Mixed_4e = InceptionModule(512, (112, 144, 288, 32, 64, 64))
        self.Mixed_4f = InceptionModule(528, (256, 160, 320, 32, 128, 128))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(832, (256, 160, 320, 32, 128, 128))
        self.Mixed_5c = InceptionModule(832, (384, 192, 384, 48, 128, 128))
        self.logits = Unit3D(1024, num_classes, logits=True)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        x = 2 * videos - 1
        for layer in (self.Conv3d_1a_7x7, self.MaxPool3d_2a_3x3, self.Conv3d_2b_1x1, self.Conv3d_2c_3x3,
                      self.MaxPool3d_3a_3x3, self.Mixed_3b, self.Mixed_3c, self.MaxPool3d_4a_3x3, self.Mixed_4b,
                      self.Mixed_4c, self.Mixed_4d, self.Mixed_4e, self.Mixed_4f, self.MaxPool3d_5a_2x2,
                      self.Mixed_5b, self.Mixed_5c):
            x = layer(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # the port's pool: 2 frames x 7 x 7 at 224 px
        return self.logits(x).mean((2, 3, 4))


def video_clips(frames: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) frames in [0, 1] -> (T // 16, 3, 16, 224, 224) consecutive clips (a short last clip is dropped)."""
    count = len(frames) // CLIP_FRAMES
    frames = frames[: count * CLIP_FRAMES]
    if frames.shape[-1] != INPUT_SIZE or frames.shape[-2] != INPUT_SIZE:
        frames = F.interpolate(frames, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return frames.reshape(count, CLIP_FRAMES, *frames.shape[1:]).transpose(1, 2)


def load_i3d(path: str | os.PathLike | None = None, folder: str | os.PathLike | None = None) -> InceptionI3d:
    """pytorch-i3d's Kinetics weights from `path` or from `folder` under its published name (`files.METRIC_FILES`)."""
    path = find_metric_file("i3d", path, folder, suffixes=(".safetensors",))
    return load_strict(InceptionI3d(), read_state_dict(path), path)
