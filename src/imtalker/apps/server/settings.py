"""Settings of the HTTP/WebSocket server: one frozen dataclass, filled from `imtalker serve` flags or by hand."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InputError

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")  # what a client on this machine calls the server by default


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
    # audio a stream holds ahead of its render, kept as 16 kHz float32 (64 KB a second): a client sending faster
    # than the stream renders waits (the server stops reading its socket), so memory does not grow with its speed
    ws_buffer_seconds: float = 10.0
    max_connections: int = 64  # HTTP requests and WebSockets open at once; beyond, 503 with Retry-After
    source_cache_size: int = 32  # encoded portraits kept (LRU), keyed by content hash
    job_ttl_seconds: float = 3600.0  # finished jobs (and their videos) are kept this long
    max_jobs_kept: int = 64  # and at most this many finished jobs
    jpeg_quality: int = 85  # frames sent over the WebSocket
    batch_size: int = 8  # frames rendered at once
    context_frames: int = 50  # streaming feature window: past audio encoded with each chunk (see imtalker.pipelines.streaming)
    lookahead_frames: int = 5  # streaming feature window: audio after each chunk
    temp_dir: Path | None = None  # where job folders go (default: the system temp folder); removed on shutdown
    allow_origins: tuple[str, ...] = field(default_factory=tuple)  # CORS origins for browser clients (none: no CORS)
    # Host names (or addresses) requests may be addressed to besides the loopback ones and `host` itself; a request
    # naming any other Host is refused (DNS rebinding: evil.example resolving to 127.0.0.1). "*": any host.
    allow_hosts: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("port", "workers", "max_upload_bytes", "max_image_pixels", "ws_max_message_bytes",
                     "source_cache_size", "max_jobs_kept", "batch_size", "max_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_queue", "context_frames", "lookahead_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("max_audio_seconds", "ws_idle_seconds", "job_ttl_seconds", "ws_buffer_seconds"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality!r}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise InputError("the API key must be at least 8 characters long")

    @property
    def allowed_hosts(self) -> frozenset[str]:
        """Host names (lowercase, no port) requests may name: loopback, `host` when it names one, `allow_hosts`."""
        names = set(LOOPBACK_HOSTS) | {hostname(name) for name in self.allow_hosts}
        if not self.listens_everywhere:
            names.add(hostname(self.host))
        return frozenset(names)

    @property
    def listens_everywhere(self) -> bool:
        """Whether `host` is a wildcard (every interface): then clients may call the server by any IP address."""
        return self.host in ("0.0.0.0", "::", "")

    def allows_host(self, host: str) -> bool:
        """Whether a request whose Host header is `host` (name or address, optional port) is meant for this server.

        A DNS-rebinding page always names its own domain, never an IP address, so addresses are safe to accept:
        loopback ones always, any when listening on every interface. Names must be allowed.
        """
        allowed = self.allowed_hosts
        name = hostname(host)
        if "*" in allowed or name in allowed:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return address.is_loopback or self.listens_everywhere

    @property
    def loopback_only(self) -> bool:
        """Whether `host` accepts connections from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def hostname(host: str) -> str:
    """The name in a Host header (or an Origin's host), lowercase, without the port or an IPv6 address's brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
