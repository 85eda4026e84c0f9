"""Frame-rate audio features from a wav2vec2 encoder (docs/architecture.md §5.1).

The published model runs `transformers.Wav2Vec2Model` with one change: the output of the convolutional feature
extractor is resampled in time to exactly one step per video frame *before* the feature projection and the
transformer encoder. Data flow for T frames::

    waveform (B, N) -> [normalise] -> pad to a multiple of T * 640 samples -> conv features (B, N', C)
    -> linear resample to (B, T, C) -> feature projection (B, T, H) -> transformer encoder (B, T, H)

The wav2vec2 network sits under the attribute `wav2vec2`, so its state-dict keys are the published
`wav2vec2.feature_extractor...` ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from imtalker.constants import FPS, SAMPLE_RATE

NORM_EPS = 1e-7  # variance floor of the waveform normalisation (as the wav2vec2 feature extractor uses)


def num_frames_for_samples(num_samples: int) -> int:
    """Number of video frames an audio clip gives: ceil(num_samples * FPS / SAMPLE_RATE).

    Args:
        num_samples: length of the audio in samples at 16 kHz.

    Returns:
        The frame count T (0 for an empty clip).

    Raises:
        ValueError: if `num_samples` is negative or not an integer.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
    return -(-num_samples * FPS // SAMPLE_RATE)  # exact integer ceil


def prepare_waveform(waveform: torch.Tensor, num_frames: int, normalize: bool) -> torch.Tensor:
    """Checked (B, N) waveform, normalised when asked: the common entry of every audio front end.

    Raises:
        ValueError: on a bad waveform (see `_check_waveform`) or num_frames that is not an int >= 1.
    """
    waveform = _check_waveform(waveform)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    return normalize_waveform(waveform) if normalize else waveform


def normalize_waveform(waveform: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per waveform: (x - mean) / sqrt(var + 1e-7), population variance.

    Statistics and arithmetic are in float64: float32 sums round differently with the number of threads that split
    them, and the streaming session, which keeps running float64 sums, must give the same samples as this.

    Args:
        waveform: (B, N) float audio.

    Returns:
        (B, N) normalised audio, same dtype.
    """
    x = waveform.double()
    mean = x.mean(dim=-1, keepdim=True)  # (B, 1)
    var = x.var(dim=-1, unbiased=False, keepdim=True)  # (B, 1)
    return normalize_with_statistics(waveform, mean, var)


def normalize_with_statistics(waveform: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-7) in float64, returned in the waveform's dtype.

    Args:
        waveform: (B, N) float audio.
        mean, var: float64 tensors broadcastable to (B, 1): the statistics of the audio (or of all of it that was
            heard, for a stream).
    """
    return ((waveform.double() - mean) / torch.sqrt(var + NORM_EPS)).to(waveform.dtype)


def pad_waveform(waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Pad at the end, repeating the last sample, up to the next multiple of floor(T * 16000 / 25) samples.

    Args:
        waveform: (B, N) audio with N >= 1.
        num_frames: the frame count T >= 1.

    Returns:
        (B, N') audio with N' = ceil(N / unit) * unit, unit = floor(T * SAMPLE_RATE / FPS); unchanged when N is
        already a multiple.
    """
    unit = num_frames * SAMPLE_RATE // FPS
    length = waveform.shape[-1]
    missing = math.ceil(length / unit) * unit - length
    if missing == 0:
        return waveform
    tail = waveform[:, -1:].expand(-1, missing)  # (B, missing)
    return torch.cat([waveform, tail], dim=-1)


def _as_config(config: Wav2Vec2Config | Mapping[str, Any] | None) -> Wav2Vec2Config:
    if config is None:
        return Wav2Vec2Config()  # the wav2vec2-base defaults
    if isinstance(config, Wav2Vec2Config):
        return config
    if isinstance(config, Mapping):
        return Wav2Vec2Config(**config)
    raise TypeError(f"config must be a Wav2Vec2Config, a dict of its fields or None, got {type(config).__name__}")


class AudioEncoder(nn.Module):
    """wav2vec2 features resampled to the video frame rate (one feature vector per frame).

    The encoder is a frozen feature network: it is built in eval mode and `train()` leaves the wrapped
    wav2vec2 in eval mode, so dropout and layer drop never apply.

    Args:
        config: a `transformers.Wav2Vec2Config`, a dict of its fields, or None for the wav2vec2-base defaults
            (the published `wav2vec2-base-960h` architecture). Weights are randomly initialised; load a state
            dict to use real ones.
    """

    def __init__(self, config: Wav2Vec2Config | Mapping[str, Any] | None = None):
        super().__init__()
        self.wav2vec2 = Wav2Vec2Model(_as_config(config))
        self.eval()

    @property
    def config(self) -> Wav2Vec2Config:
        return self.wav2vec2.config

    @property
    def feature_dim(self) -> int:
        """Width of the returned features (768 for wav2vec2-base)."""
        return self.wav2vec2.config.hidden_size

    def train(self, mode: bool = True) -> AudioEncoder:
        """Keeps the wav2vec2 network in eval mode whatever `mode` is (it is never trained here)."""
        super().train(mode)
        self.wav2vec2.eval()
        return self

    def forward(self, waveform: torch.Tensor, num_frames: int, normalize: bool = True) -> torch.Tensor:
        """Encode 16 kHz audio into `num_frames` feature vectors.

        Args:
            waveform: (B, N) or (N,) float audio at 16 kHz (a 1-D input is a batch of one).
            num_frames: T, the number of video frames to produce features for (usually
                `num_frames_for_samples(N)`).
            normalize: normalise each waveform to zero mean and unit variance first, as the published
                pipeline does. Pass False for audio that is already normalised.

        Returns:
            (B, T, feature_dim) last hidden state of the transformer encoder.

        Raises:
            ValueError: on a waveform that is not 1-D/2-D, not floating point, empty or not finite, or on
                num_frames < 1.
        """
        waveform = prepare_waveform(waveform, num_frames, normalize)
        waveform = pad_waveform(waveform, num_frames)  # (B, N')
        features = self.conv_features(waveform.to(next(self.wav2vec2.parameters()).dtype))  # (B, C, N'')
        return self.encode_frames(resample_to_frames(features, num_frames))

    def conv_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, N') padded waveform -> (B, C, N'') output of the convolutional feature extractor."""
        return self.wav2vec2.feature_extractor(waveform)

    def encode_frames(self, frame_features: torch.Tensor) -> torch.Tensor:
        """(B, T, C) conv features resampled to the frame rate -> (B, T, H): feature projection and transformer."""
        model = self.wav2vec2
        hidden, _ = model.feature_projection(frame_features)  # (B, T, H)
        hidden = model.encoder(hidden).last_hidden_state  # (B, T, H)
        if model.adapter is not None:
            hidden = model.adapter(hidden)
        return hidden


def resample_to_frames(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, C, N) -> (B, T, C): the published model's linear resampling in time to one step per video frame, first
    and last steps onto the first and last frames (wav2vec2 between its convolutions and its transformer; the log-mel
    front end at its output)."""
    return F.interpolate(features, size=num_frames, mode="linear", align_corners=True).transpose(1, 2)


def _check_waveform(waveform: torch.Tensor) -> torch.Tensor:
    """Validate the encoder input and return it as (B, N)."""
    if not isinstance(waveform, torch.Tensor):
        raise ValueError(f"waveform must be a torch.Tensor of shape (B, N) or (N,), got {type(waveform).__name__}")
    if waveform.ndim not in (1, 2):
        raise ValueError(f"waveform must have shape (B, N) or (N,), got shape {tuple(waveform.shape)}")
    if not waveform.is_floating_point():
        raise ValueError(f"waveform must be a floating-point tensor, got dtype {waveform.dtype}")
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise ValueError(f"waveform must hold at least one sample per batch item, got shape {tuple(waveform.shape)}")
    if not torch.isfinite(waveform).all():
        raise ValueError("waveform must contain only finite values, got NaN or infinity")
    return waveform
