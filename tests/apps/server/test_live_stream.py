"""WS /v1/stream with the live schedule: hop / lookahead options (checked before "ready"), frames every hop while
the audio is still coming, and {"type": "interrupt"}. Old clients (no new fields) are test_server.py's."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from websockets.sync.client import connect

from imtalker.apps.server.intake import HELD_BACK_SAMPLES
from imtalker.apps.server.render import unpack_frame
from imtalker.constants import LIVE_MAX_LAG_SECONDS
from helpers.server import FAST, pcm16, voice


@pytest.fixture
def start(drawn_png):
    def message(**options):
        return {"type": "start", "portrait": base64.b64encode(drawn_png).decode(), "sample_rate": 16000,
                "options": {**FAST, "crop": False, **options}}
    return message


def test_hop_frames_arrive_while_the_audio_is_still_coming(server, start):
    audio = pcm16(voice(1.0)).tobytes()
    with connect(f"{server.ws_url}/v1/stream", max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps(start(hop=5, lookahead=2)))
        ready = json.loads(ws.recv(timeout=60))
        assert (ready["hop_frames"], ready["lookahead_frames"], ready["chunk_frames"]) == (5, 2, 50)
        assert ready["max_lag"] == LIVE_MAX_LAG_SECONDS  # a live stream catches up (a 2-second one never: null)
        # the first hop's audio and its look-ahead, 0.28 s of a 1 s stream (and the 64 samples, 4 ms, that the
        # server holds back until "end" to fix the resampled length)
        first_hop = (7 * 640 + HELD_BACK_SAMPLES) * 2
        ws.send(audio[:first_hop])
        header, _ = unpack_frame(ws.recv(timeout=60))
        assert (header["index"], header["timestamp"]) == (0, 0.0)
        ws.send(audio[first_hop:])
        ws.send(json.dumps({"type": "end"}))
        headers = [header]
        while isinstance(message := ws.recv(timeout=60), bytes):
            headers.append(unpack_frame(message)[0])
        done = json.loads(message)
    assert done["type"] == "done" and done["frames"] == 25
    assert [h["index"] for h in headers] == list(range(25))
    assert all(h["timestamp"] == pytest.approx(h["index"] / 25) for h in headers)


def test_interrupt_drops_the_speech_and_blends_back(server, start):
    with connect(f"{server.ws_url}/v1/stream", max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps(start(hop=5)))
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"
        ws.send(pcm16(voice(3.0)).tobytes())
        first = unpack_frame(ws.recv(timeout=60))[0]
        ws.send(json.dumps({"type": "interrupt"}))
        messages = []
        while not (isinstance(messages[-1] if messages else b"", str)):
            messages.append(ws.recv(timeout=60))
        interrupted = json.loads(messages[-1])
        shown = interrupted["frames_shown"]
        assert interrupted["type"] == "interrupted" and first["index"] < shown < 75
        blend = [unpack_frame(ws.recv(timeout=60))[0] for _ in range(6)]
        assert [h["index"] for h in blend] == list(range(shown, shown + 6))
        assert interrupted["resume_timestamp"] == pytest.approx((shown + 6) / 25)
        ws.send(pcm16(voice(0.4, seed=2)).tobytes())
        ws.send(json.dumps({"type": "end"}))
        rest = []
        while isinstance(message := ws.recv(timeout=60), bytes):
            rest.append(unpack_frame(message)[0])
        done = json.loads(message)
    assert [h["index"] for h in rest] == list(range(shown + 6, shown + 6 + 10))  # the new audio only
    assert done["frames"] == shown + 6 + 10


def test_interrupt_sent_with_the_end_while_the_worker_waits_is_still_answered(server, start):
    """The worker waits for audio once every frame it could make is out; an interrupt and an "end" sent together
    then reach it at once, and the interrupt is answered first (not lost behind the end)."""
    with connect(f"{server.ws_url}/v1/stream", max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps(start(hop=5)))
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"
        ws.send(pcm16(voice(1.0)).tobytes())
        shown = []
        while True:  # every frame the audio so far allows, until the worker has nothing left to do
            try:
                shown.append(unpack_frame(ws.recv(timeout=3))[0]["index"])
            except TimeoutError:
                break
        assert shown == list(range(len(shown))) and 0 < len(shown) < 25
        ws.send(json.dumps({"type": "interrupt"}))
        ws.send(json.dumps({"type": "end"}))
        interrupted = json.loads(ws.recv(timeout=60))
        assert interrupted["type"] == "interrupted" and interrupted["frames_shown"] == len(shown)
        blend = []
        while isinstance(message := ws.recv(timeout=60), bytes):
            blend.append(unpack_frame(message)[0]["index"])
        done = json.loads(message)
    assert blend == list(range(len(shown), len(shown) + 6))  # the blend back to the source's face, in full
    assert done["type"] == "done" and done["frames"] == len(shown) + 6


@pytest.mark.parametrize("options, field", [({"hop": 0}, "hop"), ({"hop": 51}, "hop"), ({"hop": "five"}, "hop"),
                                            ({"hop": 5, "lookahead": -1}, "lookahead"),
                                            ({"lookahead": 26}, "lookahead"), ({"hops": 5}, "hops"),
                                            ({"hop": 5, "max_lag": -1}, "max_lag"), ({"max_lag": "soon"}, "max_lag"),
                                            ({"pose": "turn:-20..20deg"}, "known length"),
                                            ({"gaze": "nod"}, "gaze: cannot read")])
def test_bad_hop_and_lookahead_are_json_errors(server, start, options, field):
    with connect(f"{server.ws_url}/v1/stream", open_timeout=30) as ws:
        ws.send(json.dumps(start(**options)))
        reply = json.loads(ws.recv(timeout=30))
    assert (reply["type"], reply["status"], reply["error"]) == ("error", 422, "bad_input")
    assert field in reply["message"]


def read_until_done(ws):
    """(frame headers, audio messages {timestamp: int16 samples}, text replies) up to "done"."""
    frames, audio, replies = [], {}, []
    while True:
        message = ws.recv(timeout=60)
        if isinstance(message, str):
            replies.append(json.loads(message))
            if replies[-1]["type"] in ("done", "error") and replies[-1].get("fatal") is not False:
                return frames, audio, replies
            continue
        header, payload = unpack_frame(message)
        if header["type"] == "audio":
            audio[header["timestamp"]] = np.frombuffer(payload, "<i2")
        else:
            frames.append(header)


def test_always_on_stream_idles_talks_and_sends_the_audio_back(server, start):
    speech = pcm16(voice(0.8))
    with connect(f"{server.ws_url}/v1/stream", max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps({**start(), "idle": True, "audio_out": True}))
        ready = json.loads(ws.recv(timeout=60))
        assert (ready["idle"], ready["audio_out"], ready["hop_frames"], ready["audio_sample_rate"]) == (
            True, True, 5, 16000)
        idle = []  # nobody speaks: frames flow anyway, each after its 40 ms of (silent) audio
        while len(idle) < 10:
            header, payload = unpack_frame(ws.recv(timeout=60))
            idle.append((header, payload))
        assert [h["type"] for h, _ in idle] == ["audio", "frame"] * 5
        assert all(h["input_time"] is None for h, _ in idle[1::2])
        assert all(len(p) == 1280 and not any(p) for _, p in idle[::2])
        assert [h["timestamp"] for h, _ in idle[::2]] == [h["timestamp"] for h, _ in idle[1::2]] == [
            0.0, 0.04, 0.08, 0.12, 0.16]
        ws.send(speech.tobytes())
        ws.send(json.dumps({"type": "end"}))
        frames, audio, replies = read_until_done(ws)
    assert replies[-1]["type"] == "done"
    frames = [h for h, _ in idle[1::2]] + frames
    assert [h["index"] for h in frames] == list(range(len(frames)))
    # 0.8 s of speech: 20 frames (the first may start part way into a frame; the server holds the last 4 ms back
    # until "end", so they may come after some idle frames)
    spoken = [h for h in frames if h["input_time"] is not None and h["input_time"] < 0.76]
    assert len(spoken) >= 19 and spoken[-1]["index"] - spoken[0]["index"] == len(spoken) - 1
    # the audio sent back is the speech, where its frames are: within one step of 16-bit rounding
    offset = round(spoken[1]["input_time"] * 16000)
    back = np.concatenate([audio[h["timestamp"]] for h in spoken[1:]])
    assert np.abs(back.astype(int) - speech[offset:offset + back.size]).max() <= 1


def test_bad_control_messages_are_answered_and_the_stream_goes_on(server, start):
    with connect(f"{server.ws_url}/v1/stream", max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps({**start(), "idle": True}))
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"
        ws.send("not json")
        ws.send(json.dumps({"type": "dance"}))
        ws.send(pcm16(voice(0.3)).tobytes())
        ws.send(json.dumps({"type": "end"}))
        frames, _, replies = read_until_done(ws)
    errors = [r for r in replies if r["type"] == "error"]
    assert [(e["status"], e["error"], e["fatal"]) for e in errors] == [(400, "bad_request", False)] * 2
    assert replies[-1]["type"] == "done" and frames


def test_audio_out_needs_an_always_on_stream(server, start):
    with connect(f"{server.ws_url}/v1/stream", open_timeout=30) as ws:
        ws.send(json.dumps({**start(), "audio_out": True}))
        reply = json.loads(ws.recv(timeout=30))
    assert (reply["type"], reply["status"]) == ("error", 422) and "idle" in reply["message"]
