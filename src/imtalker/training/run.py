"""Training runs as `imtalker train` starts them: a YAML (or dict) config, a prepared dataset, a run folder.

A config has five sections, all optional (defaults are the published recipe at the published sizes)::

    model:     RendererConfig or GeneratorConfig fields (image_size, feature_channels, hidden_dim, ...); a renderer's
               `variant: demo` makes it the demo renderer (DemoRendererConfig fields)
    training:  RendererTrainingConfig or GeneratorTrainingConfig fields (lr, batch_size, weights, vgg_path, ...)
    discriminator: renderer only: DiscriminatorConfig fields (channels, max_channels); the image size is the model's
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
from ..weights import CHECKPOINT_INFO, check_renderer_pairing, save_model
from .settings import TrainerSettings

logger = logging.getLogger(__name__)

SECTIONS = ("model", "discriminator", "training", "audio", "trainer")
FRONT_ENDS = ("mel", "features")


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
    """The `trainer` section with command-line overrides (None values are ignored), every value checked.

    Raises:
        InputError: an unknown setting or a bad value, in one line.
    """
    values = {**_section(config, "trainer"), **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainerSettings)}
    if unknown:
        raise InputError(f"unknown trainer settings: {sorted(unknown)}")
    try:
        return TrainerSettings(**values)
    except (TypeError, ValueError) as err:
        raise InputError(f"bad trainer settings: {err}") from None


def _write_resolved(run_dir: Path, kind: str, resolved: dict[str, Any], resumed: ResumeCheck | None) -> None:
    """`config.json`: what this run trains with, and each resume with the settings it changed. Atomic."""
    path = run_dir / "config.json"
    history = []
    if resumed is not None and path.is_file():
        try:
            history = json.loads(path.read_text()).get("resumes", [])
        except ValueError:
            history = []
    if resumed is not None:
        history.append({"step": resumed.step, "checkpoint": str(resumed.checkpoint), "changed": resumed.changed})
    run_dir.mkdir(parents=True, exist_ok=True)
    if resumed is None and any((run_dir / "checkpoints").glob("*.ckpt")):
        # a fresh start must not leave older, higher-step checkpoints for the next resume to pick up
        aside = next(run_dir / f"checkpoints.before-restart-{n}" for n in range(1, 10_000)
                     if not (run_dir / f"checkpoints.before-restart-{n}").exists())
        os.replace(run_dir / "checkpoints", aside)
        logger.warning("starting afresh: the previous checkpoints are kept in %s", aside)
    tmp = path.with_name(".config.json.tmp")
    tmp.write_text(json.dumps({"kind": kind, **resolved, "resumes": history}, indent=1, default=list))
    os.replace(tmp, path)


@dataclass
class ResumeCheck:
    """The checkpoint a run continues from, its step, and the training settings this run changes
    (`{"training.lr": [old, new]}`)."""

    checkpoint: Path
    step: int
    changed: dict[str, list]


def check_resume(run_dir: Path, module, resume: bool, kind: str) -> ResumeCheck | None:
    """What continuing `run_dir` with `module` means, checked before anything is written.

    The architecture (every hyper-parameter but `training`) must be the checkpoint's; a changed training setting is
    applied (the modules set the optimiser's rates and betas from their config when training starts) and recorded,
    unless the module says it cannot be (`module.resume_refusal`).

    Raises:
        InputError: the run holds another kind of network, another architecture, or a change that cannot be applied;
            the message names `--restart`.
    """
    from .trainer import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint is None:
        return None
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    restart = "use --restart to start afresh in this folder (or another --out)"
    saved_kind = (state.get(CHECKPOINT_INFO) or {}).get("kind")
    if saved_kind != kind:
        raise InputError(f"{checkpoint} holds a {saved_kind or 'foreign'} run, not a {kind} run; {restart}")
    saved, ours = (json.loads(json.dumps(dict(h), default=list))
                   for h in (state.get("hyper_parameters") or {}, module.hparams))
    if saved.get("renderer_digest", ours.get("renderer_digest")) != ours.get("renderer_digest"):
        raise InputError(f"{checkpoint} was trained on the motion latents of another renderer (weights digest "
                         f"{saved['renderer_digest']}, this one's {ours['renderer_digest']}); {restart}")
    for key in sorted((set(saved) | set(ours)) - {"training", "renderer_digest"}):
        if saved.get(key) != ours.get(key):
            raise InputError(f"{checkpoint} was trained with another {key} "
                             f"({_differences(saved.get(key), ours.get(key))}); {restart}")
    old, new = saved.get("training") or {}, ours.get("training") or {}
    changed = {f"training.{k}": [old.get(k), new.get(k)]
               for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    reason = module.resume_refusal(old) if changed else None
    if reason:
        raise InputError(f"cannot resume {checkpoint} at step {state['global_step']}: {reason}; {restart}")
    for name, (before, after) in changed.items():
        logger.warning("resuming at step %d with %s changed: %s -> %s", state["global_step"], name, before, after)
    return ResumeCheck(checkpoint, int(state["global_step"]), changed)


def _differences(old: Any, new: Any) -> str:
    """`a: 1 -> 2, b: ...` for two dicts (at most three fields), else `old -> new`."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        text = ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in keys[:3])
        return text + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    return f"{old} -> {new}"


def _fit(module, train, val, run_dir: Path, settings: TrainerSettings, resume: ResumeCheck | None,
         resolved: tuple[str, dict[str, Any]], **kwargs):
    """Train; `config.json` is written (by the first process only) once Lightning has accepted the settings."""
    from .trainer import fit

    def write_config(trainer) -> None:
        if trainer.is_global_zero:
            _write_resolved(run_dir, *resolved, resume)

    return fit(module, train, val, default_root_dir=run_dir, settings=settings,
               resume=resume.checkpoint if resume is not None else None, before_fit=write_config, **kwargs)


def _training_config(build, values: Mapping[str, Any]):
    try:
        return build(values)
    except (TypeError, ValueError) as err:
        raise InputError(f"bad training settings: {err}") from None


def train_renderer(data: str | os.PathLike, run_dir: str | os.PathLike, config: Mapping[str, Any] | None = None,
                   *, resume: bool = True, overrides: Mapping[str, Any] | None = None, **trainer_kwargs: Any):
    """Train the renderer on a prepared dataset; checkpoints in `<run_dir>/checkpoints/`.

    Every setting is checked, and a run folder being continued is checked against them (`check_resume`), before
    anything is written.

    Args:
        data: a folder made by `imtalker prepare`.
        run_dir: the run folder (an existing one is continued from its latest checkpoint when `resume`).
        config: the run config (see the module docstring).
        resume: continue from the run folder's latest checkpoint when there is one.
        overrides: trainer settings that win over the config (e.g. from command-line flags).
        **trainer_kwargs: further `lightning.Trainer` arguments.

    Returns:
        The `lightning.Trainer` after fitting.
    """
    import lightning

    from ..config import DiscriminatorConfig
    from .data import renderer_dataset
    from .renderer_module import RendererModule, training_config_from

    config = dict(config or {})
    run_dir = Path(run_dir)
    settings = trainer_settings(config, overrides or {})
    model = _renderer_config(_section(config, "model"))
    training = _training_config(training_config_from, _section(config, "training"))
    discriminator = _build(DiscriminatorConfig, {"image_size": model.image_size, **_section(config, "discriminator")},
                           "discriminator")
    if training.vgg_path and not Path(training.vgg_path).is_file():
        raise InputError(f"VGG19 weights not found: {training.vgg_path}")
    lightning.seed_everything(settings.seed, workers=True, verbose=False)  # the initial weights come from the seed
    try:
        module = RendererModule(model, training, discriminator)
    except ValueError as err:
        raise InputError(f"bad renderer settings: {err}") from None
    train = renderer_dataset(data, "train", model.image_size, settings.samples_per_epoch, seed=settings.seed,
                             with_landmarks=training.needs_landmarks)
    val = renderer_dataset(data, "val", model.image_size, settings.val_samples, seed=settings.seed + 1)
    resumed = check_resume(run_dir, module, resume, "renderer")
    resolved = {"model": renderer_config_to_dict(model), "training": dataclasses.asdict(training),
                "discriminator": config_to_dict(discriminator), "trainer": dataclasses.asdict(settings),
                "data": str(data)}
    return _fit(module, train, val, run_dir, settings, resumed, ("renderer", resolved), **trainer_kwargs)


def train_generator(data: str | os.PathLike, renderer: str | os.PathLike, run_dir: str | os.PathLike,
                    config: Mapping[str, Any] | None = None, *, resume: bool = True,
                    overrides: Mapping[str, Any] | None = None, init: str | os.PathLike | None = None,
                    **trainer_kwargs: Any):
    """Train the motion generator on a prepared dataset with the motion latents of a trained renderer.

    The latents of every frame are extracted once with `renderer`'s motion encoder and cached beside each clip (named
    by the digest of the renderer's weights, which the generator's checkpoints record: a run is not continued on
    another renderer's latents).

    Args:
        data: a folder made by `imtalker prepare`.
        renderer: the trained renderer (our .safetensors, a training `.ckpt`, or the published `renderer.ckpt`).
        run_dir, config, resume, overrides, **trainer_kwargs: as for `train_renderer`.
        init: a weights folder to start from (a fine-tune): its `generator.safetensors`, and its
            `audio_encoder.safetensors` when the run trains the log-mel front end; a resumed run continues from its
            checkpoint instead.

    Returns:
        The `lightning.Trainer` after fitting.
    """
    import lightning

    from ..models.mel import MelConfig
    from ..weights import load_renderer, weights_digest
    from .data import motion_videos
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
    renderer_model = load_renderer(renderer)
    digest = weights_digest(renderer_model)
    lightning.seed_everything(settings.seed, workers=True, verbose=False)  # the initial weights come from the seed
    try:
        module = GeneratorModule(model, training, mel, renderer_digest=digest)
    except ValueError as err:
        raise InputError(f"bad generator settings: {err}") from None
    resumed = check_resume(run_dir, module, resume, "generator")
    if init is not None and resumed is None:
        _start_from(module, Path(init))

    kind = "features" if front_end == "features" else "waveform"
    window = model.prev_frames + model.clip_frames
    train_videos = motion_videos(data, "train", renderer_model, digest, audio=kind)
    val_videos = motion_videos(data, "val", renderer_model, digest, audio=kind)
    del renderer_model
    train = MotionClipDataset(train_videos, window, settings.samples_per_epoch or 20 * len(train_videos),
                              seed=settings.seed)
    val = MotionClipDataset(val_videos, window, settings.val_samples, seed=settings.seed + 1)
    resolved = {"model": config_to_dict(model), "training": dataclasses.asdict(training),
                "audio": {"front_end": front_end, "mel": config_to_dict(mel) if mel else None},
                "trainer": dataclasses.asdict(settings), "data": str(data), "renderer": str(renderer),
                "renderer_digest": digest}
    return _fit(module, train, val, run_dir, settings, resumed, ("generator", resolved), **trainer_kwargs)


def _start_from(module, folder: Path) -> None:
    """Loads a weights folder's generator (and log-mel front end) into a new generator module and its EMA copies."""
    from ..weights import find_weights, load_audio_encoder, load_generator

    need = ("generator", "audio_encoder") if module.audio_encoder is not None else ("generator",)
    paths = find_weights(folder, need=need)
    generator = load_generator(paths["generator"])
    if config_to_dict(generator.config) != config_to_dict(module.config):
        raise InputError(f"{paths['generator']} has another architecture than the run's model section")
    for target in (module.model, module.ema):
        target.load_state_dict(generator.state_dict())
    if module.audio_encoder is not None:
        encoder = load_audio_encoder(paths["audio_encoder"])
        for target in (module.audio_encoder, module.ema_audio_encoder):
            target.load_state_dict(encoder.state_dict())
    logger.info("generator run starts from the weights in %s", folder)


def export_run(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, ema: bool = True) -> ExportResult:
    """Write the networks of a training checkpoint as our `.safetensors` files, ready for the pipelines.

    Args:
        checkpoint: a run folder (its latest checkpoint by step, `latest_checkpoint`) or a `.ckpt` file of a renderer
            or generator run.
        out_dir: the weights folder to write `renderer.safetensors` (its EMA weights when the run kept an EMA and
            `ema`), or `generator.safetensors` (EMA weights unless `ema=False`) plus `audio_encoder.safetensors`
            when the run trained the log-mel front end.

    Returns:
        The checkpoint exported, its step and the files written.

    Raises:
        InputError: no checkpoint there, or a file that is not one of our training checkpoints.
    """
    from ..weights import CheckpointError, checkpoint_entries, load_audio_encoder, load_generator, load_renderer
    from .trainer import latest_checkpoint

    path = Path(checkpoint)
    if path.is_dir():
        path = latest_checkpoint(path) or path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise InputError(f"no training checkpoint at {path}")
    try:
        entries = checkpoint_entries(path)
    except CheckpointError as err:
        raise InputError(str(err)) from None
    info, step = entries.get(CHECKPOINT_INFO), entries.get("global_step")
    if not isinstance(info, dict) or info.get("kind") not in ("renderer", "generator") or not isinstance(step, int):
        raise InputError(f"{path} is not an imtalker training checkpoint (no '{CHECKPOINT_INFO}' entry)")
    out_dir = Path(out_dir)
    if info["kind"] == "renderer":
        renderer = load_renderer(path, ema=ema and bool(info.get("ema")))
        return ExportResult(path, step, [save_model(renderer, out_dir / "renderer.safetensors")])
    digest = info.get("renderer_digest")
    check_renderer_pairing(out_dir / "renderer.safetensors", digest, f"the generator of {path}")
    generator = load_generator(path, ema=ema)
    written = [save_model(generator, out_dir / "generator.safetensors",
                          metadata={"renderer_digest": digest} if digest else None)]
    if info.get("mel_config"):
        written.append(save_model(load_audio_encoder(path, ema=ema), out_dir / "audio_encoder.safetensors"))
    return ExportResult(path, step, written)


@dataclass
class ExportResult:
    """What `export_run` did: the checkpoint it took, its step, the files it wrote."""

    checkpoint: Path
    step: int
    written: list[Path]
