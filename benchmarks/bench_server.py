"""The server under load and the live stream's latency: time to first frame and real-time factor over the
WebSocket, and how many frames per second the worker pool delivers to many clients.

Each row runs in a fresh process: the app under a real uvicorn on 127.0.0.1 (a thread) and the clients in the same
process, so they share the CPU with the server, as a client on the same machine would. Networks have seeded random
weights (timing does not depend on training): "small" is the 128 px size of the demo model (bench_pipeline.py),
"published" the published sizes (512 px renderer, 39M generator, wav2vec2-base).
- stream rows: one WebSocket client sends a voice as 16-bit PCM in 20 ms pieces, either paced like a microphone
  (real time) or as fast as it can. TTFF: first audio byte sent -> first frame received. RTF: first audio byte ->
  last frame, per second of audio (unpaced; for published networks the paced run is compute-bound anyway).
- load rows: many clients post short video jobs at once (0.4 s of audio, 10 frames, face crop off); frames/s is the
  pool's delivered rate, latency is post -> job done, refusals are 429s.

    python benchmarks/bench_server.py            # written to BENCHMARKS.md
    python benchmarks/bench_server.py --quick    # small networks, short runs, not written
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import socket
import statistics
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config

from common import header, peak_rss_mb, run_child, write_or_print
from imtalker import GeneratorConfig, RendererConfig
from imtalker.constants import FPS, SAMPLE_RATE
from imtalker.models.audio import AudioEncoder
from imtalker.models.generator import MotionGenerator
from imtalker.models.renderer import IMTRenderer
from imtalker.pipelines import AudioDrivenPipeline

SMALL_RENDERER = RendererConfig(image_size=128, feature_channels=(16, 16, 32, 32, 64, 64),
                                motion_channels=(16, 32, 32, 64, 64, 64), adapt_dim=64)
SMALL_GENERATOR = GeneratorConfig(hidden_dim=128, depth=2, num_heads=4, audio_dim=64)
SMALL_AUDIO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
PIECE_SECONDS = 0.02
OPTIONS = {"cfg_scale": 3.0, "nfe": 10, "seed": 0, "crop": False}


def build(size: str) -> AudioDrivenPipeline:
    torch.manual_seed(0)
    if size == "small":
        return AudioDrivenPipeline(IMTRenderer(SMALL_RENDERER), MotionGenerator(SMALL_GENERATOR),
                                   AudioEncoder(Wav2Vec2Config(**SMALL_AUDIO)))
    return AudioDrivenPipeline(IMTRenderer(), MotionGenerator(), AudioEncoder(Wav2Vec2Config()))


def voice(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def portrait_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@contextmanager
def serving(pipe: AudioDrivenPipeline, **settings):
    """The app under uvicorn in a thread on a free loopback port."""
    import uvicorn

    from imtalker.apps.server import ServerSettings, create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ServerSettings(port=port, **settings)
    server = uvicorn.Server(uvicorn.Config(create_app(config, pipe), host=config.host, port=port,
                                           log_level="warning", ws_max_size=config.ws_max_message_bytes))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


def stream_child(size: str, seconds: float, paced: bool, batch: int) -> dict:
    from websockets.sync.client import connect

    from imtalker.apps.server.render import unpack_frame

    pipe = build(size)
    audio = (voice(seconds) * 32767).astype(np.int16).tobytes()
    piece = int(PIECE_SECONDS * SAMPLE_RATE) * 2
    start = {"type": "start", "portrait": base64.b64encode(portrait_png()).decode(), "sample_rate": SAMPLE_RATE,
             "options": OPTIONS}
    arrivals = []
    with serving(pipe, workers=1, batch_size=batch, max_audio_seconds=600, ws_idle_seconds=600) as address:
        with connect(f"ws://{address}/v1/stream", max_size=None, open_timeout=60) as ws:
            ws.send(json.dumps(start))
            assert json.loads(ws.recv(timeout=600))["type"] == "ready"

            def receive():
                while isinstance(message := ws.recv(timeout=3600), bytes):
                    arrivals.append((time.perf_counter(), unpack_frame(message)[0]["index"]))
                arrivals.append((time.perf_counter(), json.loads(message)))

            receiver = threading.Thread(target=receive)
            receiver.start()
            began = time.perf_counter()
            for k, position in enumerate(range(0, len(audio), piece)):
                if paced:  # a microphone: each piece leaves when its audio has been "spoken"
                    time.sleep(max(0.0, began + k * PIECE_SECONDS - time.perf_counter()))
                ws.send(audio[position:position + piece])
            ended = time.perf_counter()
            ws.send(json.dumps({"type": "end"}))
            receiver.join()
    done_at, done = arrivals.pop()
    frames = len(arrivals)
    assert done["frames"] == frames == math.ceil(seconds * FPS), (done, frames)
    first, last = arrivals[0][0], arrivals[-1][0]
    return {"ttff": first - began, "rtf": (last - began) / seconds, "lag": done_at - ended,
            "fps": (frames - 1) / max(1e-6, last - first), "frames": frames, "peak_rss_mb": peak_rss_mb()}


def load_child(clients: int, workers: int, max_queue: int) -> dict:
    import httpx

    pipe = build("small")
    sound = io.BytesIO()
    with wave.open(sound, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes((voice(0.4) * 32767).astype(np.int16).tobytes())
    files = {"portrait": ("p.png", portrait_png()), "audio": ("a.wav", sound.getvalue())}
    form = {key: str(value).lower() for key, value in OPTIONS.items()}
    barrier = threading.Barrier(clients)
    with serving(pipe, workers=workers, max_queue=max_queue) as address:
        url = f"http://{address}"

        def client(_):
            with httpx.Client(base_url=url, timeout=600) as http:
                barrier.wait()
                posted = time.perf_counter()
                reply = http.post("/v1/videos", files=files, data=form)
                if reply.status_code == 429:
                    return None
                job = reply.json()["id"]
                while http.get(f"/v1/videos/{job}").json()["status"] in ("queued", "running"):
                    time.sleep(0.05)
                return time.perf_counter() - posted

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(client, range(clients)))
        wall = time.perf_counter() - started
    served = [x for x in latencies if x is not None]
    return {"served": len(served), "refused": clients - len(served), "wall": wall,
            "fps": len(served) * math.ceil(0.4 * FPS) / wall, "latency": statistics.median(served),
            "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "stream":
            result = stream_child(rest[0], float(rest[1]), rest[2] == "paced", int(rest[3]))
        else:
            result = load_child(int(rest[0]), int(rest[1]), int(rest[2]))
        print(json.dumps(result))
        return

    streams = ([("small", 3.0, "unpaced", 8), ("small", 3.0, "paced", 8)] if args.quick else
               [("small", 10.0, "paced", 8), ("small", 10.0, "unpaced", 8), ("small", 10.0, "paced", 1),
                ("published", 2.4, "paced", 8), ("published", 2.4, "paced", 1)])
    loads = [(8, 2, 8), (50, 2, 4)] if args.quick else [(20, 2, 20), (50, 2, 4), (20, 1, 20)]
    stream_rows, load_rows = [], []
    for size, seconds, pacing, batch in streams:
        r = run_child(Path(__file__), ["stream", size, str(seconds), pacing, str(batch)], timeout=3600)
        stream_rows.append(f"| {size} | {pacing} | {batch} | {seconds:g} s ({r['frames']} frames) | {r['ttff']:.2f} | "
                           f"{r['fps']:.1f} | {r['rtf']:.2f} | {r['lag']:.2f} | {r['peak_rss_mb']:.0f} |")
        print(stream_rows[-1], flush=True)
    for clients, workers, max_queue in loads:
        r = run_child(Path(__file__), ["load", str(clients), str(workers), str(max_queue)], timeout=3600)
        load_rows.append(f"| {clients} | {workers} | {max_queue} | {r['served']} | {r['refused']} | {r['wall']:.1f} | "
                         f"{r['fps']:.1f} | {r['latency']:.1f} | {r['peak_rss_mb']:.0f} |")
        print(load_rows[-1], flush=True)
    body = header("Server: live stream latency and load, CPU", "python benchmarks/bench_server.py"
                  + (" --quick" if args.quick else ""))
    body += ("\nfp32, nfe 10, cfg 3, face crop off, seeded random weights; server and clients in one process "
             "(uvicorn thread), so they share the CPU. TTFF: first audio byte sent -> first frame received "
             "(a paced client cannot beat 2.2 s: one 2 s generator chunk plus 0.2 s look-ahead must arrive first). "
             "RTF: first audio byte -> last frame, per second of audio. Lag: \"end\" sent -> last frame.\n\n"
             "| networks | client | batch | audio | TTFF (s) | frames/s | RTF | lag at end (s) | peak RSS (MB) |\n"
             "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(stream_rows) + "\n\n"
             "Load: small networks, each client posts a 0.4 s job (10 frames) at the same moment and polls it.\n\n"
             "| clients | workers | queue | served | refused (429) | wall (s) | frames/s | median latency (s) | "
             "peak RSS (MB) |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(load_rows) + "\n")
    write_or_print("server", body, write=not (args.quick or args.no_write))


if __name__ == "__main__":
    main()
