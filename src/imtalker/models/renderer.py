"""The IMTalker renderer (MODEL.md section 3): source portrait + motion latents -> frames.

Attribute names are the published `gen.*` state-dict keys. Everything that depends only on the source image
is computed once by `encode_source`; `render` does only the per-frame work, in batches.
"""

from __future__ import annotations

import math

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RendererConfig
from .layers import (ConvLayer, ConvResBlock, EqualConv2d, EqualLinear, StridedEncoder, StyledConv, mlp_stack,
                     run_mlp_stack)
from .motion_transfer import CoarseLevel, GuidedResampler, guided_resample, pool_blocks, split_heads, to_tokens
from .synthesis import FrameDecoder

NUM_COARSE_LEVELS = 4  # cross-attention levels; the remaining two use the guided resampler
WARP_LEVEL = 2  # the coarse level whose grid `source_warp` paints its flow on (16 x 16 at 128 px)


def cpu_micro_batch(device: torch.device, training: bool = False) -> int | None:
    """Frames per pass through the high-resolution layers: 1 on CPU at inference, the whole batch elsewhere.

    Training always passes the whole batch: its BatchNorm layers normalise with the batch's statistics, which
    one-frame passes would turn into per-frame statistics that inference (running statistics) never sees.

    On CPU the large layers are compute-bound already at one frame, and one frame's activations (16-64 MiB at
    512 px) get reused by the allocator instead of page-faulted in anew: measured 10% faster and 40% less peak
    memory than passes of 8 frames on a 2-core CPU. GPUs want the whole batch.
    """
    return 1 if device.type == "cpu" and not training else None


class IdentityEncoder(nn.Module):
    """`dense_feature_encoder`: source image -> appearance pyramid (coarse to fine) and identity code."""

    def __init__(self, config: RendererConfig):
        super().__init__()
        widths = config.feature_channels
        self.initial_conv = nn.Sequential(nn.Conv2d(3, widths[0], 7, padding=3), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.down_block_0 = ConvResBlock(widths[0], widths[0], resample="down")
        self.down_blocks = nn.ModuleList(
            [ConvResBlock(widths[i], widths[i + 1], resample="down") for i in range(len(widths) - 1)])
        # present in the published checkpoint but not used by its forward pass
        self.equalconv = EqualConv2d(widths[-1], widths[-1], 3, padding=1)
        self.linear_layers = mlp_stack(widths[-1], 4)
        self.final_linear = EqualLinear(widths[-1], config.identity_dim)

    def forward(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.down_block_0(self.initial_conv(image))
        features = [x]
        for block in self.down_blocks:
            x = block(x)
            features.append(x)
        identity = self.final_linear(run_mlp_stack(self.linear_layers, x.mean(dim=(2, 3))))  # (B, 512)
        return features[::-1], identity


class MotionResBlock(nn.Module):
    """Downsampling residual block of the motion encoder: 3x3 skip with activation, no 1/sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True)
        self.skip = ConvLayer(in_ch, out_ch, 3, downsample=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + self.skip(x)


class MotionEncoder(nn.Module):
    """`latent_token_encoder`: any face image -> compact motion latent (B, motion_dim)."""

    def __init__(self, config: RendererConfig):
        super().__init__()
        widths = config.motion_channels
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1)
        self.res_blocks = nn.ModuleList([MotionResBlock(widths[i], widths[i + 1]) for i in range(len(widths) - 1)])
        self.equalconv = EqualConv2d(widths[-1], widths[-1], 3, padding=1)
        self.linear_layers = mlp_stack(widths[-1], 4)
        self.final_linear = EqualLinear(widths[-1], config.motion_dim)
        self.norms = nn.ModuleList([nn.BatchNorm2d(width) for width in widths]) if config.motion_norm else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(image), 0.2)
        if self.norms is not None:
            x = self.norms[0](x)
        for i, block in enumerate(self.res_blocks):
            x = block(x)
            if self.norms is not None:
                x = self.norms[i + 1](x)
        x = self.equalconv(x).mean(dim=(2, 3))
        return self.final_linear(run_mlp_stack(self.linear_layers, x))


class CompactMotionEncoder(StridedEncoder):
    """A motion encoder for small, briefly trained models (`motion_encoder="compact"`, not published): five strided
    3x3 convolutions with BatchNorm and ReLU, the last map flattened into a linear layer, so where things are (the
    head, the mouth) reaches the latent instead of being averaged away."""

    def __init__(self, config: RendererConfig):
        super().__init__((3,) + config.motion_channels[1:], config.image_size, config.motion_dim)


class MotionSkip(nn.Module):
    """`motion_skip.L` (not published): the driving motion map's departure from the source's, normalised, then a 1x1
    convolution, added to the aligned appearance of a coarse level.

    The departure is zero for the source's own motion, so the decoder starts from the source and reads only what
    moved. Normalised, because a motion latent changes within a clip by under 1% of its size (it also carries the
    face it came from), which left the decoder's input practically motion-free: no frame of a 1000-step run moved.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, driving: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(driving - source))


class MotionModulation(nn.Module):
    """`motion_modulation` (not published): per synthesis stage, a channel scale and shift (B, 2 C) from the driving
    latent's departure from the source's.

    The departure is divided by its running root mean square per dimension (it is under 1% of a latent's size), not
    centred, so the source's own latent gives exactly no modulation. Each stage's map starts at zero, so an untrained
    decoder is unmodulated.
    """

    def __init__(self, motion_dim: int, stage_channels: Sequence[int], momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("departure_rms", torch.ones(motion_dim))
        # no bias: a departure of zero must leave the decoder as it is
        self.stages = nn.ModuleList([nn.Linear(motion_dim, 2 * channels, bias=False) for channels in stage_channels])
        for layer in self.stages:
            nn.init.zeros_(layer.weight)

    def forward(self, driving: torch.Tensor, source: torch.Tensor) -> list[torch.Tensor]:
        departure = normalised_departure(driving, source, self.departure_rms, self.momentum, self.training)
        return [layer(departure) for layer in self.stages]


def normalised_departure(driving: torch.Tensor, source: torch.Tensor, rms: torch.Tensor, momentum: float,
                         training: bool) -> torch.Tensor:
    """(driving - source) divided per channel (dim 1) by a running root mean square that training updates in place.

    Not centred, so the source's own motion departs by exactly zero."""
    departure = driving - source.expand_as(driving)
    if training:
        with torch.no_grad():
            dims = [d for d in range(departure.ndim) if d != 1]
            rms.lerp_(departure.square().mean(dims).sqrt(), momentum)
    shape = (1, -1) + (1,) * (departure.ndim - 2)
    return departure / rms.clamp_min(1e-6).view(shape)


class SourceWarp(nn.Module):
    """`source_warp` (not published): a smooth backward flow (B, 2, g, g) that resamples the source image into the
    base frame the synthesis network corrects, in place of `source_skip`'s whole pixel blocks.

    The flow is linear in a few coefficients of the latents' departure (normalised as in `MotionModulation`), times
    flow fields the source's appearance and motion maps paint on one coarse grid: where a head turn or a camera move
    takes each part of this face. No biases, so the source's own latent moves nothing; the fields start at zero.
    """

    def __init__(self, channels: int, motion_dim: int, hidden: int = 64, fields: int = 16, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.fields = fields
        self.register_buffer("departure_rms", torch.ones(motion_dim))
        self.coefficients = nn.Sequential(nn.Linear(motion_dim, hidden, bias=False), nn.LeakyReLU(0.2),
                                          nn.Linear(hidden, fields, bias=False))
        self.field_head = nn.Sequential(nn.Conv2d(2 * channels, hidden, 3, padding=1), nn.LeakyReLU(0.2),
                                        nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.2),
                                        nn.Conv2d(hidden, 2 * fields, 3, padding=1))
        nn.init.zeros_(self.field_head[-1].weight)
        nn.init.zeros_(self.field_head[-1].bias)

    def flow(self, source_maps: torch.Tensor, source_features: torch.Tensor, driving: torch.Tensor,
             source: torch.Tensor) -> torch.Tensor:
        """Flow in normalised image coordinates (x, y) per grid cell: where each output cell samples the source."""
        departure = normalised_departure(driving, source, self.departure_rms, self.momentum, self.training)
        b0, _, g, _ = source_maps.shape
        fields = self.field_head(torch.cat([source_maps, source_features], 1)).view(b0, self.fields, 2, g, g)
        return torch.einsum("bk,bkcij->bcij", self.coefficients(departure), fields.expand(driving.shape[0], -1, -1,
                                                                                         -1, -1))

    @staticmethod
    def resample(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """The source image(s) (B or 1, 3, S, S) sampled at the identity grid plus the flow (B, 2, g, g), upsampled."""
        b, size = flow.shape[0], image.shape[-1]
        identity = torch.eye(2, 3, dtype=flow.dtype, device=flow.device).expand(b, 2, 3)
        grid = F.affine_grid(identity, [b, 3, size, size], align_corners=False)
        offset = F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False)
        return F.grid_sample(image.expand(b, -1, -1, -1), grid + offset.permute(0, 2, 3, 1), mode="bilinear",
                             padding_mode="border", align_corners=False)


class IdentityAdapter(nn.Module):
    """`adapt`: maps a motion latent into the motion space of a given identity."""

    def __init__(self, config: RendererConfig):
        super().__init__()
        self.in_layer = EqualLinear(config.motion_dim + config.identity_dim, config.adapt_dim)
        self.linear_layers = mlp_stack(config.adapt_dim, 4)
        self.final_linear = EqualLinear(config.adapt_dim, config.motion_dim)

    def forward(self, motion: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        x = self.in_layer(torch.cat([motion, identity], dim=1))  # no activation after the input layer
        return self.final_linear(run_mlp_stack(self.linear_layers, x))


class MotionDecoder(nn.Module):
    """`latent_token_decoder`: adapted latent -> four motion maps at the coarse levels (coarse to fine)."""

    def __init__(self, config: RendererConfig):
        super().__init__()
        size = config.image_size // 2 ** (config.num_levels + 1)  # half the coarsest level
        self.const = nn.Parameter(torch.randn(1, config.const_channels, size, size))
        widths = config.feature_channels[::-1][:NUM_COARSE_LEVELS]  # 512, 512, 256, 128: the coarse levels
        layers = [StyledConv(config.const_channels, widths[0], 3, config.motion_dim)]
        in_ch = widths[0]
        for out_ch in widths:  # per level: upsample, then two convolutions at the new size
            layers.append(StyledConv(in_ch, out_ch, 3, config.motion_dim, upsample=True))
            layers.append(StyledConv(out_ch, out_ch, 3, config.motion_dim))
            layers.append(StyledConv(out_ch, out_ch, 3, config.motion_dim))
            in_ch = out_ch
        self.style_conv_layers = nn.ModuleList(layers)

    def forward(self, style: torch.Tensor) -> list[torch.Tensor]:
        x = self.const.expand(style.shape[0], -1, -1, -1)
        x = self.style_conv_layers[0](x, style)
        maps = []
        for i, layer in enumerate(self.style_conv_layers[1:], start=1):
            x = layer(x, style)
            if i % 3 == 0:
                maps.append(x)
        return maps


@dataclass
class SourceState:
    """Everything the renderer needs from a source portrait, computed once by `IMTRenderer.encode_source`.

    All tensors have batch size B (usually 1, broadcast over any number of frames at render time).
    """

    features: list[torch.Tensor]  # appearance pyramid, coarse to fine (B, C, H, W)
    identity: torch.Tensor  # (B, identity_dim)
    motion: torch.Tensor  # un-adapted motion latent of the source (B, motion_dim); the generator's reference
    motion_maps: list[torch.Tensor]  # source motion maps at the coarse levels
    keys: list[torch.Tensor]  # projected keys per coarse level (B, heads, N, D)
    values: list[torch.Tensor]  # projected values per coarse level (B, heads, N, D)
    pooled: list[torch.Tensor]  # pooled fine-level blocks for the guided resampler (B, C, grid^2)
    pixels: torch.Tensor | None = None  # with `source_skip`: the image's pixel blocks (B, grid^2, 3 * cell^2)
    image: torch.Tensor | None = None  # with `source_warp`: the image itself (B, 3, S, S)

    @property
    def batch_size(self) -> int:
        return self.identity.shape[0]

    def to(self, *args, **kwargs) -> "SourceState":
        def move(x):
            if x is None:
                return None
            return [t.to(*args, **kwargs) for t in x] if isinstance(x, list) else x.to(*args, **kwargs)

        return SourceState(**{name: move(value) for name, value in vars(self).items()})


@dataclass
class Reconstruction:
    """What `IMTRenderer.reconstruct` computed for a batch of driving frames and their sources."""

    frame: torch.Tensor  # (B, 3, S, S) rendered driving frames
    motion: torch.Tensor  # (B, motion_dim) driving motion latents
    motion_maps: list[torch.Tensor]  # the driving frames' motion maps at the coarse levels
    source: SourceState
    base: torch.Tensor | None = None  # with `source_skip`: the source image moved, which the frame corrects
    flow: torch.Tensor | None = None  # with `source_warp`: its flow (B, 2, g, g), normalised coordinates (x, y)


class IMTRenderer(nn.Module):
    """Identity encoder + motion encoder + identity-adaptive module + motion decoder + IMT + synthesis."""

    def __init__(self, config: RendererConfig | None = None):
        super().__init__()
        self.config = config = config or RendererConfig()
        self.dense_feature_encoder = IdentityEncoder(config)
        self.latent_token_encoder = (MotionEncoder(config) if config.motion_encoder == "published"
                                     else CompactMotionEncoder(config))
        self.latent_token_decoder = MotionDecoder(config)
        self.frame_decoder = FrameDecoder(config.feature_channels, config.image_size, config.num_heads,
                                          config.window_size, residual=config.source_skip)
        self.adapt = IdentityAdapter(config)
        widths = config.feature_channels[::-1]
        self.imt = nn.ModuleList([CoarseLevel(widths[level], config.num_heads, config.attention_locality)
                                  for level in range(NUM_COARSE_LEVELS)]
                                 + [GuidedResampler(2 ** (level - NUM_COARSE_LEVELS + 1)) for level in self.fine_levels])
        self.motion_skip = nn.ModuleList(
            [MotionSkip(widths[level]) for level in range(NUM_COARSE_LEVELS)]) if config.motion_skip else None
        self.motion_modulation = (MotionModulation(config.motion_dim, widths[1:]) if config.motion_modulation
                                  else None)
        self.source_warp = (SourceWarp(widths[WARP_LEVEL], config.motion_dim)
                            if config.source_warp else None)
        # Training switch (outputs unchanged): let the fine levels' loss reach the finest attention through a
        # straight-through estimate of the arg-max. Without it a short run learns to decode the fine levels alone,
        # whose arg-max passes no gradient, and the motion latent never gets a training signal.
        self.top1_gradient = False

    @property
    def fine_levels(self) -> range:
        """Indices (coarse to fine) of the guided-resampler levels: 4 and 5 in the published layout."""
        return range(NUM_COARSE_LEVELS, self.config.num_levels)

    # -- checks ----------------------------------------------------------------------------------------------

    def _check_images(self, images: torch.Tensor, name: str) -> None:
        size = self.config.image_size
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (B, 3, {size}, {size}), got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != (size, size):
            raise ValueError(f"{name} must have shape (B, 3, {size}, {size}), got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch")
        if not images.is_floating_point():
            raise ValueError(f"{name} must be a float tensor with values in [0, 1], got dtype {images.dtype}")
        lo, hi = images.min().item(), images.max().item()
        if not (lo >= 0.0 and hi <= 1.0):  # also rejects NaN
            raise ValueError(f"{name} values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")

    def _check_motion(self, motion: torch.Tensor) -> None:
        dim = self.config.motion_dim
        if not isinstance(motion, torch.Tensor) or motion.ndim != 2 or motion.shape[1] != dim or motion.shape[0] == 0:
            shape = tuple(motion.shape) if isinstance(motion, torch.Tensor) else type(motion).__name__
            raise ValueError(f"motion must be a tensor of shape (N, {dim}) with N >= 1, got {shape}")
        if not motion.is_floating_point() or not torch.isfinite(motion).all():
            raise ValueError(f"motion must hold finite float values, got dtype {motion.dtype}")

    # -- stages ----------------------------------------------------------------------------------------------

    def adapt_motion(self, motion: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """(N, 32) latents adapted to identity (N or 1, 512)."""
        return self.adapt(motion, identity.expand(motion.shape[0], -1))

    def decode_motion(self, adapted: torch.Tensor) -> list[torch.Tensor]:
        return self.latent_token_decoder(adapted)

    def self_attention_logits(self, source: SourceState) -> torch.Tensor:
        """Scores of the finest cross-attention level with a source attending to itself, (B, heads, N, N).

        With driving = source the ideal alignment is the identity map; training can ask for it directly
        (`attention_alignment_loss`), which teaches the motion maps to tell positions apart much sooner than the
        reconstruction loss alone does.
        """
        return self.attention_logits(source, source.motion_maps)

    def attention_logits(self, source: SourceState, motion_maps: list[torch.Tensor]) -> torch.Tensor:
        """Scores (B, heads, N, N) of the finest cross-attention level, driving motion maps against the source's keys;
        its arg-max also picks the fine levels' blocks (`transfer`)."""
        level = self.imt[NUM_COARSE_LEVELS - 1].block_efc
        q = split_heads(level.q_proj(to_tokens(motion_maps[NUM_COARSE_LEVELS - 1])), level.num_heads)
        k = source.keys[NUM_COARSE_LEVELS - 1]  # (B, heads, N, D), projected once per source
        logits = q @ k.transpose(-2, -1) * (1 / math.sqrt(q.shape[-1]))
        grid = motion_maps[NUM_COARSE_LEVELS - 1].shape[-1]
        bias = level.score_bias(grid, grid, logits)
        return logits if bias is None else logits + bias

    @torch.inference_mode()
    def encode_source(self, image: torch.Tensor) -> SourceState:
        """Encode a source portrait once: image (B, 3, S, S) float in [0, 1]."""
        self._check_images(image, "image")
        return self._encode_source(image)

    def _encode_source(self, image: torch.Tensor) -> SourceState:
        image = image.contiguous(memory_format=torch.channels_last)  # oneDNN/cuDNN convolutions run faster so
        features, identity = self.dense_feature_encoder(image)
        motion = self.latent_token_encoder(image)
        motion_maps = self.decode_motion(self.adapt_motion(motion, identity))
        keys, values = [], []
        for level in range(NUM_COARSE_LEVELS):
            k, v = self.imt[level].block_efc.project_source(motion_maps[level], features[level])
            keys.append(k)
            values.append(v)
        pooled = [pool_blocks(features[level], self.imt[level].ratio) for level in self.fine_levels]
        pixels = warp_image = None
        if self.config.source_warp:
            warp_image = image.contiguous()
        elif self.config.source_skip:
            pixels = to_tokens(F.pixel_unshuffle(image, self.config.coarse_cell)).contiguous()
        return SourceState(features, identity, motion, motion_maps, keys, values, pooled, pixels, warp_image)

    @torch.inference_mode()
    def encode_motion(self, images: torch.Tensor) -> torch.Tensor:
        """Motion latents (N, 32) of face images (N, 3, S, S) float in [0, 1]."""
        self._check_images(images, "images")
        images = images.contiguous(memory_format=torch.channels_last)
        step = cpu_micro_batch(images.device, self.training) or images.shape[0]
        return torch.cat([self.latent_token_encoder(chunk) for chunk in images.split(step)])

    def transfer(self, source: SourceState, motion_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Implicit motion transfer: source appearance aligned to driving motion maps, every level coarse to fine."""
        return self._transfer(source, motion_maps)[0]

    def _transfer(self, source: SourceState, motion_maps: list[torch.Tensor]):
        """`transfer`, plus the source image resampled by the same arg-max with `source_skip` (else None)."""
        aligned = []
        top1 = None
        for level in range(NUM_COARSE_LEVELS):
            attention = self.imt[level].block_efc
            last = level == NUM_COARSE_LEVELS - 1
            out = attention(motion_maps[level], source.keys[level], source.values[level], with_top1=last)
            if last:
                out, top1 = out
            if self.motion_skip is not None:
                out = out + self.motion_skip[level](motion_maps[level], source.motion_maps[level])
            aligned.append(out)
        grid = self.config.coarse_grid
        probs = None
        if self.top1_gradient and torch.is_grad_enabled():
            probs = self.attention_logits(source, motion_maps).softmax(dim=-1).mean(dim=1)  # (B, N, N)
        for pooled, level in zip(source.pooled, self.fine_levels):
            aligned.append(self.imt[level](pooled, top1, grid, probs))
        base = None
        if source.pixels is not None:  # each cell's pixel block, a guided resample at ratio 1 then unfolded
            base = F.pixel_shuffle(guided_resample(source.pixels, top1, grid, 1, probs),
                                   self.config.coarse_cell)  # (B, 3, S, S)
        return aligned, base

    def _render(self, source: SourceState, motion: torch.Tensor) -> torch.Tensor:
        return self._render_parts(source, motion)[0]

    def _render_parts(self, source: SourceState, motion: torch.Tensor):
        """(frames, driving motion maps, base image or None, warp flow or None) for motion latents (B, 32)."""
        if source.batch_size not in (1, motion.shape[0]):
            raise ValueError(f"source batch {source.batch_size} must be 1 or match the {motion.shape[0]} motion latents")
        motion_maps = self.decode_motion(self.adapt_motion(motion, source.identity))
        aligned, base = self._transfer(source, motion_maps)
        flow = None
        if self.source_warp is not None:
            flow = self.source_warp.flow(source.motion_maps[WARP_LEVEL], source.features[WARP_LEVEL], motion,
                                         source.motion)
            base = self.source_warp.resample(source.image, flow)
        modulation = None if self.motion_modulation is None else self.motion_modulation(motion, source.motion)
        frame = self.frame_decoder(aligned, fine_batch=cpu_micro_batch(motion.device, self.training), base=base,
                                   modulation=modulation)
        return frame, motion_maps, base, flow

    @torch.inference_mode()
    def render(self, source: SourceState, motion: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Frames (N, 3, S, S) in [0, 1] for N driving motion latents (N, 32), in batches of `batch_size`."""
        self._check_motion(motion)
        if not isinstance(source, SourceState):
            raise ValueError(f"source must be the SourceState from encode_source, got {type(source).__name__}")
        if batch_size is None or batch_size >= motion.shape[0] or source.batch_size != 1:
            return self._render(source, motion)
        return torch.cat([self._render(source, chunk) for chunk in motion.split(batch_size)])

    def reconstruct(self, x_current: torch.Tensor, x_reference: torch.Tensor) -> Reconstruction:
        """Like `forward`, also keeping the source state and the driving motion maps for training losses on the
        attention."""
        source = self._encode_source(x_reference)
        motion = self.latent_token_encoder(x_current.contiguous(memory_format=torch.channels_last))
        frame, motion_maps, base, flow = self._render_parts(source, motion)
        return Reconstruction(frame, motion, motion_maps, source, base, flow)

    def forward(self, x_current: torch.Tensor, x_reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: driving frame + source frame -> (reconstructed driving frame, driving latent)."""
        result = self.reconstruct(x_current, x_reference)
        return result.frame, result.motion
