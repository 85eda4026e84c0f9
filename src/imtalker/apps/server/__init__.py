"""HTTP and WebSocket service around `AudioDrivenPipeline` (`imtalker serve`); needs the `serve` extra.

    from imtalker.apps.server import ServerSettings, create_app
    app = create_app(ServerSettings(workers=2), AudioDrivenPipeline.from_pretrained("weights/"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Modules: settings (ServerSettings), app (routes), guards (connection limit, Host check, API key), stream
(WS /v1/stream), intake (a stream's audio on its way in), jobs (worker pool and queue), sources (portrait cache),
render (what a worker does), inputs (checking requests), metrics.
FastAPI is imported only when an app is made, so `import imtalker` never needs it.
"""

from __future__ import annotations

from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def create_app(settings: ServerSettings, pipeline):
    """The FastAPI app (see `imtalker.apps.server.app.create_app`)."""
    from .app import create_app as make

    return make(settings, pipeline)
