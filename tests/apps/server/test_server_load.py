"""Bounded load: 50 clients at once against 2 workers and a queue of 4. Every request is served or refused with 429
and a JSON message, memory stays bounded, and the server is idle again by itself when the clients are done."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from websockets.sync.client import connect

from helpers.server import FAST, pcm16, running_server, voice, wav_bytes

CLIENTS, STREAMS = 50, 10  # of the 50 clients, 10 open WebSocket streams and 40 post video jobs
MAX_RSS_GROWTH_MB = 400  # the tiny networks, 6 jobs in hand at most, their buffers and the HTTP machinery


@pytest.fixture(scope="module")
def loaded_server(pipe):
    with running_server(pipe, workers=2, max_queue=4) as running:
        yield running


def post_job(url: str, portrait: bytes, audio: bytes, barrier: threading.Barrier) -> tuple[str, int]:
    with httpx.Client(base_url=url, timeout=120) as client:
        barrier.wait()
        reply = client.post("/v1/videos", files={"portrait": ("p.png", portrait), "audio": ("a.wav", audio)},
                            data={**{k: str(v) for k, v in FAST.items()}, "crop": "false"})
        if reply.status_code == 429:
            assert reply.json()["error"] == "busy" and reply.json()["message"]
            return "refused", 429
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["id"]
        deadline = time.monotonic() + 300
        while (status := client.get(f"/v1/videos/{job_id}").json()["status"]) in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status == "done"
        video = client.get(f"/v1/videos/{job_id}/video")
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        return "served", 202


def open_stream(url: str, portrait: bytes, barrier: threading.Barrier) -> tuple[str, int]:
    start = {"type": "start", "portrait": base64.b64encode(portrait).decode(), "sample_rate": 16000,
             "options": {**FAST, "crop": False}}
    audio = pcm16(voice(0.3)).tobytes()
    with connect(f"{url}/v1/stream", open_timeout=60) as ws:
        barrier.wait()
        ws.send(json.dumps(start))
        reply = json.loads(ws.recv(timeout=120))
        if reply["type"] == "error":
            assert reply["status"] == 429 and reply["message"]
            return "refused", 429
        ws.send(audio)
        ws.send(json.dumps({"type": "end"}))
        frames = 0
        while isinstance(message := ws.recv(timeout=300), bytes):
            frames += 1
        assert json.loads(message)["frames"] == frames == 8
        return "served", 200


def test_fifty_clients_are_served_or_refused(loaded_server, drawn_png):
    url = loaded_server.url
    with httpx.Client(base_url=url) as client:
        before = client.get("/metrics").json()
    peak = [before["rss_mb"]]
    stop = threading.Event()

    def watch_memory():
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.wait(0.2):
                peak.append(client.get("/metrics").json()["rss_mb"])

    watcher = threading.Thread(target=watch_memory)
    watcher.start()
    audio = wav_bytes(voice(0.2))
    barrier = threading.Barrier(CLIENTS)
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(open_stream, loaded_server.ws_url, drawn_png, barrier) if i % 5 == 0 and
                   i // 5 < STREAMS else pool.submit(post_job, url, drawn_png, audio, barrier)
                   for i in range(CLIENTS)]
        results = [future.result(timeout=600) for future in futures]
    elapsed = time.monotonic() - started
    stop.set()
    watcher.join()

    served = sum(1 for outcome, _ in results if outcome == "served")
    refused = sum(1 for outcome, _ in results if outcome == "refused")
    assert served + refused == CLIENTS
    assert served >= 6 and refused >= 1  # the first workers + queue are always taken; 50 at once overflow it
    with httpx.Client(base_url=url) as client:
        deadline = time.monotonic() + 60
        while (after := client.get("/metrics").json())["active_jobs"] or after["queue_length"] \
                or after["streams_active"]:
            assert time.monotonic() < deadline, after
            time.sleep(0.1)
    assert after["requests_refused"] - before["requests_refused"] == refused
    assert after["jobs"]["failed"] == 0
    assert max(peak) - before["rss_mb"] < MAX_RSS_GROWTH_MB, (before["rss_mb"], max(peak))
    print(f"\n{CLIENTS} clients: {served} served, {refused} refused (429) in {elapsed:.1f} s; RSS "
          f"{before['rss_mb']:.0f} -> peak {max(peak):.0f} MB")
