"""The onnxruntime backend: exported graphs (`imtalker.export.graphs`) behind the networks' inference interfaces.

`OnnxRenderer` answers `encode_source`, `encode_motion` and `render` as `IMTRenderer` does, and `OnnxGenerator`
answers `project` and `velocity` as `MotionGenerator` does, so the pipelines, the samplers, the streaming and live
sessions and the server run them unchanged (`backend="onnxruntime"`). Tensors stay torch tensors on the CPU at the
interface; each call runs one onnxruntime session. Sessions are safe to call from several threads at once.

    renderer, generator, audio_encoder = onnxruntime_networks(renderer, generator, folder="onnx/",
                                                              audio_encoder=audio_encoder)  # exports if needed

`OnnxMelEncoder` and `OnnxWav2Vec2Encoder` answer the audio encoders' call (`MelAudioEncoder`, `AudioEncoder`).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..config import GeneratorConfig, RendererConfig, config_from_dict, renderer_config_from_dict
from ..errors import InputError
from ..models.audio import pad_waveform, prepare_waveform, resample_to_frames
from ..models.generator import MotionConditions, MotionGenerator
from ..models.mel import MelConfig, stft_padded
from ..models.demo_renderer import DemoSourceState
from ..models.renderer import IMTRenderer, SourceState, check_source_batch
from ..weights import weights_digest
from .graphs import CONDITIONS, export_onnx, flatten_source, read_manifest, unflatten_source

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime")
SOURCE_STATES = {"published": SourceState, "demo": DemoSourceState}  # per renderer variant (`config.variant`)
CACHE_ENV = "IMTALKER_ONNX_CACHE"  # where exports made on first use go; default ~/.cache/imtalker/onnx
# Image pixels per run of the frames and motion-encoder graphs. A graph has no fused attention, so a run holds all
# its frames' attention scores at once, and onnxruntime keeps its largest intermediates in its arena: eight 512 px
# frames per run peaked at 11.8 GB, runs of one at 2.8 GB (2.0 without the memory pattern, `GraphSession`),
# equally fast. 128 px frames go four to a run.
GRAPH_RUN_PIXELS = 4 * 128 * 128


def check_backend(backend: str, device: torch.device, dtype: torch.dtype | None, compile: bool = False) -> str:
    """`backend` after checking it can run as asked.

    Raises:
        InputError: an unknown backend, or onnxruntime asked for a GPU, half precision or compilation.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnxruntime":
        if device.type != "cpu":
            raise InputError(f"the onnxruntime backend runs on the CPU, not {device} (for a GPU: --backend torch, "
                             "or TensorRT from the exported graphs, docs/deploy.md)")
        if dtype is not None:
            raise InputError("the onnxruntime backend runs the exported float32 graphs: drop --bf16/--fp16")
        if compile:
            raise InputError("--compile is for the torch backend")
    return backend


def require_onnxruntime():
    """The onnxruntime module, or a one-line InputError naming the extra that installs it."""
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise InputError('the onnxruntime backend needs onnx and onnxruntime: pip install "imtalker[onnx]"') from None
    return onnxruntime


class GraphSession:
    """One exported graph in onnxruntime: torch tensors in (by input name), torch tensors out.

    Without a fixed `threads`, a run computes on as many threads as torch would in the calling thread
    (`torch.get_num_threads()`, which a live session's single-threaded render workers and its sampling thread beside
    them limit to one), through one onnxruntime session per thread count, made on first use. A single session of
    two intra-op threads called by two render workers at once made its threads contend with each other and with
    the sampling: a live stream of the demo model drew 43-72% of its frames instead of all (docs/deploy.md).
    """

    def __init__(self, folder: Path, entry: dict, threads: int | None = None, keep_memory: bool = True,
                 plan_memory: bool = True):
        """`keep_memory`: keep onnxruntime's memory arena between runs (faster); False for graphs run rarely, so
        their largest intermediates go back to the system after each run. `plan_memory`: onnxruntime's memory
        pattern, one block planned for all of a run's intermediates; the renderer's graphs peak lower without it
        (2.0 GB instead of 2.6 at 512 px, 455 MB instead of 600 at 128 px), equally fast."""
        self.path = folder / entry["file"]
        self.inputs, self.outputs = entry["inputs"], entry["outputs"]
        self.threads, self.keep_memory, self.plan_memory = threads, keep_memory, plan_memory
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()
        self.session_for(threads or torch.get_num_threads())  # fail here, not at the first run, on a bad graph

    def session_for(self, threads: int):
        """The onnxruntime session that computes on `threads` intra-op threads (made on first use)."""
        session = self._sessions.get(threads)  # every run asks: no lock once the session exists
        if session is not None:
            return session
        with self._lock:
            if threads not in self._sessions:
                ort = require_onnxruntime()
                options = ort.SessionOptions()
                options.enable_cpu_mem_arena = self.keep_memory
                options.enable_mem_pattern = self.plan_memory
                options.intra_op_num_threads = threads
                # idle intra-op threads would spin for the next operator on cores that torch, the other
                # sessions or the render workers need
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                self._sessions[threads] = ort.InferenceSession(str(self.path), options,
                                                               providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    @property
    def thread_counts(self) -> list[int]:
        """The intra-op thread counts of the sessions made so far."""
        with self._lock:
            return sorted(self._sessions)

    def run(self, **feeds: torch.Tensor) -> list[torch.Tensor]:
        arrays = {name: np.ascontiguousarray(feeds[name].detach().cpu().float().numpy()) for name in self.inputs}
        session = self.session_for(self.threads or torch.get_num_threads())
        return [torch.from_numpy(out) for out in session.run(self.outputs, arrays)]


class OnnxModule:
    """What the pipelines ask of a network besides its calls: a config, `.to()`, `.eval()` and a parameter that
    tells its device and dtype (the CPU, float32)."""

    config: RendererConfig | GeneratorConfig

    def to(self, *args, **kwargs) -> "OnnxModule":
        device = torch.device(args[0]) if args and isinstance(args[0], (str, torch.device)) else None
        if device is not None and device.type != "cpu":
            raise InputError(f"the onnxruntime backend runs on the CPU, not on {device}")
        return self

    def eval(self) -> "OnnxModule":
        return self

    def parameters(self):
        yield torch.zeros(())

    @property
    def training(self) -> bool:
        return False

    def per_frame_graphs(self) -> list[GraphSession]:
        """The graphs a live session runs every hop (the renderer's frames; the generator's and audio front end's
        graphs, which the sampling thread runs beside the render workers)."""
        return []

    def prepare_threads(self, threads: int) -> None:
        """Make the sessions for runs on `threads` threads now: a live session's single-threaded render workers
        would otherwise wait on the first hop while onnxruntime loads the graph once more (0.24 s for the demo
        renderer's frames graph)."""
        for graph in self.per_frame_graphs():
            graph.session_for(threads)

    def read_manifest(self, folder: str | os.PathLike, network: str) -> dict:
        """Keep the exported folder and the digest of `network`'s weights; the whole manifest."""
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        if network not in manifest:
            raise InputError(f"{self.folder} holds no {network} graphs")
        self.weights_digest = manifest[network]["weights_digest"]
        return manifest


class OnnxRenderer(OnnxModule):
    """The renderer's exported graphs with `IMTRenderer`'s inference methods (same inputs, checks and outputs)."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        manifest = self.read_manifest(folder, "renderer")
        folder = self.folder
        self.config = renderer_config_from_dict(manifest["renderer"]["config"])
        graphs = manifest["graphs"]
        self.source_names = graphs["renderer_source"]["outputs"]
        self.state_type = SOURCE_STATES[self.config.variant]
        # once per portrait: its 512 px intermediates (300 MB) are not kept for the next one
        self.source_graph = GraphSession(folder, graphs["renderer_source"], threads, keep_memory=False,
                                         plan_memory=False)
        self.frames_graph = GraphSession(folder, graphs["renderer_frames"], threads, plan_memory=False)
        self.motion_graph = GraphSession(folder, graphs["motion_encoder"], threads, plan_memory=False)

    def per_frame_graphs(self) -> list[GraphSession]:
        return [self.frames_graph]

    # the same input checks as the PyTorch renderer (they read only the config), so bad input fails alike
    check_images = IMTRenderer.check_images
    check_motion = IMTRenderer.check_motion

    def encode_source(self, image: torch.Tensor) -> SourceState:
        """A source state for one portrait (1, 3, S, S) float in [0, 1] (the graph's batch is 1)."""
        self.check_images(image, "image")
        if image.shape[0] != 1:
            raise ValueError(f"the onnxruntime renderer encodes one source image at a time, got {image.shape[0]}")
        return unflatten_source(self.state_type, self.source_names, self.source_graph.run(source_image=image))

    @property
    def frames_per_run(self) -> int:
        """Frames per run of the frames and motion-encoder graphs (`GRAPH_RUN_PIXELS`)."""
        return max(1, GRAPH_RUN_PIXELS // self.config.image_size ** 2)

    def encode_motion(self, images: torch.Tensor) -> torch.Tensor:
        """Motion latents (N, 32) of face images (N, 3, S, S) float in [0, 1]."""
        self.check_images(images, "images")
        return torch.cat([self.motion_graph.run(images=chunk)[0] for chunk in images.split(self.frames_per_run)])

    def render_with_top1(self, source: SourceState, motion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (B, 3, S, S) and the finest cross-attention's arg-max cells (B, grid^2) for latents (B, 32)."""
        check_source_batch(source, motion)
        feeds = dict(zip(self.source_names, flatten_source(source)))
        return tuple(self.frames_graph.run(driving_motion=motion, **feeds))

    def render(self, source: SourceState, motion: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        self.check_motion(motion)
        if not isinstance(source, SourceState):
            raise ValueError(f"source must be the SourceState from encode_source, got {type(source).__name__}")
        step = min(batch_size or motion.shape[0], self.frames_per_run)
        return torch.cat([self.render_with_top1(source, chunk)[0] for chunk in motion.split(step)])


class OnnxVelocity:
    """The exported `fmt` velocity step, called as `FlowMatchingTransformer.forward` is."""

    def __init__(self, graph: GraphSession):
        self.graph = graph

    def __call__(self, t, x: torch.Tensor, prev_x: torch.Tensor, ref: torch.Tensor, conditions: MotionConditions,
                 prev_conditions: MotionConditions) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        feeds = {f"{name}_condition": getattr(conditions, name) for name in CONDITIONS}
        feeds |= {f"prev_{name}_condition": getattr(prev_conditions, name) for name in CONDITIONS}
        return self.graph.run(t=t, x=x, prev_x=prev_x, ref=ref, **feeds)[0]


class OnnxGenerator(OnnxModule):
    """The generator's exported graphs with `MotionGenerator`'s `project` and `velocity` (guidance included)."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        manifest = self.read_manifest(folder, "generator")
        folder = self.folder
        self.config = config_from_dict(GeneratorConfig, manifest["generator"]["config"])
        self.conditions_graph = GraphSession(folder, manifest["graphs"]["generator_conditions"], threads)
        self.fmt = OnnxVelocity(GraphSession(folder, manifest["graphs"]["generator_velocity"], threads))

    def project(self, audio_features: torch.Tensor, pose: torch.Tensor | None = None,
                gaze: torch.Tensor | None = None, cam: torch.Tensor | None = None) -> MotionConditions:
        """As `MotionGenerator.project`: a missing track is zeros in the projected space."""
        cfg = self.config
        b, n = audio_features.shape[:2]
        tracks = {"audio": audio_features, "pose": pose, "gaze": gaze, "cam": cam}
        dims = {"audio": cfg.audio_dim, "pose": cfg.pose_dim, "gaze": cfg.gaze_dim, "cam": cfg.cam_dim}
        feeds = {name: track if track is not None else torch.zeros(b, n, dims[name]) for name, track in tracks.items()}
        projected = dict(zip(CONDITIONS, self.conditions_graph.run(**feeds)))
        return MotionConditions(*(torch.zeros_like(projected[name]) if tracks[name] is None else projected[name]
                                  for name in CONDITIONS))

    def per_frame_graphs(self) -> list[GraphSession]:
        return [self.conditions_graph, self.fmt.graph]

    # guidance around the velocity step, exactly as the PyTorch generator does it (it calls `self.fmt`)
    velocity = MotionGenerator.velocity


class OnnxAudioEncoder(OnnxModule):
    """An audio front end's exported graphs with the encoders' call: (waveform, num_frames, normalize) ->
    (B, T, feature_dim). Normalising the waveform, padding it and resampling to the video frame rate run around the
    graphs, in PyTorch, as they run around the networks (`onnx_audio_encoder` picks the front end's class)."""

    feature_dim: int

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        manifest = self.read_manifest(folder, "audio_encoder")
        self.load(manifest["audio_encoder"]["config"], manifest["graphs"], threads)

    def load(self, config: dict, graphs: dict, threads: int | None) -> None:
        raise NotImplementedError


class OnnxMelEncoder(OnnxAudioEncoder):
    """The log-mel front end (`MelAudioEncoder`): one graph from the padded waveform to spectrogram-rate features."""

    def load(self, config: dict, graphs: dict, threads: int | None) -> None:
        self.config = config_from_dict(MelConfig, config)
        self.feature_dim = self.config.feature_dim
        self.graph = GraphSession(self.folder, graphs["audio_features"], threads)

    def per_frame_graphs(self) -> list[GraphSession]:
        return [self.graph]

    def __call__(self, waveform: torch.Tensor, num_frames: int, normalize: bool = True) -> torch.Tensor:
        waveform = prepare_waveform(waveform, num_frames, normalize)
        features = self.graph.run(padded_waveform=stft_padded(self.config, waveform.float()))[0]  # (B, M, dim)
        return resample_to_frames(features.transpose(1, 2), num_frames)


class OnnxWav2Vec2Encoder(OnnxAudioEncoder):
    """The wav2vec2 front end (`AudioEncoder`): its convolutions, the resampling to the frame count, its transformer."""

    def load(self, config: dict, graphs: dict, threads: int | None) -> None:
        from transformers import Wav2Vec2Config

        self.config = Wav2Vec2Config.from_dict(config)
        self.feature_dim = self.config.hidden_size
        self.conv_graph = GraphSession(self.folder, graphs["wav2vec2_conv"], threads)
        self.frames_graph = GraphSession(self.folder, graphs["wav2vec2_frames"], threads)

    def per_frame_graphs(self) -> list[GraphSession]:
        return [self.conv_graph, self.frames_graph]

    def __call__(self, waveform: torch.Tensor, num_frames: int, normalize: bool = True) -> torch.Tensor:
        waveform = pad_waveform(prepare_waveform(waveform, num_frames, normalize).float(), num_frames)
        conv_features = self.conv_graph.run(waveform=waveform)[0]  # (B, C, N'')
        return self.frames_graph.run(frame_features=resample_to_frames(conv_features, num_frames))[0]


AUDIO_FRONT_ENDS = {"mel": OnnxMelEncoder, "wav2vec2": OnnxWav2Vec2Encoder}  # by the manifest's `front_end`


def onnx_audio_encoder(folder: str | os.PathLike, threads: int | None = None) -> OnnxAudioEncoder:
    """The exported audio front end of `folder`, in the class of its kind."""
    front_end = read_manifest(Path(folder)).get("audio_encoder", {}).get("front_end")
    if front_end not in AUDIO_FRONT_ENDS:
        raise InputError(f"{folder} holds no audio encoder graphs")
    return AUDIO_FRONT_ENDS[front_end](folder, threads)


class OnnxNetworks(NamedTuple):
    """What `onnxruntime_networks` returns: each network given, in onnxruntime (None where none was given)."""

    renderer: OnnxRenderer | None
    generator: OnnxGenerator | None
    audio_encoder: OnnxAudioEncoder | None


def exported_folder(renderer: IMTRenderer | None, generator: MotionGenerator | None,
                    folder: str | os.PathLike | None = None, audio_encoder: nn.Module | None = None) -> Path:
    """A folder of graphs exported from exactly these networks: `folder` (exported now unless its manifest already
    names these weights), or by default one per weights digest under `$IMTALKER_ONNX_CACHE` (~/.cache/imtalker/onnx)."""
    named = (("renderer", renderer), ("generator", generator), ("audio_encoder", audio_encoder))
    digests = {name: weights_digest(model) for name, model in named if model is not None}
    if folder is None:
        cache = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "imtalker" / "onnx"
        folder = Path(cache) / "-".join(digests[name] for name in sorted(digests))
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
        current = all(manifest.get(name, {}).get("weights_digest") == digest for name, digest in digests.items())
    except InputError:
        current = False
    if not current:
        require_onnxruntime()
        logger.warning("exporting the networks to ONNX in %s (once per set of weights)", folder)
        export_onnx(folder, renderer, generator, audio_encoder)
    return folder


def onnxruntime_networks(renderer: IMTRenderer | OnnxRenderer | None,
                         generator: MotionGenerator | OnnxGenerator | None = None,
                         folder: str | os.PathLike | None = None, threads: int | None = None,
                         audio_encoder: nn.Module | None = None) -> OnnxNetworks:
    """The onnxruntime stand-ins of the networks given, from graphs exported from these very weights (see
    `exported_folder`). A network that already runs in onnxruntime is kept as it is, so pipelines can share one
    renderer (the web UI's two tabs, a batch worker's two pipelines).
    """
    def to_export(network, converted: type):
        return None if network is None or isinstance(network, converted) else network

    renderer_to_export = to_export(renderer, OnnxRenderer)
    generator_to_export = to_export(generator, OnnxGenerator)
    audio_to_export = to_export(audio_encoder, OnnxAudioEncoder)
    if renderer_to_export is not None or generator_to_export is not None or audio_to_export is not None:
        folder = exported_folder(renderer_to_export, generator_to_export, folder, audio_to_export)
    return OnnxNetworks(OnnxRenderer(folder, threads) if renderer_to_export is not None else renderer,
                        OnnxGenerator(folder, threads) if generator_to_export is not None else generator,
                        onnx_audio_encoder(folder, threads) if audio_to_export is not None else audio_encoder)
