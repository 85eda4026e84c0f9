"""Video input/output: probing and reading videos at a fixed frame rate, writing H.264 + AAC files and saving
PNG frames (still images are read by `imtalker.io.image`).

Reading resamples by presentation time: output frame k shows the source frame on screen at time k / fps
(the latest one whose timestamp is <= k / fps, with the first frame at time 0), so 24/30/60 fps and
variable-frame-rate inputs all come out at a steady 25 fps without drift. The rotation a phone stores in
the stream's display matrix is applied, as the ffmpeg tool does.

Writing streams frames into libx264 as they arrive and keeps nothing but the encoder's own buffers; the
audio track is encoded alongside, cut or padded with silence to exactly num_frames / fps seconds. The file
is written under a temporary name in the destination folder and renamed into place only when complete, so
a failure never leaves a partial or stale-looking output behind.

Every problem with the input is reported as an `InputError` with a one-line message.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Union

import av
import numpy as np
from PIL import Image

from .audio import to_mono_float32
from .media import check_file, check_rate, decode_packets, describe_error, is_number, open_container
from ..constants import FPS, SAMPLE_RATE
from ..errors import InputError

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

CONTAINER_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}  # what VideoWriter writes
AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says about a video's first video stream.

    Attributes:
        width: frame width in pixels, as displayed (after the rotation stored in the file; probing decodes
            the first frame to read it).
        height: frame height in pixels, as displayed.
        fps: the stream's average frame rate (frames per second); an estimate for variable-rate video.
        num_frames: number of frames in the stream: exact where the header counts them (MP4/MOV),
            otherwise estimated as round(duration * fps).
        duration: length of the video stream in seconds (0.0 when the header does not say).
        has_audio: whether the file also has an audio stream.
    """

    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    has_audio: bool


def probe_video(path: PathLike) -> VideoInfo:
    """Reads a video file's header without decoding it.

    Args:
        path: the video file.

    Returns:
        A `VideoInfo` for the first video stream (cover art in audio files does not count).

    Raises:
        InputError: the file is missing, a directory, unreadable or corrupt, or has no video stream.
    """
    path = Path(path)
    check_file(path, "video file")
    container = open_container(path, "video file")
    try:
        stream = _video_stream(container, path)
        return _info(container, stream)
    finally:
        container.close()


def read_frames(path: PathLike, fps: float = FPS, max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Decodes a video as RGB frames at a fixed frame rate, one frame at a time.

    Output frame k is the source frame on screen at time k / fps: the latest one whose presentation time is
    <= k / fps, measured from the first frame. Source frames are repeated or skipped as needed, and the
    result has ceil(duration * fps) frames, where the duration runs to the end of the last source frame.

    The file is checked (exists, opens, has a video stream, header length within `max_seconds`) when this
    function is called; decoding happens as the returned iterator is consumed, so errors found while decoding
    (corrupt data, no frames, longer than `max_seconds`) are raised from the iteration.

    Args:
        path: the video file.
        fps: frames per second of the output.
        max_seconds: when given, videos longer than this many seconds are refused.

    Returns:
        An iterator of uint8 arrays of shape (H, W, 3), RGB, each a separate array.

    Raises:
        InputError: the file is missing, corrupt or has no video stream or no frames; the video is longer
            than `max_seconds`; `fps` is not a positive number.
    """
    path = Path(path)
    if not is_number(fps) or not 0 < fps <= 1000:
        raise InputError(f"fps must be a positive number of frames per second, got {fps!r}")
    if max_seconds is not None and not (is_number(max_seconds) and max_seconds > 0):
        raise InputError(f"max_seconds must be a positive number of seconds or None, got {max_seconds!r}")
    info = probe_video(path)
    # the header is only an estimate: refuse early only when it is clearly over the limit
    if max_seconds is not None and info.duration > max_seconds * 1.01 + 0.1:
        raise InputError(f"video file '{path}' is {info.duration:.2f} s long, longer than the limit of "
                         f"{max_seconds:g} s")
    return _iter_frames(path, Fraction(fps).limit_denominator(1_000_000), max_seconds)


def _iter_frames(path: Path, fps: Fraction, max_seconds: float | None) -> Iterator[np.ndarray]:
    container = open_container(path, "video file")
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        default_step = Fraction(1, 1) / Fraction(rate) if rate else Fraction(1, 25)
        limit = None if max_seconds is None else Fraction(max_seconds).limit_denominator(1_000_000)
        origin = None  # time of the first frame
        held = None  # [time, av frame, rgb array or None, step to the next frame]
        emitted = 0

        def emit_until(time: Fraction) -> Iterator[np.ndarray]:
            """Yields the held frame for every output time before `time`."""
            nonlocal emitted
            while emitted / fps < time:
                if limit is not None and (emitted + 1) / fps > limit:
                    raise InputError(f"video file '{path}' is longer than the limit of {max_seconds:g} s")
                if held[2] is None:
                    held[2] = _frame_to_rgb(held[1])
                    yield held[2]
                else:
                    yield held[2].copy()
                emitted += 1

        for frame in decode_packets(container, stream, path, "video"):
            if frame.pts is not None and frame.time_base is not None:
                time = frame.pts * frame.time_base
            elif held is not None:
                time = origin + held[0] + held[3]
            else:
                time = Fraction(0)
            if origin is None:
                origin = time
            time -= origin
            if held is not None:
                if time <= held[0]:  # out-of-order or duplicate timestamp: the later frame replaces it
                    held = [held[0], frame, None, held[3]]
                    continue
                held[3] = time - held[0]
                yield from emit_until(time)
            step = _frame_step(frame) or (held[3] if held is not None else default_step)
            held = [time, frame, None, step]
        if held is None:
            raise InputError(f"video file '{path}' has no video frames")
        yield from emit_until(held[0] + held[3])
        if emitted == 0:  # a single frame shorter than one output frame still gives one frame
            yield from emit_until(Fraction(1) / fps)
    finally:
        container.close()


def _frame_step(frame: Any) -> Fraction | None:
    duration = getattr(frame, "duration", None)
    if duration and frame.time_base is not None:
        return duration * frame.time_base
    return None


def _frame_to_rgb(frame: Any) -> np.ndarray:
    image = frame.to_ndarray(format="rgb24")  # (H, W, 3)
    turns = _quarter_turns(getattr(frame, "rotation", 0))
    if turns:
        image = np.ascontiguousarray(np.rot90(image, turns))  # the display matrix turns counter-clockwise
    return image


def _quarter_turns(rotation: Any) -> int:
    if not rotation:
        return 0
    return round(float(rotation) / 90.0) % 4


def _video_stream(container: Any, path: Path) -> Any:
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise InputError(f"video file '{path}' has no video stream")
    stream = streams[0]
    if not stream.codec_context or stream.codec_context.width <= 0 or stream.codec_context.height <= 0:
        raise InputError(f"video file '{path}' has a video stream with no valid frame size")
    return stream


def _first_frame_rotation(container: Any, stream: Any) -> int:
    """Quarter turns stored in the display matrix, read from the first decoded frame (PyAV does not expose
    the stream's side data); 0 when the first frame cannot be decoded."""
    try:
        for frame in container.decode(stream):
            return _quarter_turns(getattr(frame, "rotation", 0))
    except (av.FFmpegError, OSError, ValueError):
        pass
    return 0


def _info(container: Any, stream: Any) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None and container.duration > 0:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    num_frames = stream.frames if stream.frames > 0 else round(duration * fps)
    width, height = stream.codec_context.width, stream.codec_context.height
    if _first_frame_rotation(container, stream) % 2:
        width, height = height, width
    return VideoInfo(width=width, height=height, fps=fps, num_frames=num_frames, duration=duration,
                     has_audio=bool(container.streams.audio))


class _MediaEncoder:
    """H.264 (yuv420p) video with an optional AAC audio track, encoded frame by frame into a PyAV container.

    The shared half of `VideoWriter` (a file, moved into place at the end) and `FragmentedMp4Writer` (a byte
    stream a browser can play as it arrives): frame conversion, the audio kept in step with the frames, flushing.
    Subclasses say where the container goes (`_open_container`) and what finishing and aborting mean.
    """

    def __init__(self, label: str, fps: float, audio: np.ndarray | None, sample_rate: int, crf: int, preset: str):
        self._label = label  # how errors name the output, e.g. "output video 'out.mp4'"
        if not is_number(fps) or not 0 < fps <= 1000:
            raise InputError(f"fps must be a positive number of frames per second, got {fps!r}")
        if not is_number(crf) or not 0 <= crf <= 51:
            raise InputError(f"crf must be between 0 and 51, got {crf!r}")
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.crf = int(crf)
        self.preset = preset
        self.sample_rate = check_rate(sample_rate, "sample_rate")
        self._audio = None
        if audio is not None:
            if self.sample_rate not in AAC_SAMPLE_RATES:
                raise InputError(f"sample_rate {self.sample_rate} Hz cannot be stored as AAC; use one of "
                                 f"{', '.join(map(str, AAC_SAMPLE_RATES))}")
            self._audio = to_mono_float32(audio, "audio for the video")
            if not np.isfinite(self._audio).all():
                raise InputError("audio for the video contains NaN or infinite samples")
            np.clip(self._audio, -1.0, 1.0, out=self._audio)
        self._container = None
        self._video = None
        self._audio_stream = None
        self._size = None  # (height, width) of the frames written
        self._audio_done = 0  # audio samples encoded so far
        self.num_frames = 0
        self._closed = False

    # -- what subclasses decide ----------------------------------------------------------------------------------

    def _open_container(self) -> Any:
        raise NotImplementedError

    def _codec_options(self) -> dict[str, str]:
        return {"crf": str(self.crf), "preset": self.preset}

    def _complete(self) -> None:
        """Called after the container is closed successfully."""

    def _discard(self) -> None:
        """Called when writing is aborted, after the container is closed."""

    # -- writing -------------------------------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def write(self, frames: Any) -> None:
        """Encodes one frame or a batch of frames.

        Args:
            frames: one frame (H, W, 3) or a batch (N, H, W, 3), uint8 RGB or float in [0, 1]; or a torch
                tensor (N, 3, H, W) or (3, H, W), float in [0, 1] or uint8. All frames must have the same size.

        Raises:
            InputError: the frames have a wrong shape, type or size, or the writer is closed.
        """
        if self._closed:
            raise InputError(f"{self._label} is already closed")
        batch = to_uint8_frames(frames, "video frames")
        if batch.shape[0] == 0:
            return
        if self._container is None:
            self.open_container(batch.shape[1], batch.shape[2])
        elif batch.shape[1:3] != self._size:
            raise InputError(f"video frames are {batch.shape[2]}x{batch.shape[1]}, but the video is "
                             f"{self._size[1]}x{self._size[0]}")
        batch = _even_size(batch)
        try:
            for image in batch:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = self.num_frames
                frame.time_base = 1 / self.fps
                for packet in self._video.encode(frame):
                    self._container.mux(packet)
                self.num_frames += 1
            if self._audio_stream is not None:
                self._encode_audio(self._audio_samples(self.num_frames))
        except (av.FFmpegError, OSError) as error:
            raise InputError(f"{self._label} cannot be written ({describe_error(error)})") from None

    def close(self) -> None:
        """Finishes the video (flushes the encoders, completes the audio).

        Raises:
            InputError: no frame was written, or the output cannot be written.
        """
        if self._closed:
            return
        if self._container is None:
            self.abort()
            raise InputError(f"{self._label}: no frames were written")
        try:
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio_stream is not None:
                self._encode_audio(self._audio_samples(self.num_frames))
                for packet in self._audio_stream.encode(None):
                    self._container.mux(packet)
            self._container.close()
            self._container = None
            self._complete()
        except (av.FFmpegError, OSError) as error:
            self.abort()
            raise InputError(f"{self._label} cannot be written ({describe_error(error)})") from None
        except BaseException:
            self.abort()
            raise
        self._closed = True
        logger.info("wrote %s: %d frames at %s fps", self._label, self.num_frames, self.fps)

    def abort(self) -> None:
        """Stops writing and discards the output. Safe to call more than once."""
        self._closed = True
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            except (av.FFmpegError, OSError, ValueError) as error:
                logger.debug("closing aborted %s: %s", self._label, error)
        self._discard()

    def open_container(self, height: int, width: int) -> None:
        self._size = (height, width)
        try:
            self._container = self._open_container()
            video = self._container.add_stream("libx264", rate=self.fps, options=self._codec_options())
            video.width, video.height = width + width % 2, height + height % 2
            video.pix_fmt = "yuv420p"
            video.codec_context.time_base = 1 / self.fps
            self._video = video
            if self._audio is not None:
                self._audio_stream = self._container.add_stream("aac", rate=self.sample_rate, layout="mono")
        except (av.FFmpegError, OSError) as error:
            self.abort()
            raise InputError(f"{self._label} cannot be written ({describe_error(error)})") from None

    def _audio_samples(self, num_frames: int) -> int:
        """Audio samples that go with the first `num_frames` frames."""
        return round(Fraction(num_frames) * self.sample_rate / self.fps)

    def _encode_audio(self, until: int) -> None:
        """Encodes the audio up to sample `until`, padding with silence past the end of the waveform."""
        if until <= self._audio_done:
            return
        chunk = self._audio[self._audio_done:until]
        if chunk.size < until - self._audio_done:
            chunk = np.concatenate([chunk, np.zeros(until - self._audio_done - chunk.size, np.float32)])
        frame = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._audio_done
        frame.time_base = Fraction(1, self.sample_rate)
        for packet in self._audio_stream.encode(frame):
            self._container.mux(packet)
        self._audio_done = until


class VideoWriter(_MediaEncoder):
    """Writes an H.264 video (yuv420p) with an optional AAC audio track, frame by frame.

    Frames are encoded as they are written. On `close()` the audio, cut or padded with silence to exactly
    num_frames / fps seconds, is finished and the file is moved into place; until then it lives under a
    temporary name in the destination folder. An exception inside the `with` block, or `abort()`, removes
    the temporary file and leaves no output.

    H.264 in yuv420p needs an even width and height: a frame with an odd side is padded by one pixel,
    repeating its last row / column, so no pixel is lost (the file is then one pixel wider / taller).

    Example:
        with VideoWriter("out.mp4", audio=waveform) as writer:
            for batch in batches:
                writer.write(batch)

    Args:
        path: the output file; it must end in .mp4, .mov or .mkv. Missing parent folders are created.
        fps: frames per second.
        audio: mono waveform (T,) float in [-1, 1] at `sample_rate` (2-D arrays are mixed down), or None for
            a silent video with no audio track.
        sample_rate: the rate of `audio` in Hz; it must be one AAC supports (8000, 16000, 44100, 48000, ...).
        crf: libx264 constant rate factor, 0 (lossless) to 51; 18 is visually lossless.
        preset: libx264 speed preset (ultrafast ... veryslow).

    Raises:
        InputError: bad path or suffix, destination folder not writable, bad audio, fps or crf.
    """

    def __init__(self, path: PathLike, fps: float = FPS, audio: np.ndarray | None = None,
                 sample_rate: int = SAMPLE_RATE, crf: int = 18, *, preset: str = "medium"):
        self.path = Path(path)
        self._format = CONTAINER_FORMATS.get(self.path.suffix.lower())
        if self._format is None:
            raise InputError(f"output video '{path}' must end in one of {', '.join(CONTAINER_FORMATS)}")
        super().__init__(f"output video '{self.path}'", fps, audio, sample_rate, crf, preset)
        self._prepare_folder()
        self._temp = self.path.with_name(f".{self.path.stem}.{uuid.uuid4().hex[:12]}.tmp{self.path.suffix}")

    def _prepare_folder(self) -> None:
        folder = self.path.parent
        if self.path.is_dir():
            raise InputError(f"output video '{self.path}' is a directory")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"output folder '{folder}' cannot be created ({describe_error(error)})") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"output folder '{folder}' is not writable")

    def _open_container(self) -> Any:
        options = {"movflags": "+faststart"} if self._format in ("mp4", "mov") else {}
        return av.open(str(self._temp), mode="w", format=self._format, options=options)

    def _complete(self) -> None:
        os.replace(self._temp, self.path)

    def _discard(self) -> None:
        try:
            self._temp.unlink()
        except FileNotFoundError:
            pass


class FragmentedMp4Writer(_MediaEncoder):
    """Writes H.264 + AAC as fragmented MP4 into a binary stream, playable while it is still being written.

    The header (a `moov` without samples) comes first, with the first fragment, and every `keyframe_interval`
    frames a self-contained fragment (`moof` + `mdat`) follows, so a browser's <video> element, or any player
    reading a pipe, can start as soon as the first fragment arrives. x264 runs with `tune=zerolatency` so no frames are held back for look-ahead.

    Args:
        sink: a writable binary object with `write(bytes)` (a file, a pipe, a queue adapter); it is flushed after
            each write when it has `flush()` and is never closed here.
        fps, audio, sample_rate, crf, preset: as for `VideoWriter`.
        keyframe_interval: frames per fragment (25: a fragment per second at 25 fps).

    Raises:
        InputError: bad audio, fps or crf; later, when the sink cannot be written.
    """

    # delay_moov, not empty_moov: the header waits for the first fragment, when the AAC encoder's priming delay
    # is known, so it carries the edit list that skips it (an empty moov cannot, and every frame after the first
    # came out 64 ms late)
    MOVFLAGS = "frag_keyframe+delay_moov+default_base_moof"

    def __init__(self, sink: Any, fps: float = FPS, audio: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE,
                 crf: int = 23, *, preset: str = "veryfast", keyframe_interval: int = 25):
        if not isinstance(keyframe_interval, int) or keyframe_interval < 1:
            raise InputError(f"keyframe_interval must be a positive integer, got {keyframe_interval!r}")
        super().__init__("video stream", fps, audio, sample_rate, crf, preset)
        self._sink = _UnseekableSink(sink)
        self.keyframe_interval = keyframe_interval

    def _open_container(self) -> Any:
        return av.open(self._sink, mode="w", format="mp4", options={"movflags": self.MOVFLAGS})

    def _codec_options(self) -> dict[str, str]:
        interval = str(self.keyframe_interval)
        return {**super()._codec_options(), "tune": "zerolatency", "g": interval, "keyint_min": interval,
                "sc_threshold": "0"}


class _UnseekableSink:
    """Presents a write-only object to PyAV as an unseekable stream (the fragmented layout never seeks back)."""

    def __init__(self, target: Any):
        self._target = target

    def write(self, data) -> int:
        self._target.write(bytes(data))
        flush = getattr(self._target, "flush", None)
        if flush is not None:
            flush()
        return len(data)

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def _even_size(batch: np.ndarray) -> np.ndarray:
    """Pads (N, H, W, 3) by one row / column, repeating the edge, where H / W is odd."""
    pad_h, pad_w = batch.shape[1] % 2, batch.shape[2] % 2
    if pad_h or pad_w:
        batch = np.pad(batch, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return batch


def to_uint8_frames(frames: Any, name: str = "frames") -> np.ndarray:
    """Converts frames to a uint8 RGB batch.

    Args:
        frames: one frame (H, W, 3) or a batch (N, H, W, 3) as a NumPy array, uint8 or float in [0, 1]; or a
            torch tensor (N, 3, H, W) or (3, H, W), float in [0, 1] or uint8.
        name: how the input is called in error messages.

    Returns:
        uint8 array (N, H, W, 3), C-contiguous.

    Raises:
        InputError: wrong shape or type, or float values outside [0, 1] or not finite.
    """
    if hasattr(frames, "detach") and hasattr(frames, "permute"):  # torch tensor, without importing torch
        tensor = frames.detach()
        if tensor.ndim == 3:
            tensor = tensor.unsqueeze(0)
        if tensor.ndim != 4 or tensor.shape[1] != 3:
            raise InputError(f"{name} tensor must have shape (N, 3, H, W) or (3, H, W), got {tuple(frames.shape)}")
        if tensor.is_floating_point():
            tensor = tensor.float()
        frames = tensor.permute(0, 2, 3, 1).cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise InputError(f"{name} must be a NumPy array or a torch tensor, got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"{name} must have shape (H, W, 3) or (N, H, W, 3), got {frames.shape}")
    if frames.dtype == np.uint8:
        return np.ascontiguousarray(frames)
    if not np.issubdtype(frames.dtype, np.floating):
        raise InputError(f"{name} must be uint8 or float in [0, 1], got {frames.dtype}")
    if frames.size and not np.isfinite(frames).all():
        raise InputError(f"{name} contain NaN or infinite values")
    if frames.size and (frames.min() < -1e-3 or frames.max() > 1 + 1e-3):
        raise InputError(f"{name} are float but not in [0, 1] (range {frames.min():.3g} to {frames.max():.3g})")
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_frames_png(frames: Any, folder: PathLike, start: int = 0) -> list[Path]:
    """Writes frames as numbered PNG files `frame_000000.png`, `frame_000001.png`, ... in `folder`.

    Args:
        frames: a batch as `VideoWriter.write` takes it, or an iterable of single frames / batches.
        folder: the destination folder, created when missing.
        start: the number of the first file.

    Returns:
        The paths written, in order.

    Raises:
        InputError: bad frames, or the folder cannot be created or written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"frame folder '{folder}' cannot be created ({describe_error(error)})") from None
    if isinstance(frames, np.ndarray) or hasattr(frames, "detach"):
        frames = [frames]
    paths = []
    index = start
    for item in frames:
        for image in to_uint8_frames(item, "frames"):
            target = folder / f"frame_{index:06d}.png"
            try:
                Image.fromarray(image).save(target)
            except OSError as error:
                raise InputError(f"frame '{target}' cannot be written ({describe_error(error)})") from None
            paths.append(target)
            index += 1
    return paths
