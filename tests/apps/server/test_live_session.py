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


def test_frames_flow_without_audio_then_speech_takes_over_within_a_hop(live):
    idle = list(live.tick(now=1.0))  # nobody spoke for 1 s: 25 frames of silence; hops whose look-ahead is in
    assert [f.index for f in idle] == list(range(20))
    assert all(f.input_time is None and not f.audio.any() for f in idle)
    assert list(live.tick(now=1.1)) == []  # 0.1 s late is not yet silence (idle_after 0.2 s)

    speech = voice(1.0)
    talking = list(live.push(speech, now=1.1))
    # the speech lands at 1.0 s (frame 25); frames 20-24 are the rest of the silence, then the speech's frames
    # come as soon as each hop and its look-ahead are in: all but the last hop
    assert [f.index for f in talking] == list(range(20, 45))
    assert [f.input_time for f in talking[:5]] == [None] * 5
    assert [f.input_time for f in talking[5:]] == pytest.approx([k / 25 for k in range(20)])
    heard = np.concatenate([f.audio for f in talking[5:]])
    assert np.array_equal(heard, speech[:heard.size])  # each frame carries its own audio, exactly

    rest = list(live.tick(now=2.6))  # speech over, 0.6 s later: idle again, after the speech's last hop
    assert [f.index for f in rest][:5] == list(range(45, 50))
    assert all(f.input_time is not None for f in rest[:5])
    assert all(f.input_time is None for f in rest[5:]) and len(rest) > 5
    assert [f.timestamp for f in idle + talking + rest] == pytest.approx([k / 25 for k in range(len(rest) + 45)])
    final = list(live.finish())
    total = len(idle) + len(talking) + len(rest) + len(final)
    assert total == 65 and final[-1].index == 64  # the timeline: 2.6 s


def test_interrupt_blends_back_and_idles_on(live):
    list(live.tick(now=0.4))
    frames = []
    for frame in live.push(voice(2.0), now=0.4):
        frames.append(frame)
        if frame.input_time is not None and frame.input_time >= 0.2:
            break
    blend = list(live.interrupt())
    shown = frames[-1].index + 1
    assert [f.index for f in blend] == list(range(shown, shown + 6))
    assert all(f.input_time is None and not f.audio.any() for f in blend)
    after = list(live.tick(now=live.session.media_seconds + 0.5))  # no speech: idle frames continue
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
