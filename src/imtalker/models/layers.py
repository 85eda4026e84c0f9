"""Building blocks shared by the renderer and the discriminator (docs/architecture.md §2).

Attribute names are the published state-dict keys, so checkpoints load with a plain prefix strip.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------------
# StyleGAN-style layers (section 1)
# ---------------------------------------------------------------------------------------------------------------


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2) -> torch.Tensor:
    """LReLU(x + bias) * sqrt(2), with bias broadcast over the channel axis (axis 1)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), negative_slope) * math.sqrt(2)


def fused_leaky_relu_(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """In-place fused_leaky_relu for a freshly computed tensor nobody else holds (autograd-safe)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    # LReLU(v) * g == LReLU(v * g) for g > 0, so the gain goes first and the activation stays the last op
    return F.leaky_relu(x.add_(bias.view(shape)).mul_(math.sqrt(2)), 0.2, inplace=True)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class EqualLinear(nn.Module):
    """Linear layer whose weight is scaled by 1/sqrt(in) at run time; optionally with a fused LReLU."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = 1 / math.sqrt(in_dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias)
        return F.linear(x, self.weight * self.scale, self.bias)


class EqualConv2d(nn.Module):
    """Convolution whose weight is scaled by 1/sqrt(in * k * k) at run time."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


def blur_kernel(taps: tuple[float, ...] = (1, 3, 3, 1), upsample_factor: int = 1) -> torch.Tensor:
    k = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(k, k)
    k = k / k.sum()
    return k * upsample_factor**2


class Blur(nn.Module):
    """Depthwise 4x4 FIR low-pass filter applied as one grouped convolution.

    The published code pads, reshapes and runs a 1-channel convolution; a depthwise conv computes the same sums.
    """

    def __init__(self, pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", blur_kernel(upsample_factor=upsample_factor))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = int(x.shape[1])  # a constant in a traced graph, where ONNX needs the kernel's shape
        # the kernel is symmetric, so correlation equals the flipped-kernel convolution of the original
        weight = self.kernel.to(x.dtype).expand(channels, 1, *self.kernel.shape)
        p0, p1 = self.pad
        if p0 == p1:
            return F.conv2d(x, weight, padding=p0, groups=channels)
        return F.conv2d(F.pad(x, (p0, p1, p0, p1)), weight, groups=channels)


class ConvLayer(nn.Sequential):
    """StyleGAN2 ConvLayer: [Blur] -> EqualConv2d -> [FusedLeakyReLU | LReLU]; children numbered as published."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, downsample: bool = False, bias: bool = True,
                 activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            p = 4 - 2 + (kernel_size - 1)
            layers.append(Blur(pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_ch) if bias else nn.LeakyReLU(0.2))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activation = self[-1]
        if not isinstance(activation, FusedLeakyReLU):
            return super().forward(x)
        *head, conv = list(self)[:-1]
        for layer in head:
            x = layer(x)
        # bias and sqrt(2) gain folded into the convolution: one pass over the output instead of four
        gain = math.sqrt(2)
        x = F.conv2d(x, conv.weight * (conv.scale * gain), activation.bias.view(-1) * gain,
                     stride=conv.stride, padding=conv.padding)
        return F.leaky_relu(x, 0.2, inplace=True)


class ModulatedConv2d(nn.Module):
    """Style-modulated, demodulated convolution (StyleGAN2), optionally upsampling by 2.

    Computed by scaling the input channels by the style and the output channels by the demodulation factor,
    which equals convolving each sample with its own modulated weights but runs as one batched convolution.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        if upsample:
            self.blur = Blur(pad=(1, 1), upsample_factor=2)
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1)
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        style = self.modulation(style)  # (B, in)
        x = x * style[:, :, None, None].to(x.dtype)
        if self.upsample:
            x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2, padding=0)
            x = self._demodulate(x, weight, style)
            return self.blur(x)
        x = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        return self._demodulate(x, weight, style)

    def _demodulate(self, x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if not self.demodulate:
            return x
        # sum over (in, k, k) of (w * s_in)^2 = (s^2) @ (sum over k of w^2)^T
        demod = torch.rsqrt(style.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)  # (B, out)
        return x * demod[:, :, None, None].to(x.dtype)


class NoiseInjection(nn.Module):
    """Holds the published `noise.weight`; inference never injects noise, so it is the identity."""

    def __init__(self):
        super().__init__()
        # frozen: nothing uses it, and a parameter that never gets a gradient stops DDP at its second step
        self.weight = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class StyledConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu_(self.noise(self.conv(x, style)), self.activate.bias)


# ---------------------------------------------------------------------------------------------------------------
# Convolutional blocks of the appearance path (section 2); "CBR" = conv (no bias) -> BatchNorm -> LReLU(0.01)
# ---------------------------------------------------------------------------------------------------------------


def conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)


def upsample_taps(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """A 3-tap kernel axis (w0, w1, w2) -> the 4 taps (w2, w1 + w2, w0 + w1, w0) of the stride-2 transposed
    convolution that equals nearest 2x upsampling followed by the 3-tap convolution (padding 1).

    Output pixel 2i sees the upsampled pixels of inputs (i - 1, i, i) through (w0, w1, w2): input i - 1 with w0 and
    i with w1 + w2; pixel 2i + 1 sees inputs (i, i, i + 1): i with w0 + w1 and i + 1 with w2. A stride-2 transposed
    convolution with padding 1 adds input i into output 2i - 1 + t through tap t, which puts the sums in that order.
    """
    w0, w1, w2 = weight.unbind(dim)
    return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d(nearest 2x upsample of x, weight, padding 1) without the upsampled copy.

    Each output pixel depends on 2 x 2 input pixels through sums of the 3 x 3 taps, so one stride-2 transposed
    convolution with a 4 x 4 kernel does it: 16 multiply-adds per output pixel and channel pair instead of 36. The
    result differs from the two-step form only by float rounding.
    """
    kernel = upsample_taps(upsample_taps(weight, 2), 3).transpose(0, 1)  # (C_in, C_out, 4, 4)
    return F.conv_transpose2d(x, kernel, bias, stride=2, padding=1)


def conv_batchnorm(x: torch.Tensor, conv: nn.Conv2d, norm: nn.BatchNorm2d, upsample: bool = False) -> torch.Tensor:
    """BatchNorm(conv(x)), of x upsampled 2x (nearest) first with `upsample`; in eval mode as one convolution with
    the statistics folded into weight and bias.

    Folding saves a full pass over the activations; the result differs from the two-step form only by float
    rounding (about 1e-7 relative).
    """
    if upsample and (conv.kernel_size, conv.stride, conv.padding) != ((3, 3), (1, 1), (1, 1)):
        raise ValueError("an upsampling conv_batchnorm needs a 3x3 convolution with stride 1 and padding 1")
    convolve = upsample_conv3x3 if upsample else functools.partial(F.conv2d, stride=conv.stride, padding=conv.padding)
    if norm.training:
        return norm(convolve(x, conv.weight, conv.bias))
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)  # (C,)
    bias = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return convolve(x, conv.weight * scale[:, None, None, None], bias)


class BatchNorm(nn.Module):
    """BatchNorm2d one level down (`norm.norm`), as the published checkpoint nests it."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ConvNorm(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels)
        self.norm = BatchNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_batchnorm(x, self.conv, self.norm.norm)


class FeatResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvNorm(channels)
        self.conv2 = ConvNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.leaky_relu(self.conv1(x), 0.01, inplace=True))
        return F.leaky_relu(y.add_(x), 0.01, inplace=True)  # y is a fresh tensor: in place saves two passes


class ConvResBlock(nn.Module):
    """conv1 -> BN -> LReLU(0.01) -> [resize] -> conv2 -> two FeatResBlocks.

    `resample` is "down" (2x2 average pool after the first activation), "up" (nearest 2x before conv1) or None.
    """

    def __init__(self, in_ch: int, out_ch: int, resample: str | None = None):
        super().__init__()
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}")
        self.resample = resample
        self.conv1 = conv3x3(in_ch, out_ch)
        self.norm = BatchNorm(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.feat_res_block1 = FeatResBlock(out_ch)
        self.feat_res_block2 = FeatResBlock(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # "up": the nearest upsampling is folded into the convolution (upsample_conv3x3)
        x = conv_batchnorm(x, self.conv1, self.norm.norm, upsample=self.resample == "up")
        x = F.leaky_relu(x, 0.01, inplace=True)
        if self.resample == "down":
            x = F.avg_pool2d(x, 2)
        x = self.conv2(x)
        return self.feat_res_block2(self.feat_res_block1(x))


def mlp_stack(dim: int, depth: int) -> nn.ModuleList:
    """The `linear_layers.0..depth-1` stacks of EqualLinear(dim, dim), each followed by LReLU(0.2) in forward."""
    return nn.ModuleList([EqualLinear(dim, dim) for _ in range(depth)])


def run_mlp_stack(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = F.leaky_relu(layer(x), 0.2)
    return x
