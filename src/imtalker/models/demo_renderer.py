"""The demo renderer (not published): the published renderer adapted to a small model trained briefly on a CPU.

What it changes, each for a reason docs/demo-model.md tells in full:

- `CompactMotionEncoder`: strided convolutions flattened into the latent, which learn where the mouth and head are
  within a short run where the published encoder does not;
- a locality prior on every cross-attention's scores (`locality_bias`), so an untrained renderer copies its source
  instead of averaging it;
- `MotionSkip`: the driving motion maps' departure from the source's added to the aligned appearance, a direct
  path that gives the motion latent a gradient from the first step;
- `MotionModulation`: every synthesis stage scaled and shifted by the latent's departure from the source's;
- `SourceWarp` + `DemoFrameDecoder`: the frame is the source resampled by a smooth flow plus a correction the
  synthesis network paints, so an untrained renderer returns its source sharp and training spends its steps on what
  moves.

Its config (`DemoRendererConfig`) also allows five appearance levels. The recipe is configs/demo-renderer.yaml.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DemoRendererConfig
from .layers import conv_batchnorm
from .renderer import (NUM_COARSE_LEVELS, IMTRenderer, Reconstruction, SourceState, check_source_batch,
                       cpu_micro_batch)
from .synthesis import FrameDecoder

WARP_LEVEL = 2  # the coarse level whose grid the source warp paints its flow on (16 x 16 at 128 px)
# the correction layer's default initialisation scaled down, so an untrained renderer returns nearly its base image;
# not zero, which would pass no gradient back and stay zero while the features ignore the motion
CORRECTION_INIT_SCALE = 0.01
LOGIT_EPS = 1e-3  # base images are clamped to [eps, 1 - eps] before their logit


def locality_bias(grid: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Additive attention scores (grid^2, grid^2) of -d^2 / (2 sigma^2), d the distance in cells of query and key."""
    cells = torch.arange(grid, device=device, dtype=dtype)
    positions = torch.stack(torch.meshgrid(cells, cells, indexing="ij"), dim=-1).reshape(-1, 2)  # row-major (y, x)
    return torch.cdist(positions, positions).square() * (-0.5 / sigma ** 2)


def normalised_departure(driving: torch.Tensor, source: torch.Tensor, rms: torch.Tensor, momentum: float,
                         training: bool) -> torch.Tensor:
    """(driving - source) divided per channel (dim 1) by a running root mean square that training updates in place.

    Not centred, so the source's own motion departs by exactly zero; scaled, because a latent changes within a clip
    by under 1% of its size."""
    departure = driving - source.expand_as(driving)
    if training:
        with torch.no_grad():
            dims = [d for d in range(departure.ndim) if d != 1]
            rms.lerp_(departure.square().mean(dims).sqrt(), momentum)
    shape = (1, -1) + (1,) * (departure.ndim - 2)
    return departure / rms.clamp_min(1e-6).view(shape)


class CompactMotionEncoder(nn.Module):
    """`latent_token_encoder`: strided 3x3 convolutions with BatchNorm and ReLU, each halving the side, the last map
    flattened (not averaged, so where the head and mouth are survives) into a linear layer -> (B, motion_dim)."""

    def __init__(self, config: DemoRendererConfig):
        super().__init__()
        widths = (3,) + config.motion_channels[1:]
        self.convs = nn.ModuleList([nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1)
                                    for i in range(len(widths) - 1)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(width) for width in widths[1:]])
        side = config.image_size // 2 ** len(self.convs)
        self.final_linear = nn.Linear(widths[-1] * side * side, config.motion_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(conv_batchnorm(x, conv, norm))
        return self.final_linear(x.flatten(1))


class MotionSkip(nn.Module):
    """`motion_skip.L`: the driving motion map's departure from the source's, normalised, through a 1x1 convolution;
    added to the aligned appearance of a coarse level, it is zero for the source's own motion."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, driving: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(driving - source))


class MotionModulation(nn.Module):
    """`motion_modulation`: per synthesis stage, a channel scale and shift (B, 2 C) linear in the driving latent's
    normalised departure from the source's; no biases and zero-initialised maps, so an untrained decoder and the
    source's own latent are unmodulated."""

    def __init__(self, motion_dim: int, stage_channels: Sequence[int], momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("departure_rms", torch.ones(motion_dim))
        self.stages = nn.ModuleList([nn.Linear(motion_dim, 2 * channels, bias=False) for channels in stage_channels])
        for layer in self.stages:
            nn.init.zeros_(layer.weight)

    def forward(self, driving: torch.Tensor, source: torch.Tensor) -> list[torch.Tensor]:
        departure = normalised_departure(driving, source, self.departure_rms, self.momentum, self.training)
        return [layer(departure) for layer in self.stages]


class SourceWarp(nn.Module):
    """`source_warp`: a smooth backward flow (B, 2, g, g) that resamples the source image into the base frame.

    The flow mixes `num_fields` flow fields, which the source's appearance and motion maps paint on one coarse grid
    (where a head turn or a camera move takes each part of this face), by coefficients linear in the latent's
    normalised departure. No biases, so the source's own latent moves nothing; the fields start at zero.
    """

    def __init__(self, channels: int, motion_dim: int, hidden: int, num_fields: int, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.num_fields = num_fields
        self.register_buffer("departure_rms", torch.ones(motion_dim))
        self.coefficients = nn.Sequential(nn.Linear(motion_dim, hidden, bias=False), nn.LeakyReLU(0.2),
                                          nn.Linear(hidden, num_fields, bias=False))
        self.field_head = nn.Sequential(nn.Conv2d(2 * channels, hidden, 3, padding=1), nn.LeakyReLU(0.2),
                                        nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.2),
                                        nn.Conv2d(hidden, 2 * num_fields, 3, padding=1))
        nn.init.zeros_(self.field_head[-1].weight)
        nn.init.zeros_(self.field_head[-1].bias)

    def source_fields(self, source_maps: torch.Tensor, source_features: torch.Tensor) -> torch.Tensor:
        """The flow fields (B, num_fields, 2, g, g) of a source, from its motion maps and appearance on one grid."""
        b, _, g, _ = source_maps.shape
        return self.field_head(torch.cat([source_maps, source_features], 1)).view(b, self.num_fields, 2, g, g)

    def flow(self, fields: torch.Tensor, driving: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Flow in normalised image coordinates (x, y) per grid cell: where each output cell samples the source."""
        departure = normalised_departure(driving, source, self.departure_rms, self.momentum, self.training)
        return torch.einsum("bk,bkcij->bcij", self.coefficients(departure),
                            fields.expand(driving.shape[0], -1, -1, -1, -1))

    @staticmethod
    def resample(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """The source image(s) (B or 1, 3, S, S) sampled at the identity grid plus the flow (B, 2, g, g), upsampled."""
        b, size = flow.shape[0], image.shape[-1]
        identity = torch.eye(2, 3, dtype=flow.dtype, device=flow.device).expand(b, 2, 3)
        grid = F.affine_grid(identity, [b, 3, size, size], align_corners=False)
        offset = F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False)
        return F.grid_sample(image.expand(b, -1, -1, -1), grid + offset.permute(0, 2, 3, 1), mode="bilinear",
                             padding_mode="border", align_corners=False)


class DemoFrameDecoder(FrameDecoder):
    """`frame_decoder`: the published synthesis network, its stages modulated by the motion, painting a correction
    of a base image in logit space: sigmoid(logit(base) + output)."""

    def __init__(self, feature_channels: tuple[int, ...], image_size: int, num_heads: int, window: int):
        super().__init__(feature_channels, image_size, num_heads, window)
        with torch.no_grad():
            self.final_conv[1].weight.mul_(CORRECTION_INIT_SCALE)
        nn.init.zeros_(self.final_conv[1].bias)

    def forward(self, aligned: list[torch.Tensor], fine_batch: int | None = None, *, base: torch.Tensor,
                modulation: list[torch.Tensor]) -> torch.Tensor:
        """Frames (B, 3, S, S) in [0, 1] from the aligned pyramid, base images (B, 3, S, S) in [0, 1] and per stage
        (B, 2 C) channel scales and shifts; `fine_batch` as in `FrameDecoder.forward`."""
        x = aligned[0]
        for i in range(self.fine_stage):
            x = self.modulated_stage(i, x, aligned[i + 1], modulation[i])
        step = fine_batch or x.shape[0]
        frames = []
        for start in range(0, x.shape[0], step):
            rows = slice(start, start + step)
            y = x[rows]
            for i in range(self.fine_stage, len(self.resblocks)):
                y = self.modulated_stage(i, y, aligned[i + 1][rows], modulation[i][rows])
            logits = F.pixel_shuffle(self.final_conv(y), 2) + torch.logit(base[rows], eps=LOGIT_EPS)
            frames.append(torch.sigmoid(logits))
        return torch.cat(frames)

    def modulated_stage(self, i: int, x: torch.Tensor, skip: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        """`FrameDecoder.stage`, the merged features scaled and shifted before the attention."""
        x = self.upconv_blocks[i](x)
        x = self.resblocks[i](torch.cat([x, skip], dim=1))
        scale, shift = modulation[:, :, None, None].chunk(2, dim=1)
        return self.transformer_blocks[i](x * (1 + scale) + shift)


@dataclass
class DemoSourceState(SourceState):
    """`SourceState` plus what the source warp needs of the source."""

    image: torch.Tensor  # the source image (B, 3, S, S), which the warp resamples
    warp_fields: torch.Tensor  # its flow fields (B, num_fields, 2, g, g)


@dataclass
class DemoReconstruction(Reconstruction):
    """`Reconstruction` plus the base image the frame corrects and its flow, which training losses read."""

    base: torch.Tensor  # (B, 3, S, S) the source warped
    flow: torch.Tensor  # (B, 2, g, g) normalised coordinates (x, y)


class DemoRenderer(IMTRenderer):
    """The published renderer with the demo model's changes (module docstring); checkpoint keys add `motion_skip.*`,
    `motion_modulation.*` and `source_warp.*`, and the motion encoder's differ."""

    motion_encoder_class = CompactMotionEncoder
    frame_decoder_class = DemoFrameDecoder

    def __init__(self, config: DemoRendererConfig | None = None):
        config = config or DemoRendererConfig()
        if not isinstance(config, DemoRendererConfig):
            raise ValueError(f"DemoRenderer needs a DemoRendererConfig, got {type(config).__name__}")
        super().__init__(config)
        widths = config.feature_channels[::-1]
        self.motion_skip = nn.ModuleList([MotionSkip(widths[level]) for level in range(NUM_COARSE_LEVELS)])
        self.motion_modulation = MotionModulation(config.motion_dim, widths[1:])
        self.source_warp = SourceWarp(widths[WARP_LEVEL], config.motion_dim, config.warp_hidden, config.warp_fields)

    def source_state(self, image: torch.Tensor) -> DemoSourceState:
        """The published source state, the image and its flow fields (they depend on the source only)."""
        state = super().source_state(image)
        fields = self.source_warp.source_fields(state.motion_maps[WARP_LEVEL], state.features[WARP_LEVEL])
        return DemoSourceState(**vars(state), image=image.clone(memory_format=torch.contiguous_format),
                               warp_fields=fields)

    def transfer(self, source: SourceState, motion_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """The published transfer with the locality prior on every cross-attention and the motion skip added to it."""
        aligned = []
        top1 = None
        for level in range(NUM_COARSE_LEVELS):
            attention = self.imt[level].block_efc
            driving = motion_maps[level]
            bias = locality_bias(driving.shape[-1], self.config.attention_locality, driving.device)
            if level < NUM_COARSE_LEVELS - 1:
                out = attention(driving, source.keys[level], source.values[level], bias=bias)
            else:
                out, top1 = attention(driving, source.keys[level], source.values[level], with_top1=True, bias=bias)
            aligned.append(out + self.motion_skip[level](driving, source.motion_maps[level]))
        for pooled, level in zip(source.pooled, self.fine_levels):
            aligned.append(self.imt[level](pooled, top1, self.config.coarse_grid))
        return aligned

    def render_latents(self, source: DemoSourceState, motion: torch.Tensor) -> DemoReconstruction:
        """Frames for motion latents (B, 32): the warped source, corrected by the modulated synthesis network."""
        check_source_batch(source, motion)
        motion_maps = self.decode_motion(self.adapt_motion(motion, source.identity))
        aligned = self.transfer(source, motion_maps)
        flow = self.source_warp.flow(source.warp_fields, motion, source.motion)
        base = self.source_warp.resample(source.image, flow)
        frame = self.frame_decoder(aligned, fine_batch=cpu_micro_batch(motion.device, self.training), base=base,
                                   modulation=self.motion_modulation(motion, source.motion))
        return DemoReconstruction(frame, motion, motion_maps, source, base, flow)
