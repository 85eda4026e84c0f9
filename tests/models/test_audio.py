"""Audio encoder (docs/architecture.md §5.1) against the golden features of a tiny wav2vec2."""

from __future__ import annotations

import pytest
import torch
import transformers

from imtalker.models.audio import AudioEncoder, normalize_waveform, num_frames_for_samples, pad_waveform
from helpers.io_checks import BAD_WAVEFORMS

NUM_SAMPLES = 52923
NUM_FRAMES = 83


@pytest.fixture(scope="module")
def encoder(audio_reference) -> AudioEncoder:
    model = AudioEncoder(transformers.Wav2Vec2Config(**audio_reference.config))
    state = {f"wav2vec2.{key}": value for key, value in audio_reference.state_dict().items()}
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def waveform(audio_reference) -> torch.Tensor:
    return audio_reference.input("waveform", (1, NUM_SAMPLES), 0.0, 0.3)


def test_keys_match_manifest(encoder, audio_reference):
    assert set(encoder.state_dict()) == {f"wav2vec2.{key}" for key in audio_reference.keys()}


def test_audio_features_match_golden(encoder, waveform, audio_reference):
    assert num_frames_for_samples(NUM_SAMPLES) == NUM_FRAMES
    with torch.no_grad():
        features = encoder(waveform, NUM_FRAMES, normalize=False)
    assert features.shape == (1, NUM_FRAMES, encoder.feature_dim)
    audio_reference.check("audio_features", features)


def test_normalisation_changes_the_features(encoder, waveform):
    # the group-normed feature extractor is nearly invariant to gain and offset, except for quiet audio
    scaled = 0.01 + 1e-3 * waveform
    with torch.no_grad():
        raw = encoder(scaled, NUM_FRAMES, normalize=False)
        normed = encoder(scaled, NUM_FRAMES, normalize=True)
        prenormed = encoder(normalize_waveform(scaled), NUM_FRAMES, normalize=False)
    assert not torch.allclose(raw, normed, atol=1e-3)
    torch.testing.assert_close(normed, prenormed)


def test_normalize_waveform_statistics():
    x = 3.0 + 5.0 * torch.rand(2, 1000)
    y = normalize_waveform(x)
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=1, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)


def test_pad_waveform_repeats_last_sample():
    x = torch.arange(1.0, 1001.0)[None]  # one frame = 640 samples
    padded = pad_waveform(x, 1)
    assert padded.shape == (1, 1280)
    assert torch.equal(padded[:, :1000], x)
    assert torch.all(padded[:, 1000:] == 1000.0)
    assert pad_waveform(torch.ones(1, 1280), 2).shape == (1, 1280)  # already a multiple of 2 * 640


@pytest.mark.parametrize("num_frames", [1, 7, 50, 120])
def test_shapes_for_several_lengths(encoder, waveform, num_frames):
    with torch.no_grad():
        batch = encoder(waveform.repeat(2, 1), num_frames)
        single = encoder(waveform[0], num_frames)
    assert batch.shape == (2, num_frames, encoder.feature_dim)
    assert single.shape == (1, num_frames, encoder.feature_dim)
    assert torch.isfinite(batch).all()
    torch.testing.assert_close(batch[:1], single, atol=1e-5, rtol=1e-5)


def test_stays_in_eval_mode(encoder):
    encoder.train()
    try:
        assert not encoder.wav2vec2.training
    finally:
        encoder.eval()


@pytest.mark.parametrize(("waveform", "num_frames", "message"), BAD_WAVEFORMS)
def test_invalid_inputs_raise(encoder, waveform, num_frames, message):
    with pytest.raises(ValueError, match=message):
        encoder(waveform, num_frames)


@pytest.mark.parametrize(
    ("samples", "frames"), [(0, 0), (1, 1), (640, 1), (641, 2), (16000, 25), (16001, 26), (NUM_SAMPLES, NUM_FRAMES)]
)
def test_num_frames_for_samples(samples, frames):
    assert num_frames_for_samples(samples) == frames


@pytest.mark.parametrize("samples", [-1, 1.5, True])
def test_num_frames_for_samples_rejects_bad_counts(samples):
    with pytest.raises(ValueError, match="num_samples"):
        num_frames_for_samples(samples)
