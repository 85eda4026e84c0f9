"""Tests for the log-mel audio front end (`imtalker.models.mel`)."""

from __future__ import annotations

import math

import pytest
import torch

from imtalker.constants import SAMPLE_RATE
from imtalker.models.audio import num_frames_for_samples
from imtalker.models.mel import MelAudioEncoder, MelConfig, mel_center_frequencies, mel_filterbank
from helpers.io_checks import BAD_WAVEFORMS

TINY = MelConfig(hidden_dim=16, feature_dim=12, num_layers=2)


@pytest.fixture(scope="module")
def encoder() -> MelAudioEncoder:
    torch.manual_seed(0)
    return MelAudioEncoder(TINY).eval()


def _noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _tone(freq: float, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return torch.sin(2 * math.pi * freq * t)


def test_filterbank_shape_and_sign():
    config = MelConfig()
    fb = mel_filterbank(config)
    assert fb.shape == (config.n_mels, config.n_fft // 2 + 1)
    assert fb.dtype == torch.float32
    assert (fb >= 0).all()
    assert (fb.sum(dim=1) > 0).all()  # no empty filter


def test_filterbank_peaks_ordered_and_at_centres():
    config = MelConfig()
    fb = mel_filterbank(config)
    peaks = fb.argmax(dim=1)
    assert (peaks[1:] > peaks[:-1]).all()
    bin_hz = config.sample_rate / config.n_fft
    centres = mel_center_frequencies(config)
    assert (centres[1:] > centres[:-1]).all()
    peak_hz = peaks.double() * bin_hz
    # Within one FFT bin, not half: the falling side is wider, so a farther bin on it can outscore the nearest one.
    assert torch.all((peak_hz - centres).abs() <= bin_hz)


def test_filterbank_matches_transformers_reference():
    # transformers ships a reference implementation (numpy); Slaney scale, no area normalisation, as ours.
    audio_utils = pytest.importorskip("transformers.audio_utils")
    config = MelConfig()
    reference = audio_utils.mel_filter_bank(
        num_frequency_bins=config.n_fft // 2 + 1, num_mel_filters=config.n_mels, min_frequency=config.f_min,
        max_frequency=config.f_max, sampling_rate=config.sample_rate, norm=None, mel_scale="slaney",
    )  # (F, n_mels)
    torch.testing.assert_close(mel_filterbank(config), torch.from_numpy(reference.T).float(), atol=1e-6, rtol=0)


def test_buffers_not_in_state_dict(encoder):
    keys = set(encoder.state_dict())
    assert "window" not in keys and "filterbank" not in keys
    assert all(k.startswith(("convs.", "proj.")) for k in keys)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_tone_lights_its_mel_bin(encoder, freq):
    log_mel = encoder.compute_log_mel(_tone(freq)[None])  # (1, n_mels, M)
    assert log_mel.shape == (1, TINY.n_mels, SAMPLE_RATE // TINY.hop_length + 1)
    loudest = int(log_mel[0].mean(dim=-1).argmax())
    centre = float(mel_center_frequencies(TINY)[loudest])
    assert abs(centre - freq) <= 0.1 * freq


@pytest.mark.parametrize(("batch", "seconds", "num_frames"), [(1, 1.0, 25), (2, 1.0, 25), (3, 2.5, 63), (2, 1.0, 7),
                                                              (1, 0.5, 1), (2, 4.0, 100)])
def test_output_shapes(encoder, batch, seconds, num_frames):
    waveform = _noise(batch, int(seconds * SAMPLE_RATE))
    with torch.no_grad():
        out = encoder(waveform, num_frames)
    assert out.shape == (batch, num_frames, TINY.feature_dim)
    assert torch.isfinite(out).all()


def test_one_dimensional_input_is_a_batch_of_one(encoder):
    waveform = _noise(SAMPLE_RATE)
    num_frames = num_frames_for_samples(SAMPLE_RATE)
    with torch.no_grad():
        torch.testing.assert_close(encoder(waveform, num_frames), encoder(waveform[None], num_frames))


def test_batch_items_are_independent(encoder):
    waveform = _noise(2, SAMPLE_RATE)
    with torch.no_grad():
        batched = encoder(waveform, 25)
        single = encoder(waveform[1:], 25)
    torch.testing.assert_close(batched[1:], single, atol=1e-5, rtol=1e-5)


def test_short_and_silent_inputs_are_finite(encoder):
    with torch.no_grad():
        assert torch.isfinite(encoder(_noise(100), 3)).all()
        assert torch.isfinite(encoder(torch.zeros(SAMPLE_RATE), 25)).all()


def test_default_config_and_properties():
    model = MelAudioEncoder()
    assert model.config == MelConfig()
    assert model.feature_dim == 256
    with torch.no_grad():
        assert model(_noise(SAMPLE_RATE), 25).shape == (1, 25, 256)


def test_gradients_reach_the_conv_weights():
    torch.manual_seed(0)
    model = MelAudioEncoder(TINY)
    model(_noise(2, SAMPLE_RATE), 25).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_deterministic_and_input_dependent(encoder):
    waveform = _noise(SAMPLE_RATE, seed=1)
    with torch.no_grad():
        first = encoder(waveform, 25)
        again = encoder(waveform.clone(), 25)
        other = encoder(_noise(SAMPLE_RATE, seed=2), 25)
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert not torch.allclose(first, other, atol=1e-3)


def test_normalisation_makes_features_scale_invariant(encoder):
    waveform = _noise(2, SAMPLE_RATE) * 0.1 + 0.05
    with torch.no_grad():
        torch.testing.assert_close(encoder(waveform, 25), encoder(3 * waveform, 25), atol=1e-4, rtol=1e-4)
        # Without the waveform normalisation a DC offset reaches the spectrum, so the features change.
        assert not torch.allclose(encoder(waveform, 25, normalize=False), encoder(waveform, 25), atol=1e-3)


@pytest.mark.parametrize(("waveform", "num_frames", "message"), BAD_WAVEFORMS)
def test_invalid_inputs_raise(encoder, waveform, num_frames, message):
    with pytest.raises(ValueError, match=message):
        encoder(waveform, num_frames)


@pytest.mark.parametrize(
    "kwargs", [{"kernel_size": 4}, {"win_length": 1024}, {"f_max": 9000.0}, {"n_mels": 0}, {"hidden_dim": 2.5}]
)
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError, match="MelConfig"):
        MelConfig(**kwargs)
