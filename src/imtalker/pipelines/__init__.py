"""Audio-driven and video-driven talking-face generation from real files, streaming and in bounded memory.

    pipe = AudioDrivenPipeline.from_pretrained("weights/")
    pipe.to_file("out.mp4", "face.jpg", "speech.wav", seed=0)        # or: for frame in pipe.frames(...): ...

    reenact = VideoDrivenPipeline.from_pretrained("weights/")
    reenact.to_file("out.mp4", "face.jpg", "driving.mp4")

Work is done chunk by chunk (2 s of motion at a time, frames rendered in batches and encoded as they arrive), so
memory is bounded by the chunk, not by the length of the input.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..constants import FPS, SAMPLE_RATE
from ..errors import InputError, NoFaceError
from ..features import Rechunker, iter_audio_features
from ..models.audio import AudioEncoder
from ..models.generator import MotionGenerator
from ..models.renderer import IMTRenderer, SourceState
from ..preprocess.conditions import TRACK_FILE_SUFFIXES
from ..constants import DEFAULT_CFG_SCALE, DEFAULT_NFE
from ..sampling import ChunkSampler, SamplingOptions
from .render_pool import RenderPool

ProgressCallback = Callable[[int, int], None]  # (frames done, total frames)

# Audio features are computed in windows of this many frames with this much context on each side, so a long
# file never holds wav2vec2's convolution activations (512 channels at 3.2 kHz: about 6.5 MB per second of audio
# and layer) or its attention over the whole length. Files up to window + 2 * context frames run in one piece,
# exactly as the published code does.


@dataclass
class PreparedSource:
    """A source portrait ready to animate: the photo, where the face crop sits in it, and the renderer's cache."""

    photo: np.ndarray  # (H, W, 3) uint8, the full image as given
    crop_box: Any | None  # imtalker.preprocess.face.CropBox, or None when the whole image is used
    state: SourceState


@dataclass
class SourceCrop:
    """A portrait before encoding: the photo, where the face crop sits in it (None: centre square) and the square."""

    photo: np.ndarray  # (H, W, 3) uint8
    box: Any | None  # imtalker.preprocess.face.CropBox
    square: np.ndarray  # (S, S, 3) uint8, any S; resized to the renderer's size when encoded


# -- inputs -------------------------------------------------------------------------------------------------------


def load_track(source, dim: int, name: str, num_frames: int | None = None) -> np.ndarray | None:
    """A per-frame condition track (pose, gaze or camera) in the published conventions -> (T, dim) float32.

    `source` is an array, a .npy / .csv / .txt file (published conventions), a tracks .npz (`imtalker.tracks`
    files, converted from the convention they record), or a description such as "yaw=20deg" or "nod"
    (`imtalker.preprocess.conditions`; needs `num_frames`).
    """
    if source is None:
        return None
    if isinstance(source, str) and Path(source).suffix.lower() not in TRACK_FILE_SUFFIXES:
        from ..preprocess.conditions import parse_description

        if num_frames is None:
            raise InputError(f"{name}: a description needs the video's length")
        return parse_description(source, name).track(num_frames)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{name} file not found: {path}")
        try:
            if path.suffix == ".npz":
                from ..preprocess.conventions import read_tracks

                array = read_tracks(path)[name]
            elif path.suffix == ".npy":
                array = np.load(path, allow_pickle=False)
            elif path.suffix in (".csv", ".txt"):
                array = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
            else:
                raise InputError(f"{name} must be a .npy or .csv file, got {path.name}")
        except (ValueError, OSError) as err:
            raise InputError(f"{name} file {path} is not readable as numbers: {err}") from None
    else:
        array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim or array.shape[0] == 0:
        raise InputError(f"{name} must be a (frames, {dim}) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"{name} holds NaN or infinite values")
    return array


def image_to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, size, size) float in [0, 1], resized with area/cubic filtering."""
    from PIL import Image

    if image.shape[0] != size or image.shape[1] != size:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None].div_(255)


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8."""
    return frames.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def center_square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]


# -- shared machinery -----------------------------------------------------------------------------------------


class _PipelineBase:
    """Shared by both pipelines. Deployment options (docs/deploy.md):

    Args:
        dtype: None (float32), or torch.bfloat16 / torch.float16 for autocast; on a CPU without native
            instructions for it (e.g. AVX2 only) float32 is kept, with a warning (`export/precision.py`).
        backend: "torch" (default) or "onnxruntime": the networks run as ONNX graphs in onnxruntime on the CPU
            (the `onnx` extra), exported from these weights into `onnx_dir` (default: a cache folder per weights
            digest) unless that folder already holds them. Float32 only.
        onnx_dir: the exported folder for the onnxruntime backend (`imtalker export-onnx`).
        compile: `torch.compile` the renderer's per-frame work and the generator's velocity step (torch backend).
    """

    def __init__(self, renderer: IMTRenderer, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 face_detector_factory: Callable[[], Any] | None = None, *, backend: str = "torch",
                 onnx_dir: str | os.PathLike | None = None, compile: bool = False,
                 generator: MotionGenerator | None = None, audio_encoder: AudioEncoder | None = None):
        from ..export.compiled import compile_networks
        from ..export.precision import autocast_dtype
        from ..export.runtime import check_backend, onnxruntime_networks

        self.device = torch.device(device)
        self.backend = check_backend(backend, self.device, dtype, compile)
        self.dtype = autocast_dtype(dtype, self.device)  # float32 on a CPU that would only emulate half precision
        self.renderer = renderer.to(self.device).eval()
        if generator is not None:
            self.generator = generator.to(self.device).eval()
        if audio_encoder is not None:
            self.audio_encoder = audio_encoder.to(self.device).eval()
        if backend == "onnxruntime":
            networks = onnxruntime_networks(self.renderer, generator, onnx_dir, audio_encoder=audio_encoder)
            self.renderer = networks.renderer
            if generator is not None:
                self.generator = networks.generator
            if audio_encoder is not None:
                self.audio_encoder = networks.audio_encoder
        elif compile:
            compile_networks(self.renderer, generator)
        self._face_detector_factory = face_detector_factory
        self._face_detector = None
        self._render_pools: dict[int, RenderPool] = {}
        self._render_pools_lock = threading.Lock()

    @property
    def image_size(self) -> int:
        return self.renderer.config.image_size

    def _detector(self):
        if self._face_detector is None:
            if self._face_detector_factory is None:
                from ..preprocess.face import FaceDetector

                self._face_detector_factory = FaceDetector
            self._face_detector = self._face_detector_factory()
        return self._face_detector

    def _autocast(self):
        if self.dtype in (torch.bfloat16, torch.float16):
            return torch.autocast(self.device.type, dtype=self.dtype)
        return torch.autocast(self.device.type, enabled=False)

    def prepare_source(self, image, crop: bool = True, face_index: int | None = None) -> PreparedSource:
        """Load a portrait, find and crop its face (or take the whole image), and encode it once.

        Args:
            image: path, PIL image or (H, W, 3) array.
            crop: find the face and crop a square around it like the training crops; otherwise use the centre
                square of the whole image.
            face_index: which face when there are several (0 = largest, the default).
        """
        return self.encode_crop(self.crop_source(image, crop=crop, face_index=face_index))

    def crop_source(self, image, crop: bool = True, face_index: int | None = None) -> SourceCrop:
        """The first half of `prepare_source`: load the portrait and find the square to animate (no network runs).

        Raises:
            InputError: the image cannot be read; NoFaceError when `crop` is set and no face is found.
        """
        from ..preprocess import face
        from ..io.image import load_image

        photo = load_image(image)
        if crop:
            box = face.crop_box_for(face.select_face(self._detector().detect(photo), face_index))
            return SourceCrop(photo, box, face.crop(photo, box, self.image_size))
        return SourceCrop(photo, None, center_square(photo))

    def encode_crop(self, crop: SourceCrop) -> PreparedSource:
        """The second half of `prepare_source`: run the renderer's source encoder on the square once."""
        tensor = image_to_tensor(crop.square, self.image_size).to(self.device)
        with torch.inference_mode(), self._autocast():
            state = self.renderer.encode_source(tensor)
        return PreparedSource(crop.photo, crop.box, state)

    def render_frames(self, source: PreparedSource, motion: torch.Tensor, batch_size: int = 8,
                      paste_back: bool = False) -> Iterator[np.ndarray]:
        """Frames (H, W, 3) uint8 for motion latents (N, motion_dim), rendered `batch_size` at a time."""
        for chunk in motion.split(batch_size):
            with torch.inference_mode(), self._autocast():
                frames = frames_to_uint8(self.renderer.render(source.state, chunk.to(self.device)))
            for frame in frames:
                yield self._paste(source, frame) if paste_back else frame

    def render_pool(self, workers: int) -> RenderPool:
        """This pipeline's pool of `workers` render threads (`RenderPool`), made on first use and shared by every
        caller asking for that many, so sessions sharing the pipeline share its threads."""
        with self._render_pools_lock:
            pool = self._render_pools.get(workers)
            if pool is None:
                pool = self._render_pools[workers] = RenderPool(self, workers)
                if workers > 1:  # its workers, and the sampling beside them, run on one thread each
                    for name in ("renderer", "generator", "audio_encoder"):
                        prepare_threads = getattr(getattr(self, name, None), "prepare_threads", None)
                        if prepare_threads is not None:  # onnxruntime networks
                            prepare_threads(1)
            return pool

    def _paste(self, source: PreparedSource, frame: np.ndarray) -> np.ndarray:
        if source.crop_box is not None:
            from ..preprocess.face import paste_back

            return paste_back(source.photo, frame, source.crop_box)
        from PIL import Image  # no face crop: the frame replaces the photo's centre square

        photo = source.photo.copy()
        h, w = photo.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        photo[top:top + side, left:left + side] = np.asarray(
            Image.fromarray(frame).resize((side, side), Image.Resampling.BICUBIC))
        return photo

    @staticmethod
    def _write(path, frames: Iterator[np.ndarray], audio: np.ndarray | None, frames_dir=None) -> Path:
        from ..io.video import VideoWriter, save_frames_png

        with VideoWriter(path, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE) as writer:
            for index, frame in enumerate(frames):
                writer.write(frame)
                if frames_dir is not None:
                    save_frames_png([frame], frames_dir, start=index)
        return Path(path)


# -- audio-driven ---------------------------------------------------------------------------------------------


class AudioDrivenPipeline(_PipelineBase):
    """Portrait + speech -> talking video (speech -> audio features -> motion latents -> frames)."""

    def __init__(self, renderer: IMTRenderer, generator: MotionGenerator, audio_encoder: AudioEncoder,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 face_detector_factory: Callable[[], Any] | None = None, **deployment):
        """`deployment`: backend, onnx_dir, compile (see `_PipelineBase`)."""
        if audio_encoder.feature_dim != generator.config.audio_dim:  # before any export or compilation
            raise InputError(f"the audio encoder gives {audio_encoder.feature_dim}-d features but the generator "
                             f"expects {generator.config.audio_dim}")
        super().__init__(renderer, device, dtype, face_detector_factory, generator=generator,
                         audio_encoder=audio_encoder, **deployment)

    @classmethod
    def from_pretrained(cls, weights: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, **kwargs) -> "AudioDrivenPipeline":
        """Load from a folder with the published files or our converted ones (see `imtalker.weights.find_weights`)."""
        from ..weights import (check_renderer_pairing, find_weights, load_audio_encoder, load_generator,
                               load_renderer, recorded_renderer_digest)

        paths = find_weights(weights, need=("renderer", "generator", "audio_encoder"))
        renderer = load_renderer(paths["renderer"])
        check_renderer_pairing(renderer, recorded_renderer_digest(paths["generator"]), str(paths["generator"]))
        return cls(renderer, load_generator(paths["generator"]),
                   load_audio_encoder(paths["audio_encoder"]), device=device, dtype=dtype, **kwargs)

    def frames(self, image, audio, *, max_seconds: float | None = 600.0, **options) -> Iterator[np.ndarray]:
        """Yield the video's frames, (H, W, 3) uint8 at 25 fps, as they are made (arguments as in `to_file`)."""
        from ..io.audio import load_audio

        waveform = load_audio(audio, sample_rate=SAMPLE_RATE, max_seconds=max_seconds)
        yield from self._frames(waveform, image, **options)

    def _frames(self, waveform: np.ndarray, image, *, cfg_scale: float = DEFAULT_CFG_SCALE, nfe: int = DEFAULT_NFE,
                seed: int | None = None,
                pose=None, gaze=None, cam=None, tracks_from=None, crop: bool = True, paste_back: bool = False,
                face_index: int | None = None, batch_size: int = 8, progress: ProgressCallback | None = None,
                source: PreparedSource | None = None) -> Iterator[np.ndarray]:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        sampling = SamplingOptions(cfg_scale, nfe, seed)  # checked before any work
        if tracks_from is not None:  # head pose, gaze and camera of a driving video; explicit tracks win
            from ..preprocess.tracks import tracks_from_video

            found = tracks_from_video(tracks_from, fps=FPS, max_seconds=len(waveform) / SAMPLE_RATE + 1,
                                      detector=self._detector())
            pose = found["pose"] if pose is None else pose
            gaze = found["gaze"] if gaze is None else gaze
            cam = found["cam"] if cam is None else cam
        config = self.generator.config
        num_frames = math.ceil(len(waveform) * FPS / SAMPLE_RATE)
        tracks = {"pose": load_track(pose, config.pose_dim, "pose", num_frames),
                  "gaze": load_track(gaze, config.gaze_dim, "gaze", num_frames),
                  "cam": load_track(cam, config.cam_dim, "cam", num_frames)}
        source = source or self.prepare_source(image, crop=crop, face_index=face_index)
        wave = torch.from_numpy(waveform).to(self.device)
        sampler = ChunkSampler(self.generator, source.state.motion, sampling)
        done = 0
        features = Rechunker(iter_audio_features(self.audio_encoder, wave, num_frames), config.clip_frames)
        for piece in features:
            window = slice(done, done + piece.shape[1])
            conditions = {name: self._track_slice(track, window) for name, track in tracks.items()}
            motion = sampler.step(piece, **conditions)[0]  # (n, motion_dim)
            for frame in self.render_frames(source, motion, batch_size, paste_back):
                done += 1
                if progress is not None:
                    progress(done, num_frames)
                yield frame

    def _track_slice(self, track: np.ndarray | None, window: slice) -> torch.Tensor | None:
        """Frames of a track for this window: cut, or zero-padded past its end (docs/architecture.md §4.3)."""
        if track is None:
            return None
        n = window.stop - window.start
        piece = np.zeros((n, track.shape[1]), np.float32)
        available = track[window.start:window.stop]
        piece[:len(available)] = available
        return torch.from_numpy(piece)[None].to(self.device)

    def to_file(self, path, image, audio, *, frames_dir=None, max_seconds: float | None = 600.0,
                **options) -> Path:
        """Write the talking video: H.264 + AAC mp4 at 25 fps with the speech as its audio track.

        Args:
            path: output .mp4; written to a temporary file and moved into place at the end.
            image: portrait (path, PIL image or array), any size.
            audio: speech (path to wav/flac/mp3/ogg/m4a/..., or (waveform, sample_rate)), any rate, mono or stereo.
            frames_dir: also save every frame as PNG in this folder.
            max_seconds: refuse longer audio (None: no limit).
            **options: cfg_scale (3.0), nfe (10), seed (see `imtalker.sampling.SamplingOptions`), pose / gaze / cam ((T, 3) / (T, 2) / (T, 3) arrays,
                .npy/.csv/.npz files or descriptions such as "yaw=20deg", in the published conventions:
                docs/conditions.md), tracks_from (a video whose head pose, gaze and camera motion to use), crop (True), paste_back (False: the face crop; True: the full photo),
                face_index, batch_size (8), progress (callback(done, total)).
        """
        from ..io.audio import load_audio

        waveform = load_audio(audio, sample_rate=SAMPLE_RATE, max_seconds=max_seconds)
        return self._write(path, self._frames(waveform, image, **options), waveform, frames_dir)


# -- video-driven ---------------------------------------------------------------------------------------------


class VideoDrivenPipeline(_PipelineBase):
    """Portrait + driving video -> the portrait reenacting the video's head and face motion."""

    @classmethod
    def from_pretrained(cls, weights: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, **kwargs) -> "VideoDrivenPipeline":
        from ..weights import find_weights, load_renderer

        paths = find_weights(weights, need=("renderer",))
        return cls(load_renderer(paths["renderer"]), device=device, dtype=dtype, **kwargs)

    def frames(self, image, driving_video, *, relative: bool = True, crop: bool = True, crop_driving: bool = True,
               paste_back: bool = False, face_index: int | None = None, batch_size: int = 8,
               max_seconds: float | None = 600.0, progress: ProgressCallback | None = None,
               source: PreparedSource | None = None) -> Iterator[np.ndarray]:
        """Yield the reenacted frames, (H, W, 3) uint8 at 25 fps.

        Args:
            relative: apply each driving latent as an offset from the driving video's first frame to the source's
                own latent (keeps the source's head pose and expression at rest); False uses the driving latents
                as they are.
            crop_driving: find and crop the face in every driving frame (boxes smoothed over time); False when the
                driving video is already a face crop.
        """
        from ..io.video import probe_video, read_frames

        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        info = probe_video(driving_video)
        total = max(1, math.ceil(info.duration * FPS)) if info.duration else 0
        source = source or self.prepare_source(image, crop=crop, face_index=face_index)
        crops = self._driving_crops(read_frames(driving_video, fps=FPS, max_seconds=max_seconds), crop_driving)
        anchor = None
        done = 0
        for batch in _batched(crops, batch_size):
            tensor = torch.cat([image_to_tensor(frame, self.image_size) for frame in batch]).to(self.device)
            with torch.inference_mode(), self._autocast():
                motion = self.renderer.encode_motion(tensor).float()
            if relative:
                anchor = motion[:1] if anchor is None else anchor
                motion = source.state.motion.float() + (motion - anchor)
            for frame in self.render_frames(source, motion, batch_size, paste_back):
                done += 1
                if progress is not None:
                    progress(done, max(total, done))
                yield frame

    def _driving_crops(self, frames: Iterator[np.ndarray], crop: bool) -> Iterator[np.ndarray]:
        if not crop:
            yield from (center_square(frame) for frame in frames)
            return
        from ..preprocess import face

        smoother = face.BoxSmoother()
        detector = self._detector()
        detector.reset_tracking()  # a new video: nothing carries over from the last one
        box = None
        for index, frame in enumerate(frames):
            faces = detector.track(frame)
            if faces:
                box = smoother.update(face.crop_box_for(face.select_face(faces)))
            elif box is None:
                raise NoFaceError(f"no face found in the driving video's frame {index}")
            yield face.crop(frame, box, self.image_size)  # a missed detection keeps the last box

    def to_file(self, path, image, driving_video, *, frames_dir=None, **options) -> Path:
        """Write the reenactment as H.264 mp4, with the driving video's audio track when it has one."""
        from ..io.audio import load_audio
        from ..io.video import probe_video

        audio = None
        if probe_video(driving_video).has_audio:
            audio = load_audio(driving_video, sample_rate=SAMPLE_RATE, max_seconds=options.get("max_seconds", 600.0))
        return self._write(path, self.frames(image, driving_video, **options), audio, frames_dir)


def _batched(items: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
