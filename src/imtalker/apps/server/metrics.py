"""Counters behind GET /metrics: frames rendered, the recent frame rate, streams, and the process's memory."""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections import deque
from pathlib import Path

RATE_WINDOW_SECONDS = 10.0  # frames/s is averaged over this much recent time


class Metrics:
    """Thread-safe counters; workers call `add_frames`, the API reads `snapshot`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self.frames_rendered = 0
        self.streams_active = 0
        self.streams_total = 0
        self.requests_refused = 0  # 429s: jobs and streams turned away because every worker and queue place was taken
        self._recent: deque[tuple[float, int]] = deque()  # (time, frames) of recent renders

    def add_frames(self, count: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames_rendered += count
            self._recent.append((now, count))
            self._trim(now)

    def stream_started(self) -> None:
        with self._lock:
            self.streams_active += 1
            self.streams_total += 1

    def refused(self) -> None:
        with self._lock:
            self.requests_refused += 1

    def stream_ended(self) -> None:
        with self._lock:
            self.streams_active -= 1

    def _trim(self, now: float) -> None:
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_SECONDS:
            self._recent.popleft()

    def snapshot(self) -> dict[str, float | int]:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            window = min(RATE_WINDOW_SECONDS, max(1e-6, now - self._started))
            recent = sum(count for _, count in self._recent)
            return {"frames_rendered": self.frames_rendered, "frames_per_second": round(recent / window, 3),
                    "streams_active": self.streams_active, "streams_total": self.streams_total,
                    "requests_refused": self.requests_refused,
                    "uptime_seconds": round(now - self._started, 1), "rss_mb": round(rss_mb(), 1)}


def rss_mb() -> float:
    """Resident memory of this process now (not the peak), from /proc; 0 where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def return_free_memory() -> None:
    """Collect cyclic garbage, then ask the C allocator to hand memory it holds but no longer uses back to the
    system (glibc's malloc_trim).

    A stream that ends abruptly leaves reference cycles (its handler, job, tasks and exception tracebacks) that
    hold native memory Python cannot see: libswresample filters and their threads, numpy and torch buffers.
    Python's full collection runs only after many allocations, so an idle server could keep them for minutes
    (a 60 s flood of abrupt streams: +105 MB 20 s later without the collection, +0 with it).

    Freed buffers stay in malloc's heaps, and in RSS, when other allocations sit above them; a stream that pushed
    hundreds of MB through its bounded buffers leaves such holes behind (after a 30 s flood, RSS 20 s later was
    +83 MB without this and +16 MB with it: benchmarks/bench_server_flood.py). Elsewhere than glibc this does
    nothing.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass

