"""Tiny untrained networks (128 px renderer, small generator, log-mel audio front end) saved as a weights folder,
the pipeline loaded from it, test images, and the server on a real uvicorn for each test module."""

from __future__ import annotations

from importlib.util import find_spec

import pytest
from skimage import data as skdata

from imtalker.pipelines import AudioDrivenPipeline
from helpers.server import drawn_portrait, png_bytes, running_server
from helpers.tiny_models import save_tiny_weights

# The server tests need the serve extra (in dev) and its test clients; without them only test_streaming.py runs.
SERVER_MODULES = ("fastapi", "uvicorn", "websockets", "httpx")
collect_ignore = [] if all(find_spec(name) for name in SERVER_MODULES) else [
    "test_server.py", "test_server_limits.py", "test_server_load.py", "test_serve_cli.py", "test_live_page.py",
    "test_webrtc.py"]


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("server-weights"), front_end="mel")


@pytest.fixture(scope="session")
def pipe(weights) -> AudioDrivenPipeline:
    return AudioDrivenPipeline.from_pretrained(weights)


@pytest.fixture(scope="session")
def astronaut_png() -> bytes:
    """A photo with one face (for crop=true)."""
    return png_bytes(skdata.astronaut())


@pytest.fixture(scope="session")
def drawn_png() -> bytes:
    return png_bytes(drawn_portrait())


@pytest.fixture(scope="module")
def server(pipe):
    with running_server(pipe, workers=2, max_queue=4, max_upload_bytes=2_000_000, max_audio_seconds=8.0,
                        ws_idle_seconds=10.0) as running:
        yield running
