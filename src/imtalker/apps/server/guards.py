"""ASGI middleware that refuses a request before any route sees it: too many connections, a Host this server is
not meant to answer to (DNS rebinding), or a missing API key.

Each answers HTTP with a JSON error and a WebSocket with an error message and a close, like the routes do.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from .errors import ApiError

CONNECTION_RETRY_SECONDS = 1  # Retry-After of a 503 for too many connections: they are short-lived
OPEN_PATHS = ("/healthz",)  # served without the API key (liveness probes have no key)


async def refuse(scope, receive, send, err: ApiError) -> None:
    """Answer an HTTP request with `err` as JSON, or accept a WebSocket, say why in an error message and close."""
    if scope["type"] == "http":
        response = JSONResponse(err.body(), status_code=err.status, headers=err.headers)
        return await response(scope, receive, send)
    message = await receive()  # "websocket.connect"
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": err.websocket_message()})
    await send({"type": "websocket.close", "code": err.close_code, "reason": err.message[:120]})


def header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class ConnectionLimit:
    """At most `max_connections` HTTP requests and WebSockets in hand at once; beyond, 503 with Retry-After.

    Every open connection holds buffers (a request body being read, a WebSocket message being assembled), so their
    number is what bounds that memory; uvicorn's own limit answers in plain text without Retry-After.
    """

    def __init__(self, app, max_connections: int):
        self.app, self.max_connections = app, max_connections
        self.open = 0  # one event loop runs every connection, so a plain counter is safe

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if self.open >= self.max_connections:
            return await refuse(scope, receive, send, ApiError(
                503, "unavailable", f"the server has {self.max_connections} connections open; try again later",
                retry_after=CONNECTION_RETRY_SECONDS))
        self.open += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.open -= 1


class HostGuard:
    """Refuse requests whose Host header names a host this server is not meant for (421).

    DNS rebinding: a page at http://evil.example:8000 makes evil.example resolve to 127.0.0.1, and the browser then
    treats this server as part of that site (same origin: no CORS, an Origin equal to the Host). The Host header
    still says evil.example, so answering only to known names stops it (`ServerSettings.allows_host`). A request
    without a Host header (HTTP/1.0) comes from no browser and passes.
    """

    def __init__(self, app, allows_host):
        self.app, self.allows_host = app, allows_host  # allows_host(host header) -> bool

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = header(scope, b"host")
        if host is not None and not self.allows_host(host):
            return await refuse(scope, receive, send, ApiError(
                421, "wrong_host", f"this server does not answer to the host {host[:100]!r} (start it with "
                                   "--allow-host for that name)"))
        return await self.app(scope, receive, send)


class KeyGuard:
    """With an API key set, every HTTP request but `OPEN_PATHS` needs it: routes, unknown paths, /docs and
    /openapi.json alike. WebSockets pass through: browsers cannot set their headers, so the stream checks the key
    from a header or its start message itself."""

    def __init__(self, app, authorize):
        self.app, self.authorize = app, authorize  # authorize(headers) raises ApiError 401

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", [])}
        try:
            self.authorize(headers)
        except ApiError as err:
            return await refuse(scope, receive, send, err)
        return await self.app(scope, receive, send)
