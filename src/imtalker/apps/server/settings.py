"""Settings of the HTTP/WebSocket server: one frozen dataclass, filled from `imtalker serve` flags or by hand."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InputError


@dataclass(frozen=True)
class ServerSettings:
    """What the server accepts and how much work it takes on.

    The defaults are safe for a personal machine: loopback only, two workers, small uploads.
    """

    host: str = "127.0.0.1"  # interface to bind; anything but loopback should come with an api_key
    port: int = 8000
    workers: int = 2  # jobs and streams rendered at the same time (threads sharing one set of networks)
    max_queue: int = 8  # jobs waiting for a worker; beyond workers + max_queue requests get 429
    api_key: str | None = None  # when set, every request but /healthz needs `X-API-Key: <key>` (or Bearer)
    max_upload_bytes: int = 20 * 1024 * 1024  # whole multipart body of one request
    max_audio_seconds: float = 120.0  # per job and per stream
    max_image_pixels: int = 4096 * 4096  # portraits larger than this are refused before decoding
    ws_idle_seconds: float = 30.0  # a stream whose client sends nothing for this long is closed
    ws_max_message_bytes: int = 4 * 1024 * 1024  # one WebSocket message (a PCM chunk or the start message)
    source_cache_size: int = 32  # encoded portraits kept (LRU), keyed by content hash
    job_ttl_seconds: float = 3600.0  # finished jobs (and their videos) are kept this long
    max_jobs_kept: int = 64  # and at most this many finished jobs
    jpeg_quality: int = 85  # frames sent over the WebSocket
    batch_size: int = 8  # frames rendered at once
    context_frames: int = 50  # streaming feature window: past audio encoded with each chunk (see imtalker.pipelines.streaming)
    lookahead_frames: int = 5  # streaming feature window: audio after each chunk
    temp_dir: Path | None = None  # where job folders go (default: the system temp folder); removed on shutdown
    allow_origins: tuple[str, ...] = field(default_factory=tuple)  # CORS origins for browser clients (none: no CORS)

    def __post_init__(self) -> None:
        for name in ("port", "workers", "max_upload_bytes", "max_image_pixels", "ws_max_message_bytes",
                     "source_cache_size", "max_jobs_kept", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_queue", "context_frames", "lookahead_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("max_audio_seconds", "ws_idle_seconds", "job_ttl_seconds"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality!r}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise InputError("the API key must be at least 8 characters long")

    @property
    def loopback_only(self) -> bool:
        """Whether `host` accepts connections from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
