"""Checkpoint reading, conversion and strict loading.

Two formats are read:
- the published files: Lightning checkpoints (`renderer.ckpt` with `gen.*` / `disc.*` keys, `generator.ckpt`
  with `model.*` keys and maybe `ema_state_dict`) and a Hugging Face `wav2vec2-base-960h` folder;
- our own: one `.safetensors` file per network whose header metadata holds the network kind and its config as
  JSON, so a model of any size round-trips. A renderer's config names its `variant` (the published network or the
  demo one, `imtalker.config.renderer_config_from_dict`), which picks the class `load_renderer` builds.

Nothing here runs pickled code: `.ckpt` files go through `torch.load(weights_only=True)`, and the few metadata
classes Lightning files carry (hyper-parameter namespaces, paths) are replaced by inert placeholders; any other
Python object in the file is refused.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import (GeneratorConfig, RendererConfig, config_from_dict, config_to_dict, renderer_config_from_dict,
                     renderer_config_to_dict)
from .errors import CheckpointError

if TYPE_CHECKING:
    from .models.audio import AudioEncoder
    from .models.generator import MotionGenerator
    from .models.mel import MelAudioEncoder
    from .models.renderer import IMTRenderer

logger = logging.getLogger(__name__)

FORMAT_VERSION = "1"
# Entry our Lightning training checkpoints add beside `state_dict`: {"kind", "config", ...} as plain data.
CHECKPOINT_INFO = "imtalker"

# Metadata classes found in Lightning checkpoints' hyper-parameters; they are read as inert placeholders.
METADATA_GLOBALS = (
    "argparse.Namespace",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
    "lightning.fabric.utilities.data.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "typing.Any",
    "collections.defaultdict",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
)


class _Metadata:
    """Stands in for a metadata object of a checkpoint; keeps nothing and runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


# -- reading ----------------------------------------------------------------------------------------------------


def _torch_load(path: Path) -> Any:
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
    refused = [name for name in unsafe if name not in METADATA_GLOBALS]
    if refused:
        raise CheckpointError(
            f"{path}: refusing to load: the file references Python objects that could run code when unpickled: "
            f"{', '.join(refused)}")
    placeholders = [(_Metadata, name) for name in unsafe]
    try:
        with torch.serialization.safe_globals(placeholders):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from None


class _StandIn(_Metadata):
    """Any object of a class in `checkpoint_entries`: accepts the items and state a pickle gives it, keeps none."""

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _Mapping(dict):
    """An OrderedDict of the file (state dicts carry attributes such as `_metadata`, which are dropped)."""

    def __setstate__(self, state):
        pass


class _EntriesUnpickler(pickle.Unpickler):
    """Python's C unpickler with every class of the file replaced by `_StandIn` and tensor storages not read: no code
    of the file runs, and the plain values (numbers, strings, lists, dicts) come back as they were saved."""

    def find_class(self, module: str, name: str):
        return _Mapping if (module, name) == ("collections", "OrderedDict") else _StandIn

    def persistent_load(self, pid):
        return None


def checkpoint_entries(path: str | os.PathLike) -> dict:
    """The plain entries of a PyTorch or Lightning checkpoint (`global_step`, our `imtalker` entry, ...) without its
    tensors, safely and in milliseconds.

    `torch.load(weights_only=True)` builds every tensor in a Python loop, about a second for a small training
    checkpoint with its optimiser state; reading a step or our entry needs none of them. Tensors and other objects
    come back as inert stand-ins.

    Raises:
        CheckpointError: not a PyTorch (zip) checkpoint holding a dict.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            with archive.open(name) as f:
                obj = _EntriesUnpickler(f).load()
    except Exception as err:  # a damaged or foreign file can fail in many ways; none may escape as a traceback
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def _tensors_only(mapping: dict, path: Path, what: str) -> dict[str, torch.Tensor]:
    tensors = {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: {what} holds no tensors")
    return tensors


@dataclass
class RawCheckpoint:
    """Tensors of a file plus what the file says about itself (our format only)."""

    tensors: dict[str, torch.Tensor]
    kind: str | None = None  # "renderer", "generator", "audio_encoder", "discriminator" (our format)
    config: dict | None = None  # our format, or our Lightning training checkpoints
    info: dict | None = None  # the `imtalker` entry of our Lightning training checkpoints
    metadata: dict | None = None  # further header entries of our .safetensors files (e.g. `renderer_digest`)


def read_checkpoint(path: str | os.PathLike, ema: bool = False) -> RawCheckpoint:
    """Read the tensors of a `.safetensors` file (ours) or a PyTorch/Lightning checkpoint, safely.

    Args:
        path: the file.
        ema: for Lightning files, read `ema_state_dict` instead of `state_dict`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
            with open(path, "rb") as f:
                header_len = int.from_bytes(f.read(8), "little")
                metadata = json.loads(f.read(header_len)).get("__metadata__", {}) or {}
        except (SafetensorError, ValueError, OSError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
        config = json.loads(metadata["config"]) if "config" in metadata else None
        extra = {k: v for k, v in metadata.items() if k not in ("format", "format_version", "kind", "config")}
        return RawCheckpoint(tensors, metadata.get("kind"), config, metadata=extra)

    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors or a Lightning checkpoint, got {type(obj).__name__}")
    if "state_dict" in obj or "ema_state_dict" in obj:
        key = "ema_state_dict" if ema else "state_dict"
        if key not in obj:
            raise CheckpointError(f"{path}: has no '{key}' (keys: {sorted(map(str, obj))})")
        if not isinstance(obj[key], dict):
            raise CheckpointError(f"{path}: '{key}' is not a dict of tensors")
        info = obj.get(CHECKPOINT_INFO)
        info = info if isinstance(info, dict) else None
        return RawCheckpoint(_tensors_only(obj[key], path, key), config=info and info.get("config"), info=info)
    if ema:
        raise CheckpointError(f"{path}: a plain state dict has no EMA weights")
    return RawCheckpoint(_tensors_only(obj, path, "the file"))


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys that start with `prefix`, without it (never a substring replace)."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# -- conversion of published key layouts ------------------------------------------------------------------------


def convert_wav2vec2_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Older transformers saved weight-norm as `weight_g` / `weight_v`; current ones use parametrizations."""
    renames = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}
    out = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        out[key] = value
    return out


def split_generator_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Published generator `state_dict` -> (motion generator weights, wav2vec2 weights or {})."""
    if any(k.startswith("model.") for k in state):
        state = strip_prefix(state, "model.")
    wav2vec2 = convert_wav2vec2_state_dict(strip_prefix(state, "audio_encoder.wav2vec2."))
    generator = {k: v for k, v in state.items() if not k.startswith("audio_encoder.")}
    return generator, wav2vec2


def infer_generator_config(state: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Sizes of a generator read off its weights (files without a config: the published one, Lightning ones)."""
    try:
        hidden, _ = state["fmt.x_embedder.proj.weight"].shape
        depth = len({k.split(".")[2] for k in state if k.startswith("fmt.blocks.")})
        mlp_hidden = state["fmt.blocks.0.mlp.fc1.weight"].shape[0]
        return GeneratorConfig(
            motion_dim=state["fmt.decoder.linear.weight"].shape[0],
            cond_dim=state["audio_projection.0.weight"].shape[0],
            hidden_dim=hidden,
            depth=depth,
            num_heads=hidden // (2 * state["fmt.rotary_emb.inv_freq"].shape[0]),  # inv_freq has head_dim / 2
            mlp_ratio=mlp_hidden / hidden,
            audio_dim=state["audio_projection.0.weight"].shape[1],
            gaze_dim=state["gaze_projection.0.weight"].shape[1],
            pose_dim=state["pose_projection.0.weight"].shape[1],
            cam_dim=state["cam_projection.0.weight"].shape[1],
        )
    except KeyError as err:
        raise CheckpointError(f"not a motion generator checkpoint: missing {err}") from None


# -- strict loading -------------------------------------------------------------------------------------------


def _listing(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load every key the network needs, nothing else, with matching shapes; otherwise say exactly what differs."""
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"wrong shapes (file vs model): {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model


def _expect_kind(raw: RawCheckpoint, kind: str, path: Path) -> None:
    if raw.kind is not None and raw.kind != kind:
        raise CheckpointError(f"{path} is a {raw.kind} checkpoint, not a {kind}")


def _finish(model: nn.Module, device, dtype) -> nn.Module:
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_renderer(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  config: RendererConfig | None = None, ema: bool = False) -> "IMTRenderer":
    """Load the renderer from the published `renderer.ckpt`, our `.safetensors` file or our training checkpoint.

    The class is the one the file's config names (`variant`): `IMTRenderer` for the published network,
    `DemoRenderer` for the demo one. Files written before the variants had classes of their own carry the retired
    switch fields instead, which `renderer_config_from_dict` reads as the same network.

    Args:
        path: the checkpoint file.
        device, dtype: where to put the model (default: CPU, float32).
        config: sizes (and variant) for a Lightning/PyTorch file without a config of its own (our files carry theirs).
        ema: load the EMA weights (`ema_state_dict`) of a training checkpoint whose run kept them.
    """
    from .models.variants import build_renderer

    path = Path(path)
    raw = read_checkpoint(path, ema=ema)
    _expect_kind(raw, "renderer", path)
    state = raw.tensors
    if raw.kind is None:
        if not any(k.startswith("gen.") for k in state):
            hint = " (it looks like a motion generator)" if any(k.startswith("model.fmt.") for k in state) else ""
            raise CheckpointError(f"{path}: not a renderer checkpoint: no 'gen.*' keys{hint}")
        state = strip_prefix(state, "gen.")  # `disc.*` is the training-only discriminator
    if raw.config:
        try:
            config = renderer_config_from_dict(raw.config)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: unusable renderer config: {err}") from None
    model = load_strict(build_renderer(config or RendererConfig()), state, str(path))
    return _finish(model, device, dtype)


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                   ema: bool = False) -> "MotionGenerator":
    """Load the motion generator from the published `generator.ckpt` or our `.safetensors` file.

    Args:
        path: the checkpoint file.
        ema: load the EMA weights (`ema_state_dict`) instead of `state_dict`, which the published inference uses.
    """
    from .models.generator import MotionGenerator

    path = Path(path)
    raw = read_checkpoint(path, ema=ema)
    _expect_kind(raw, "generator", path)
    if raw.kind is None:
        if any(k.startswith("gen.") for k in raw.tensors):
            raise CheckpointError(f"{path}: this is a renderer checkpoint ('gen.*' keys), not a motion generator")
        state, _ = split_generator_state_dict(raw.tensors)
        config = config_from_dict(GeneratorConfig, raw.config) if raw.config else infer_generator_config(state)
    else:
        state = raw.tensors
        config = config_from_dict(GeneratorConfig, raw.config)
    model = load_strict(MotionGenerator(config), state, str(path))
    return _finish(model, device, dtype)


def load_audio_encoder(path: str | os.PathLike, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = None, ema: bool = False) -> "AudioEncoder | MelAudioEncoder":
    """Load the frame-rate audio encoder.

    Args:
        path: a Hugging Face wav2vec2 folder (`config.json` + `model.safetensors` or `pytorch_model.bin`), our
            `.safetensors` file (wav2vec2 or the weight-free log-mel front end), the published `generator.ckpt`
            when it holds the wav2vec2 weights (the config then comes from a `config.json` beside it, else the
            wav2vec2-base defaults), or our generator training checkpoint with its log-mel front end.
        ema: for Lightning files, read the EMA weights.
    """
    from transformers import Wav2Vec2Config

    from .models.audio import AudioEncoder

    path = Path(path)
    if path.is_dir():
        config, state = _wav2vec2_folder(path)
    else:
        raw = read_checkpoint(path, ema=ema)
        mel_config = raw.info.get("mel_config") if raw.info else None  # a generator trained with the log-mel front end
        if raw.kind == "mel_audio_encoder" or mel_config:
            from .models.mel import MelAudioEncoder, MelConfig

            config, state = ((raw.config, raw.tensors) if raw.kind else
                             (mel_config, strip_prefix(raw.tensors, "audio_encoder.")))
            model = load_strict(MelAudioEncoder(config_from_dict(MelConfig, config)), state, str(path))
            return _finish(model, device, dtype)
        _expect_kind(raw, "audio_encoder", path)
        if raw.kind is not None:
            config = Wav2Vec2Config.from_dict(raw.config)
            state = strip_prefix(raw.tensors, "wav2vec2.")
        else:
            _, state = split_generator_state_dict(raw.tensors)
            if not state:
                raise CheckpointError(f"{path}: holds no wav2vec2 weights ('model.audio_encoder.wav2vec2.*')")
            beside = path.parent / "config.json"
            config = (Wav2Vec2Config.from_dict(json.loads(beside.read_text())) if beside.is_file()
                      else Wav2Vec2Config())
    encoder = AudioEncoder(config)
    # pretraining and CTC heads (lm_head, quantizer, project_*) are not part of the encoder
    own = encoder.wav2vec2.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(("lm_head.", "quantizer.", "project_"))}
    load_strict(encoder.wav2vec2, state, str(path))
    return _finish(encoder, device, dtype)


def _wav2vec2_folder(path: Path):
    """Config and encoder weights of a Hugging Face wav2vec2 folder (Wav2Vec2Model or Wav2Vec2ForCTC layout)."""
    from transformers import Wav2Vec2Config

    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: not a wav2vec2 folder (no config.json)")
    config = Wav2Vec2Config.from_dict(json.loads(config_file.read_text()))
    weights = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin in the folder")
    state = read_checkpoint(weights).tensors
    if any(k.startswith("wav2vec2.") for k in state):  # a Wav2Vec2ForCTC file: the encoder sits under wav2vec2.
        state = strip_prefix(state, "wav2vec2.")
    return config, convert_wav2vec2_state_dict(state)


# -- weight folders -------------------------------------------------------------------------------------------

# file names looked for in a weights folder, ours first, then the published ones
WEIGHT_FILES = {
    "renderer": ("renderer.safetensors", "renderer.ckpt"),
    "generator": ("generator.safetensors", "generator.ckpt"),
    "audio_encoder": ("audio_encoder.safetensors", "wav2vec2-base-960h"),
}


WEIGHTS_ENV = "IMTALKER_HOME"  # default weights folder when none is named
DEMO_MODEL_DIR = ("assets", "demo_model")  # the bundled demo model, inside the installed package


def bundled_demo_model() -> Path | None:
    """The bundled demo model's folder when this install ships one (all three networks), else None."""
    from importlib.resources import files

    folder = Path(str(files("imtalker").joinpath(*DEMO_MODEL_DIR)))
    return folder if all(any((folder / n).exists() for n in names) for names in WEIGHT_FILES.values()) else None


def resolve_weights(folder: str | os.PathLike | None = None, *, environ: dict | None = None,
                    demo: bool = True) -> Path:
    """The weights folder to use: `folder` if given, else `$IMTALKER_HOME`, else the bundled demo model.

    Args:
        folder: a folder named by the caller (a CLI flag, an argument).
        environ: the environment to read `IMTALKER_HOME` from (default: `os.environ`).
        demo: fall back to the bundled demo model when nothing else names a folder.

    Raises:
        CheckpointError: nothing names a folder and no demo model is bundled (or `demo` is False).
    """
    environ = os.environ if environ is None else environ
    chosen = folder or environ.get(WEIGHTS_ENV) or (bundled_demo_model() if demo else None)
    if not chosen:
        raise CheckpointError(f"no weights: pass --weights DIR or set {WEIGHTS_ENV} to a folder with the published "
                              "or converted weights" + (" (no bundled demo model is installed)" if demo else ""))
    return Path(chosen)


def find_weights(folder: str | os.PathLike, need: tuple[str, ...] = tuple(WEIGHT_FILES)) -> dict[str, Path]:
    """Paths of the networks in a weights folder (our converted files or the published ones).

    Raises:
        CheckpointError: the folder is missing or lacks a network in `need`; the message lists the names tried.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"weights folder not found: {folder}")
    found = {}
    for name in need:
        path = next((folder / n for n in WEIGHT_FILES[name] if (folder / n).exists()), None)
        if path is None:
            raise CheckpointError(f"{folder} has no {name}: expected one of {', '.join(WEIGHT_FILES[name])}")
        found[name] = path
    return found


# -- our format -----------------------------------------------------------------------------------------------


def save_model(model: nn.Module, path: str | os.PathLike, dtype: torch.dtype | None = None,
               metadata: dict[str, str] | None = None) -> Path:
    """Write a network as `.safetensors` with its kind and config in the header. Atomic: temp file + rename.

    With `dtype` (e.g. torch.float16, half the bytes) floating-point tensors are stored in it; the loaders cast them
    back to the model's dtype (float32 unless asked otherwise). `metadata`: further header entries (strings), e.g. a
    generator's `renderer_digest`."""
    from .models.audio import AudioEncoder
    from .models.generator import MotionGenerator
    from .models.mel import MelAudioEncoder
    from .models.renderer import IMTRenderer

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"our weights files end in .safetensors, got {path.name}")
    if isinstance(model, IMTRenderer):
        kind, config = "renderer", renderer_config_to_dict(model.config)
    elif isinstance(model, MotionGenerator):
        kind, config = "generator", config_to_dict(model.config)
    elif isinstance(model, AudioEncoder):
        kind, config = "audio_encoder", model.config.to_dict()
    elif isinstance(model, MelAudioEncoder):
        kind, config = "mel_audio_encoder", config_to_dict(model.config)
    else:
        raise ValueError(f"cannot save a {type(model).__name__}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    metadata = {**(metadata or {}), "format": "imtalker", "format_version": FORMAT_VERSION, "kind": kind,
                "config": json.dumps(config)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(state, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def weights_digest(model: nn.Module) -> str:
    """A short digest of a network's weights, the same for any file format it was read from.

    Floating-point tensors are hashed rounded to float16, so a half-precision copy of a network (as the bundled demo
    model stores) has the digest of the full-precision one.
    """
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        value = value.detach().cpu()
        value = value.to(torch.float16) if value.is_floating_point() else value
        digest.update(key.encode())
        digest.update(value.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def recorded_renderer_digest(generator_path: str | os.PathLike) -> str | None:
    """The digest of the renderer a generator file was trained on (our files since it was recorded), else None."""
    path = Path(generator_path)
    if path.suffix == ".safetensors":
        return (read_checkpoint(path).metadata or {}).get("renderer_digest")
    try:
        info = checkpoint_entries(path).get(CHECKPOINT_INFO)
    except CheckpointError:
        return None
    return info.get("renderer_digest") if isinstance(info, dict) else None


def check_renderer_pairing(renderer: "str | os.PathLike | nn.Module", digest: str | None, what: str) -> bool:
    """Warn when `renderer` is not the renderer whose digest a generator recorded (its motion latents would mean
    other motions). Nothing to check (True) without a recorded digest or without the renderer file.

    Returns:
        Whether the pair matches (or cannot be checked).
    """
    if digest is None:
        return True
    if not isinstance(renderer, nn.Module):
        if not Path(renderer).is_file():
            return True
        renderer = load_renderer(renderer)
    found = weights_digest(renderer)
    if found != digest:
        logger.warning("%s was trained on the renderer with weights digest %s, but this renderer's is %s: its "
                       "motion latents will not mean the same motions", what, digest, found)
        return False
    return True


def describe_checkpoint(path: str | os.PathLike) -> dict:
    """What a file holds: kind, config, parameter count (for `imtalker info`)."""
    path = Path(path)
    if path.is_dir():
        encoder = load_audio_encoder(path)
        return {"path": str(path), "kind": "audio_encoder", "format": "huggingface",
                "parameters": sum(p.numel() for p in encoder.parameters()), "config": encoder.config.to_dict()}
    raw = read_checkpoint(path)
    info: dict[str, Any] = {"path": str(path), "format": "imtalker" if raw.kind else "published/pytorch"}
    kind = raw.kind
    if kind is None:
        if any(k.startswith("gen.") for k in raw.tensors):
            kind = "renderer"
            info["has_discriminator"] = any(k.startswith("disc.") for k in raw.tensors)
        elif any(k.startswith(("model.fmt.", "fmt.")) for k in raw.tensors):
            kind = "generator"
            generator, wav2vec2 = split_generator_state_dict(raw.tensors)
            info["has_wav2vec2"] = bool(wav2vec2)
            info["config"] = config_to_dict(infer_generator_config(generator))
        else:
            raise CheckpointError(f"{path}: neither a renderer ('gen.*') nor a generator ('model.fmt.*') checkpoint")
    elif kind == "renderer" and raw.config:
        info["config"] = renderer_config_to_dict(renderer_config_from_dict(raw.config))  # retired switches read anew
    else:
        info["config"] = raw.config
    info["kind"] = kind
    info["tensors"] = len(raw.tensors)
    info["parameters"] = sum(t.numel() for t in raw.tensors.values() if t.is_floating_point())
    return info
