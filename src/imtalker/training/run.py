"""Training runs as `imtalker train` starts them: a YAML (or dict) config, a prepared dataset, a run folder.

A config has four sections, all optional (defaults are the published recipe at the published sizes)::

    model:     RendererConfig or GeneratorConfig fields (image_size, feature_channels, hidden_dim, ...); a renderer's
               `variant: demo` makes it the demo renderer (DemoRendererConfig fields)
    training:  RendererTrainingConfig or GeneratorTrainingConfig fields (lr, batch_size, weights, vgg_path, ...)
    audio:     generator only: {front_end: mel, mel: {MelConfig fields}} trains the weight-free log-mel front end
               with the generator; {front_end: features} uses the features stored by `imtalker prepare
               --audio-encoder` (e.g. wav2vec2)
    trainer:   TrainerSettings fields (max_steps, precision, devices, num_nodes, loggers, ...)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import (GeneratorConfig, config_from_dict, config_to_dict, renderer_config_from_dict,
                      renderer_config_to_dict)
from ..errors import InputError

logger = logging.getLogger(__name__)

SECTIONS = ("model", "training", "audio", "trainer")
FRONT_ENDS = ("mel", "features")


@dataclass
class TrainerSettings:
    """How long and where to train; each field is also an `imtalker train` flag."""

    max_steps: int = 100_000
    max_time: str | None = None  # wall-clock budget "DD:HH:MM:SS"; the run stops (and checkpoints) when it is spent
    precision: str = "32-true"  # "bf16-mixed" for bfloat16 autocast
    accelerator: str = "auto"
    devices: Any = "auto"  # a count, a list of GPU indices, or "auto"
    num_nodes: int = 1
    loggers: tuple[str, ...] = ("csv", "tensorboard")
    log_every_n_steps: int = 50
    checkpoint_every_n_steps: int = 1000
    val_check_interval: int | None = 1000  # steps between validations (capped to the steps per epoch)
    val_samples: int = 16  # validation items per validation
    samples_per_epoch: int | None = None  # training items per epoch (default: the dataset's own)
    num_workers: int = 0
    seed: int = 0


def read_config(path: str | os.PathLike | None) -> dict[str, Any]:
    """A run config from a YAML file (None: empty, i.e. all defaults).

    Raises:
        InputError: the file is missing, not YAML, or has unknown sections.
    """
    if path is None:
        return {}
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict) or set(data) - set(SECTIONS):
        raise InputError(f"{path}: a config has only the sections {', '.join(SECTIONS)}; got "
                         f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    return data


def _section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, Mapping):
        raise InputError(f"config section '{name}' must be a mapping, got {type(value).__name__}")
    return dict(value)


def _build(cls, values: Mapping[str, Any], what: str):
    try:
        return config_from_dict(cls, dict(values))
    except (TypeError, ValueError) as err:
        raise InputError(f"bad {what} settings: {err}") from None


def _renderer_config(values: Mapping[str, Any]):
    """The renderer config of a `model` section; its `variant` picks the class (published when absent)."""
    try:
        return renderer_config_from_dict(values)
    except (TypeError, ValueError) as err:
        raise InputError(f"bad model settings: {err}") from None


def trainer_settings(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> TrainerSettings:
    """The `trainer` section with command-line overrides (None values are ignored)."""
    values = {**_section(config, "trainer"), **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainerSettings)}
    if unknown:
        raise InputError(f"unknown trainer settings: {sorted(unknown)}")
    if "loggers" in values:
        values["loggers"] = tuple([values["loggers"]] if isinstance(values["loggers"], str) else values["loggers"])
    settings = TrainerSettings(**values)
    if settings.max_steps < 1:
        raise InputError(f"max_steps must be at least 1, got {settings.max_steps}")
    return settings


def _write_resolved(run_dir: Path, kind: str, resolved: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"kind": kind, **resolved}, indent=1, default=list))


def _fit(module, train, val, run_dir: Path, settings: TrainerSettings, resume: bool, **kwargs):
    from .trainer import fit

    steps_per_epoch = max(1, len(train) // module.training_config.batch_size)
    return fit(module, train, val, max_steps=settings.max_steps, default_root_dir=run_dir, devices=settings.devices,
               num_nodes=settings.num_nodes, precision=settings.precision, accelerator=settings.accelerator,
               resume="last" if resume else None, loggers=settings.loggers,
               log_every_n_steps=min(settings.log_every_n_steps, steps_per_epoch),
               checkpoint_every_n_steps=settings.checkpoint_every_n_steps,
               val_check_interval=(min(settings.val_check_interval, steps_per_epoch)
                                   if settings.val_check_interval and val is not None else None),
               num_workers=settings.num_workers, max_time=settings.max_time, **kwargs)


def train_renderer(data: str | os.PathLike, run_dir: str | os.PathLike, config: Mapping[str, Any] | None = None,
                   *, resume: bool = True, overrides: Mapping[str, Any] | None = None, **trainer_kwargs: Any):
    """Train the renderer on a prepared dataset; checkpoints in `<run_dir>/checkpoints/`.

    Args:
        data: a folder made by `imtalker prepare`.
        run_dir: the run folder (an existing one is continued from its `last.ckpt` when `resume`).
        config: the run config (see the module docstring).
        resume: continue from `checkpoints/last.ckpt` when present.
        overrides: trainer settings that win over the config (e.g. from command-line flags).
        **trainer_kwargs: further `lightning.Trainer` arguments.

    Returns:
        The `lightning.Trainer` after fitting.
    """
    import lightning

    from .data import RendererPairDataset
    from .renderer_module import RendererModule, training_config_from

    config = dict(config or {})
    run_dir = Path(run_dir)
    settings = trainer_settings(config, overrides or {})
    model = _renderer_config(_section(config, "model"))
    try:
        training = training_config_from(_section(config, "training"))
    except (TypeError, ValueError) as err:
        raise InputError(f"bad training settings: {err}") from None
    if training.vgg_path and not Path(training.vgg_path).is_file():
        raise InputError(f"VGG19 weights not found: {training.vgg_path}")
    lightning.seed_everything(settings.seed, workers=True, verbose=False)
    train = RendererPairDataset(data, "train", model.image_size, settings.samples_per_epoch, seed=settings.seed,
                                with_landmarks=training.needs_landmarks)
    val = RendererPairDataset(data, "val", model.image_size, settings.val_samples, seed=settings.seed + 1)
    _write_resolved(run_dir, "renderer", {"model": renderer_config_to_dict(model),
                                          "training": dataclasses.asdict(training),
                                          "trainer": dataclasses.asdict(settings), "data": str(data)})
    return _fit(RendererModule(model, training), train, val, run_dir, settings, resume, **trainer_kwargs)


def train_generator(data: str | os.PathLike, renderer: str | os.PathLike, run_dir: str | os.PathLike,
                    config: Mapping[str, Any] | None = None, *, resume: bool = True,
                    overrides: Mapping[str, Any] | None = None, **trainer_kwargs: Any):
    """Train the motion generator on a prepared dataset with the motion latents of a trained renderer.

    The latents of every frame are extracted once with `renderer`'s motion encoder and cached beside each clip (named
    by a digest of the renderer file).

    Args:
        data: a folder made by `imtalker prepare`.
        renderer: the trained renderer (our .safetensors, a training `.ckpt`, or the published `renderer.ckpt`).
        run_dir, config, resume, overrides, **trainer_kwargs: as for `train_renderer`.

    Returns:
        The `lightning.Trainer` after fitting.
    """
    import lightning

    from ..models.mel import MelConfig
    from ..weights import load_renderer
    from .data import file_digest, motion_videos
    from .generator_module import GeneratorModule, GeneratorTrainingConfig, MotionClipDataset

    config = dict(config or {})
    run_dir = Path(run_dir)
    settings = trainer_settings(config, overrides or {})
    audio = _section(config, "audio")
    front_end = audio.get("front_end", "mel")
    if front_end not in FRONT_ENDS:
        raise InputError(f"audio.front_end must be one of {', '.join(FRONT_ENDS)}, got {front_end!r}")
    mel = _build(MelConfig, audio.get("mel") or {}, "audio.mel") if front_end == "mel" else None
    model_values = _section(config, "model")
    if mel is not None:
        model_values.setdefault("audio_dim", mel.feature_dim)
    model = _build(GeneratorConfig, model_values, "model")
    training = _build(GeneratorTrainingConfig, _section(config, "training"), "training")
    if not Path(renderer).exists():
        raise InputError(f"renderer weights not found: {renderer}")
    lightning.seed_everything(settings.seed, workers=True, verbose=False)

    renderer_model = load_renderer(renderer)
    tag = file_digest(renderer)
    kind = "features" if front_end == "features" else "waveform"
    window = model.prev_frames + model.clip_frames
    train_videos = motion_videos(data, "train", renderer_model, tag, audio=kind)
    val_videos = motion_videos(data, "val", renderer_model, tag, audio=kind)
    del renderer_model
    train = MotionClipDataset(train_videos, window, settings.samples_per_epoch or 20 * len(train_videos),
                              seed=settings.seed)
    val = MotionClipDataset(val_videos, window, settings.val_samples, seed=settings.seed + 1)
    _write_resolved(run_dir, "generator", {
        "model": config_to_dict(model), "training": dataclasses.asdict(training),
        "audio": {"front_end": front_end, "mel": config_to_dict(mel) if mel else None},
        "trainer": dataclasses.asdict(settings), "data": str(data), "renderer": str(renderer)})
    return _fit(GeneratorModule(model, training, mel), train, val, run_dir, settings, resume, **trainer_kwargs)


def export_run(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, ema: bool = True) -> list[Path]:
    """Write the networks of a training checkpoint as our `.safetensors` files, ready for the pipelines.

    Args:
        checkpoint: a run folder (its `checkpoints/last.ckpt`) or a `.ckpt` file of a renderer or generator run.
        out_dir: the weights folder to write `renderer.safetensors`, or `generator.safetensors` (EMA weights unless
            `ema=False`) plus `audio_encoder.safetensors` when the run trained the log-mel front end.

    Returns:
        The files written.

    Raises:
        InputError: no checkpoint there, or a file that is not one of our training checkpoints.
    """
    from ..weights import (CHECKPOINT_INFO, CheckpointError, load_audio_encoder, load_generator, load_renderer,
                           read_checkpoint, save_model)

    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise InputError(f"no training checkpoint at {path}")
    try:
        info = read_checkpoint(path).info
    except CheckpointError as err:
        raise InputError(str(err)) from None
    if not info or info.get("kind") not in ("renderer", "generator"):
        raise InputError(f"{path} is not an imtalker training checkpoint (no '{CHECKPOINT_INFO}' entry)")
    out_dir = Path(out_dir)
    if info["kind"] == "renderer":
        return [save_model(load_renderer(path), out_dir / "renderer.safetensors")]
    written = [save_model(load_generator(path, ema=ema), out_dir / "generator.safetensors")]
    if info.get("mel_config"):
        written.append(save_model(load_audio_encoder(path, ema=ema), out_dir / "audio_encoder.safetensors"))
    return written

