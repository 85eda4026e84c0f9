"""Architecture configs. Defaults are the published IMTalker models; smaller ones serve tests and the demo."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class RendererConfig:
    """Sizes of the published renderer (docs/architecture.md §3).

    Six appearance levels sit at image_size / 2 ... image_size / 64. The four coarsest (image_size / 64 ... / 8) use
    cross-attention, the two finest the guided resampler, so image_size must be a multiple of 128 (the motion decoder
    starts from a constant of image_size / 128 pixels).
    """

    variant: ClassVar[str] = "published"  # what a config file's `variant:` names this class
    level_counts: ClassVar[tuple[int, ...]] = (6,)  # appearance levels this layout allows

    image_size: int = 512
    # identity-encoder widths from the finest level (image_size / 2) to the coarsest (image_size / 64)
    feature_channels: tuple[int, ...] = (32, 64, 128, 256, 512, 512)
    # motion-encoder widths: the first convolution, then each of the five downsampling residual blocks
    motion_channels: tuple[int, ...] = (64, 128, 256, 512, 512, 512)
    motion_dim: int = 32  # motion latent size
    adapt_dim: int = 512  # hidden width of the identity-adaptive MLP
    const_channels: int = 32  # channels of the motion decoder's learned constant
    num_heads: int = 8  # heads of every attention in the renderer
    window_size: int = 8  # window of the fine-level Swin blocks

    def __post_init__(self):
        if len(self.feature_channels) not in self.level_counts:
            counts = " or ".join(map(str, sorted(self.level_counts, reverse=True)))
            raise ValueError(f"feature_channels needs {counts} widths, got {len(self.feature_channels)}")
        multiple = 2 ** (len(self.feature_channels) + 1)
        if self.image_size < multiple or self.image_size % multiple:
            raise ValueError(f"image_size must be a positive multiple of {multiple}, got {self.image_size}")
        if len(self.motion_channels) != 6:
            raise ValueError(f"motion_channels needs 6 widths, got {len(self.motion_channels)}")
        for width in self.feature_channels:
            if width % self.num_heads:
                raise ValueError(f"feature width {width} is not divisible by num_heads={self.num_heads}")
        object.__setattr__(self, "feature_channels", tuple(self.feature_channels))
        object.__setattr__(self, "motion_channels", tuple(self.motion_channels))

    @property
    def identity_dim(self) -> int:
        return self.feature_channels[-1]

    @property
    def num_levels(self) -> int:
        """Appearance levels: 4 cross-attention levels, then guided-resampler levels (2 published)."""
        return len(self.feature_channels)

    @property
    def coarse_grid(self) -> int:
        """Side of the finest cross-attention grid, whose attention guides the resampler."""
        return self.image_size // 2 ** (self.num_levels - 3)


@dataclass(frozen=True)
class DemoRendererConfig(RendererConfig):
    """Sizes and options of the demo renderer (`imtalker.models.demo_renderer`, not published; docs/demo-model.md).

    Besides the published six levels it allows five, which drop the coarsest: cross-attention down to image_size / 4
    and one resampled level, so appearance reaches the decoder on a grid of image_size / 4, which small images need
    (at 128 px a / 8 grid is 16 x 16, where an eye or a mouth opening is one cell).
    """

    variant: ClassVar[str] = "demo"
    level_counts: ClassVar[tuple[int, ...]] = (5, 6)

    # width in cells of the locality prior added to every cross-attention's scores (an untrained renderer then
    # copies its source instead of averaging it)
    attention_locality: float = 0.5
    warp_hidden: int = 64  # hidden width of the source warp's networks
    warp_fields: int = 16  # flow fields the source warp mixes by the latent's departure

    def __post_init__(self):
        super().__post_init__()
        if not self.attention_locality > 0:
            raise ValueError(f"attention_locality must be a positive width in cells, got {self.attention_locality}")


RENDERER_VARIANTS: dict[str, type[RendererConfig]] = {cls.variant: cls for cls in (RendererConfig, DemoRendererConfig)}

@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes of the flow-matching motion generator (docs/architecture.md §4)."""

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
    """Two-scale StyleGAN2 discriminator used only for training (docs/architecture.md §6)."""

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


# The switches the renderer config had before the demo variant got its own class (files written until then carry
# them, e.g. the bundled demo renderer): their values at which the file is the published network ...
RETIRED_PUBLISHED_SWITCHES = {"motion_norm": False, "motion_skip": False, "attention_locality": None,
                              "source_skip": False, "motion_encoder": "published", "motion_modulation": False,
                              "source_warp": False}
# ... and at which it is the demo variant (attention_locality is then the variant's own option, and motion_norm is
# ignored: it only added layers to the published motion encoder, which the compact one replaces)
RETIRED_DEMO_SWITCHES = {"motion_skip": True, "source_skip": True, "motion_encoder": "compact",
                         "motion_modulation": True, "source_warp": True}


def renderer_config_to_dict(config: RendererConfig) -> dict:
    """Plain-JSON form of a renderer config, with the `variant` that says which class it is."""
    return {"variant": config.variant, **config_to_dict(config)}


def renderer_config_from_dict(data: Mapping[str, Any]) -> RendererConfig:
    """Inverse of `renderer_config_to_dict`; no `variant` means the published renderer.

    A config written before the variants had classes of their own (with the retired switches `motion_skip`,
    `source_warp`, ... as fields) is read as the published renderer when every switch is off, and as the demo
    variant when the switches are the demo's composition; any other combination is an error, as no class builds it.
    """
    values = dict(data)
    if "variant" not in values and RETIRED_PUBLISHED_SWITCHES.keys() & values.keys():
        values = _upgrade_retired_switches(values)
    variant = values.pop("variant", RendererConfig.variant)
    if variant not in RENDERER_VARIANTS:
        raise ValueError(f"unknown renderer variant {variant!r}; known: {', '.join(RENDERER_VARIANTS)}")
    return config_from_dict(RENDERER_VARIANTS[variant], values)


def _upgrade_retired_switches(values: dict) -> dict:
    switches = {name: values.pop(name, default) for name, default in RETIRED_PUBLISHED_SWITCHES.items()}
    if switches == RETIRED_PUBLISHED_SWITCHES:
        return values
    if (all(switches[name] == value for name, value in RETIRED_DEMO_SWITCHES.items())
            and switches["attention_locality"] is not None):
        return {"variant": DemoRendererConfig.variant, **values, "attention_locality": switches["attention_locality"]}
    raise ValueError(f"renderer switches {switches} are neither the published network (all off) nor the demo "
                     f"variant ({RETIRED_DEMO_SWITCHES} with an attention_locality); no renderer class builds them")


PRESETS: dict[str, Any] = {
    "imtalker-512": RendererConfig(),
    "imtalker-generator": GeneratorConfig(),
}
