"""LiveSession: frames flow from the start without audio (the generator's silence motion), speech takes over within
one hop of its audio, every frame carries its audio and where that audio is in the caller's input, interrupt goes
back to idle, and finish flushes."""

from __future__ import annotations

import numpy as np
import pytest

from imtalker.constants import SAMPLES_PER_FRAME
from imtalker.errors import InputError
from imtalker.pipelines.live import LiveSession
from imtalker.pipelines.streaming import StreamingSession
from helpers.server import FAST, drawn_portrait, voice


@pytest.fixture(scope="module")
def source(pipe):
    return pipe.prepare_source(drawn_portrait(), crop=False)


@pytest.fixture
def live(pipe, source):
    return LiveSession(StreamingSession(pipe, source, hop=5, lookahead_frames=2, batch_size=5, **FAST))


def run_clock(live, start, stop):
    """Tick the session every 40 ms of its clock from `start` to `stop` s, as a caller with no speech waiting does."""
    return [frame for k in range(round(start * 25), round(stop * 25) + 1) for frame in live.tick(now=k / 25)]


def test_frames_flow_without_audio_then_speech_takes_over_within_a_hop(live, monkeypatch):
    silent_steps = []
    step = live.session._sampler.step
    monkeypatch.setattr(live.session._sampler, "step", lambda *args, silent=False, **kwargs: (
        silent_steps.append(silent), step(*args, silent=silent, **kwargs))[1])

    idle = run_clock(live, 0, 1.0)  # nobody speaks for 1 s: frames anyway, of silence, a hop at a time
    assert [f.index for f in idle] == list(range(len(idle))) and len(idle) >= 15
    assert all(f.input_time is None and not f.audio.any() for f in idle)
    assert 1.0 - 0.2 <= live.session.media_seconds <= 1.0  # silence fills in once the audio is 0.2 s late
    assert silent_steps and all(silent_steps)  # idle hops: the generator's motion without an audio condition

    # speech lands right after the last frame shown: the idle silence put in beyond it (for the next hops) is taken
    # back, so speech never waits behind idle frames
    lands = live.session.frames_done * SAMPLES_PER_FRAME
    assert live.timeline_samples > lands
    speech = voice(1.0)
    talking = list(live.push(speech))
    first = next(f for f in talking if f.input_time is not None)
    assert first.index == lands // SAMPLES_PER_FRAME
    assert first.input_time == pytest.approx(-(lands % SAMPLES_PER_FRAME) / 16000)
    # every hop whose audio and look-ahead (2 frames) are in is out: all but the last 2-6 frames of the speech
    assert (lands + speech.size) // SAMPLES_PER_FRAME - 7 <= talking[-1].index < (lands + speech.size) / 640 - 2
    assert not any(silent_steps[-3:])  # the speech's hops are sampled with its audio
    spoken = [f for f in talking if f.input_time is not None][1:]
    heard = np.concatenate([f.audio for f in spoken])
    offset = round(spoken[0].input_time * 16000)
    assert np.array_equal(heard, speech[offset:offset + heard.size])  # each frame carries its own audio, exactly

    now = live.session.media_seconds
    rest = run_clock(live, now, now + 1.0)  # speech over: the rest of it, then idle again
    spoken_rest = [f for f in rest if f.input_time is not None]
    assert spoken_rest and rest[:len(spoken_rest)] == spoken_rest and len(rest) > len(spoken_rest)
    timeline = idle + talking + rest
    assert [f.timestamp for f in timeline] == pytest.approx([k / 25 for k in range(len(timeline))])
    final = list(live.finish())
    assert (timeline + final)[-1].index == len(timeline + final) - 1


def test_interrupt_blends_back_and_idles_on(live):
    run_clock(live, 0, 0.4)
    frames = []
    for frame in live.push(voice(2.0)):
        frames.append(frame)
        if frame.input_time is not None and frame.input_time >= 0.2:
            break
    blend = list(live.interrupt())
    shown = frames[-1].index + 1
    assert [f.index for f in blend] == list(range(shown, shown + 6))
    assert all(f.input_time is None and not f.audio.any() for f in blend)
    now = live.session.media_seconds
    after = run_clock(live, now, now + 0.5)  # no speech: idle frames continue
    assert after and after[0].index == shown + 6 and all(f.input_time is None for f in after)
    again = [f for f in live.push(voice(0.4, seed=3)) if f.input_time is not None]
    # input time counts all the caller pushed; the speech may start part way into its first frame
    assert again and 2.0 - 0.04 < again[0].input_time <= 2.0


def test_bad_sessions_are_input_errors(pipe, source):
    with pytest.raises(InputError, match="16000 Hz"):
        LiveSession(StreamingSession(pipe, source, sample_rate=48000, hop=5, **FAST))
    used = StreamingSession(pipe, source, hop=5, **FAST)
    list(used.push(voice(0.5)))
    with pytest.raises(InputError, match="new StreamingSession"):
        LiveSession(used)
    with pytest.raises(InputError, match="idle_after"):
        LiveSession(StreamingSession(pipe, source, hop=5, **FAST), idle_after=-1)
    with pytest.raises(InputError, match="16000 Hz"):
        StreamingSession(pipe, source, sample_rate=48000, hop=5, **FAST).idle(640)
    finished = StreamingSession(pipe, source, hop=5, **FAST)
    list(finished.finish())
    with pytest.raises(InputError, match="finished"):
        finished.idle(640)
