"""POST /v1/webrtc, tested in process on loopback with an aiortc client: the face's video and the speech's audio
arrive together (idle frames from the start, the caller's speech coming back in its audio), an interrupt on the data
channel is taken, bad offers are JSON errors, and the session ends (worker free) when the peer goes away."""

from __future__ import annotations

import asyncio
import base64
import fractions
import time

import httpx
import numpy as np
import pytest

aiortc = pytest.importorskip("aiortc", reason="WebRTC needs the webrtc extra (in dev)")
from aiortc import RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError  # noqa: E402
import av  # noqa: E402

from helpers.server import FAST, pcm16, voice  # noqa: E402

RATE = 48000
PTIME = 0.02


class SpeechTrack(AudioStreamTrack):
    """The caller's microphone: 20 ms frames at real-time pace, silence until `speech_at` s, then the speech."""

    def __init__(self, speech: np.ndarray, speech_at: float):
        super().__init__()
        self.pcm = np.concatenate([np.zeros(round(speech_at * RATE), np.int16), pcm16(speech)])
        self.sent = 0

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        step = round(PTIME * RATE)
        if self.sent == 0:
            self.start = time.time()
        else:
            await asyncio.sleep(self.start + self.sent / RATE - time.time())
        piece = self.pcm[self.sent:self.sent + step]
        piece = np.concatenate([piece, np.zeros(step - piece.size, np.int16)])
        frame = av.AudioFrame.from_ndarray(piece[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.sent, fractions.Fraction(1, RATE)
        self.sent += step
        return frame


async def call(url: str, portrait: bytes, seconds: float, interrupt_at: float | None = None) -> dict:
    """Offer, play `seconds` of a call (speech from 0.6 s to 1.6 s), then hang up; what arrived, when."""
    pc = RTCPeerConnection()
    pc.addTrack(SpeechTrack(voice(1.0, RATE), speech_at=0.6))
    pc.addTransceiver("video", direction="recvonly")
    channel = pc.createDataChannel("control")
    got = {"video": [], "audio": []}  # (arrival, frame)

    async def read(track):
        try:
            while True:
                got[track.kind].append((time.perf_counter(), await track.recv()))
        except MediaStreamError:
            pass

    readers = []
    pc.on("track", lambda track: readers.append(asyncio.ensure_future(read(track))))
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=60) as client:
        reply = await client.post(f"{url}/v1/webrtc", json={
            "type": "offer", "sdp": pc.localDescription.sdp, "portrait": base64.b64encode(portrait).decode(),
            "options": {**FAST, "crop": False}})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    started = time.perf_counter()
    if interrupt_at is not None:
        await asyncio.sleep(interrupt_at)
        channel.send("interrupt")
    await asyncio.sleep(seconds - (time.perf_counter() - started))
    await pc.close()
    for reader in readers:
        reader.cancel()
    return {**got, "id": answer["id"]}


def test_video_and_audio_arrive_in_sync_and_the_session_ends_with_the_peer(server, drawn_png):
    got = asyncio.run(call(server.url, drawn_png, seconds=4.0))
    video, audio = got["video"], got["audio"]
    assert len(video) >= 20 and video[0][1].width == 128  # frames flow from the start, idle or not (CPU-bound)
    # in sync: whenever a picture arrives, the sound received so far is within 0.2 s of it in media time
    seconds_of_audio, skew = 0.0, []
    arrivals = iter(audio)
    pending = next(arrivals, None)
    for k, (at, _) in enumerate(video):
        while pending is not None and pending[0] <= at:
            seconds_of_audio += pending[1].samples / pending[1].sample_rate
            pending = next(arrivals, None)
        skew.append(seconds_of_audio - (k + 1) / 25)
    # the audio arrives a steady ~0.1 s behind (aiortc's receiving jitter buffer prefetches four 20 ms packets): that
    # offset stays under 0.2 s, and the skew moves from it by less than 0.15 s (no drift, no jumps; a loaded machine
    # delays single packets by up to ~0.1 s)
    skew = np.array(skew[10:])
    offset = np.median(skew)
    assert abs(offset) < 0.2 and np.abs(skew - offset).max() < 0.15, skew.round(3).tolist()
    # the caller's speech comes back in the avatar's audio: silence first (idle), then the voice
    sound = np.concatenate([frame.to_ndarray().reshape(-1) for _, frame in audio]).astype(np.float32) / 32768
    rate, loud = audio[0][1].sample_rate, np.abs(sound) > 0.05
    assert loud.any() and not loud[:round(0.3 * rate) * audio[0][1].layout.nb_channels].any()
    deadline = time.monotonic() + 10  # the peer is gone: its worker stops and the job is let go
    while time.monotonic() < deadline and (server.state.jobs.stats()["running"] or server.app.state.webrtc_peers):
        time.sleep(0.1)
    assert server.state.jobs.stats()["running"] == 0



@pytest.mark.parametrize("body, status, word", [
    ({"type": "answer", "sdp": "v=0"}, 400, "offer"),
    ({"type": "offer", "sdp": "nonsense", "portrait": "bm90IGFuIGltYWdl"}, 422, "portrait"),
    ({"type": "offer", "sdp": "v=0", "portrait": "x", "options": {"hop": 0}}, 422, "hop"),
    ({"type": "offer", "sdp": "v=0", "colour": "blue"}, 400, "colour"),
])
def test_bad_offers_are_json_errors(server, body, status, word):
    reply = httpx.post(f"{server.url}/v1/webrtc", json=body, timeout=30)
    assert reply.status_code == status and word in reply.json()["message"]


def test_interrupt_on_the_data_channel_cuts_the_speech(server, drawn_png):
    got = asyncio.run(call(server.url, drawn_png, seconds=3.0, interrupt_at=0.9))  # 0.3 s into the speech
    frames = [frame for _, frame in got["audio"]]
    sound = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames]).astype(np.float32) / 32768
    loud_back = (np.abs(sound) > 0.05).sum() / frames[0].sample_rate / frames[0].layout.nb_channels
    loud_sent = (np.abs(voice(1.0)) > 0.05).sum() / 16000
    assert 0 < loud_back < 0.7 * loud_sent  # some of the speech was said, the rest dropped
