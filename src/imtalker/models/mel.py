"""Frame-rate audio features from log-mel spectrograms: an audio front end that needs no pretrained weights.

`MelAudioEncoder` has the same call interface as the wav2vec2 `AudioEncoder` (`forward(waveform, num_frames,
normalize=True) -> (B, T, feature_dim)`), so the motion generator and the pipelines can use either; this one can
be trained from scratch offline. Data flow for T frames::

    waveform (B, N) -> [normalise] -> STFT power (B, F, M) -> mel filterbank + log (B, n_mels, M)
    -> per-utterance mean/var normalisation over time -> Conv1d + GELU blocks (B, hidden_dim, M)
    -> linear (B, M, feature_dim) -> linear resample to (B, T, feature_dim)

At the default hop of 160 samples the spectrogram has 100 frames per second (4 per video frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imtalker.models.audio import prepare_waveform, resample_to_frames

LOG_EPS = 1e-6  # floor inside the log, so silence gives a finite value
MEL_NORM_EPS = 1e-5  # variance floor of the per-utterance log-mel normalisation (a constant input has zero variance)


@dataclass(frozen=True)
class MelConfig:
    """Architecture of `MelAudioEncoder`.

    Raises:
        ValueError: on non-positive sizes, win_length > n_fft, an even kernel_size, or a frequency range outside
            [0, sample_rate / 2].
    """

    sample_rate: int = 16000  # input audio rate in Hz; the waveform must be at this rate
    n_fft: int = 512  # FFT size: n_fft // 2 + 1 = 257 frequency bins, 31.25 Hz apart at 16 kHz
    win_length: int = 400  # Hann window length (25 ms at 16 kHz), zero-padded to n_fft
    hop_length: int = 160  # 10 ms hop: 100 spectrogram frames per second
    n_mels: int = 80  # mel bands
    f_min: float = 0.0  # lowest filter edge in Hz
    f_max: float = 8000.0  # highest filter edge in Hz (Nyquist at 16 kHz)
    hidden_dim: int = 256  # channels of the conv blocks
    feature_dim: int = 256  # width of the returned features
    num_layers: int = 2  # Conv1d + GELU blocks
    kernel_size: int = 5  # conv kernel over spectrogram frames; odd, so "same" padding keeps the length

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "hidden_dim", "feature_dim",
                     "num_layers", "kernel_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MelConfig.{name} must be an int >= 1, got {value!r}")
        if self.win_length > self.n_fft:
            raise ValueError(f"MelConfig.win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"MelConfig.kernel_size must be odd to keep the frame count, got {self.kernel_size}")
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(
                f"MelConfig needs 0 <= f_min < f_max <= sample_rate / 2, got f_min={self.f_min}, f_max={self.f_max}, "
                f"sample_rate={self.sample_rate}"
            )


def hz_to_mel(freq: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale (librosa's default): linear below 1 kHz, logarithmic above.

    Args:
        freq: frequencies in Hz, any shape.

    Returns:
        Mel values, same shape.
    """
    freq = torch.as_tensor(freq, dtype=torch.float64)
    linear = freq / (200.0 / 3.0)
    log_part = 15.0 + torch.log(freq.clamp(min=1000.0) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(freq >= 1000.0, log_part, linear)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of `hz_to_mel`.

    Args:
        mel: mel values, any shape.

    Returns:
        Frequencies in Hz, same shape.
    """
    mel = torch.as_tensor(mel, dtype=torch.float64)
    linear = mel * (200.0 / 3.0)
    log_part = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (mel.clamp(min=15.0) - 15.0))
    return torch.where(mel >= 15.0, log_part, linear)


def mel_center_frequencies(config: MelConfig) -> torch.Tensor:
    """Centre frequency in Hz of each mel filter of `mel_filterbank(config)`.

    Args:
        config: the filterbank settings.

    Returns:
        (n_mels,) float64 centre frequencies, increasing.
    """
    return _mel_edges(config)[1:-1]


def _mel_edges(config: MelConfig) -> torch.Tensor:
    """n_mels + 2 points equally spaced in mel between f_min and f_max, in Hz: edges and centres of the filters."""
    lo, hi = hz_to_mel(torch.tensor(config.f_min)), hz_to_mel(torch.tensor(config.f_max))
    return mel_to_hz(torch.linspace(float(lo), float(hi), config.n_mels + 2, dtype=torch.float64))


def mel_filterbank(config: MelConfig) -> torch.Tensor:
    """Triangular mel filters over the STFT bins (librosa `mel(htk=False, norm=None)` equivalent).

    Filter m rises linearly from edge m to its centre m + 1 and falls to edge m + 2, with the triangle evaluated
    in Hz at each FFT bin frequency and peak height 1. The Slaney scale keeps the low filters wider than one FFT bin
    at the defaults (about 37 Hz apart against 31.25 Hz bins), so no filter is empty.

    Args:
        config: sample rate, n_fft, n_mels and the frequency range.

    Returns:
        (n_mels, n_fft // 2 + 1) float32 non-negative weights.
    """
    bin_freqs = torch.linspace(0.0, config.sample_rate / 2, config.n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    edges = _mel_edges(config)  # (n_mels + 2,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1) each
    rising = (bin_freqs - lower) / (centre - lower)  # (n_mels, F)
    falling = (upper - bin_freqs) / (upper - centre)  # (n_mels, F)
    return torch.minimum(rising, falling).clamp(min=0.0).float()


class MelAudioEncoder(nn.Module):
    """Log-mel features with a small learned projection, resampled to the video frame rate.

    A drop-in alternative to `AudioEncoder` that needs no downloaded weights: the only parameters are the conv
    blocks and the output projection, randomly initialised and meant to be trained with the motion generator.
    Nothing here is causal: the conv blocks and the time resampling look at neighbouring frames on both sides.

    Args:
        config: a `MelConfig`, or None for the defaults.
    """

    def __init__(self, config: MelConfig | None = None):
        super().__init__()
        if config is None:
            config = MelConfig()
        if not isinstance(config, MelConfig):
            raise TypeError(f"config must be a MelConfig or None, got {type(config).__name__}")
        self._config = config
        # Fixed DSP tensors: buffers so they follow .to(device), non-persistent so state dicts hold only weights.
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(config), persistent=False)

        layers: list[nn.Module] = []
        in_channels = config.n_mels
        for _ in range(config.num_layers):
            layers += [nn.Conv1d(in_channels, config.hidden_dim, config.kernel_size, padding=config.kernel_size // 2),
                       nn.GELU()]
            in_channels = config.hidden_dim
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(config.hidden_dim, config.feature_dim)

    @property
    def config(self) -> MelConfig:
        return self._config

    @property
    def feature_dim(self) -> int:
        """Width of the returned features (`config.feature_dim`)."""
        return self._config.feature_dim

    def compute_log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel power spectrogram, before any normalisation.

        Args:
            waveform: (B, N) float audio at `config.sample_rate`, already checked.

        Returns:
            (B, n_mels, M) float32 log(mel power + 1e-6), with M = N // hop_length + 1 frames.
        """
        cfg = self._config
        x = waveform.float()  # the FFT runs in fp32 whatever the module dtype (no half-precision STFT on CPU)
        spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                          window=self.window.float(), center=True, pad_mode=stft_pad_mode(cfg, x.shape[-1]),
                          return_complex=True)  # (B, F, M)
        power = spec.real.square() + spec.imag.square()  # (B, F, M); avoids abs() whose gradient is NaN at 0
        return self.log_mel_of_power(power)

    def log_mel_of_power(self, power: torch.Tensor) -> torch.Tensor:
        """(B, n_fft // 2 + 1, M) STFT power -> (B, n_mels, M) log(mel power + 1e-6)."""
        mel = torch.matmul(self.filterbank.float(), power)  # (B, n_mels, M)
        return torch.log(mel + LOG_EPS)

    def spectrogram_rate_features(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, M) log-mel -> (B, M, feature_dim) features, one per spectrogram frame (before the time
        resampling to the video frame rate)."""
        # Per-utterance, per-band normalisation over time removes the recording's gain and channel colouring.
        mean = log_mel.mean(dim=-1, keepdim=True)  # (B, n_mels, 1)
        var = log_mel.var(dim=-1, unbiased=False, keepdim=True)  # (B, n_mels, 1)
        log_mel = (log_mel - mean) / torch.sqrt(var + MEL_NORM_EPS)  # (B, n_mels, M)
        hidden = self.convs(log_mel.to(self.proj.weight.dtype))  # (B, hidden_dim, M)
        return self.proj(hidden.transpose(1, 2))  # (B, M, feature_dim)

    def forward(self, waveform: torch.Tensor, num_frames: int, normalize: bool = True) -> torch.Tensor:
        """Encode audio into `num_frames` feature vectors.

        Args:
            waveform: (B, N) or (N,) float audio at `config.sample_rate` (a 1-D input is a batch of one).
            num_frames: T, the number of video frames to produce features for (usually
                `num_frames_for_samples(N)`).
            normalize: normalise each waveform to zero mean and unit variance first, as `AudioEncoder` does.
                Pass False for audio that is already normalised.

        Returns:
            (B, T, feature_dim) features.

        Raises:
            ValueError: on a waveform that is not 1-D/2-D, not floating point, empty or not finite, or on
                num_frames < 1.
        """
        waveform = prepare_waveform(waveform, num_frames, normalize)
        features = self.spectrogram_rate_features(self.compute_log_mel(waveform))  # (B, M, feature_dim)
        return resample_to_frames(features.transpose(1, 2), num_frames)


def stft_pad_mode(config: MelConfig, num_samples: int) -> str:
    """How the centred STFT pads a waveform of `num_samples`: reflect padding needs more samples than the pad, so
    very short clips fall back to zero padding."""
    return "reflect" if num_samples > config.n_fft // 2 else "constant"


def stft_padded(config: MelConfig, waveform: torch.Tensor) -> torch.Tensor:
    """(B, N) -> (B, N + n_fft): the waveform padded as the centred STFT pads it, n_fft // 2 on each side."""
    pad = config.n_fft // 2
    return F.pad(waveform[:, None], (pad, pad), mode=stft_pad_mode(config, waveform.shape[-1]))[:, 0]

