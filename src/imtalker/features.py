"""Frame-rate audio features for long or streamed audio: the windowing that both the offline pipeline and the
streaming session use, so a waveform gives the same features whichever path encodes it.

The audio encoder sees a window of frames with context on both sides, and only the frames in the middle are kept
(docs/architecture.md §5.3): features near a window's edge would otherwise differ from those of the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .constants import SAMPLES_PER_FRAME
from .models.audio import AudioEncoder, normalize_waveform, normalize_with_statistics

FEATURE_WINDOW_FRAMES = 250  # 10 s
FEATURE_CONTEXT_FRAMES = 50  # 2 s


def iter_audio_features(encoder: AudioEncoder, waveform: torch.Tensor, num_frames: int,
                        window: int = FEATURE_WINDOW_FRAMES, context: int = FEATURE_CONTEXT_FRAMES
                        ) -> Iterator[torch.Tensor]:
    """Frame-rate audio features (1, n, feature_dim) in consecutive pieces covering num_frames frames.

    The waveform is normalised once over the whole file (docs/architecture.md §5.3); each window of `window`
    frames is encoded
    with `context` frames of audio on both sides, which are then dropped.
    """
    waveform = normalize_waveform(waveform.reshape(1, -1).float())
    if num_frames <= window + 2 * context:
        yield encode_window(encoder, waveform, 0, num_frames, slice(0, num_frames))
        return
    for start in range(0, num_frames, window):
        stop = min(start + window, num_frames)
        lo, hi = max(0, start - context), min(num_frames, stop + context)
        yield encode_window(encoder, waveform, lo, hi, slice(start, stop))


def encode_window(encoder: AudioEncoder, waveform: torch.Tensor, lo: int, hi: int, keep: slice,
                  offset: int = 0) -> torch.Tensor:
    """Features (1, n, feature_dim) of frames `keep` (absolute indices), encoded from the audio of frames [lo, hi).

    Args:
        encoder: the frame-rate audio encoder.
        waveform: (1, N) normalised 16 kHz audio whose first sample is absolute sample `offset`; it must hold the
            audio of frames [lo, hi) (the last frames may run past its end: the encoder pads by repeating the
            final sample, exactly as for a whole file).
        lo, hi: the window, in frames; `keep` lies inside it.
        offset: absolute index of `waveform`'s first sample (streaming callers keep only a recent tail).
    """
    total = offset + waveform.shape[1]
    piece = waveform[:, lo * SAMPLES_PER_FRAME - offset:min(total, hi * SAMPLES_PER_FRAME) - offset]
    if piece.shape[1] == 0:  # the last frame may start past the final sample: repeat it
        piece = waveform[:, -1:]
    with torch.inference_mode():
        return encoder(piece, hi - lo, normalize=False)[:, keep.start - lo:keep.stop - lo]


class StreamingFeatures:
    """Features of audio that arrives over time, each range of frames encoded from a window with past context.

    Audio (16 kHz float32) is appended as it comes; `encode(start, stop, hi)` gives the features of frames
    [start, stop), encoded from the audio of frames [start - context_frames, hi) (hi past stop is look-ahead), so a
    live stream re-encodes a sliding window per step: the cost of a step is one window, whatever the stream's length.
    Only the audio later windows can need is kept (`forget_before`): memory is bounded by one window.

    The waveform is normalised (docs/architecture.md §5.1) with running statistics of the audio up to the window's end: the
    closest causal stand-in for the whole file's, and independent of how the audio was cut into pieces. At the end
    of a stream (`until` = everything received) they are the whole stream's, as offline.

    Args:
        encoder: the frame-rate audio encoder.
        context_frames: past audio (frames of 40 ms) encoded with each window and dropped afterwards.
        device: where the encoder runs.
    """

    def __init__(self, encoder: AudioEncoder, context_frames: int, device: torch.device | str = "cpu"):
        self.encoder, self.context_frames, self.device = encoder, context_frames, torch.device(device)
        self.audio = np.zeros(0, np.float32)  # the samples still needed, from absolute sample `offset`
        self.offset = 0
        self.received = 0  # samples on the stream's timeline so far
        self._counted = 0  # samples [0, _counted) of the timeline are in the running sums (for the normalisation)
        self._summed = 0  # samples in the sums: more than _counted once speech was dropped (it was heard)
        self._sum = 0.0
        self._sum_squares = 0.0

    def append(self, samples: np.ndarray) -> None:
        """Add 16 kHz float32 samples at the end of the timeline."""
        if samples.size:
            self.audio = np.concatenate([self.audio, samples.astype(np.float32, copy=False)])
            self.received += samples.size

    def encode(self, start: int, stop: int, hi: int, until: int | None = None) -> torch.Tensor:
        """Features (1, stop - start, feature_dim) of frames [start, stop), from the audio of frames
        [start - context_frames, hi), normalised with the statistics of samples [0, until) (default: hi's end)."""
        lo = max(0, start - self.context_frames)
        normalized = self._normalized(until=hi * SAMPLES_PER_FRAME if until is None else until)
        return encode_window(self.encoder, normalized, lo, hi, slice(start, stop), offset=self.offset)

    def truncate(self, sample: int) -> None:
        """Drop the audio from absolute sample `sample` on (speech that will never be shown); the statistics keep
        it, as it was heard."""
        if sample < self.received:
            self.audio = self.audio[:max(0, sample - self.offset)]
            self.received = max(sample, self.offset)
            self._counted = min(self._counted, self.received)

    def forget_before(self, frame: int) -> None:
        """Drop the audio no window starting at `frame` or later needs."""
        sample = (frame - self.context_frames) * SAMPLES_PER_FRAME
        drop = min(max(0, sample - self.offset), self.audio.size)
        if drop:
            self.audio = self.audio[drop:]
            self.offset += drop

    def _normalized(self, until: int) -> torch.Tensor:
        """The kept audio (1, n), normalised with the mean and variance of samples [0, until)."""
        until = min(until, self.received)
        if until > self._counted:
            wide = self.audio[self._counted - self.offset:until - self.offset].astype(np.float64)
            self._sum += float(wide.sum())
            self._sum_squares += float(np.dot(wide, wide))
            self._summed += until - self._counted
            self._counted = until
        count = max(1, self._summed)
        mean = self._sum / count
        var = max(0.0, self._sum_squares / count - mean * mean)
        statistics = torch.tensor([mean, var], dtype=torch.float64)
        audio = normalize_with_statistics(torch.from_numpy(self.audio)[None], statistics[0], statistics[1])
        return audio.to(self.device)


class Rechunker:
    """Turns a stream of (1, n, C) pieces into pieces of exactly `size` frames (the last may be shorter)."""

    def __init__(self, pieces: Iterator[torch.Tensor], size: int):
        self.pieces, self.size, self.buffer = pieces, size, None

    def __iter__(self) -> Iterator[torch.Tensor]:
        for piece in self.pieces:
            self.buffer = piece if self.buffer is None else torch.cat([self.buffer, piece], dim=1)
            while self.buffer.shape[1] >= self.size:
                yield self.buffer[:, :self.size]
                self.buffer = self.buffer[:, self.size:]
        if self.buffer is not None and self.buffer.shape[1]:
            yield self.buffer
