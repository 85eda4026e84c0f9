"""ONNX graphs of the networks (`imtalker export-onnx`, docs/deploy.md).

Each graph wraps a public entry of a network, traced by the TorchScript exporter (`torch.onnx.export(...,
dynamo=False)`):

| graph | inputs -> outputs | dynamic axes |
|---|---|---|
| `renderer_source` | source_image (1, 3, S, S) -> the source state, one tensor per field | none |
| `renderer_frames` | driving_motion (B, motion_dim) + the source state -> frames (B, 3, S, S), top1 (B, grid^2) | B |
| `motion_encoder` | images (B, 3, S, S) -> motion (B, motion_dim) | B |
| `generator_conditions` | audio, pose, gaze, cam (B, N, dim) -> their projections (B, N, cond_dim) | B, N |
| `generator_velocity` | t (B,), x (B, L, D), prev_x (B, P, D), ref (B, D), 4 clip + 4 context conditions -> (B, P + L, D) | B, L, P |
| `audio_features` | padded_waveform (B, N + n_fft), the log-mel front end's input as its STFT pads it -> features (B, M, dim), one per spectrogram frame | B, N, M |
| `wav2vec2_conv` | waveform (B, N'), padded to a multiple of the frame unit -> conv_features (B, 512, N'') | B, N', N'' |
| `wav2vec2_frames` | frame_features (B, T, 512), the conv features resampled to T frames -> features (B, T, 768) | B, T |

`top1` is the finest cross-attention's arg-max source cell per query (it picks the blocks the guided resampler
copies), an extra output so that a runtime's attention can be checked index for index. A manifest
(`manifest.json`) records the opset, every graph's input and output names and dynamic axes, the networks' configs
and the digests of the weights they came from (`imtalker.weights.weights_digest`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from dataclasses import fields, replace
from pathlib import Path

import torch
from torch import nn

from ..config import config_to_dict, renderer_config_to_dict
from ..errors import InputError
from ..models.generator import MotionConditions, MotionGenerator
from ..models.audio import AudioEncoder, pad_waveform, resample_to_frames
from ..models.mel import MelAudioEncoder, stft_padded
from ..models.renderer import NUM_COARSE_LEVELS, IMTRenderer, SourceState
from ..weights import weights_digest

OPSET = 20  # AffineGrid (the demo renderer's source warp) is an ONNX op from 20 on; onnxruntime >= 1.17 runs it
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "imtalker-onnx/1"
CONDITIONS = tuple(f.name for f in fields(MotionConditions))  # audio, pose, gaze, cam


def source_field_names(state: SourceState) -> list[str]:
    """Flat names of a source state's tensors in field order: `keys.0`, ..., `identity`, ... (variants add fields;
    optional ones left None are not part of a graph)."""
    names = []
    for name, value in vars(state).items():
        if value is not None:
            names += [f"{name}.{i}" for i in range(len(value))] if isinstance(value, list) else [name]
    return names


def without_inference_caches(state: SourceState) -> SourceState:
    """The state without the optional fields (default None) a variant fills for eager inference only, as a captured
    graph makes it (the demo renderer's neighbourhoods)."""
    return replace(state, **{f.name: None for f in fields(state) if f.default is None})


def flatten_source(state: SourceState) -> list[torch.Tensor]:
    """The source state's tensors in the order of `source_field_names`."""
    flat = []
    for value in vars(state).values():
        if value is not None:
            flat += list(value) if isinstance(value, list) else [value]
    return flat


def unflatten_source(state_type: type[SourceState], names: list[str], tensors) -> SourceState:
    """Rebuild a source state of `state_type` from flat tensors named as `source_field_names` names them."""
    values: dict[str, object] = {}
    for name, tensor in zip(names, tensors):
        field, _, index = name.partition(".")
        if index:
            values.setdefault(field, []).append(tensor)
        else:
            values[field] = tensor
    return state_type(**values)


class SourceGraph(nn.Module):
    """Source portrait (1, 3, S, S) -> the source state's tensors (`renderer.source_state`)."""

    def __init__(self, renderer: IMTRenderer):
        super().__init__()
        self.renderer = renderer

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_source(self.renderer.source_state(image)))


class FramesGraph(nn.Module):
    """Motion latents (B, motion_dim) + a source state's tensors -> frames (B, 3, S, S) and the finest
    cross-attention's arg-max cells (B, grid^2), through the public `render_latents`."""

    def __init__(self, renderer: IMTRenderer, state_type: type[SourceState], names: list[str]):
        super().__init__()
        self.renderer = renderer
        self.state_type = state_type
        self.names = names

    def forward(self, motion: torch.Tensor, *source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        found = []
        # the finest cross-attention returns (aligned, top1) when asked for its arg-max; a hook keeps the indices
        finest = self.renderer.imt[NUM_COARSE_LEVELS - 1].block_efc
        hook = finest.register_forward_hook(
            lambda module, args, output: found.append(output[1]) if isinstance(output, tuple) else None)
        try:
            frame = self.renderer.render_latents(unflatten_source(self.state_type, self.names, source), motion).frame
        finally:
            hook.remove()
        return frame, found[0]


class MotionEncoderGraph(nn.Module):
    """Face images (B, 3, S, S) -> motion latents (B, motion_dim) (`latent_token_encoder`)."""

    def __init__(self, renderer: IMTRenderer):
        super().__init__()
        self.encoder = renderer.latent_token_encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images.contiguous(memory_format=torch.channels_last))


class ConditionsGraph(nn.Module):
    """Raw audio, pose, gaze and camera tracks (B, N, dim) -> each one's projection (B, N, cond_dim)."""

    def __init__(self, generator: MotionGenerator):
        super().__init__()
        self.generator = generator

    def forward(self, audio, pose, gaze, cam) -> tuple[torch.Tensor, ...]:
        conditions = self.generator.project(audio, pose, gaze, cam)
        return tuple(getattr(conditions, name) for name in CONDITIONS)


class VelocityGraph(nn.Module):
    """One velocity evaluation of the flow-matching transformer (`generator.fmt`), conditions flattened."""

    def __init__(self, generator: MotionGenerator):
        super().__init__()
        self.fmt = generator.fmt

    def forward(self, t, x, prev_x, ref, *conditions: torch.Tensor) -> torch.Tensor:
        clip, context = MotionConditions(*conditions[:4]), MotionConditions(*conditions[4:])
        return self.fmt(t, x, prev_x, ref, clip, context)


class MelFeaturesGraph(nn.Module):
    """The log-mel front end up to its spectrogram-rate features (`MelAudioEncoder.spectrogram_rate_features`).

    `torch.stft` has no TorchScript ONNX export, so the STFT is one strided convolution over the windowed DFT
    kernels (cosines and negated sines of the n_fft // 2 + 1 bins), the same sums. The waveform comes padded as the
    centred STFT pads it (`stft_padded`); normalising it and resampling the features to the video frame rate stay
    outside the graph, as they are outside the encoder's network.
    """

    def __init__(self, encoder: MelAudioEncoder):
        super().__init__()
        cfg = encoder.config
        self.encoder = encoder
        self.bins = cfg.n_fft // 2 + 1
        self.hop_length = cfg.hop_length
        window = torch.zeros(cfg.n_fft, dtype=torch.float64)  # the window centred in n_fft, as torch.stft pads it
        left = (cfg.n_fft - cfg.win_length) // 2
        window[left:left + cfg.win_length] = encoder.window.double()
        bins, taps = torch.arange(self.bins, dtype=torch.float64), torch.arange(cfg.n_fft, dtype=torch.float64)
        angle = 2 * math.pi * bins[:, None] * taps / cfg.n_fft  # (bins, n_fft)
        kernels = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # (2 * bins, n_fft)
        self.register_buffer("dft", kernels.float()[:, None, :], persistent=False)

    def forward(self, padded_waveform: torch.Tensor) -> torch.Tensor:
        spectrum = nn.functional.conv1d(padded_waveform[:, None, :], self.dft, stride=self.hop_length)  # (B, 2F, M)
        power = spectrum[:, :self.bins].square() + spectrum[:, self.bins:].square()  # (B, F, M)
        return self.encoder.spectrogram_rate_features(self.encoder.log_mel_of_power(power))


class Wav2Vec2StepGraph(nn.Module):
    """One step of wav2vec2 as a graph: `AudioEncoder.conv_features` (its convolutions) or `encode_frames` (its
    projection and transformer over the frame-rate features)."""

    def __init__(self, encoder: AudioEncoder, step: str):
        super().__init__()
        self.encoder = encoder
        self.step = step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.encoder, self.step)(x)


def export_graph(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
                 dynamic: dict[str, dict[int, str]]) -> dict:
    """Trace `module` on `args` into `path`; returns the graph's manifest entry."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        # the tracer warns at every shape it records as a constant: the spatial sizes, fixed by design
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(tmp), input_names=inputs, output_names=outputs,
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    import onnx

    used = {value.name for value in onnx.load(str(path), load_external_data=False).graph.input}
    inputs = [name for name in inputs if name in used]  # the exporter drops inputs the graph never reads
    dynamic = {name: axes for name, axes in dynamic.items() if name in used or name in outputs}
    return {"file": path.name, "inputs": inputs, "outputs": outputs,
            "dynamic_axes": {name: {str(axis): label for axis, label in axes.items()} for name, axes in dynamic.items()}}


def export_renderer(renderer: IMTRenderer, out: Path, example_batch: int = 2) -> dict:
    """The renderer as three graphs (source encoding, frames, motion encoder) in `out`; their manifest entries."""
    # a copy: the exporter's Conv + BatchNorm fusion rewrites the weights of the module it traces in place
    renderer = copy.deepcopy(renderer).float().eval()
    size, dim = renderer.config.image_size, renderer.config.motion_dim
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=generator)
    with torch.no_grad():
        state = without_inference_caches(renderer.source_state(image))
    names = source_field_names(state)
    graphs = {"renderer_source": export_graph(SourceGraph(renderer), (image,), out / "renderer_source.onnx",
                                              ["source_image"], names, {})}
    motion = state.motion.expand(example_batch, -1) + 0.1 * torch.randn(example_batch, dim, generator=generator)
    graphs["renderer_frames"] = export_graph(
        FramesGraph(renderer, type(state), names), (motion, *flatten_source(state)), out / "renderer_frames.onnx",
        ["driving_motion", *names], ["frames", "top1"],
        {"driving_motion": {0: "batch"}, "frames": {0: "batch"}, "top1": {0: "batch"}})
    images = torch.rand(example_batch, 3, size, size, generator=generator)
    graphs["motion_encoder"] = export_graph(MotionEncoderGraph(renderer), (images,), out / "motion_encoder.onnx",
                                            ["images"], ["motion"], {"images": {0: "batch"}, "motion": {0: "batch"}})
    return graphs


def export_generator(generator: MotionGenerator, out: Path) -> dict:
    """The generator's condition projections and velocity step as two graphs in `out`; their manifest entries."""
    generator = copy.deepcopy(generator).float().eval()
    cfg = generator.config
    rng = torch.Generator().manual_seed(0)
    b, n, p = 2, cfg.clip_frames, cfg.prev_frames
    tracks = [torch.randn(b, n, dim, generator=rng) for dim in (cfg.audio_dim, cfg.pose_dim, cfg.gaze_dim, cfg.cam_dim)]
    frames = {0: "batch", 1: "frames"}
    graphs = {"generator_conditions": export_graph(
        ConditionsGraph(generator), tuple(tracks), out / "generator_conditions.onnx", list(CONDITIONS),
        [f"{name}_condition" for name in CONDITIONS], {name: frames for name in CONDITIONS}
        | {f"{name}_condition": frames for name in CONDITIONS})}
    clip = [torch.randn(b, n, cfg.cond_dim, generator=rng) for _ in CONDITIONS]
    context = [torch.randn(b, p, cfg.cond_dim, generator=rng) for _ in CONDITIONS]
    args = (torch.rand(b, generator=rng), torch.randn(b, n, cfg.motion_dim, generator=rng),
            torch.randn(b, p, cfg.motion_dim, generator=rng), torch.randn(b, cfg.motion_dim, generator=rng),
            *clip, *context)
    clip_axes, context_axes = {0: "batch", 1: "frames"}, {0: "batch", 1: "context"}
    inputs = (["t", "x", "prev_x", "ref"] + [f"{name}_condition" for name in CONDITIONS]
              + [f"prev_{name}_condition" for name in CONDITIONS])
    dynamic = {"t": {0: "batch"}, "x": clip_axes, "prev_x": context_axes, "ref": {0: "batch"},
               "velocity": {0: "batch", 1: "sequence"}}
    dynamic |= {name: clip_axes for name in inputs[4:8]} | {name: context_axes for name in inputs[8:]}
    graphs["generator_velocity"] = export_graph(VelocityGraph(generator), args, out / "generator_velocity.onnx",
                                                inputs, ["velocity"], dynamic)
    return graphs


def export_audio_encoder(encoder: MelAudioEncoder | AudioEncoder, out: Path) -> dict:
    """The audio front end in `out`: the log-mel one as one graph, wav2vec2 as two (its convolutions, then its
    projection and transformer; the published model resamples in time between them, to a frame count the caller
    gives, which stays outside the graphs). Their manifest entries."""
    encoder = copy.deepcopy(encoder).float().eval()
    waveform = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))  # 1 s
    if isinstance(encoder, MelAudioEncoder):
        return {"audio_features": export_graph(
            MelFeaturesGraph(encoder), (stft_padded(encoder.config, waveform),), out / "audio_features.onnx",
            ["padded_waveform"], ["features"],
            {"padded_waveform": {0: "batch", 1: "samples"}, "features": {0: "batch", 1: "frames"}})}
    frames = 25
    padded = pad_waveform(waveform, frames)
    graphs = {"wav2vec2_conv": export_graph(
        Wav2Vec2StepGraph(encoder, "conv_features"), (padded,), out / "wav2vec2_conv.onnx", ["waveform"],
        ["conv_features"],
        {"waveform": {0: "batch", 1: "samples"}, "conv_features": {0: "batch", 2: "steps"}})}
    with torch.no_grad():
        frame_features = resample_to_frames(encoder.conv_features(padded), frames)
    graphs["wav2vec2_frames"] = export_graph(
        Wav2Vec2StepGraph(encoder, "encode_frames"), (frame_features,), out / "wav2vec2_frames.onnx",
        ["frame_features"], ["features"],
        {"frame_features": {0: "batch", 1: "frames"}, "features": {0: "batch", 1: "frames"}})
    return graphs


def audio_encoder_entry(encoder: MelAudioEncoder | AudioEncoder) -> dict:
    """The manifest's record of an audio front end: which one, its config, its weights' digest."""
    mel = isinstance(encoder, MelAudioEncoder)
    return {"front_end": "mel" if mel else "wav2vec2",
            "config": config_to_dict(encoder.config) if mel else encoder.config.to_dict(),
            "weights_digest": weights_digest(encoder)}


def export_onnx(out: str | os.PathLike, renderer: IMTRenderer | None = None,
                generator: MotionGenerator | None = None,
                audio_encoder: MelAudioEncoder | AudioEncoder | None = None) -> Path:
    """Export the networks given to ONNX graphs in folder `out`, with `manifest.json` written last.

    Returns:
        The manifest's path.
    """
    if renderer is None and generator is None and audio_encoder is None:
        raise InputError("nothing to export: no renderer, generator or audio encoder")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"format": MANIFEST_FORMAT, "opset": OPSET, "torch": torch.__version__, "graphs": {}}
    if renderer is not None:
        manifest["graphs"] |= export_renderer(renderer, out)
        manifest["renderer"] = {"config": renderer_config_to_dict(renderer.config),
                                "weights_digest": weights_digest(renderer)}
    if generator is not None:
        manifest["graphs"] |= export_generator(generator, out)
        manifest["generator"] = {"config": config_to_dict(generator.config),
                                 "weights_digest": weights_digest(generator)}
    if audio_encoder is not None:
        manifest["graphs"] |= export_audio_encoder(audio_encoder, out)
        manifest["audio_encoder"] = audio_encoder_entry(audio_encoder)
    path = out / MANIFEST
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of an exported folder.

    Raises:
        InputError: no manifest, or one this version does not read.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError(f"{folder} is not an exported ONNX folder: no {MANIFEST} (make one with imtalker export-onnx)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{path}: unknown format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}")
    return manifest
