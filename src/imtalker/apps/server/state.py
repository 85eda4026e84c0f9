"""Everything a running server holds, in one object on `app.state.server` (no module-level state)."""

from __future__ import annotations

import asyncio
import functools
import hmac
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from ...pipelines import AudioDrivenPipeline
from .errors import ApiError
from .jobs import JobManager
from .metrics import Metrics
from .settings import ServerSettings
from .sources import SourceCache


@dataclass
class ServerState:
    settings: ServerSettings
    pipeline: AudioDrivenPipeline
    sources: SourceCache
    metrics: Metrics
    jobs: JobManager | None = None  # made and started when the app starts, shut down when it stops
    # the threads that do requests' blocking work (decoding uploads, finding faces, converting streams' PCM), made
    # and shut down with the app: a fixed few rather than the request pool's dozens, because each thread that
    # touches large buffers keeps memory of its own (its malloc arena, the math libraries' per-thread pools), and
    # because a fixed few bound how many uploads are decoded at once
    intake_pool: ThreadPoolExecutor | None = None

    async def offload(self, function, *args):
        """Run blocking request work on the intake pool and wait for it."""
        return await asyncio.get_running_loop().run_in_executor(self.intake_pool, functools.partial(function, *args))

    def authorize(self, headers, given: str | None = None) -> None:
        """Check the API key from `X-API-Key`, `Authorization: Bearer ...` or `given`; no key set: all pass."""
        expected = self.settings.api_key
        if expected is None:
            return
        candidates = [headers.get("x-api-key"), given]
        authorization = headers.get("authorization") or ""
        if authorization.lower().startswith("bearer "):
            candidates.append(authorization[7:].strip())
        for candidate in candidates:
            if candidate and hmac.compare_digest(candidate.encode(), expected.encode()):
                return
        raise ApiError(401, "unauthorized", "missing or wrong API key: send it in the X-API-Key header")

    def check_origin(self, headers) -> None:
        """Refuse requests a web page on another site makes through the user's browser.

        A page anywhere on the web can post a form or open a WebSocket to 127.0.0.1 (neither is stopped by CORS),
        which would let it use this server's CPU/GPU. Browsers say where such a request comes from in `Origin`;
        only `allow_origins` and the server's own origin pass: the Host the request was sent to, when that is a
        host the server answers to (so a DNS-rebinding page, whose Origin equals its Host, does not pass either).
        Clients that are not browsers send no Origin.
        """
        origin = headers.get("origin")
        if origin is None:
            return
        allowed = self.settings.allow_origins
        if "*" in allowed or origin in allowed:
            return
        own = urlsplit(origin).netloc
        if own and own == headers.get("host") and self.settings.allows_host(own):
            return
        raise ApiError(403, "forbidden_origin", f"requests from web pages at {origin} are not allowed "
                                                "(start the server with --allow-origin for that site)")


BUSY_RETRY_SECONDS = 5  # Retry-After of a 429: about what a short job takes to free its worker


def busy(state: ServerState) -> ApiError:
    """The 429 answer when every worker is rendering and the queue is full (counted in the metrics)."""
    state.metrics.refused()
    return ApiError(429, "busy", f"the server is busy: all {state.settings.workers} workers are rendering and "
                                 f"{state.settings.max_queue} jobs are waiting; try again later",
                    retry_after=BUSY_RETRY_SECONDS)
