"""Architecture configs. Defaults are the published IMTalker models; smaller ones serve tests and the demo."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RendererConfig:
    """Sizes of the renderer (MODEL.md section 3).

    The published six appearance levels sit at image_size / 2 ... image_size / 64. The four coarsest (image_size / 64
    ... image_size / 8) use cross-attention, the two finest the guided resampler, so image_size must be a multiple
    of 128 (the motion decoder starts from a constant of image_size / 128 pixels).

    Five widths drop the coarsest level (not a published layout): levels image_size / 2 ... / 32, cross-attention
    down to image_size / 4 and one resampled level. Appearance then reaches the decoder on a grid of image_size / 4
    instead of / 8, which small images need (at 128 px a / 8 grid is 16 x 16: an eye or a mouth opening is one cell).
    """

    image_size: int = 512
    # identity-encoder widths from the finest level (image_size / 2) to the coarsest (image_size / 64; 5 or 6 levels)
    feature_channels: tuple[int, ...] = (32, 64, 128, 256, 512, 512)
    # motion-encoder widths: the first convolution, then each of the five downsampling residual blocks
    motion_channels: tuple[int, ...] = (64, 128, 256, 512, 512, 512)
    motion_dim: int = 32  # motion latent size
    adapt_dim: int = 512  # hidden width of the identity-adaptive MLP
    const_channels: int = 32  # channels of the motion decoder's learned constant
    num_heads: int = 8  # heads of every attention in the renderer
    window_size: int = 8  # window of the fine-level Swin blocks
    # BatchNorm after the motion encoder's first convolution and after each of its residual blocks (not published,
    # whose encoder has no normalisation): the un-normalised encoder needs far more steps than a short CPU run has
    # to make its latent follow a face's motion (BENCHMARKS.md, demo model)
    motion_norm: bool = False
    # The synthesis network also reads the driving motion maps at the four coarse levels: their departure from the
    # source's maps, normalised, through a 1x1 convolution, added to the aligned appearance (`motion_skip.L`, not
    # published). In the published renderer motion reaches the frame only through attention weights; a small model
    # trained briefly learns to decode the arg-max resampled level alone, which passes no gradient, and its motion
    # latent collapses (BENCHMARKS.md, demo model). A direct path gives the latent a gradient from the first step and
    # lets the decoder paint what no source block holds (an open mouth when the source's is closed).
    motion_skip: bool = False
    # None (published), or sigma in cells: every coarse cross-attention adds -d^2 / (2 sigma^2) to its scores, d the
    # distance of query and key cell (not published). An untrained renderer then copies its source instead of
    # averaging it, and learns motion as departures from that copy; no weights, the checkpoint keys are unchanged.
    attention_locality: float | None = None
    # The frame is the source image resampled block by block by the finest cross-attention's arg-max (the guided
    # resampler applied to pixels), plus a correction the synthesis network paints in logit space, its last
    # convolution starting at 1% of its usual size (not published; no new weights). An untrained renderer then
    # reproduces its source nearly exactly instead of a blur, and a short run spends its steps on what moves.
    source_skip: bool = False
    # "published", or "compact" (not published; other state-dict keys under `latent_token_encoder`): plain strided
    # convolutions with BatchNorm whose last map is flattened, not averaged, into the latent. Alone on predicting the
    # mouth opening, eyelids and head position from the face-mesh landmarks, the published encoder does not beat the
    # mean in 200 steps on the demo corpus, the compact one gets a third lower and runs seven times faster.
    motion_encoder: str = "published"
    # Every synthesis stage is scaled and shifted per channel by a linear map of the driving latent's departure from
    # the source's, normalised (`motion_modulation`, not published; its maps start at zero, so the renderer starts
    # unchanged). Mouth opening and blinks are nearly global quantities; this hands them to every stage of the
    # decoder, which knows from the source features where the mouth and eyes are, instead of leaving them to be
    # painted into the motion maps position by position.
    motion_modulation: bool = False
    # With `source_skip`: the base image is the source resampled by a smooth flow (`source_warp.*`, not published)
    # instead of moved in whole pixel blocks. The flow is painted at the third cross-attention level (16 x 16 at
    # 128 px) from the source's appearance, the driving motion maps' departure from the source's and the latents'
    # departure, and starts at zero. Four-pixel blocks cannot follow the one- to five-pixel moves of a turning head,
    # and a per-pair optimised flow of that resolution reconstructs the demo corpus at 36 dB where copying the source
    # gets 23 (BENCHMARKS.md, "Demo model: sixth CPU training run").
    source_warp: bool = False

    def __post_init__(self):
        if len(self.feature_channels) not in (5, 6):
            raise ValueError(f"feature_channels needs 6 widths (or 5), got {len(self.feature_channels)}")
        multiple = 2 ** (len(self.feature_channels) + 1)
        if self.image_size < multiple or self.image_size % multiple:
            raise ValueError(f"image_size must be a positive multiple of {multiple}, got {self.image_size}")
        if len(self.motion_channels) != 6:
            raise ValueError(f"motion_channels needs 6 widths, got {len(self.motion_channels)}")
        for width in self.feature_channels:
            if width % self.num_heads:
                raise ValueError(f"feature width {width} is not divisible by num_heads={self.num_heads}")
        if self.source_warp and not self.source_skip:
            raise ValueError("source_warp corrects a base image: it needs source_skip")
        if self.motion_encoder not in ("published", "compact"):
            raise ValueError(f"motion_encoder must be 'published' or 'compact', got {self.motion_encoder!r}")
        object.__setattr__(self, "feature_channels", tuple(self.feature_channels))
        object.__setattr__(self, "motion_channels", tuple(self.motion_channels))

    @property
    def identity_dim(self) -> int:
        return self.feature_channels[-1]

    @property
    def num_levels(self) -> int:
        """Appearance levels: 6 published (4 cross-attention + 2 resampled), or 5 (4 + 1)."""
        return len(self.feature_channels)

    @property
    def coarse_grid(self) -> int:
        """Side of the finest cross-attention grid, whose attention guides the resampler."""
        return self.image_size // 2 ** (self.num_levels - 3)

    @property
    def coarse_cell(self) -> int:
        """Pixels along one side of a `coarse_grid` cell (the pixel blocks `source_skip` moves)."""
        return self.image_size // self.coarse_grid


@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes of the flow-matching motion generator (MODEL.md section 4)."""

    motion_dim: int = 32
    cond_dim: int = 32  # width every condition is projected to
    hidden_dim: int = 512
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 4.0
    audio_dim: int = 768  # width of the audio features (wav2vec2-base: 768)
    gaze_dim: int = 2  # pitch, yaw
    pose_dim: int = 3  # yaw, pitch, roll
    cam_dim: int = 3  # camera translation
    clip_frames: int = 50  # frames sampled per chunk
    prev_frames: int = 10  # context frames carried between chunks
    rope_base: float = 10000.0

    def __post_init__(self):
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")
        if (self.hidden_dim // self.num_heads) % 2:
            raise ValueError("the rotary embedding needs an even head dimension")


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Two-scale StyleGAN2 discriminator used only for training (MODEL.md section 6)."""

    image_size: int = 512
    # channels by resolution, as in StyleGAN2; resolutions not listed use 512
    channels: dict[int, int] = field(default_factory=lambda: {512: 32, 256: 64, 128: 128, 64: 256})
    max_channels: int = 512

    def width(self, resolution: int) -> int:
        return self.channels.get(resolution, self.max_channels)


def config_to_dict(config: Any) -> dict:
    """Plain-JSON form of a config dataclass."""
    data = dataclasses.asdict(config)
    for key, value in data.items():
        if isinstance(value, tuple):
            data[key] = list(value)
        if isinstance(value, dict):
            data[key] = {str(k): v for k, v in value.items()}
    return data


def config_from_dict(cls: type, data: dict) -> Any:
    """Inverse of config_to_dict; unknown keys are an error, so a wrong file is caught early."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    values = dict(data)
    for f in dataclasses.fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
        if f.name in values and isinstance(values[f.name], dict):
            values[f.name] = {int(k): v for k, v in values[f.name].items()}
    return cls(**values)


PRESETS: dict[str, Any] = {
    "imtalker-512": RendererConfig(),
    "imtalker-generator": GeneratorConfig(),
}
