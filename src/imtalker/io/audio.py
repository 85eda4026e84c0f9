"""Audio loading: any common file (or a video's sound track) or an in-memory waveform -> mono float32 at 16 kHz.

Files are decoded with PyAV and resampled with `av.AudioResampler` (libswresample). The resampler keeps the
source channels and they are averaged afterwards: libswresample's own stereo -> mono downmix sums the channels
at -3 dB each (gain 0.707 + 0.707), which lifts correlated stereo above full scale, whereas the mean keeps a
signal in [-1, 1] and matches what librosa and torchaudio do.

Every problem with the input is reported as an `InputError` with a one-line message; PyAV's own exceptions
never leak out.
"""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import av
import numpy as np

from ..constants import FPS, SAMPLE_RATE
from ..errors import InputError
from .media import (check_file, check_rate, decode_packets, describe_error,
                    is_number, open_container)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

AudioSource = Union[str, "os.PathLike[str]", tuple, np.ndarray, "torch.Tensor"]

MAX_CHANNELS = 32  # a 2-D array with both axes longer than this is not a waveform
CHUNK_SAMPLES = 1 << 16  # in-memory waveforms are fed to the resampler in chunks of this many samples
MAX_ARRAY_PEAK = 2.0  # float waveforms peaking above this are unscaled PCM, not slightly hot audio
MAX_TAIL_SECONDS = 0.1  # decoded audio beyond the header's duration is dropped when at most this long (padding)


def load_audio(source: AudioSource, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Loads audio as a mono float32 waveform in [-1, 1] at `sample_rate`.

    Args:
        source: one of
            - a path (str or PathLike) to an audio file (wav, flac, mp3, ogg/vorbis/opus, m4a/aac, ...) or to a
              video file whose audio track is used (mp4, mov, webm, mkv, ...);
            - a tuple `(waveform, rate)`: the waveform (NumPy array or torch tensor, see below) at `rate` Hz,
              resampled to `sample_rate` when the rates differ;
            - a waveform already at `sample_rate`: a 1-D array `(T,)` or a 2-D array, channels-first `(C, T)` or
              channels-last `(T, C)` (the shorter axis is taken as the channel axis; channels-first on a tie).
              Float samples are taken as in [-1, 1] (values up to 2 in magnitude are clipped, larger ones are
              refused as unscaled PCM); int16 / int32 / uint8 PCM is scaled to [-1, 1].
        sample_rate: the sample rate of the result, in Hz.
        max_seconds: when given, audio longer than this many seconds is refused (before decoding all of it).

    Returns:
        The waveform, float32 of shape (T,), T > 0, values in [-1, 1]. Silence (all zeros) is valid.

    Raises:
        InputError: the file is missing, a directory, unreadable or corrupt, has no audio stream or no samples;
            the audio is longer than `max_seconds`; the samples hold NaN or infinity; a sample rate is invalid.
    """
    sample_rate = check_rate(sample_rate, "sample_rate")
    if max_seconds is not None and not (is_number(max_seconds) and max_seconds > 0):
        raise InputError(f"max_seconds must be a positive number of seconds or None, got {max_seconds!r}")
    if isinstance(source, (str, os.PathLike)):
        waveform = _load_file(Path(source), sample_rate, max_seconds)
        name = f"audio file '{source}'"
    else:
        if isinstance(source, tuple):
            if len(source) != 2:
                raise InputError(f"audio tuple must be (waveform, sample_rate), got a tuple of {len(source)} items")
            array, rate = source
            rate = check_rate(rate, "audio sample rate")
        else:
            array, rate = source, sample_rate
        waveform = to_mono_float32(array, "audio waveform")
        if waveform.size == 0:
            raise InputError("audio waveform is empty (0 samples)")
        if max_seconds is not None and waveform.size / rate > max_seconds:
            raise InputError(f"audio waveform is {waveform.size / rate:.2f} s long, longer than the limit of "
                             f"{max_seconds:g} s")
        if not np.isfinite(waveform).all():
            raise InputError("audio waveform contains NaN or infinite samples")
        peak = float(np.abs(waveform).max())
        if peak > MAX_ARRAY_PEAK:
            raise InputError(f"audio waveform peaks at {peak:g}; float samples must be in [-1, 1] "
                             "(divide int16 PCM by 32768)")
        if rate != sample_rate:
            # fix the length to the exact ratio, so lengths do not depend on the resampler's rounding
            length = round(waveform.size * sample_rate / rate)
            waveform = _resample(waveform, rate, sample_rate)[:length]
            waveform = np.pad(waveform, (0, length - waveform.size))
        name = "audio waveform"
    if waveform.size == 0:
        raise InputError(f"{name} has no audio samples (0 samples)")
    if max_seconds is not None and waveform.size > max_seconds * sample_rate:
        raise InputError(f"{name} is {waveform.size / sample_rate:.2f} s long, longer than the limit of "
                         f"{max_seconds:g} s")
    if not np.isfinite(waveform).all():
        raise InputError(f"{name} contains NaN or infinite samples")
    peak = float(np.abs(waveform).max())
    if peak > 1.1:  # lossy decoders overshoot a little on loud material; more than that is worth a note
        logger.warning("%s peaks at %.3f, above full scale; clipping to [-1, 1]", name, peak)
    return np.clip(waveform, -1.0, 1.0, out=waveform)


def audio_duration(source: AudioSource, sample_rate: int = SAMPLE_RATE) -> float:
    """Returns the length of some audio in seconds, cheaply where possible.

    For a file this reads the container header (and decodes the audio only when the header has no duration);
    the value can differ from the decoded length by a few milliseconds (codec priming, padding).

    Args:
        source: anything `load_audio` accepts.
        sample_rate: the rate of a bare waveform (ignored for files and `(waveform, rate)` tuples).

    Returns:
        The duration in seconds.

    Raises:
        InputError: as `load_audio`.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        check_file(path, "audio file")
        container = open_container(path, "audio file")
        try:
            stream = _audio_stream(container, path)
            duration = _stream_duration(stream, container)
        finally:
            container.close()
        if duration is not None:
            return duration
        return load_audio(path, sample_rate).size / sample_rate
    if isinstance(source, tuple) and len(source) == 2:
        rate = check_rate(source[1], "audio sample rate")
        return to_mono_float32(source[0], "audio waveform").size / rate
    sample_rate = check_rate(sample_rate, "sample_rate")
    return to_mono_float32(source, "audio waveform").size / sample_rate


def num_video_frames(num_samples: int, sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> int:
    """Returns how many video frames cover `num_samples` audio samples: ceil(num_samples * fps / sample_rate).

    Computed with exact fractions, so 16000 samples at 16 kHz and 25 fps give exactly 25 frames.
    """
    return math.ceil(Fraction(num_samples) * Fraction(fps) / Fraction(sample_rate))


def to_mono_float32(array: Any, name: str = "audio waveform") -> np.ndarray:
    """Converts a 1-D or 2-D waveform (NumPy array or torch tensor) to mono float32, without resampling.

    Args:
        array: samples of shape (T,), (C, T) or (T, C); the shorter axis of a 2-D array is the channel axis.
            Floats are taken as they are; int16, int32 and uint8 PCM are scaled to [-1, 1].
        name: how the input is called in error messages.

    Returns:
        A new float32 array of shape (T,), the mean of the channels. Not clipped and not checked for NaN.

    Raises:
        InputError: the input is not a 1-D/2-D array of a supported sample type.
    """
    if hasattr(array, "detach") and hasattr(array, "cpu"):  # torch tensor, without importing torch
        array = array.detach().cpu()
        if array.is_floating_point():
            array = array.float()
        array = array.numpy()
    if not isinstance(array, np.ndarray):
        if isinstance(array, (list, tuple)):
            array = np.asarray(array, dtype=np.float32)
        else:
            raise InputError(f"{name} must be a path, a (waveform, sample_rate) tuple or an array, "
                             f"got {type(array).__name__}")
    if array.ndim in (1, 2) and array.size == 0:
        return np.zeros(0, dtype=np.float32)
    if array.ndim == 2:
        channel_axis = 0 if array.shape[0] <= array.shape[1] else 1
        if array.shape[channel_axis] > MAX_CHANNELS:
            raise InputError(f"{name} has shape {array.shape}: not a waveform (at most {MAX_CHANNELS} channels)")
    elif array.ndim != 1:
        raise InputError(f"{name} must be 1-D (samples) or 2-D (channels and samples), got shape {array.shape}")
    kind = array.dtype
    if kind == np.int16:
        array = array.astype(np.float32) / 32768.0
    elif kind == np.int32:
        array = (array.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif kind == np.uint8:
        array = (array.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(kind, np.floating):
        array = array.astype(np.float32, copy=False)
    else:
        raise InputError(f"{name} has sample type {kind}; expected float in [-1, 1] or int16/int32/uint8 PCM")
    if array.ndim == 2:
        return np.ascontiguousarray(array.mean(axis=channel_axis, dtype=np.float32))
    return np.array(array, dtype=np.float32, order="C", copy=True)  # never a view of the caller's array


def _audio_stream(container: Any, path: Path) -> "av.audio.stream.AudioStream":
    streams = container.streams.audio
    if not streams:
        raise InputError(f"audio file '{path}' has no audio stream")
    stream = container.streams.best("audio") or streams[0]
    if not stream.codec_context or stream.codec_context.sample_rate <= 0 or stream.codec_context.channels <= 0:
        raise InputError(f"audio file '{path}' has an audio stream with no valid sample rate or channels")
    return stream


def _stream_duration(stream: Any, container: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _load_file(path: Path, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    check_file(path, "audio file")
    container = open_container(path, "audio file")
    try:
        stream = _audio_stream(container, path)
        if max_seconds is not None:
            estimate = _stream_duration(stream, container)
            # the header is only an estimate: refuse early only when it is clearly over the limit
            if estimate is not None and estimate > max_seconds * 1.01 + 0.1:
                raise InputError(f"audio file '{path}' is {estimate:.2f} s long, longer than the limit of "
                                 f"{max_seconds:g} s")
        limit = None if max_seconds is None else math.floor(max_seconds * sample_rate)
        waveform = _decode(container, stream, path, sample_rate, limit)
        # AAC in MP4 decodes its last frame's padding even though the header (edit list) says where the audio
        # ends; drop such a short tail. Only the stream's own duration is trusted, and only a tail of up to
        # MAX_TAIL_SECONDS is cut, so a wrong header cannot remove real audio.
        if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
            expected = round(stream.duration * stream.time_base * sample_rate)
            if 0 < expected < waveform.size <= expected + MAX_TAIL_SECONDS * sample_rate:
                logger.debug("audio file '%s': dropping %d samples of codec padding", path, waveform.size - expected)
                waveform = waveform[:expected]
        return waveform
    finally:
        container.close()


def _decode(container: Any, stream: Any, path: Path, sample_rate: int, limit: int | None) -> np.ndarray:
    """Decodes and resamples one audio stream; bad packets are skipped the way the ffmpeg tool skips them."""
    stream.thread_type = "AUTO"
    resampler = av.AudioResampler(format="fltp", layout=None, rate=sample_rate)  # keeps the source channels
    chunks: list[np.ndarray] = []
    total = 0

    def take(frames: list) -> None:
        nonlocal total
        for frame in frames:
            chunk = frame.to_ndarray()  # (C, n) float32, planar
            chunk = chunk.mean(axis=0, dtype=np.float32) if chunk.shape[0] > 1 else chunk[0]
            chunks.append(chunk)
            total += chunk.size
        if limit is not None and total > limit:
            raise InputError(f"audio file '{path}' is longer than the limit of {limit / sample_rate:g} s")

    try:
        for frame in decode_packets(container, stream, path, "audio"):
            take(resampler.resample(frame))
        take(resampler.resample(None))
    except InputError:
        raise
    except ValueError as error:
        raise InputError(f"audio file '{path}' is corrupt or cannot be decoded ({describe_error(error)})") from None
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks)


class StreamResampler:
    """Resamples mono float32 audio that arrives in pieces of any size, with libswresample.

    The filter keeps its state between pieces, so the output does not depend on how the input was cut: feeding a
    waveform whole or in pieces gives the same samples. Output lags the input by the filter's half length (a few
    dozen samples); `flush()` returns that tail at the end.

    Args:
        rate: the input rate in Hz.
        sample_rate: the output rate in Hz.
    """

    def __init__(self, rate: int, sample_rate: int = SAMPLE_RATE):
        self.rate = check_rate(rate, "audio sample rate")
        self.sample_rate = check_rate(sample_rate, "sample_rate")
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Resamples the next piece (n,) float32; returns the output samples that are ready (possibly none)."""
        out = []
        for start in range(0, samples.size, CHUNK_SAMPLES):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, start:start + CHUNK_SAMPLES],
                                                                    dtype=np.float32), format="flt", layout="mono")
            frame.sample_rate = self.rate
            out.extend(piece.to_ndarray()[0] for piece in self._resampler.resample(frame))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def flush(self) -> np.ndarray:
        """The samples still inside the filter; call once, after the last piece."""
        out = [piece.to_ndarray()[0] for piece in self._resampler.resample(None)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _resample(waveform: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """Resamples a mono float32 waveform from `rate` to `sample_rate` Hz with libswresample."""
    resampler = StreamResampler(rate, sample_rate)
    return np.concatenate([resampler.push(waveform), resampler.flush()])
