"""WS /v1/stream: live talking video from audio sent in pieces (the protocol is in docs/streaming.md).

    client -> server  text   {"type": "start", "portrait": <base64> | "portrait_id": <id>, "sample_rate": 48000,
                              "format": "s16le", "options": {..., "hop": 5, "lookahead": 2, "max_lag": 0.2},
                              "image_format": "jpeg",
                              "jpeg_quality": 85, "idle": false, "audio_out": false}
    server -> client  text   {"type": "ready", "id": ..., "fps": 25, "width": ..., "height": ..., ...}
    client -> server  binary PCM, any number of bytes per message, as often as it likes
    server -> client  binary [4-byte big-endian n][n bytes JSON {"type": "frame", "index", "timestamp"}][image]
                      ("repeated": true: the picture before again, while a live stream catches up)
                      ("idle": true: frames from the start, with "input_time"; "audio_out": true: before each frame
                      [n][{"type": "audio", "timestamp"}][640 samples of 16 kHz s16le])
    server -> client  text   {"type": "error", ..., "fatal": false} for a bad control message; the stream goes on
    client -> server  text   {"type": "interrupt"} (any number of times): drop the speech not shown yet
    server -> client  text   {"type": "interrupted", "frames_shown": n, "resume_timestamp": t}, then the blend frames
    client -> server  text   {"type": "end"}
    server -> client  text   {"type": "done", "frames": N, "duration": N / 25, ...}, then close 1000
    on any error      text   {"type": "error", "status": 4xx/5xx, "error": code, "message": ...}, then close

Three parties: this coroutine's receiver (PCM converted to 16 kHz float32 as it arrives, into an inbox bounded in
samples: a client sending faster than its stream renders waits, as the server stops reading its socket), a worker
thread running a `StreamingSession` (frames into a bounded outbox, so a slow client slows the render instead of
filling memory), and the sender (outbox to the socket). A client that disconnects, goes quiet for `ws_idle_seconds` before "end",
stops reading frames for as long, or breaks the protocol cancels the job, and the worker is free again within one
render batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import base64
import binascii
import concurrent.futures
import json
import logging
import time
from typing import Any

import numpy as np
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ...constants import FPS, LIVE_HOP_FRAMES, LIVE_MAX_LAG_SECONDS, SAMPLE_RATE
from ...errors import InputError
from ...pipelines.live import LiveFrame, LiveSession
from ...pipelines.streaming import SAMPLE_FORMATS, StreamingSession, head_motion_descriptions, live_schedule
from .errors import ApiError
from .inputs import parse_bool, parse_float, parse_int, parse_options
from .intake import END, AudioInbox, PcmIntake
from .jobs import Job, JobCancelled, QueueFull
from .metrics import return_free_memory
from .render import IMAGE_FORMATS, encode_image, pack_frame
from .sources import Portrait, resolve_portrait
from .state import ServerState, busy

logger = logging.getLogger(__name__)

OUTBOX_FRAMES = 16  # frames rendered ahead of a slow client at most
INLINE_CONVERT_BYTES = 16 * 1024  # smaller PCM pieces (a microphone's) are converted without a thread hop
SHUTDOWN_RETRY_SECONDS = 5
TRIM_AFTER_BYTES = 4 * 1024 * 1024  # a stream that took more audio than this returns freed memory when it ends
POLL_SECONDS = 0.2  # how often a waiting worker looks at its job's cancel flag
MAX_LOOKAHEAD_FRAMES = 25  # 1 s: more only adds latency to a live stream
SCHEDULE_OPTIONS = ("hop", "lookahead", "max_lag")  # stream-only options, beside the generation options
MAX_LAG_SECONDS = 10.0  # the most a stream may ask to fall behind before it catches up
START_FIELDS = ("type", "portrait", "portrait_id", "sample_rate", "format", "options", "image_format",
                "jpeg_quality", "api_key", "idle", "audio_out")
IDLE_POLL_SECONDS = 0.04  # how often an always-on stream's worker looks at the clock when no audio comes (a frame)
FAIL_SEND_SECONDS = 5.0  # the error message to a client that does not read is given up on after this long


async def serve_stream(websocket: WebSocket, state: ServerState) -> None:
    await websocket.accept()
    await _Stream(websocket, state).run()


class _Stream:
    def __init__(self, websocket: WebSocket, state: ServerState):
        self.ws, self.state, self.settings = websocket, state, state.settings
        self.loop = asyncio.get_running_loop()
        self.inbox = AudioInbox(max(1, round(self.settings.ws_buffer_seconds * SAMPLE_RATE)), self.loop)
        self.intake: PcmIntake | None = None
        self.outbox: asyncio.Queue = asyncio.Queue(maxsize=OUTBOX_FRAMES)
        self.job: Job | None = None
        self.audio_bytes = 0
        self.idle = self.audio_out = False  # an always-on stream (LiveSession), and its audio sent with the frames
        # interrupts: the receiver records how many samples were queued before the latest one, then counts it; the
        # worker drops the queued speech up to there (set on the event loop's thread, read on the worker's)
        self.samples_queued = 0
        self.interrupt_cutoff = 0
        self.interrupts = 0
        self.seconds_before_intake = 0.0  # audio taken by the intakes an interrupt replaced

    async def run(self) -> None:
        self.state.metrics.stream_started()
        try:
            start = await self._start()
            await self._exchange(start)
        except ApiError as err:
            await self._fail(err)
        except InputError as err:
            await self._fail(ApiError.from_input(err))
        except _ClientGone:
            pass
        except Exception as err:  # never leave the socket open on a bug; the message says what happened
            logger.exception("stream failed")
            await self._fail(ApiError(500, "internal", f"{type(err).__name__}: {err}"))
        finally:
            if self.job is not None:
                self.job.cancel()
                self.state.jobs.forget(self.job.id)
                self.job = None  # the job's closure refers back to this stream: no cycle left to wait for
            self.inbox.close()  # drops the audio held and wakes a worker waiting for it
            if self.intake is not None:
                self.intake.close()
            self.state.metrics.stream_ended()
            if self.audio_bytes > TRIM_AFTER_BYTES:  # not awaited: this stream must be gone to be collected
                with contextlib.suppress(RuntimeError):  # the pool is shut down: the server is stopping
                    self.state.intake_pool.submit(return_free_memory)

    # -- start ----------------------------------------------------------------------------------------------

    async def _start(self) -> dict[str, Any]:
        self.state.check_origin(self.ws.headers)
        message = await self._receive(self.settings.ws_idle_seconds)
        if message.get("text") is None:
            raise ApiError(400, "bad_request", "the first message must be the JSON start message")
        start = _json(message["text"])
        if start.get("type") != "start":
            raise ApiError(400, "bad_request", 'the first message must have "type": "start"')
        unknown = sorted(set(start) - set(START_FIELDS))
        if unknown:
            raise ApiError(400, "bad_request", f"unknown start fields {unknown}; known: {list(START_FIELDS)}")
        self.state.authorize(self.ws.headers, start.get("api_key"))
        if not self.state.jobs.has_room():
            raise busy(self.state)
        if not isinstance(start.get("options", {}), dict):
            raise ApiError(400, "bad_request", "options must be a JSON object")
        options, schedule_values = parse_options(start.get("options", {}), extra=SCHEDULE_OPTIONS)
        head_motion_descriptions(**options.head_motion())  # a live stream refuses ramps up front
        idle = parse_bool(start.get("idle"), "idle", False)
        audio_out = parse_bool(start.get("audio_out"), "audio_out", False)
        if audio_out and not idle:
            raise InputError('audio_out needs "idle": true (the always-on session carries each frame\'s audio)')
        clip = self.state.pipeline.generator.config.clip_frames
        hop = parse_int(schedule_values.get("hop"), "hop", None, 1, clip)
        lookahead = parse_int(schedule_values.get("lookahead"), "lookahead", None, 0, MAX_LOOKAHEAD_FRAMES)
        if idle and hop is None:
            hop = LIVE_HOP_FRAMES  # an always-on stream is live: 200 ms hops unless the client says otherwise
        if hop is None and lookahead is None:
            lookahead = self.settings.lookahead_frames  # the 2-second schedule as the server is configured
        schedule = live_schedule(hop, lookahead, None, clip)  # checked before the client is told "ready"
        # live schedules catch up when they fall behind (0 turns it off); the 2-second one renders every frame
        max_lag = parse_float(schedule_values.get("max_lag"), "max_lag",
                              LIVE_MAX_LAG_SECONDS if hop is not None else 0.0, 0.0, MAX_LAG_SECONDS) or None
        sample_rate = parse_int(start.get("sample_rate"), "sample_rate", 16000, 1000, 768000)
        sample_format = start.get("format", "s16le")
        if sample_format not in SAMPLE_FORMATS:
            raise InputError(f"format must be one of {', '.join(SAMPLE_FORMATS)}, got {sample_format!r}")
        image_format = start.get("image_format", "jpeg")
        if image_format not in IMAGE_FORMATS:
            raise InputError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
        quality = parse_int(start.get("jpeg_quality"), "jpeg_quality", self.settings.jpeg_quality, 1, 100)
        data = parse_base64(start["portrait"]) if start.get("portrait") is not None else None
        portrait_id = start.get("portrait_id")
        if portrait_id is not None and not isinstance(portrait_id, str):
            raise InputError("portrait_id must be a string")
        portrait = await self.state.offload(resolve_portrait, self.state.sources, options,
                                            self.settings.max_image_pixels, data, portrait_id)
        self.intake = PcmIntake(sample_rate, sample_format)
        self.sample_format = sample_format
        self.idle, self.audio_out = idle, audio_out
        stream = dict(options=options, image_format=image_format, quality=quality, portrait=portrait, hop=hop,
                      lookahead=schedule.lookahead, max_lag=max_lag)
        self.job = Job("stream", lambda job: self._work(job, **stream))
        try:
            self.state.jobs.submit(self.job)
        except QueueFull:
            self.job = None
            raise busy(self.state) from None
        size = self.state.pipeline.image_size
        width, height = portrait.size if options.paste_back else (size, size)
        await self.ws.send_json({
            "type": "ready", "id": self.job.id, "fps": FPS, "width": width, "height": height,
            "sample_rate": sample_rate, "format": sample_format, "image_format": image_format,
            "context_frames": self.settings.context_frames, "lookahead_frames": schedule.lookahead,
            "chunk_frames": clip, "hop_frames": schedule.hop, "max_lag": max_lag,
            "max_seconds": self.settings.max_audio_seconds, "buffer_seconds": self.settings.ws_buffer_seconds,
            "idle": idle, "audio_out": audio_out, **({"audio_sample_rate": SAMPLE_RATE} if audio_out else {})})
        return stream

    # -- audio in, frames out -------------------------------------------------------------------------------

    async def _exchange(self, stream: dict[str, Any]) -> None:
        receiver = asyncio.create_task(self._receive_audio())
        sender = asyncio.create_task(self._send_frames())
        try:
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done and receiver.exception() is not None:
                raise receiver.exception()
            await sender  # the receiver only ends early on a disconnect or an error, both raised above
        finally:
            for task in (receiver, sender):
                task.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)

    async def _receive_audio(self) -> None:
        bytes_per_second = self.intake.bytes_per_sample * self.intake.sample_rate
        ended = False
        while True:
            # an always-on stream's client may listen without sending for as long as it likes
            message = await self._receive(None if ended or self.idle else self.settings.ws_idle_seconds)
            if ended:
                continue  # after "end" only a disconnect matters (raised by _receive)
            if message.get("bytes") is not None:
                self.audio_bytes += len(message["bytes"])
                if self.audio_bytes / bytes_per_second > self.settings.max_audio_seconds:
                    raise ApiError(413, "too_large", f"the audio is longer than the limit of "
                                                     f"{self.settings.max_audio_seconds:g} s")
                await self._take_audio(message["bytes"])
                continue
            try:
                control = _json(message.get("text") or "")
                if control.get("type") not in ("interrupt", "end"):
                    raise ApiError(400, "bad_request", 'after "start" send binary PCM, {"type": "interrupt"} when '
                                                       'the speech sent so far should stop, and finally '
                                                       '{"type": "end"}')
            except ApiError as err:  # a bad control message is answered, and the stream goes on
                await self.outbox.put({"type": "error", "status": err.status, **err.body(), "fatal": False})
                continue
            if control.get("type") == "interrupt":
                self._restart_intake()
                self.interrupt_cutoff = self.samples_queued
                self.interrupts += 1
                continue
            await self.inbox.put(self.intake.finish())
            self.inbox.put_end()
            ended = True

    def _restart_intake(self) -> None:
        """A fresh intake after an interrupt: the old one holds back the last samples of the dropped speech (and
        its resampler their filter state), and the new speech's length is fixed on its own at the end."""
        old = self.intake
        self.seconds_before_intake += old.seconds_received
        self.intake = PcmIntake(old.sample_rate, self.sample_format)
        split = self.audio_bytes % old.bytes_per_sample
        if split:  # a sample split by the interrupt: its rest comes next, so keep the bytes aligned
            self.intake.convert(bytes(split))

    async def _take_audio(self, data: bytes) -> None:
        """Convert a PCM message slice by slice into the inbox, waiting for room (which is the backpressure: no
        next message is read meanwhile). Large messages are converted off the event loop, on the intake pool."""
        view, step = memoryview(data), self.intake.slice_bytes
        for start in range(0, len(view), step):
            piece = view[start:start + step]
            if len(piece) <= INLINE_CONVERT_BYTES:
                samples = self.intake.convert(piece)
            else:
                samples = await self.state.offload(self.intake.convert, piece)
            await self.inbox.put(samples)
            self.samples_queued += samples.size

    async def _send_frames(self) -> None:
        while True:
            try:
                item = await asyncio.wait_for(self.outbox.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if self.job.finished and self.outbox.empty():  # ended without a last word: shutdown
                    raise ApiError(503, "unavailable", "the server is shutting down",
                                   retry_after=SHUTDOWN_RETRY_SECONDS) from None
                continue
            if isinstance(item, bytes):
                await self._send(self.ws.send_bytes(item))
            elif item.get("type") == "error" and item.get("fatal") is not False:
                raise ApiError(item["status"], item["error"], item["message"])
            elif item.get("type") in ("interrupted", "error"):  # the stream goes on after both
                await self._send(self.ws.send_json(item))
            else:
                await self._send(self.ws.send_json(item))
                await self._send(self.ws.close(1000))
                return

    async def _send(self, sending) -> None:
        """Send, but give up on a client that stops reading (its worker would otherwise wait on it for ever)."""
        try:
            await asyncio.wait_for(sending, self.settings.ws_idle_seconds)
        except asyncio.TimeoutError:
            raise ApiError(408, "slow_client", f"the client read nothing for {self.settings.ws_idle_seconds:g} s"
                           ) from None
        except WebSocketDisconnect:
            raise _ClientGone() from None

    async def _receive(self, timeout: float | None) -> dict[str, Any]:
        try:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, "idle", f"nothing received for {timeout:g} s") from None
        if message["type"] == "websocket.disconnect":
            raise _ClientGone()
        size = len(message.get("bytes") or b"") + len(message.get("text") or "")
        if size > self.settings.ws_max_message_bytes:
            raise ApiError(413, "too_large", f"a message is larger than the limit of "
                                             f"{self.settings.ws_max_message_bytes} bytes")
        return message

    async def _fail(self, err: ApiError) -> None:
        if self.ws.client_state != WebSocketState.CONNECTED:
            return
        try:  # bounded: a client that stops reading would otherwise hold this stream (and its worker) for ever
            await asyncio.wait_for(self.ws.send_text(err.websocket_message()), FAIL_SEND_SECONDS)
            await asyncio.wait_for(self.ws.close(err.close_code, err.message[:120]), FAIL_SEND_SECONDS)
        except Exception:  # the client may be gone already (or not reading); nothing else to tell it
            pass

    # -- the worker's side --------------------------------------------------------------------------------------

    def _work(self, job: Job, options, image_format, quality, portrait: Portrait, hop, lookahead, max_lag):
        """Runs on a worker thread: 16 kHz audio from the inbox through a StreamingSession, frames to the outbox.

        The receiver has decoded, resampled and counted the audio against the limit already. An interrupt stops
        the frames of the speech at once (between two frames), drops the speech queued before it and sends the
        blend back to the source's face.
        """
        settings = self.settings
        try:
            session = StreamingSession(
                self.state.pipeline, portrait.prepare(self.state.sources), sample_rate=SAMPLE_RATE,
                paste_back=options.paste_back, batch_size=settings.batch_size, context_frames=settings.context_frames,
                hop=hop, lookahead_frames=lookahead, max_lag=max_lag, **options.sampler_options(),
                **options.head_motion(), input_waiting=lambda: self.inbox.waiting,
                interrupt_waiting=lambda: self.interrupts > handled)
            # always-on: the LiveSession idles on the worker's clock, which starts now
            live = LiveSession(session) if self.idle else None
            talker, clock = live or session, time.monotonic()
            handled, taken, drop_until = 0, 0, 0

            def answer_interrupts() -> None:
                nonlocal handled, drop_until
                if self.interrupts > handled:
                    handled, drop_until = self.interrupts, self.interrupt_cutoff
                    blend = talker.interrupt()
                    self._emit(job, {"type": "interrupted", "frames_shown": session.frames_done,
                                     "resume_timestamp": round(session.media_seconds, 6)})
                    self._send_frames_of(job, blend, image_format, quality)

            while True:
                answer_interrupts()
                item, arrived_at = self.inbox.get_with_time(timeout=IDLE_POLL_SECONDS if live else POLL_SECONDS)
                # again: one that came during the wait comes before the item, which may be the end of the stream
                answer_interrupts()
                job.check()
                now = time.monotonic() - clock
                if live is not None and now > settings.max_audio_seconds:
                    raise ApiError(413, "too_large", f"the session is longer than the limit of "
                                                     f"{settings.max_audio_seconds:g} s")
                if item is not None and item is not END:
                    first, taken = taken, taken + item.size
                    if first < drop_until:  # queued before the interrupt: never reaches the session
                        dropped = min(item.size, drop_until - first)
                        if live is not None:
                            live.skip_input(dropped)
                        item = item[dropped:] if dropped < item.size else None
                if item is None:  # nothing to push: the frames left for later, and an always-on stream idles
                    frames = live.tick(now) if live is not None else session.resume()
                    self._send_frames_of(job, frames, image_format, quality, stop_after=handled)
                    continue
                if item is END:
                    frames = talker.finish()
                else:
                    frames = talker.push(item, arrived_at=arrived_at)
                self._send_frames_of(job, frames, image_format, quality, stop_after=handled)
                if item is END:
                    break
            self._emit(job, {"type": "done", "frames": session.frames_done, "duration": session.frames_done / FPS,
                             "audio_seconds": round(self.seconds_before_intake + self.intake.seconds_received, 6)})
        except JobCancelled:
            raise
        except ApiError as err:
            self._emit_error(job, err)
            raise
        except InputError as err:
            self._emit_error(job, ApiError.from_input(err))
            raise
        except Exception as err:
            self._emit_error(job, ApiError(500, "internal", f"{type(err).__name__}: {err}"))
            raise

    def _send_frames_of(self, job: Job, frames, image_format, quality, stop_after: int | None = None) -> None:
        """Encode and emit frames; with `stop_after`, stop as soon as an interrupt beyond that count arrives."""
        encoded = None  # (picture, its bytes): a frame that repeats the picture before (catching up) is not re-encoded
        for frame in frames:
            header = {"type": "frame", "index": frame.index, "timestamp": round(frame.timestamp, 6)}
            if not frame.rendered:
                header["repeated"] = True
            if isinstance(frame, LiveFrame):
                header["input_time"] = None if frame.input_time is None else round(frame.input_time, 6)
                if self.audio_out:  # the frame's sound first, so a client can queue it before the picture
                    pcm = (np.clip(frame.audio, -1, 1) * 32767).astype("<i2").tobytes()
                    self._emit(job, pack_frame({"type": "audio", "timestamp": header["timestamp"]}, pcm))
            if encoded is None or encoded[0] is not frame.image:
                encoded = frame.image, encode_image(frame.image, image_format, quality)
            self._emit(job, pack_frame(header, encoded[1]))
            job.frames_done += 1
            self.state.metrics.add_frames(1)
            job.check()
            if stop_after is not None and self.interrupts > stop_after:
                return

    def _emit(self, job: Job, item) -> None:
        hand_over(self.loop, self.outbox, item, job)

    def _emit_error(self, job: Job, err: ApiError) -> None:
        try:
            self._emit(job, {"type": "error", "status": err.status, **err.body()})
        except JobCancelled:
            pass


class _ClientGone(Exception):
    """The client closed the connection."""


def hand_over(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, item, job: Job) -> None:
    """From a worker thread, put an item on an event loop's queue, waiting while it is full (backpressure) unless
    the job is cancelled meanwhile (then JobCancelled)."""
    try:
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
    except RuntimeError:  # the event loop is gone: the server is stopping
        raise JobCancelled(job.id) from None
    while True:
        try:
            future.result(timeout=POLL_SECONDS)
            return
        except concurrent.futures.TimeoutError:
            if job.cancelled:
                future.cancel()
                raise JobCancelled(job.id) from None


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "text messages must be JSON objects") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", "text messages must be JSON objects")
    return value


def parse_base64(text: Any) -> bytes:
    """Portrait bytes from base64 (a data: URL is accepted too)."""
    if not isinstance(text, str):
        raise InputError("portrait must be a base64 string")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("portrait is not valid base64") from None
