"""Incremental audio-driven generation: audio pushed in pieces of any size, frames yielded as soon as they exist.

    session = StreamingSession(pipe, pipe.prepare_source("face.jpg"), sample_rate=48000, seed=0)
    for piece in microphone:                      # bytes of 16-bit PCM, or float / int16 arrays, any length
        for frame in session.push(piece):
            show(frame.index, frame.timestamp, frame.image)
    for frame in session.finish():                # the tail: ceil(duration * 25) frames in all
        show(...)

Data flow per generator chunk of `clip_frames` (50) frames, as in `AudioDrivenPipeline` but without the future:

    PCM -> float -> [StreamResampler to 16 kHz] -> running normalisation
        -> features of the chunk, encoded from a window with `context_frames` of past audio (and `lookahead_frames`
           of audio after the chunk) -> ChunkSampler.step -> render_frames -> frames

Why windows: neither audio front end is causal (wav2vec2 attends over its whole input; the log-mel encoder's convs,
per-utterance normalisation and time interpolation look both ways), so features near a window's edge differ from
whole-file features. Past context makes the window's start look like the middle of a file; a little look-ahead
does the same for its end at the price of latency. docs/streaming.md gives the measured differences and costs.

Latency floor: the motion generator samples `clip_frames` (2 s) at a time (it was trained that way), so a chunk's
first frame can be made only once the audio up to its end (plus the look-ahead) has arrived: frame k is ready
(clip_frames - k % clip_frames + lookahead_frames) / 25 s after its own audio, plus compute time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..io.audio import StreamResampler
from ..io.media import check_rate
from ..constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ..errors import InputError
from ..models.audio import NORM_EPS
from ..constants import DEFAULT_CFG_SCALE, DEFAULT_NFE
from ..sampling import ChunkSampler, SamplingOptions
from ..features import encode_window
from . import AudioDrivenPipeline, PreparedSource

DEFAULT_CONTEXT_FRAMES = 50  # 2 s of past audio before each chunk's window
DEFAULT_LOOKAHEAD_FRAMES = 5  # 0.2 s of audio after it (latency it costs: 0.2 s)
SAMPLE_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}  # what bytes pushed to a session hold


@dataclass(frozen=True)
class StreamFrame:
    """One rendered frame: its index, its time in the video (index / 25 s) and the picture."""

    index: int
    timestamp: float  # seconds from the start of the audio; the audio of this frame starts here
    image: np.ndarray  # (H, W, 3) uint8


class PcmDecoder:
    """Bytes of interleaved-free mono PCM in pieces of any size (a sample may be split across pieces) -> float32.

    Args:
        sample_format: "s16le" (16-bit signed little-endian) or "f32le" (32-bit float little-endian).
    """

    def __init__(self, sample_format: str = "s16le"):
        if sample_format not in SAMPLE_FORMATS:
            raise InputError(f"sample format must be one of {', '.join(SAMPLE_FORMATS)}, got {sample_format!r}")
        self.dtype = SAMPLE_FORMATS[sample_format]
        self._partial = b""  # the first bytes of a sample whose rest is in the next piece

    def decode(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        data = self._partial + bytes(data)
        whole = len(data) - len(data) % self.dtype.itemsize
        self._partial = data[whole:]
        samples = np.frombuffer(data[:whole], dtype=self.dtype)
        return to_float_samples(samples)

    @property
    def pending_bytes(self) -> int:
        return len(self._partial)


def to_float_samples(samples: np.ndarray) -> np.ndarray:
    """(n,) int16 PCM or float samples -> float32 in [-1, 1]; refuses NaN, infinity and unscaled PCM in floats."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise InputError(f"audio pieces must be 1-D (mono samples), got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if not np.issubdtype(samples.dtype, np.floating):
        raise InputError(f"audio pieces must be int16 PCM or float samples, got {samples.dtype}")
    samples = samples.astype(np.float32)
    if samples.size and not np.isfinite(samples).all():
        raise InputError("audio holds NaN or infinite samples")
    if samples.size and np.abs(samples).max() > 2.0:  # the limit load_audio uses for in-memory waveforms
        raise InputError("float audio must be in [-1, 1]; this looks like unscaled PCM (divide int16 by 32768)")
    return np.clip(samples, -1.0, 1.0)


class StreamingSession:
    """Makes a talking video from audio that arrives over time; frames come out chunk by chunk.

    Args:
        pipeline: the audio-driven pipeline whose networks run (the session never changes it; several sessions
            may share one pipeline from different threads).
        source: the portrait from `pipeline.prepare_source`.
        sample_rate: rate of the audio that will be pushed, in Hz (resampled to 16 kHz incrementally).
        sample_format: how bytes pushed are read: "s16le" or "f32le" (arrays carry their own type).
        cfg_scale, nfe, seed: as for `AudioDrivenPipeline.to_file`; the same seed draws the same noise.
        paste_back: render into the full photo instead of the face crop.
        batch_size: frames rendered at once.
        context_frames: past audio (frames of 40 ms) encoded with each chunk; more is closer to whole-file features
            and costs encoder time.
        lookahead_frames: audio after each chunk encoded with it; more is closer to whole-file features near the
            chunk's end and delays every frame by this many frames.
        max_seconds: refuse audio beyond this length (None: no limit).

    The total frame count is ceil(duration * 25) like the offline pipeline's; frame i's timestamp is i / 25 s.
    """

    def __init__(self, pipeline: AudioDrivenPipeline, source: PreparedSource, *, sample_rate: int = SAMPLE_RATE,
                 sample_format: str = "s16le", cfg_scale: float = DEFAULT_CFG_SCALE, nfe: int = DEFAULT_NFE,
                 seed: int | None = None,
                 paste_back: bool = False, batch_size: int = 8, context_frames: int = DEFAULT_CONTEXT_FRAMES,
                 lookahead_frames: int = DEFAULT_LOOKAHEAD_FRAMES, max_seconds: float | None = None):
        for name, value, low in (("batch_size", batch_size, 1), ("context_frames", context_frames, 0),
                                 ("lookahead_frames", lookahead_frames, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
        if max_seconds is not None and not max_seconds > 0:
            raise InputError(f"max_seconds must be positive or None, got {max_seconds!r}")
        self.pipeline, self.source = pipeline, source
        self.sample_rate = check_rate(sample_rate, "sample_rate")
        self.paste_back, self.batch_size = paste_back, batch_size
        self.context_frames, self.lookahead_frames = context_frames, lookahead_frames
        self.max_seconds = max_seconds
        self.clip_frames = pipeline.generator.config.clip_frames
        self._decoder = PcmDecoder(sample_format)
        self._resampler = StreamResampler(self.sample_rate) if self.sample_rate != SAMPLE_RATE else None
        self._sampler = ChunkSampler(pipeline.generator, source.state.motion, SamplingOptions(cfg_scale, nfe, seed))
        self._audio = np.zeros(0, np.float32)  # the 16 kHz samples still needed, from absolute sample _offset
        self._offset = 0
        self._received = 0  # 16 kHz samples received in all (input samples, before resampling: _input_samples)
        self._input_samples = 0
        self._counted = 0  # samples [0, _counted) are in the running sums below (for the normalisation)
        self._sum = 0.0
        self._sum_squares = 0.0
        self._next_frame = 0  # first frame of the next chunk
        self.frames_done = 0
        self.finished = False

    # -- input --------------------------------------------------------------------------------------------------

    @property
    def seconds_received(self) -> float:
        """Length of the audio pushed so far, in seconds."""
        return self._input_samples / self.sample_rate

    def push(self, audio) -> Iterator[StreamFrame]:
        """Add the next piece of audio; returns an iterator over every frame it completes.

        The audio is taken at once; the frames are rendered as the iterator is consumed (an iterator left unread
        loses nothing: its chunks are rendered by the next `push` or `finish`).

        Args:
            audio: bytes in `sample_format`, or a 1-D int16 / float array; any length, including empty.

        Raises:
            InputError: bad samples, audio past `max_seconds`, or push after `finish`.
        """
        if self.finished:
            raise InputError("the stream is finished; start a new session")
        if isinstance(audio, (bytes, bytearray, memoryview)):
            samples = self._decoder.decode(audio)
        else:
            samples = to_float_samples(audio)
        self._input_samples += samples.size
        if self.max_seconds is not None and self.seconds_received > self.max_seconds:
            raise InputError(f"the audio is longer than the limit of {self.max_seconds:g} s")
        self._append(self._resampler.push(samples) if self._resampler is not None else samples)
        return self._advance(final=False)

    def finish(self) -> Iterator[StreamFrame]:
        """No more audio: an iterator over the remaining frames, ceil(duration * 25) in all (none without audio)."""
        if self.finished:
            return iter(())
        self.finished = True
        if self._resampler is not None:
            self._append(self._resampler.flush())
            # fix the length to the exact ratio, as load_audio does, so the frame count never depends on rounding
            length = round(self._input_samples * SAMPLE_RATE / self.sample_rate)
            if self._received > length:
                cut = self._received - length
                self._audio = self._audio[:max(0, self._audio.size - cut)]
                self._received = length
            elif self._received < length:
                self._append(np.zeros(length - self._received, np.float32))
        return self._advance(final=True)

    def _append(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        self._audio = np.concatenate([self._audio, samples])
        self._received += samples.size

    # -- chunks -------------------------------------------------------------------------------------------------

    def _advance(self, final: bool) -> Iterator[StreamFrame]:
        """Sample and render every chunk whose audio (and look-ahead) is complete; at the end, all that is left."""
        clip, total = self.clip_frames, math.ceil(self._received * FPS / SAMPLE_RATE)
        while True:
            start = self._next_frame
            if final:
                if start >= total:
                    return
                stop = min(start + clip, total)
                hi = min(total, stop + self.lookahead_frames)
            else:
                stop = start + clip
                hi = stop + self.lookahead_frames
                if self._received < hi * SAMPLES_PER_FRAME:
                    return
            lo = max(0, start - self.context_frames)
            normalized = self._normalized(until=self._received if final else hi * SAMPLES_PER_FRAME)
            features = encode_window(self.pipeline.audio_encoder, normalized, lo, hi, slice(start, stop),
                                     offset=self._offset)
            motion = self._sampler.step(features)[0]  # (stop - start, motion_dim)
            self._next_frame = stop
            self._forget_before((stop - self.context_frames) * SAMPLES_PER_FRAME)
            for image in self.pipeline.render_frames(self.source, motion, self.batch_size, self.paste_back):
                index = self.frames_done
                self.frames_done += 1
                yield StreamFrame(index, index / FPS, image)

    def _normalized(self, until: int) -> torch.Tensor:
        """The kept audio (1, n), normalised with the mean and variance of samples [0, until).

        The offline pipeline normalises with the whole file's statistics (docs/architecture.md §5.3). Running
        statistics up to the end of the current window are the closest causal stand-in; they stop at the window's end, not at whatever
        has arrived, so the result never depends on how the audio was cut into pieces. At the end they are the
        whole stream's, as offline.
        """
        if until > self._counted:
            wide = self._audio[self._counted - self._offset:until - self._offset].astype(np.float64)
            self._sum += float(wide.sum())
            self._sum_squares += float(np.dot(wide, wide))
            self._counted = until
        count = max(1, self._counted)
        mean = self._sum / count
        var = max(0.0, self._sum_squares / count - mean * mean)
        audio = (self._audio - mean) / math.sqrt(var + NORM_EPS)
        return torch.from_numpy(audio.astype(np.float32))[None].to(self.pipeline.device)

    def _forget_before(self, sample: int) -> None:
        """Drop audio no later window needs, so memory is bounded by one window, not by the stream's length."""
        drop = min(max(0, sample - self._offset), self._audio.size)
        if drop:
            self._audio = self._audio[drop:]
            self._offset += drop
