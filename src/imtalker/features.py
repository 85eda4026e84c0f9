"""Frame-rate audio features for long or streamed audio: the windowing that both the offline pipeline and the
streaming session use, so a waveform gives the same features whichever path encodes it.

The audio encoder sees a window of frames with context on both sides, and only the frames in the middle are kept
(docs/architecture.md §5.3): features near a window's edge would otherwise differ from those of the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .constants import SAMPLES_PER_FRAME
from .models.audio import AudioEncoder, normalize_waveform

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
