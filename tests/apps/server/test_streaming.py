"""StreamingSession: audio pushed in pieces of any size gives the offline pipeline's frames (exactly while the audio
fits one feature window, within the documented window effect beyond), as soon as each chunk's audio is in."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imtalker.io.audio import StreamResampler, load_audio
from imtalker.errors import InputError
from imtalker.pipelines.streaming import PcmDecoder, StreamingSession
from helpers.server import FAST, drawn_portrait, pcm16, voice

# Window effect with these tiny untrained networks on this voice (docs/streaming.md has the numbers for the
# published-size front ends): the motion latents of a 6.3 s stream differ from the whole-file run by at most 0.24
# of the motion's spread (0.022 on average), measured; the bounds are 0.5 and 0.1.
MAX_RELATIVE_MOTION_DIFFERENCE = 0.5


@pytest.fixture(scope="module")
def source(pipe):
    return pipe.prepare_source(drawn_portrait(), crop=False)


def pieces(data, rng, low=1, high=4000):
    """Cut bytes or an array at random points (odd byte counts split 16-bit samples)."""
    out, position = [], 0
    while position < len(data):
        size = int(rng.integers(low, high))
        out.append(data[position:position + size])
        position += size
    return out


def stream(pipe, source, chunks, rate, **options):
    session = StreamingSession(pipe, source, sample_rate=rate, **{**FAST, **options})
    frames = [frame for chunk in chunks for frame in session.push(chunk)]
    return frames + list(session.finish())


def offline(pipe, source, samples, rate):
    return np.stack(list(pipe.frames(None, (samples, rate), source=source, **FAST)))


@pytest.fixture
def motion_frames(pipe, monkeypatch):
    """Skip the renderer: each "frame" is its motion latent (32,), so tests compare the motion itself, fast."""
    monkeypatch.setattr(pipe, "render_frames",
                        lambda source, motion, batch_size=8, paste_back=False: iter(motion.float().numpy().copy()))


def test_short_audio_equals_offline_exactly(pipe, source, motion_frames):
    """Up to one chunk plus the look-ahead (2.2 s) everything is encoded at the end, over the whole audio: the
    features and the motion (hence the frames: the same renderer call) are the offline pipeline's, bit for bit."""
    rate = 22050
    samples = pcm16(voice(2.1, rate))
    frames = stream(pipe, source, pieces(samples.tobytes(), np.random.default_rng(0)), rate)
    expected = offline(pipe, source, samples, rate)
    assert len(frames) == len(expected) == math.ceil(2.1 * 25)
    assert np.array_equal(np.stack([f.image for f in frames]), expected)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert frames[-1].timestamp == pytest.approx((len(frames) - 1) / 25)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_output_does_not_depend_on_how_the_audio_is_cut(pipe, source, motion_frames, rate):
    samples = pcm16(voice(4.5, rate, seed=1))
    whole = stream(pipe, source, [samples.tobytes()], rate)
    cut = stream(pipe, source, pieces(samples.tobytes(), np.random.default_rng(rate), 1, 3001), rate)
    as_arrays = stream(pipe, source, pieces(samples, np.random.default_rng(1), 1, 5000), rate)
    assert len(whole) == len(cut) == len(as_arrays) == math.ceil(4.5 * 25)
    for a, b, c in zip(whole, cut, as_arrays):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.image, c.image)


def test_longer_audio_matches_offline_within_the_window_effect(pipe, source, motion_frames):
    """Past one chunk the features come from windows, not the whole file: the first chunk's motion is close to
    the offline one (its window lacks only the audio beyond the look-ahead), later chunks drift further."""
    rate = 16000
    samples = voice(6.3, rate, seed=2)
    motion = np.stack([f.image for f in stream(pipe, source, pieces(samples, np.random.default_rng(2), 100, 4000),
                                               rate)])
    expected = offline(pipe, source, samples, rate)
    assert motion.shape == expected.shape == (math.ceil(6.3 * 25), 32)
    relative = np.abs(motion - expected).max() / expected.std()
    assert 0 < relative < MAX_RELATIVE_MOTION_DIFFERENCE
    assert np.abs(motion - expected).mean() / expected.std() < MAX_RELATIVE_MOTION_DIFFERENCE / 5


def test_frames_come_out_as_soon_as_a_chunk_is_complete(pipe, source, motion_frames):
    session = StreamingSession(pipe, source, sample_rate=16000, lookahead_frames=5, **FAST)
    samples = voice(4.0)
    needed = (50 + 5) * 640  # one chunk plus the look-ahead
    assert list(session.push(samples[:needed - 1])) == []
    first = list(session.push(samples[needed - 1:needed]))
    assert [f.index for f in first] == list(range(50))
    rest = list(session.push(samples[needed:])) + list(session.finish())
    assert [f.index for f in rest] == list(range(50, 100))


def test_memory_is_bounded_by_the_window_not_the_stream(pipe, source, motion_frames):
    session = StreamingSession(pipe, source, sample_rate=16000, context_frames=25, lookahead_frames=5, **FAST)
    longest = 0
    for piece in np.array_split(np.tile(voice(2.0), 15), 300):  # 30 s in 0.1 s pieces
        list(session.push(piece))
        longest = max(longest, session.buffered_samples)
    list(session.finish())
    assert session.frames_done == 750
    assert longest <= (25 + 50 + 5 + 3) * 640  # context + chunk + look-ahead (+ a piece), not 30 s


def test_resampler_is_the_offline_one_whatever_the_cuts():
    samples = voice(1.3, 44100)
    resampler = StreamResampler(44100)
    out = [resampler.push(p) for p in pieces(samples, np.random.default_rng(3), 1, 3000)] + [resampler.flush()]
    streamed = np.concatenate(out)[:round(samples.size * 16000 / 44100)]
    assert np.array_equal(streamed, load_audio((samples, 44100)))


def test_pcm_decoder_joins_split_samples():
    decoder = PcmDecoder("s16le")
    data = np.array([1000, -2000, 32767], np.int16).tobytes()
    out = np.concatenate([decoder.decode(data[:1]), decoder.decode(data[1:4]), decoder.decode(data[4:])])
    assert np.allclose(out * 32768, [1000, -2000, 32767]) and decoder.pending_bytes == 0
    assert np.array_equal(PcmDecoder("f32le").decode(np.float32([0.5, -0.25]).tobytes()), np.float32([0.5, -0.25]))


def test_bad_audio_and_misuse_are_input_errors(pipe, source):
    session = StreamingSession(pipe, source, sample_rate=16000, max_seconds=1.0, **FAST)
    with pytest.raises(InputError, match="unscaled PCM"):
        list(session.push(np.full(100, 300.0, np.float32)))
    with pytest.raises(InputError, match="NaN"):
        list(session.push(np.array([np.nan], np.float32)))
    with pytest.raises(InputError, match="limit of 1 s"):
        list(session.push(np.zeros(17000, np.float32)))
    with pytest.raises(InputError, match="sample format"):
        StreamingSession(pipe, source, sample_format="mp3")
    with pytest.raises(InputError, match="sample_rate"):
        StreamingSession(pipe, source, sample_rate=10)
    empty = StreamingSession(pipe, source, **FAST)
    assert list(empty.finish()) == [] and empty.frames_done == 0
    with pytest.raises(InputError, match="finished"):
        list(empty.push(b"\x00\x00"))
