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


# -- the live (hop) schedule ---------------------------------------------------------------------------------------

LIVE = {"hop": 5, "lookahead_frames": 2}


def test_hop_frames_come_out_once_their_audio_and_lookahead_are_in(pipe, source, motion_frames):
    """Frame k is made as soon as the audio of its hop and the look-ahead after it is in: no frame waits for a
    whole 2-second chunk (it waits hop + look-ahead frames at most)."""
    session = StreamingSession(pipe, source, sample_rate=16000, **LIVE, **FAST)
    samples = voice(2.0)
    appeared = {}  # frame index -> frames of audio pushed when it came out
    for pushed in range(1, 51):  # one frame (40 ms) of audio at a time
        for frame in session.push(samples[(pushed - 1) * 640:pushed * 640]):
            appeared[frame.index] = pushed
    assert list(appeared) == list(range(45))  # the last hop waits for its look-ahead, or for finish()
    for index, pushed in appeared.items():
        assert pushed == (index // 5 + 1) * 5 + 2
        assert pushed - index <= 5 + 2
    rest = list(session.finish())
    assert [f.index for f in rest] == list(range(45, 50))
    assert rest[-1].timestamp == pytest.approx(49 / 25)
    assert session.hop == 5 and session.lookahead_frames == 2


def test_hop_schedule_is_reproducible_with_a_seed_whatever_the_cuts(pipe, source, motion_frames):
    samples = voice(3.3, seed=3)
    whole = stream(pipe, source, [samples], 16000, **LIVE)
    cut = stream(pipe, source, pieces(samples, np.random.default_rng(4), 1, 3000), 16000, **LIVE)
    other_seed = stream(pipe, source, [samples], 16000, **LIVE, seed=8)
    assert len(whole) == len(cut) == math.ceil(3.3 * 25)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(whole, cut))
    assert not np.array_equal(whole[10].image, other_seed[10].image)


@pytest.mark.parametrize("hop", [5, None])
def test_interrupt_drops_pending_speech_and_eases_back_to_the_source(pipe, source, motion_frames, hop):
    session = StreamingSession(pipe, source, sample_rate=16000, hop=hop, **FAST)
    shown = []
    for frame in session.push(voice(4.0, seed=5)):  # read 20 frames, leave the rest of the speech unshown
        shown.append(frame)
        if len(shown) == 20:
            break
    blend = list(session.interrupt())
    assert [f.index for f in blend] == list(range(20, 20 + session.blend_frames))
    assert session.media_seconds == pytest.approx((20 + session.blend_frames) / 25)
    neutral = source.state.motion[0].numpy()
    path = [shown[-1].image] + [f.image for f in blend]
    distance = [np.abs(m - neutral).max() for m in path]
    assert np.all(np.diff(distance) < 0) and distance[-1] == pytest.approx(0, abs=1e-6)
    steps = [np.abs(b - a).max() for a, b in zip(path, path[1:])]
    assert max(steps) < 0.5 * distance[0]  # eased over several frames: no jump
    after = list(session.push(voice(1.0, seed=6))) + list(session.finish())
    # the dropped speech never comes back: the stream goes on with the new audio only
    assert [f.index for f in after] == list(range(26, 26 + 25))
    assert session.frames_done == 20 + session.blend_frames + 25


def test_interrupt_before_any_frame_only_drops_the_audio(pipe, source, motion_frames):
    session = StreamingSession(pipe, source, sample_rate=16000, **LIVE, **FAST)
    assert list(session.push(voice(0.2))) == []
    assert list(session.interrupt()) == [] and session.media_seconds == 0
    assert len(list(session.push(voice(0.4))) + list(session.finish())) == 10


@pytest.mark.parametrize("options, message", [
    ({"hop": 0}, "hop must be an integer >= 1"),
    ({"hop": 51}, "hop must be at most the generator's clip of 50"),
    ({"hop": 2.5}, "hop must be an integer"),
    ({"hop": True}, "hop must be an integer"),
    ({"hop": 5, "lookahead_frames": -1}, "lookahead must be an integer >= 0"),
    ({"hop": 5, "lookahead_frames": "2"}, "lookahead must be an integer"),
    ({"hop": 5, "padding": "mirror"}, "padding must be one of"),
    ({"blend_frames": 0}, "blend_frames must be an integer >= 1"),
])
def test_bad_schedules_are_input_errors(pipe, source, options, message):
    with pytest.raises(InputError, match=message):
        StreamingSession(pipe, source, **options)


def test_session_head_motion_reaches_the_generator(pipe, source, monkeypatch):
    seen = []
    project = pipe.generator.project
    monkeypatch.setattr(pipe.generator, "project", lambda *args: seen.append(args[1]) or project(*args))
    session = StreamingSession(pipe, source, pose="yaw=15deg", **LIVE, **FAST)
    frames = list(session.push(pcm16(voice(0.6)))) + list(session.finish())
    poses = [p for p in seen if p is not None]
    assert frames and len(poses) == len(seen)  # every hop (and look-ahead) carried the pose
    np.testing.assert_allclose(poses[0][0, :, 1].numpy(), -math.radians(15), atol=1e-6)  # FLAME y = -yaw
    with pytest.raises(InputError, match="known length"):
        StreamingSession(pipe, source, pose="turn:-20..20deg", **LIVE, **FAST)
    with pytest.raises(InputError, match="cannot read"):
        StreamingSession(pipe, source, gaze="sideways", **LIVE, **FAST)


def test_interrupt_after_finish_is_an_input_error(pipe, source):
    session = StreamingSession(pipe, source, **LIVE, **FAST)
    list(session.finish())
    with pytest.raises(InputError, match="finished"):
        session.interrupt()


class TestClock:
    """A clock the test moves by hand (`StreamingSession(clock=...)`)."""

    __test__ = False

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def paced_run(session, clock, samples, seconds_per_picture, piece_seconds=0.2):
    """Push `samples` in pieces that arrive in real time while each picture drawn costs `seconds_per_picture`
    (repeated ones cost nothing); a piece that came while the session was busy waits and is pushed with the
    others, with the time it came, as the server's worker does."""
    piece = round(piece_seconds * 16000)
    start, frames, sent = clock.now, [], 0
    while sent < samples.size:
        due = [k for k in range(sent, samples.size, piece) if start + k / 16000 <= clock.now] or [sent]
        clock.now = max(clock.now, start + due[0] / 16000)
        stop = min(samples.size, due[-1] + piece)
        for frame in session.push(samples[sent:stop], arrived_at=start + due[0] / 16000):
            frames.append(frame)
            clock.now += seconds_per_picture if frame.rendered else 0.0
        sent = stop
    return frames + list(session.finish())


def test_a_session_behind_its_audio_renders_every_other_frame_until_it_catches_up(pipe, source, motion_frames):
    """With `max_lag`, a hop committed more than that after its audio came renders only every k-th frame (the later,
    the larger k) and repeats the picture before; a session that keeps up renders every frame, whether its audio
    comes in 20 ms or 200 ms pieces."""
    samples = voice(4.0, seed=7)
    everything = stream(pipe, source, [samples], 16000, **LIVE)
    clock = TestClock()
    slow = StreamingSession(pipe, source, sample_rate=16000, max_lag=0.2, clock=clock, **LIVE, **FAST)
    frames = paced_run(slow, clock, samples, seconds_per_picture=0.08)  # pictures at half real time
    assert [f.index for f in frames] == list(range(100)) == [f.index for f in everything]
    assert frames[0].rendered and 20 <= sum(not f.rendered for f in frames) <= 80
    for before, frame, truth in zip(frames, frames[1:], everything[1:]):
        if frame.rendered:
            assert np.array_equal(frame.image, truth.image)  # the frames it renders are the session's own
        else:
            assert np.array_equal(frame.image, before.image)
    clock = TestClock()
    far = StreamingSession(pipe, source, sample_rate=16000, max_lag=0.05, clock=clock, **LIVE, **FAST)
    drawn = [f.index for f in paced_run(far, clock, samples, seconds_per_picture=2.0) if f.rendered]
    assert 25 in np.diff(drawn)  # far behind: one picture in 25 (the most it skips), whole hops repeat
    for piece_seconds in (0.02, 0.2):  # keeping up: pictures at twice real time, audio in pieces of up to a hop
        clock = TestClock()
        fast = StreamingSession(pipe, source, sample_rate=16000, max_lag=0.2, clock=clock, **LIVE, **FAST)
        kept_up = paced_run(fast, clock, samples, seconds_per_picture=0.02, piece_seconds=piece_seconds)
        assert len(kept_up) == 100 and all(f.rendered for f in kept_up), piece_seconds


def test_render_workers_do_not_change_the_frames(pipe, source, motion_frames):
    """Parts rendered by two workers come back whole and in order. Each "frame" is its motion latent, and any two
    differ by over 1 somewhere, so a dropped, repeated or swapped part shows. Beside two workers the session samples
    on one thread instead of two, which moves the latents by float rounding (7e-7 measured), hence the tolerance;
    rendered pixels would hide all of this, as the tiny renderer draws the same picture for every latent."""
    samples = voice(1.2, seed=9)
    one = stream(pipe, source, [samples], 16000, **LIVE, render_workers=1)
    two = stream(pipe, source, np.array_split(samples, 7), 16000, **LIVE, render_workers=2)
    assert len(one) == len(two) == 30
    first, second = np.stack([f.image for f in one]), np.stack([f.image for f in two])
    assert min(np.abs(first[i] - first[j]).max() for i in range(30) for j in range(i)) > 1
    np.testing.assert_allclose(second, first, rtol=0, atol=1e-5)
    assert all(f.rendered for f in two)


@pytest.fixture
def held_renders(pipe, monkeypatch):
    """The render workers draw nothing until the event returned is set."""
    import threading

    release = threading.Event()
    render_frames = pipe.render_frames

    def held_render(*args, **kwargs):
        release.wait(10)
        return render_frames(*args, **kwargs)

    monkeypatch.setattr(pipe, "render_frames", held_render)
    return release


def test_waiting_input_stops_the_frames_before_a_render_and_nothing_is_lost(pipe, source, held_renders):
    """With audio waiting (`input_waiting`) and the next hop's audio not all in, iterating a push stops instead of
    waiting for a render still running, so the caller can push what came (the next hop is then sampled while the
    workers draw); the frames come from the next call, in order and the same as a session that always waits."""
    samples = voice(1.2, seed=11)
    held_renders.set()
    expected = stream(pipe, source, [samples], 16000, **LIVE, render_workers=1)
    held_renders.clear()
    waiting = [True]
    session = StreamingSession(pipe, source, sample_rate=16000, render_workers=1, input_waiting=lambda: waiting[0],
                               **LIVE, **FAST)
    first, second = np.array_split(samples, 2)  # 15 frames: hops 0 and 1 are in, hop 2 lacks its look-ahead
    assert list(session.push(first)) == []
    waiting[0] = False
    held_renders.set()
    frames = list(session.push(second)) + list(session.finish())
    assert [f.index for f in frames] == list(range(30))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, expected))


def test_audio_sent_faster_than_real_time_waits_outside(pipe, source, held_renders):
    """A session that holds its next hop's audio waits for its renders whatever waits outside, so a caller sending
    faster than real time is held back (and bounds what it queues), not drained into the session."""
    import threading

    session = StreamingSession(pipe, source, sample_rate=16000, render_workers=1, input_waiting=lambda: True,
                               **LIVE, **FAST)
    threading.Timer(0.2, held_renders.set).start()
    frames = list(session.push(voice(2.0, seed=12)))
    # it waited for every hop whose next hop's audio it held (hops 0-6); past that, it asks for audio again
    assert len(frames) >= 35
    assert [f.index for f in frames + list(session.finish())] == list(range(50))


def test_a_waiting_interrupt_stops_the_frames_at_once(pipe, source, held_renders):
    interrupted = [True]
    session = StreamingSession(pipe, source, sample_rate=16000, render_workers=1,
                               interrupt_waiting=lambda: interrupted[0], **LIVE, **FAST)
    assert list(session.push(voice(2.0, seed=13))) == []  # its next hop's audio is in, yet it stops
    held_renders.set()
    blend = list(session.interrupt())
    assert [f.index for f in blend] == []  # nothing was shown: nothing to ease back from
    interrupted[0] = False
    assert list(session.finish()) == []  # the speech not shown was dropped


def test_frames_left_for_waiting_input_come_from_resume_when_nothing_is_pushed(pipe, source, held_renders):
    """A blend left for later because audio waited (audio the caller then drops: it was sent before the
    interrupt) comes from `resume`, without another push."""
    waiting = [False]
    session = StreamingSession(pipe, source, sample_rate=16000, render_workers=1, input_waiting=lambda: waiting[0],
                               **LIVE, **FAST)
    held_renders.set()
    speech = session.push(voice(2.0, seed=14))
    shown = [next(speech).index for _ in range(7)]
    held_renders.clear()
    waiting[0] = True
    assert list(session.interrupt()) == []  # its render is not done and audio waits: the caller goes first
    waiting[0] = False
    held_renders.set()
    blend = list(session.resume())
    assert shown == list(range(7))
    assert [f.index for f in blend] == list(range(7, 7 + session.blend_frames))
    assert all(f.rendered for f in blend)
    assert list(session.resume()) == [] and list(session.finish()) == []


def test_the_session_samples_on_one_thread_beside_several_render_workers(pipe):
    """Beside two single-threaded render workers the session's own work (features, the generator) computes on one
    OpenMP thread, then the thread's count is back; beside one worker nothing changes."""
    import threading

    import torch

    before = torch.get_num_threads()
    asked, answered, other_thread = threading.Event(), threading.Event(), []

    def another_thread():  # e.g. another job's worker: its own count
        torch.get_num_threads()
        asked.wait(10)
        other_thread.append(torch.get_num_threads())
        answered.set()

    thread = threading.Thread(target=another_thread)
    thread.start()
    with pipe.render_pool(2).beside_workers():
        assert torch.get_num_threads() == 1
        asked.set()
        answered.wait(10)
    thread.join()
    assert other_thread == [before]
    assert torch.get_num_threads() == before
    with pipe.render_pool(1).beside_workers():
        assert torch.get_num_threads() == before
