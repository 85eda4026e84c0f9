"""Running the app under uvicorn: what `imtalker serve` calls once the weights are loaded."""

from __future__ import annotations

import logging

from ...pipelines import AudioDrivenPipeline
from .settings import ServerSettings

logger = logging.getLogger(__name__)


def serve(pipeline: AudioDrivenPipeline, settings: ServerSettings, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM end it cleanly: jobs cancelled, scratch files removed)."""
    import uvicorn

    from .app import create_app

    if not settings.loopback_only and settings.api_key is None:
        logger.warning("listening on %s without an API key: anyone who can reach this port can use it "
                       "(pass --api-key or set IMTALKER_API_KEY)", settings.host)
    # websockets-sansio stops reading a socket while a received message waits for the app, which is what makes a
    # stream's inbox bound slow its client down (docs/streaming.md, "Memory")
    config = uvicorn.Config(create_app(settings, pipeline), host=settings.host, port=settings.port,
                            log_level=log_level, ws="websockets-sansio", ws_max_size=settings.ws_max_message_bytes,
                            timeout_graceful_shutdown=10, server_header=False)
    uvicorn.Server(config).run()
