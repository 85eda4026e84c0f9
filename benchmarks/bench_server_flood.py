"""`imtalker serve` under flooding streams: its memory while abusive and normal clients share it, and after.

The server runs as `imtalker serve` in a subprocess (the bundled demo model unless --weights, loopback, the default
2 workers and queue of 8) and its resident memory is read from /proc/<pid>/status. Abusive clients open
`WS /v1/stream` with the most expensive audio the protocol allows (sample_rate 768000, f32le: 3 MB a second, 368 MB
for the 120 s allowance) and send 4 MiB messages as fast as the socket takes them; half of them read the frames,
half never do; each leaves abruptly (no "end") after a while and comes back, so some of them always sit in the
queue. Normal clients at the same time alternate a short WebSocket stream (1 s of 16 kHz speech) and a short video
job (0.5 s), retrying after a 429's Retry-After. The run passes when the peak stays within 256 MB of the baseline
(measured after a warm-up request of each kind), the memory 20 s after the flood within 128 MB of it, and every
normal request is eventually served.

    python benchmarks/bench_server_flood.py                      # about 3 minutes; written to BENCHMARKS.md
    python benchmarks/bench_server_flood.py --quick --no-write   # about a minute
    python benchmarks/bench_server_flood.py --weights DIR --json # what the slow soak test runs (tests/server)
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import socket
import statistics
import sys
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import ServeProcess, header, write_section

PEAK_LIMIT_MB = 256  # over the baseline, while the flood lasts
AFTER_LIMIT_MB = 128  # over the baseline, 20 s after it
AFTER_SECONDS = 20.0
FLOOD_RATE, FLOOD_FORMAT = 768000, "f32le"  # the costliest audio the start message accepts
MESSAGE_BYTES = 4 * 1024 * 1024  # the server's default largest WebSocket message
SAMPLE_EVERY = 0.1  # seconds between RSS readings
OPTIONS = {"nfe": 4, "cfg_scale": 2.0, "seed": 0, "crop": False}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def speech(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((samples * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


def portrait_png() -> bytes:
    from PIL import Image

    yy, xx = np.meshgrid(np.linspace(-1, 1, 160), np.linspace(-1, 1, 160), indexing="ij")
    face = ((xx / 0.6) ** 2 + (yy / 0.8) ** 2 < 1).astype(np.float32)
    image = (np.stack([0.3 + 0.6 * face, 0.3 + 0.45 * face, 0.4 + 0.3 * face], axis=-1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Tally:
    """What the clients saw, filled from many threads (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    flood_bytes: int = 0  # bytes the server took from abusive clients
    flood_streams: int = 0  # abusive streams that got "ready"
    flood_refused: int = 0  # abusive streams refused with 429
    served: dict = field(default_factory=lambda: {"stream": 0, "job": 0})
    refused: int = 0  # 429s normal clients got (then retried)
    failed: list = field(default_factory=list)
    latencies: list = field(default_factory=list)

    def add(self, **counts) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def flood_once(ws_url: str, portrait: str, seconds: float, read_frames: bool, tally: Tally) -> None:
    """One abusive stream: 768 kHz f32le as fast as the socket takes it for `seconds`, then gone without "end"."""
    from websockets.sync.client import connect

    noise = (np.random.default_rng(0).standard_normal(MESSAGE_BYTES // 4) * 0.05).astype("<f4").tobytes()
    start = {"type": "start", "portrait": portrait, "sample_rate": FLOOD_RATE, "format": FLOOD_FORMAT,
             "options": OPTIONS}
    with connect(f"{ws_url}/v1/stream", max_size=None, open_timeout=60, close_timeout=1) as ws:
        ws.send(json.dumps(start))
        reply = json.loads(ws.recv(timeout=120))
        if reply["type"] != "ready":
            tally.add(flood_refused=1)
            time.sleep(reply.get("retry_after", 1))
            return
        tally.add(flood_streams=1)
        leave = threading.Timer(seconds, lambda: ws.socket.shutdown(socket.SHUT_RDWR))  # abrupt, even mid-send
        leave.start()
        if read_frames:
            threading.Thread(target=drain, args=(ws,), daemon=True).start()
        try:
            while True:
                ws.send(noise)  # blocks while the server is not reading: the backpressure
                tally.add(flood_bytes=len(noise))
        except Exception:  # the timer cut the connection, or the server closed it (limit, idle reader)
            pass
        finally:
            leave.cancel()


def drain(ws) -> None:
    try:
        while True:
            ws.recv(timeout=600)
    except Exception:
        pass


def normal_stream(ws_url: str, portrait: str) -> str:
    """1 s of 16 kHz speech in 20 ms pieces sent at once, then "end"; all 25 frames and "done" must come."""
    from websockets.sync.client import connect

    audio = (speech(1.0) * 32767).astype(np.int16).tobytes()
    start = {"type": "start", "portrait": portrait, "sample_rate": 16000, "options": OPTIONS}
    with connect(f"{ws_url}/v1/stream", max_size=None, open_timeout=60) as ws:
        ws.send(json.dumps(start))
        reply = json.loads(ws.recv(timeout=600))
        if reply["type"] == "error":
            if reply["status"] == 429:
                return f"busy:{reply.get('retry_after', 1)}"
            return f"failed: {reply}"
        for position in range(0, len(audio), 640):
            ws.send(audio[position:position + 640])
        ws.send(json.dumps({"type": "end"}))
        frames = 0
        while isinstance(message := ws.recv(timeout=600), bytes):
            frames += 1
        done = json.loads(message)
        return "served" if done.get("type") == "done" and done["frames"] == frames == 25 else f"failed: {done}"


def normal_job(url: str, portrait: bytes, seconds: float = 0.5) -> str:
    """A short video job (0.5 s: 13 frames): post, poll, download the mp4."""
    import httpx

    files = {"portrait": ("p.png", portrait), "audio": ("a.wav", wav_bytes(speech(seconds)))}
    with httpx.Client(base_url=url, timeout=600) as http:
        reply = http.post("/v1/videos", files=files, data={k: str(v).lower() for k, v in OPTIONS.items()})
        if reply.status_code == 429:
            return f"busy:{reply.headers.get('retry-after', '1')}"
        if reply.status_code != 202:
            return f"failed: {reply.status_code} {reply.text[:200]}"
        job = reply.json()["id"]
        while (status := http.get(f"/v1/videos/{job}").json()["status"]) in ("queued", "running"):
            time.sleep(0.1)
        video = http.get(f"/v1/videos/{job}/video")
        http.delete(f"/v1/videos/{job}")
        ok = status == "done" and video.status_code == 200 and video.content[4:8] == b"ftyp"
        return "served" if ok else f"failed: job {status}"


def normal_client(server: ServeProcess, portrait: bytes, until: float, tally: Tally, index: int) -> None:
    encoded = base64.b64encode(portrait).decode()
    turn = index
    while time.monotonic() < until:
        kind = "stream" if turn % 2 == 0 else "job"
        began = time.monotonic()
        try:
            outcome = (normal_stream(server.ws_url, encoded) if kind == "stream" else
                       normal_job(server.url, portrait))
        except Exception as err:  # a normal client must never see a dropped connection
            outcome = f"failed: {type(err).__name__}: {err}"
        if outcome == "served":
            with tally.lock:
                tally.served[kind] += 1
                tally.latencies.append(time.monotonic() - began)
            turn += 1
        elif outcome.startswith("busy:"):
            tally.add(refused=1)
            time.sleep(float(outcome.split(":", 1)[1]))
        else:
            with tally.lock:
                tally.failed.append(outcome)
            turn += 1


def flood_client(server: ServeProcess, portrait: bytes, until: float, hold: float, read_frames: bool,
                 tally: Tally) -> None:
    encoded = base64.b64encode(portrait).decode()
    while time.monotonic() < until:
        try:
            flood_once(server.ws_url, encoded, min(hold, max(0.5, until - time.monotonic())), read_frames, tally)
        except Exception:  # refused or cut: an attacker just comes back
            time.sleep(0.5)


def run(weights: str | None, flooders: int, normals: int, window: float, hold: float) -> dict:
    """Start the server, warm it up, flood it for `window` seconds alongside normal clients; the numbers."""
    load_before = os.getloadavg()[0]
    server = ServeProcess(*(["--weights", weights] if weights else []))
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    try:
        portrait = portrait_png()
        for frames in range(1, 9):  # every render batch size once (1-8 frames): the math libraries' caches
            if normal_job(server.url, portrait, frames / 25) != "served":  # of per-shape work buffers fill once
                raise RuntimeError("warm-up job failed")
        warm = Tally()  # the normal clients' first requests, together: both workers busy, as in normal use
        warmers = [threading.Thread(target=normal_client, args=(server, portrait, time.monotonic() + 0.1, warm, i))
                   for i in range(max(2, normals))]
        for thread in warmers:
            thread.start()
        for thread in warmers:
            thread.join()
        if warm.failed:
            raise RuntimeError(f"warm-up failed: {warm.failed}")
        time.sleep(2.0)
        baseline = statistics.median(rss_mb(server.process.pid) for _ in range(5))

        def watch():
            while not stop.wait(SAMPLE_EVERY):
                samples.append((time.monotonic(), rss_mb(server.process.pid)))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        tally = Tally()
        began = time.monotonic()
        until = began + window
        threads = [threading.Thread(target=flood_client, args=(server, portrait, until, hold, i % 2 == 0, tally))
                   for i in range(flooders)]
        threads += [threading.Thread(target=normal_client, args=(server, portrait, until, tally, i))
                    for i in range(normals)]
        for index, thread in enumerate(threads):
            thread.start()
            if index == flooders - 1:
                time.sleep(1.0)  # the flood first: it takes the workers and queue places before normal clients
        for thread in threads[:flooders]:
            thread.join()
        time.sleep(max(0.0, until - time.monotonic()))
        flood_over = time.monotonic()
        for thread in threads[flooders:]:
            thread.join()
        time.sleep(max(0.0, flood_over + AFTER_SECONDS - time.monotonic()))
        after = rss_mb(server.process.pid)
        import httpx

        left = httpx.get(f"{server.url}/metrics", timeout=30).json()  # anything still running 20 s after?
        left = {key: left[key] for key in ("streams_active", "active_jobs", "queue_length")}
        stop.set()
        watcher.join()
    finally:
        stop.set()
        errors = server.stop()
    during = [rss for when, rss in samples if when <= flood_over]
    return {"command": " ".join(server.command[2:]),
            "baseline_mb": baseline, "peak_mb": max(during), "after_mb": after,
            "flood_seconds": flood_over - began, "flood_mb": tally.flood_bytes / 2**20,
            "flood_streams": tally.flood_streams, "flood_refused": tally.flood_refused,
            "served": dict(tally.served), "refused": tally.refused, "failed": tally.failed,
            "latency_median": statistics.median(tally.latencies) if tally.latencies else None,
            "latency_max": max(tally.latencies) if tally.latencies else None,
            "load": (load_before, os.getloadavg()[0]),
            "flooders": flooders, "normals": normals, "traceback": "Traceback" in errors, "left": left,
            "rss_timeline": [round(rss) for when, rss in samples[::50]]}


def verdict(result: dict) -> list[str]:
    """What failed, in words (empty: the run passed)."""
    problems = []
    if result["peak_mb"] - result["baseline_mb"] > PEAK_LIMIT_MB:
        problems.append(f"peak {result['peak_mb']:.0f} MB is more than {PEAK_LIMIT_MB} MB over the baseline")
    if result["after_mb"] - result["baseline_mb"] > AFTER_LIMIT_MB:
        problems.append(f"{AFTER_SECONDS:g} s after: {result['after_mb']:.0f} MB is more than {AFTER_LIMIT_MB} MB "
                        "over the baseline")
    if result["failed"]:
        problems.append(f"normal requests failed: {result['failed'][:3]}")
    if not sum(result["served"].values()):
        problems.append("no normal request was served")
    if result["traceback"]:
        problems.append("the server printed a traceback")
    return problems


def table(result: dict) -> str:
    from common import machine_description

    base = result["baseline_mb"]
    served = result["served"]
    latency = (f"median {result['latency_median']:.1f} s, max {result['latency_max']:.1f} s"
               if result["latency_median"] is not None else "none served")
    problems = verdict(result)
    rows = [
        ("machine", machine_description()),
        ("server", f"`{result['command']}` (2 workers, queue 8, demo model unless --weights)"),
        ("clients", f"{result['flooders']} abusive (768 kHz f32le, 4 MiB messages as fast as the socket takes them, "
                    f"half never read frames, each leaves abruptly and comes back), {result['normals']} normal"),
        ("load average before / after (1 min; 2 cores)", "{:.1f} / {:.1f}".format(*result["load"])
         + (": other work shared the CPU, so the normal clients waited longer" if max(result["load"]) > 2.5 else "")),
        ("baseline RSS (after warm-up)", f"{base:.0f} MB"),
        ("peak RSS during the flood", f"{result['peak_mb']:.0f} MB (+{result['peak_mb'] - base:.0f}; "
                                      f"limit +{PEAK_LIMIT_MB})"),
        (f"RSS {AFTER_SECONDS:g} s after the flood", f"{result['after_mb']:.0f} MB "
                                                     f"(+{result['after_mb'] - base:.0f}; limit +{AFTER_LIMIT_MB})"),
        ("flood audio the server took", f"{result['flood_mb']:.0f} MB in {result['flood_seconds']:.0f} s over "
                                        f"{result['flood_streams']} streams ({result['flood_refused']} refused "
                                        "with 429)"),
        ("normal clients served", f"{served['stream']} streams + {served['job']} jobs, "
                                  f"{len(result['failed'])} failed, {result['refused']} 429s retried; {latency}"),
        ("RSS every 5 s (MB)", ", ".join(map(str, result["rss_timeline"]))),
        ("result", "pass" if not problems else "FAIL: " + "; ".join(problems)),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="weights folder (default: the bundled demo model)")
    parser.add_argument("--quick", action="store_true", help="a 30 s flood instead of 90 s")
    parser.add_argument("--window", type=float, help="seconds the flood lasts")
    parser.add_argument("--flooders", type=int, default=4)
    parser.add_argument("--normals", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only, do not write BENCHMARKS.md")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line (and not write)")
    args = parser.parse_args()
    logging.getLogger("websockets").disabled = True  # the abusive clients' cut connections are meant to fail
    window = args.window or (30.0 if args.quick else 90.0)
    result = run(args.weights, args.flooders, args.normals, window, hold=min(25.0, window / 2))
    if args.json:
        print(json.dumps(result))
        return 0 if not verdict(result) else 1
    command = "python benchmarks/bench_server_flood.py" + (" --quick" if args.quick else "")
    body = header("Server under a flooding stream", command)
    body += ("\nIssue 18: a stream declaring 768 kHz f32le used to be read into memory as fast as the network "
             "carried it (about 368 MB per stream in 2 s; 2.5 GB with four). Now PCM is kept as 16 kHz float32 "
             "in an inbox of `ws_buffer_seconds` (10 s) and the server stops reading a client that is ahead of it "
             "(docs/streaming.md, \"Memory\").\n\n" + table(result))
    print(body)
    if not (args.quick or args.no_write):
        write_section("server_flood", body)
        print("written to BENCHMARKS.md")
    return 0 if not verdict(result) else 1


if __name__ == "__main__":
    sys.exit(main())
