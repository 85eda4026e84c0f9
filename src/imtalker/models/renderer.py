"""The IMTalker renderer (docs/architecture.md §3): source portrait + motion latents -> frames.

The published network, top to bottom: identity encoder, motion encoder, identity-adaptive MLP, motion decoder,
implicit motion transfer (`imt`: cross-attention at the four coarse levels, guided resampling at the finer ones) and
the synthesis network (`frame_decoder`, models/synthesis.py). Attribute names are the published `gen.*` state-dict
keys. Everything that depends only on the source image is computed once by `encode_source`; `render` does only the
per-frame work, in batches.

A variant (models/demo_renderer.py) subclasses `IMTRenderer`: it may swap the two component classes
(`motion_encoder_class`, `frame_decoder_class`) and override `source_state` (what is kept of a source), `transfer`
(how the source's appearance is aligned to the driving motion) and `render_latents` (how the aligned appearance
becomes frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RendererConfig
from .layers import ConvLayer, ConvResBlock, EqualConv2d, EqualLinear, StyledConv, mlp_stack, run_mlp_stack
from .motion_transfer import CoarseLevel, GuidedResampler, capturing_graph, pool_blocks
from .synthesis import FrameDecoder

NUM_COARSE_LEVELS = 4  # cross-attention levels; the remaining ones use the guided resampler


def cpu_micro_batch(device: torch.device, training: bool = False) -> int | None:
    """Frames per pass through the high-resolution layers: 1 on CPU at inference, the whole batch elsewhere.

    Training always passes the whole batch: its BatchNorm layers normalise with the batch's statistics, which
    one-frame passes would turn into per-frame statistics that inference (running statistics) never sees.

    On CPU the large layers are compute-bound already at one frame, and one frame's activations (16-64 MiB at
    512 px) get reused by the allocator instead of page-faulted in anew: measured 10% faster and 40% less peak
    memory than passes of 8 frames on a 2-core CPU. GPUs want the whole batch. A captured graph (ONNX export,
    torch.compile) takes the whole batch too: capture would unroll the passes for the batch it saw.
    """
    return 1 if device.type == "cpu" and not training and not capturing_graph() else None


class IdentityEncoder(nn.Module):
    """`dense_feature_encoder`: source image -> appearance pyramid (coarse to fine) and identity code."""

    def __init__(self, config: RendererConfig):
        super().__init__()
        widths = config.feature_channels
        self.initial_conv = nn.Sequential(nn.Conv2d(3, widths[0], 7, padding=3), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.down_block_0 = ConvResBlock(widths[0], widths[0], resample="down")
        self.down_blocks = nn.ModuleList(
            [ConvResBlock(widths[i], widths[i + 1], resample="down") for i in range(len(widths) - 1)])
        # present in the published checkpoint but not used by its forward pass; frozen, as DDP needs every trained
        # parameter to get a gradient
        self.equalconv = EqualConv2d(widths[-1], widths[-1], 3, padding=1).requires_grad_(False)
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

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(image), 0.2)
        for block in self.res_blocks:
            x = block(x)
        x = self.equalconv(x).mean(dim=(2, 3))
        return self.final_linear(run_mlp_stack(self.linear_layers, x))


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

    @property
    def batch_size(self) -> int:
        return self.identity.shape[0]

    def to(self, *args, **kwargs) -> "SourceState":
        def move(x):
            if x is None:  # a variant's optional field
                return None
            return [t.to(*args, **kwargs) for t in x] if isinstance(x, list) else x.to(*args, **kwargs)

        return type(self)(**{name: move(value) for name, value in vars(self).items()})


def check_source_batch(source: SourceState, motion: torch.Tensor) -> None:
    """One source for every latent, or one per latent."""
    if source.batch_size not in (1, motion.shape[0]):
        raise ValueError(f"source batch {source.batch_size} must be 1 or match the {motion.shape[0]} motion "
                         "latents")


@dataclass
class Reconstruction:
    """What `IMTRenderer.render_latents` computed for a batch of driving latents."""

    frame: torch.Tensor  # (B, 3, S, S) rendered frames
    motion: torch.Tensor  # (B, motion_dim) driving motion latents
    motion_maps: list[torch.Tensor]  # the driving motion maps at the coarse levels
    source: SourceState


class IMTRenderer(nn.Module):
    """Identity encoder + motion encoder + identity-adaptive module + motion decoder + IMT + synthesis."""

    # built from the config like the other components; a variant (models/demo_renderer.py) names its own
    motion_encoder_class: type[nn.Module] = MotionEncoder
    frame_decoder_class: type[FrameDecoder] = FrameDecoder

    def __init__(self, config: RendererConfig | None = None):
        super().__init__()
        self.config = config = config or RendererConfig()
        self.dense_feature_encoder = IdentityEncoder(config)
        self.latent_token_encoder = self.motion_encoder_class(config)
        self.latent_token_decoder = MotionDecoder(config)
        self.frame_decoder = self.frame_decoder_class(config.feature_channels, config.image_size, config.num_heads,
                                                      config.window_size)
        self.adapt = IdentityAdapter(config)
        widths = config.feature_channels[::-1]
        self.imt = nn.ModuleList([CoarseLevel(widths[level], config.num_heads) for level in range(NUM_COARSE_LEVELS)]
                                 + [GuidedResampler(2 ** (level - NUM_COARSE_LEVELS + 1))
                                    for level in self.fine_levels])

    @property
    def weight_dtype(self) -> torch.dtype:
        """The parameters' dtype: float32, or bfloat16 / float16 after `.to(dtype)` (weights and activations)."""
        return self.dense_feature_encoder.final_linear.weight.dtype

    @property
    def fine_levels(self) -> range:
        """Indices (coarse to fine) of the guided-resampler levels: 4 and 5 in the published layout."""
        return range(NUM_COARSE_LEVELS, self.config.num_levels)

    # -- checks ----------------------------------------------------------------------------------------------

    def check_images(self, images: torch.Tensor, name: str) -> None:
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

    def check_motion(self, motion: torch.Tensor) -> None:
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

    @torch.inference_mode()
    def encode_source(self, image: torch.Tensor) -> SourceState:
        """Encode a source portrait once: image (B, 3, S, S) float in [0, 1]."""
        self.check_images(image, "image")
        return self.source_state(image.to(self.weight_dtype))

    def source_state(self, image: torch.Tensor) -> SourceState:
        """`encode_source` without the input checks, and differentiable (training)."""
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
        return SourceState(features, identity, motion, motion_maps, keys, values, pooled)

    @torch.inference_mode()
    def encode_motion(self, images: torch.Tensor) -> torch.Tensor:
        """Motion latents (N, 32) of face images (N, 3, S, S) float in [0, 1]."""
        self.check_images(images, "images")
        images = images.to(self.weight_dtype).contiguous(memory_format=torch.channels_last)
        step = cpu_micro_batch(images.device, self.training) or images.shape[0]
        return torch.cat([self.latent_token_encoder(chunk) for chunk in images.split(step)])

    def transfer(self, source: SourceState, motion_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Implicit motion transfer: source appearance aligned to driving motion maps, every level coarse to fine.

        The finest cross-attention level also returns, per query, its arg-max source cell, which picks the pooled
        source blocks of the guided-resampler levels."""
        aligned = []
        top1 = None
        for level in range(NUM_COARSE_LEVELS):
            attention = self.imt[level].block_efc
            if level < NUM_COARSE_LEVELS - 1:
                aligned.append(attention(motion_maps[level], source.keys[level], source.values[level]))
            else:
                out, top1 = attention(motion_maps[level], source.keys[level], source.values[level], with_top1=True)
                aligned.append(out)
        for pooled, level in zip(source.pooled, self.fine_levels):
            aligned.append(self.imt[level](pooled, top1, self.config.coarse_grid))
        return aligned

    def render_latents(self, source: SourceState, motion: torch.Tensor) -> Reconstruction:
        """Frames for motion latents (B, 32) without the input checks, and differentiable (training)."""
        check_source_batch(source, motion)
        motion_maps = self.decode_motion(self.adapt_motion(motion, source.identity))
        aligned = self.transfer(source, motion_maps)
        frame = self.frame_decoder(aligned, fine_batch=cpu_micro_batch(motion.device, self.training))
        return Reconstruction(frame, motion, motion_maps, source)

    @torch.inference_mode()
    def render(self, source: SourceState, motion: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Frames (N, 3, S, S) in [0, 1] for N driving motion latents (N, 32), in batches of `batch_size`."""
        self.check_motion(motion)
        if not isinstance(source, SourceState):
            raise ValueError(f"source must be the SourceState from encode_source, got {type(source).__name__}")
        motion = motion.to(self.weight_dtype)  # float32 latents drive a bfloat16 renderer too
        if batch_size is None or batch_size >= motion.shape[0] or source.batch_size != 1:
            return self.render_latents(source, motion).frame
        return torch.cat([self.render_latents(source, chunk).frame for chunk in motion.split(batch_size)])

    def reconstruct(self, x_current: torch.Tensor, x_reference: torch.Tensor) -> Reconstruction:
        """Like `forward`, also keeping the source state and the driving motion maps (training losses read them)."""
        source = self.source_state(x_reference)
        motion = self.latent_token_encoder(x_current.contiguous(memory_format=torch.channels_last))
        return self.render_latents(source, motion)

    def forward(self, x_current: torch.Tensor, x_reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: driving frame + source frame -> (reconstructed driving frame, driving latent)."""
        result = self.reconstruct(x_current, x_reference)
        return result.frame, result.motion
