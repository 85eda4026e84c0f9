"""POST /v1/webrtc: the always-on live session over WebRTC (aiortc, the `webrtc` extra; docs/streaming.md).

    client -> server  POST JSON {"type": "offer", "sdp": ..., "portrait": <base64> | "portrait_id": ...,
                                  "options": {"nfe": 5, "seed": 0, "hop": 5, "lookahead": 2, ...}}
    server -> client  200 JSON  {"type": "answer", "sdp": ..., "id": ...}
    then, peer to peer: the caller's audio track in; a video track (the face, 25 fps) and an audio track (the speech
    the face says, in step with it) out; a data channel may send "interrupt". The session ends when the peer goes.

One `LivePeer` per caller: the caller's audio is resampled to 16 kHz into an `AudioInbox`; a worker thread runs a
`LiveSession` (idle motion while nobody speaks) and hands each frame to both outgoing tracks through bounded queues
(a peer that stops taking frames slows its own worker, never another's); the tracks play the frames on one clock, so
picture and sound leave together, and RTP carries their media times.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from starlette.concurrency import run_in_threadpool

from ...constants import FPS, LIVE_HOP_FRAMES, LIVE_MAX_LAG_SECONDS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ...errors import InputError
from ...pipelines.live import LiveSession
from ...pipelines.streaming import StreamingSession, head_motion_descriptions, live_schedule
from .errors import ApiError
from .inputs import parse_int, parse_options
from .intake import END, AudioInbox
from .jobs import Job, QueueFull
from .sources import resolve_portrait
from .state import ServerState, busy
from .stream import IDLE_POLL_SECONDS, MAX_LOOKAHEAD_FRAMES, OUTBOX_FRAMES, SCHEDULE_OPTIONS, hand_over, parse_base64

logger = logging.getLogger(__name__)

OFFER_FIELDS = ("type", "sdp", "portrait", "portrait_id", "options")
VIDEO_CLOCK = 90000  # RTP's video clock rate
AUDIO_PIECE_SAMPLES = SAMPLE_RATE // 50  # 20 ms: one Opus packet
RESYNC_SECONDS = 0.5  # tracks this far behind their clock start again from now instead of rushing to catch up


async def answer_offer(state: ServerState, offer: Any, peers: set) -> dict[str, str]:
    """Check an offer, start its live session and return the SDP answer (the session starts queued on a worker)."""
    if not isinstance(offer, dict) or offer.get("type") != "offer" or not isinstance(offer.get("sdp"), str):
        raise ApiError(400, "bad_request", 'the body must be JSON {"type": "offer", "sdp": ..., "portrait": ...}')
    unknown = sorted(set(offer) - set(OFFER_FIELDS))
    if unknown:
        raise ApiError(400, "bad_request", f"unknown fields {unknown}; known: {list(OFFER_FIELDS)}")
    if not isinstance(offer.get("options", {}), dict):
        raise InputError("options must be a JSON object")
    options, schedule_values = parse_options(offer.get("options", {}), extra=SCHEDULE_OPTIONS)
    head_motion_descriptions(**options.head_motion())  # a live stream refuses ramps up front
    clip = state.pipeline.generator.config.clip_frames
    hop = parse_int(schedule_values.get("hop"), "hop", LIVE_HOP_FRAMES, 1, clip)
    lookahead = parse_int(schedule_values.get("lookahead"), "lookahead", None, 0, MAX_LOOKAHEAD_FRAMES)
    schedule = live_schedule(hop, lookahead, None, clip)
    data = parse_base64(offer["portrait"]) if offer.get("portrait") is not None else None
    portrait_id = offer.get("portrait_id")
    if portrait_id is not None and not isinstance(portrait_id, str):
        raise InputError("portrait_id must be a string")
    if not state.jobs.has_room():
        raise busy(state)
    portrait = await run_in_threadpool(resolve_portrait, state.sources, options, state.settings.max_image_pixels,
                                       data, portrait_id)
    peer = LivePeer(state, peers)
    try:
        answer = await peer.answer(offer["sdp"])
        peer.start(options, portrait, schedule.hop, schedule.lookahead)
    except QueueFull:
        await peer.close()
        raise busy(state) from None
    except ValueError as err:  # aiortc's word for an SDP it cannot use
        await peer.close()
        raise ApiError(400, "bad_request", f"the offer cannot be answered: {err}") from None
    return {"type": answer.type, "sdp": answer.sdp, "id": peer.job.id}


async def close_peers(peers: set) -> None:
    """Close every peer (the server is stopping)."""
    await asyncio.gather(*(peer.close() for peer in list(peers)), return_exceptions=True)


class PlayoutClock:
    """When each media time is due: the first frame asked for starts the clock; a track that falls more than
    `RESYNC_SECONDS` behind moves the clock on (both tracks share it, so they stay together)."""

    def __init__(self):
        self.start: float | None = None

    async def wait(self, timestamp: float) -> None:
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time() - timestamp
        delay = self.start + timestamp - loop.time()
        if delay < -RESYNC_SECONDS:
            self.start -= delay
        elif delay > 0:
            await asyncio.sleep(delay)


class LiveTrack(MediaStreamTrack):
    """One outgoing track: the peer's frames, as video pictures or as their audio, each at its media time.

    A frame's 40 ms of audio leaves as two 20 ms pieces: aiortc's Opus encoder makes one packet per 20 ms and
    sends all packets of one input frame with the same RTP timestamp, which a receiver takes for duplicates.
    """

    def __init__(self, kind: str, peer: "LivePeer"):
        super().__init__()
        self.kind, self.peer = kind, peer
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=OUTBOX_FRAMES)
        self._audio_pieces: list[tuple[float, av.AudioFrame]] = []

    async def recv(self):
        if self.kind == "audio" and self._audio_pieces:
            timestamp, out = self._audio_pieces.pop(0)
            await self.peer.clock.wait(timestamp)
            return out
        frame = await self.queue.get()
        if frame is None:  # the session ended
            self.stop()
            raise MediaStreamError
        if self.kind == "video":
            out = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
            out.pts, out.time_base = frame.index * (VIDEO_CLOCK // FPS), fractions.Fraction(1, VIDEO_CLOCK)
            await self.peer.clock.wait(frame.timestamp)
            return out
        pcm = (np.clip(frame.audio, -1, 1) * 32767).astype(np.int16)  # (640,) mono s16
        for start in range(0, SAMPLES_PER_FRAME, AUDIO_PIECE_SAMPLES):
            out = av.AudioFrame.from_ndarray(pcm[None, start:start + AUDIO_PIECE_SAMPLES], format="s16",
                                             layout="mono")
            out.sample_rate, out.pts = SAMPLE_RATE, frame.index * SAMPLES_PER_FRAME + start
            out.time_base = fractions.Fraction(1, SAMPLE_RATE)
            self._audio_pieces.append((frame.timestamp + start / SAMPLE_RATE, out))
        return await self.recv()


class LivePeer:
    """One WebRTC caller and its live session (module docstring)."""

    def __init__(self, state: ServerState, peers: set):
        self.state, self.peers = state, peers
        self.loop = asyncio.get_running_loop()
        self.pc = RTCPeerConnection()
        self.inbox = AudioInbox(max(1, round(state.settings.ws_buffer_seconds * SAMPLE_RATE)), self.loop)
        self.video, self.audio = LiveTrack("video", self), LiveTrack("audio", self)
        self.clock = PlayoutClock()
        self.job: Job | None = None
        self.interrupts = 0  # set on the event loop's thread, read on the worker's
        self.input_seconds = 0.0
        self.closed = False
        self._tasks: set[asyncio.Task] = set()
        peers.add(self)

        @self.pc.on("track")
        def on_track(track):
            if track.kind == "audio":
                self._spawn(self._receive_audio(track))

        @self.pc.on("datachannel")
        def on_datachannel(channel):
            @channel.on("message")
            def on_message(message):
                if message == "interrupt":
                    self.interrupts += 1
                else:  # answered, and the session goes on
                    channel.send('{"type": "error", "error": "bad_request", "message": "send \\"interrupt\\"", '
                                 '"fatal": false}')

        @self.pc.on("connectionstatechange")
        async def on_state():
            if self.pc.connectionState in ("failed", "closed"):
                await self.close()

    async def answer(self, sdp: str) -> RTCSessionDescription:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        self.pc.addTrack(self.video)
        self.pc.addTrack(self.audio)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription

    def start(self, options, portrait, hop: int, lookahead: int) -> None:
        self.job = Job("webrtc", lambda job: self._work(job, options, portrait, hop, lookahead))
        self.state.jobs.submit(self.job)
        self.state.metrics.stream_started()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.peers.discard(self)
        if self.job is not None:
            self.job.cancel()
            self.state.jobs.forget(self.job.id)
            self.state.metrics.stream_ended()
        self.inbox.close()
        for task in self._tasks:
            task.cancel()
        await self.pc.close()

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _receive_audio(self, track) -> None:
        """The caller's audio (Opus decoded by aiortc, 48 kHz) -> 16 kHz mono float32 -> the inbox."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        try:
            while True:
                frame = await track.recv()
                self.input_seconds += frame.samples / frame.sample_rate
                for piece in resampler.resample(frame):
                    await self.inbox.put(piece.to_ndarray()[0].astype(np.float32) / 32768.0)
        except MediaStreamError:  # the caller stopped sending: the face idles on until the peer goes
            pass

    # -- the worker's side --------------------------------------------------------------------------------------

    def _work(self, job: Job, options, portrait, hop: int, lookahead: int) -> None:
        settings = self.state.settings
        try:
            session = StreamingSession(
                self.state.pipeline, portrait.prepare(self.state.sources), paste_back=options.paste_back,
                batch_size=settings.batch_size, context_frames=settings.context_frames, hop=hop,
                lookahead_frames=lookahead, max_lag=LIVE_MAX_LAG_SECONDS, **options.sampler_options(),
                **options.head_motion(), input_waiting=lambda: self.inbox.waiting,
                interrupt_waiting=lambda: self.interrupts > handled)
            live, clock, handled = LiveSession(session), time.monotonic(), 0
            while True:
                if self.interrupts > handled:
                    handled = self.interrupts
                    self._hand_over(job, live.interrupt())
                item, arrived_at = self.inbox.get_with_time(timeout=IDLE_POLL_SECONDS)
                job.check()
                now = time.monotonic() - clock
                if item is END or now > settings.max_audio_seconds:  # the peer went, or the session is too long
                    break
                frames = live.tick(now) if item is None else live.push(item, arrived_at=arrived_at)
                self._hand_over(job, frames, handled)
        finally:
            for track in (self.video, self.audio):  # the tracks end after the frames they hold
                self.loop.call_soon_threadsafe(_put_last, track.queue)

    def _hand_over(self, job: Job, frames, handled: int | None = None) -> None:
        """Each frame to both tracks, waiting while they are full; a new interrupt stops the speech's frames."""
        for frame in frames:
            hand_over(self.loop, self.video.queue, frame, job)
            hand_over(self.loop, self.audio.queue, frame, job)
            self.state.metrics.add_frames(1)
            job.frames_done += 1
            if handled is not None and self.interrupts > handled:
                return


def _put_last(queue: asyncio.Queue) -> None:
    """The end marker, in place of the oldest frame if the queue is full (the session is over anyway)."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(None)

