"""Helpers of the server and streaming tests: tiny network configs, test audio and images, and the server on a real
uvicorn on 127.0.0.1 in a thread (`running_server`)."""

from __future__ import annotations

import io
import socket
import threading
import time
import wave
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from imtalker.pipelines import AudioDrivenPipeline

FAST = {"nfe": 2, "cfg_scale": 1.5, "seed": 7}  # cheap sampling for every test


def voice(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A vowel-like voice with a gliding pitch and a syllable rhythm, float32 peaking at 0.3."""
    t = np.arange(int(round(seconds * rate))) / rate
    pitch = 2 * np.pi * np.cumsum(130 + 25 * np.sin(2 * np.pi * 0.7 * t + seed)) / rate
    envelope = np.clip(np.sin(2 * np.pi * 3.3 * t + seed), 0, None) ** 0.7
    signal = sum(np.sin(k * pitch) / k for k in range(1, 6)) * envelope
    return (0.3 * signal / max(1e-6, np.abs(signal).max())).astype(np.float32)


def pcm16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1, 1) * 32767).astype(np.int16)


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm16(samples).tobytes())
    return buffer.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def drawn_portrait(size: int = 160) -> np.ndarray:
    """A drawn head (no real face: used with crop=false, which skips face detection)."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    face = ((xx / 0.6) ** 2 + (yy / 0.8) ** 2 < 1).astype(np.float32)
    image = np.stack([0.3 + 0.6 * face, 0.3 + 0.45 * face, 0.4 + 0.3 * face], axis=-1)
    return (image * 255).astype(np.uint8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    ws_url: str
    app: object
    settings: object

    @property
    def state(self):
        return self.app.state.server


@contextmanager
def running_server(pipeline: AudioDrivenPipeline, **overrides):
    """The app under a real uvicorn in a thread on a free loopback port; stopped (and checked clean) at the end."""
    import uvicorn

    from imtalker.apps.server import ServerSettings, create_app

    settings = ServerSettings(port=free_port(), **overrides)
    app = create_app(settings, pipeline)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            ws_max_size=settings.ws_max_message_bytes, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    # another server (a module-scoped fixture) may be running beside this one: only this one's workers count
    workers_before = {t for t in threading.enumerate() if t.name.startswith("imtalker-worker")}
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    root = app.state.server.jobs.root
    try:
        yield RunningServer(f"http://{settings.host}:{settings.port}", f"ws://{settings.host}:{settings.port}",
                            app, settings)
    finally:
        server.should_exit = True
        thread.join(60)
    assert not thread.is_alive(), "uvicorn did not stop"
    assert not root.exists(), "the server left its scratch folder behind"
    assert not [t for t in threading.enumerate()
                if t.name.startswith("imtalker-worker") and t not in workers_before], "workers left running"
