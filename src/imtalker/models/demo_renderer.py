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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DemoRendererConfig
from .layers import conv_batchnorm
from .motion_transfer import CrossAttention, from_tokens, merge_heads, split_heads, to_tokens
from .renderer import (NUM_COARSE_LEVELS, IMTRenderer, Reconstruction, SourceState, check_source_batch,
                       cpu_micro_batch)
from .synthesis import FrameDecoder

WARP_LEVEL = 2  # the coarse level whose grid the source warp paints its flow on (16 x 16 at 128 px)
# the correction layer's default initialisation scaled down, so an untrained renderer returns nearly its base image;
# not zero, which would pass no gradient back and stay zero while the features ignore the motion
CORRECTION_INIT_SCALE = 0.01
LOGIT_EPS = 1e-3  # base images are clamped to [eps, 1 - eps] before their logit
# the neighbourhood attention (`neighbourhood_attention_with_top1`) stands for the full one when the keys it leaves out
# hold at most exp(-NEGLIGIBLE_LOG_MASS) of the softmax mass: 2e-9, far below float32's resolution of the rest
NEGLIGIBLE_LOG_MASS = 20.0


def locality_prior(squared_distance: torch.Tensor, sigma: float) -> torch.Tensor:
    """The prior's score, -d^2 / (2 sigma^2), for squared distances d^2 in cells."""
    return squared_distance * (-0.5 / sigma ** 2)


def locality_bias(grid: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Additive attention scores (grid^2, grid^2) of -d^2 / (2 sigma^2), d the distance in cells of query and key."""
    cells = torch.arange(grid, device=device, dtype=dtype)
    positions = torch.stack(torch.meshgrid(cells, cells, indexing="ij"), dim=-1).reshape(-1, 2)  # row-major (y, x)
    return locality_prior(torch.cdist(positions, positions).square(), sigma)


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


def neighbourhood_radius(grid: int, sigma: float) -> int:
    """The smallest window radius (cells) beyond which the locality prior alone is below -(log N + 24): the
    neighbourhood the attention of a `grid` x `grid` map is computed on (`neighbourhood_attention_with_top1`), with
    4 to spare for the scores themselves."""
    needed = math.log(grid * grid) + NEGLIGIBLE_LOG_MASS + 4.0
    return min(grid - 1, math.ceil(math.sqrt(2 * sigma ** 2 * needed)) - 1)


def neighbourhood(grid: int, radius: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (2 radius + 1)^2 cells around each cell of a row-major `grid` x `grid` map, offsets row-major:
    (key index (N, L), whether it lies on the grid (N, L), squared distance in cells (L,)). Off-grid neighbours
    index cell 0; they are masked."""
    offsets = torch.arange(-radius, radius + 1, device=device)
    dy, dx = offsets.repeat_interleave(2 * radius + 1), offsets.repeat(2 * radius + 1)
    cells = torch.arange(grid * grid, device=device)
    y, x = (cells // grid)[:, None] + dy, (cells % grid)[:, None] + dx
    inside = (y >= 0) & (y < grid) & (x >= 0) & (x < grid)
    return torch.where(inside, y * grid + x, 0), inside, dy.square() + dx.square()


def gather_neighbours(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-head tokens (1, heads, N, D) -> each token's neighbours (1, heads, N, L, D) for a `neighbourhood` index."""
    return x.index_select(2, index.flatten()).view(*x.shape[:3], index.shape[1], x.shape[3])


def neighbourhood_attention_with_top1(q: torch.Tensor, k: torch.Tensor, neighbour_keys: torch.Tensor,
                                      neighbour_values: torch.Tensor, grid: int, sigma: float
                                      ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`attention_with_top1` under the locality prior over each query's (2R+1)^2 nearest keys only, or None where
    that cannot be shown equal to the full attention.

    With the prior -d^2 / (2 sigma^2) on the scores, a key R+1 cells away or further scores at most
    |q| max|k| / sqrt(D) - (R+1)^2 / (2 sigma^2). When that bound lies, for every query and head, at least
    log(N) + NEGLIGIBLE_LOG_MASS below the best score among the query's neighbours, the keys left out hold under
    exp(-NEGLIGIBLE_LOG_MASS) of the softmax mass together, and the output and the arg-max are the full
    attention's to float precision. Otherwise (large scores) it returns None, for the full attention. The demo
    renderer's prior (sigma = 0.5 cells) puts R at 3: 49 keys instead of 1024 at the 32 x 32 level.

    Args:
        q: (B, heads, N, D) queries of B frames, N = grid^2; k: (1, heads, N, D) the source's keys;
        neighbour_keys, neighbour_values: (1, heads, N, L, D) from `gather_neighbours`, L = (2R+1)^2.

    Returns:
        (output (B, heads, N, D), top1 (B, N) int64), or None.
    """
    _, heads, n, d = q.shape
    side = math.isqrt(neighbour_keys.shape[3])
    radius = side // 2
    index, inside, distance = neighbourhood(grid, radius, q.device)
    bias = torch.where(inside, locality_prior(distance.to(torch.float32), sigma), float("-inf")).to(q.dtype)  # (N, L)
    kn, vn = neighbour_keys[0].to(q.dtype), neighbour_values[0].to(q.dtype)  # (heads, N, L, D)

    scores = torch.matmul(q.permute(1, 2, 0, 3) * (1 / math.sqrt(d)), kn.transpose(-1, -2))  # (heads, N, B, L)
    scores += bias[:, None]
    best = scores.amax(dim=-1).float()  # (heads, N, B)
    query_norm = q.float().norm(dim=-1).permute(1, 2, 0)  # (heads, N, B)
    key_norm = k[0].float().norm(dim=-1).amax(dim=-1)  # (heads,)
    beyond = query_norm * key_norm[:, None, None] / math.sqrt(d) - (radius + 1) ** 2 / (2 * sigma ** 2)
    if bool((best - beyond < math.log(n) + NEGLIGIBLE_LOG_MASS).any()):
        return None
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, vn).permute(2, 0, 1, 3)  # (B, heads, N, D)
    nearest = probs.sum(dim=0).argmax(dim=-1)  # (N, B): the offset with the largest head sum
    return out, index.gather(1, nearest).t()


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
    # the last coarse level's keys and values around each cell (1, heads, N, L, D), which the neighbourhood attention
    # reads at inference; None in states made for training or for a captured graph
    neighbour_keys: torch.Tensor | None = None
    neighbour_values: torch.Tensor | None = None


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
        """The published source state, the image, its flow fields and, at inference with one image, the last
        coarse level's neighbourhoods (they depend on the source only)."""
        state = super().source_state(image)
        fields = self.source_warp.source_fields(state.motion_maps[WARP_LEVEL], state.features[WARP_LEVEL])
        neighbour_keys = neighbour_values = None
        if self.uses_neighbourhoods(state.keys[-1]):
            grid = self.config.coarse_grid
            index, _, _ = neighbourhood(grid, neighbourhood_radius(grid, self.config.attention_locality), image.device)
            neighbour_keys, neighbour_values = (gather_neighbours(x[-1], index) for x in (state.keys, state.values))
        return DemoSourceState(**vars(state), image=image.clone(memory_format=torch.contiguous_format),
                               warp_fields=fields, neighbour_keys=neighbour_keys, neighbour_values=neighbour_values)

    @staticmethod
    def uses_neighbourhoods(keys: torch.Tensor) -> bool:
        """Whether the last coarse level may attend over neighbourhoods: inference on one source, not traced for
        export (training takes the full attention's gradient; an exported graph has no data-dependent branch;
        `torch.compile` breaks its graph at the bound's check and runs both sides compiled)."""
        return keys.shape[0] == 1 and not torch.is_grad_enabled() and not torch.jit.is_tracing()

    def transfer(self, source: SourceState, motion_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """The published transfer with the locality prior on every cross-attention and the motion skip added to it."""
        aligned = []
        top1 = None
        for level in range(NUM_COARSE_LEVELS):
            attention = self.imt[level].block_efc
            driving = motion_maps[level]
            if level < NUM_COARSE_LEVELS - 1:
                bias = locality_bias(driving.shape[-1], self.config.attention_locality, driving.device)
                out = attention(driving, source.keys[level], source.values[level], bias=bias)
            else:
                out, top1 = self.attend_with_top1(attention, driving, source)
            aligned.append(out + self.motion_skip[level](driving, source.motion_maps[level]))
        for pooled, level in zip(source.pooled, self.fine_levels):
            aligned.append(self.imt[level](pooled, top1, self.config.coarse_grid))
        return aligned

    def attend_with_top1(self, attention: CrossAttention, driving: torch.Tensor, source: DemoSourceState,
                         bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The last coarse level's attention and arg-max: over each query's neighbourhood where the source state
        has them (`neighbourhood_attention_with_top1`; the full attention took a fifth of a 128 px frame's time),
        the full attention wherever that cannot be shown equal and in training. `bias`: the level's full
        `locality_bias`, made here when the full attention runs and it is None."""
        keys, values = source.keys[-1], source.values[-1]
        _, _, h, w = driving.shape
        if source.neighbour_keys is not None and self.uses_neighbourhoods(keys):
            q = split_heads(attention.q_proj(to_tokens(driving)), attention.num_heads)
            local = neighbourhood_attention_with_top1(q, keys, source.neighbour_keys, source.neighbour_values, h,
                                                      self.config.attention_locality)
            if local is not None:
                out, top1 = local
                return from_tokens(attention.proj(merge_heads(out)), h, w), top1
        if bias is None:
            bias = locality_bias(h, self.config.attention_locality, driving.device)
        return attention(driving, keys, values, with_top1=True, bias=bias)

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
