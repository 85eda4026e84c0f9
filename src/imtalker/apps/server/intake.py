"""A live stream's audio on its way in: raw PCM converted to 16 kHz float32 as it arrives (`PcmIntake`), then held
in a buffer bounded in samples (`AudioInbox`) until the stream's worker takes it.

Keeping only 16 kHz float32 (64 KB a second) bounds what a stream holds whatever rate and format the client
declared: 768 kHz f32le is 3 MB a second on the wire. The inbox bound is what slows a client that sends faster
than its stream renders: the receiver waits for room before reading the next message, uvicorn then stops reading
the socket, and TCP makes the client wait (backpressure).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import numpy as np

from ...constants import SAMPLE_RATE
from ...io.audio import StreamResampler
from ...pipelines.streaming import SAMPLE_FORMATS, PcmDecoder

END = object()  # the inbox item that says the client sent {"type": "end"}
HELD_BACK_SAMPLES = 64  # kept until the end, where the resampled length is fixed (the resampler overshoots by <= 1)
SLICE_SECONDS = 0.25  # raw audio converted at once: bounds the float copies made of one large message
SLICE_BYTES = 256 * 1024


class PcmIntake:
    """Bytes of mono PCM in the client's rate and format, in pieces of any size -> 16 kHz float32 pieces.

    The same decoding and resampling as `StreamingSession` (`PcmDecoder`, `StreamResampler`, and at the end the
    length fixed to round(samples * 16000 / rate), as `load_audio` does), done before the audio is queued.
    """

    def __init__(self, sample_rate: int, sample_format: str):
        self.sample_rate = sample_rate
        self.bytes_per_sample = SAMPLE_FORMATS[sample_format].itemsize
        self._decoder = PcmDecoder(sample_format)
        self._resampler = StreamResampler(sample_rate) if sample_rate != SAMPLE_RATE else None
        self.input_samples = 0
        self._released = 0  # 16 kHz samples handed out so far
        self._held = np.zeros(0, np.float32)

    @property
    def seconds_received(self) -> float:
        return self.input_samples / self.sample_rate

    @property
    def slice_bytes(self) -> int:
        """How many raw bytes to convert at once (a quarter second, at most 256 KiB)."""
        quarter = int(self.sample_rate * SLICE_SECONDS) * self.bytes_per_sample
        return max(self.bytes_per_sample, min(SLICE_BYTES, quarter))

    def convert(self, data: bytes | memoryview) -> np.ndarray:
        """The next raw piece -> the 16 kHz samples now ready (raises InputError on NaN or unscaled floats)."""
        samples = self._decoder.decode(data)
        self.input_samples += samples.size
        if self._resampler is not None:
            samples = self._resampler.push(samples)
        return self._release(np.concatenate([self._held, samples]), keep=HELD_BACK_SAMPLES)

    def finish(self) -> np.ndarray:
        """The last samples, so that the total is exactly round(input samples * 16000 / rate)."""
        tail = self._held
        if self._resampler is not None:
            tail = np.concatenate([tail, self._resampler.flush()])
        length = round(self.input_samples * SAMPLE_RATE / self.sample_rate)
        wanted = max(0, length - self._released)
        if tail.size > wanted:
            tail = tail[:wanted]
        elif tail.size < wanted:
            tail = np.concatenate([tail, np.zeros(wanted - tail.size, np.float32)])
        return self._release(tail, keep=0)

    def close(self) -> None:
        """Let go of the resampler now (its filter and threads), whatever still refers to this intake."""
        self._resampler = None

    def _release(self, samples: np.ndarray, keep: int) -> np.ndarray:
        cut = max(0, samples.size - keep)
        self._held = samples[cut:].copy()
        self._released += cut
        return samples[:cut]


class AudioInbox:
    """16 kHz samples from the event loop (the receiver) to a worker thread, at most `capacity` samples at once.

    `put` (a coroutine) waits while the inbox is full; `get` (worker thread) blocks until something is there.
    `close` drops everything held and wakes both sides, so nothing of a finished stream stays in memory.
    """

    def __init__(self, capacity: int, loop: asyncio.AbstractEventLoop):
        self.capacity, self._loop = capacity, loop
        self._items: deque = deque()
        self._held = 0
        self._closed = False
        self._ready = threading.Condition()
        self._room = asyncio.Event()  # touched on the loop's thread only (the worker sets it through the loop)

    @property
    def held(self) -> int:
        """Samples waiting now."""
        return self._held

    @property
    def waiting(self) -> bool:
        """Whether audio or the end waits to be taken (`StreamingSession(input_waiting=...)`)."""
        return bool(self._items)

    async def put(self, samples: np.ndarray) -> None:
        """Queue samples, in pieces of at most `capacity`, waiting for room; returns at once once closed."""
        for start in range(0, samples.size, self.capacity):
            piece = samples[start:start + self.capacity]
            while True:
                with self._ready:
                    if self._closed:
                        return
                    if self._held + piece.size <= self.capacity:
                        self._items.append((piece, time.monotonic()))
                        self._held += piece.size
                        self._ready.notify()
                        break
                    self._room.clear()  # under the lock: a get() after this sets it again
                await self._room.wait()

    def put_end(self) -> None:
        with self._ready:
            self._items.append(END)
            self._ready.notify()

    def get(self, timeout: float):
        """Everything waiting up to the next END, joined into one array (or END itself when it comes first), or None
        after `timeout` seconds with nothing there. Worker thread."""
        return self.get_with_time(timeout)[0]

    def get_with_time(self, timeout: float) -> tuple:
        """`get`, and when its first piece came (`time.monotonic()`; None with END or nothing).

        All of it at once, with the time it started waiting, so a session that has fallen behind knows how late it
        is and catches up (`StreamingSession.push(arrived_at=...)`, `max_lag`), instead of taking the backlog 200 ms
        at a time, unaware of it."""
        with self._ready:
            if not self._items and not self._closed:
                self._ready.wait(timeout)
            if not self._items:
                return (END if self._closed else None), None
            if self._items[0] is END:
                return self._items.popleft(), None
            pieces, arrived_at = [], self._items[0][1]
            while self._items and self._items[0] is not END:
                pieces.append(self._items.popleft()[0])
            self._held -= sum(piece.size for piece in pieces)
        self._wake_putter()
        return (pieces[0] if len(pieces) == 1 else np.concatenate(pieces)), arrived_at

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._items.clear()
            self._held = 0
            self._ready.notify_all()
        self._wake_putter()

    def _wake_putter(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._room.set)
        except RuntimeError:  # the event loop is closed: the server is stopping and nobody is waiting
            pass
