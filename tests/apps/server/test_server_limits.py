"""Limits of a one-worker server with an API key: the key is enforced, a full server answers 429, and a client
that disconnects or goes quiet frees its worker for the next request."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from websockets.sync.client import connect

from helpers.server import FAST, pcm16, running_server, voice, wav_bytes

KEY = "test-key-0123456789"
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def small_server(pipe):
    with running_server(pipe, workers=1, max_queue=0, api_key=KEY, ws_idle_seconds=1.5) as running:
        yield running


@pytest.fixture
def client(small_server):
    with httpx.Client(base_url=small_server.url, timeout=60) as http:
        yield http


def start_message(drawn_png, **extra) -> str:
    return json.dumps({"type": "start", "portrait": base64.b64encode(drawn_png).decode(), "sample_rate": 16000,
                       "options": {**FAST, "crop": False}, **extra})


def wait_idle(client, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        metrics = client.get("/metrics", headers=AUTH).json()
        if metrics["active_jobs"] == 0 and metrics["queue_length"] == 0 and metrics["streams_active"] == 0:
            return metrics
        assert time.monotonic() < deadline, metrics
        time.sleep(0.05)


def small_job(client, drawn_png, headers=AUTH):
    files = {"portrait": ("p.png", drawn_png), "audio": ("a.wav", wav_bytes(voice(0.3)))}
    return client.post("/v1/videos", files=files, data={"crop": "false", "nfe": "2"}, headers=headers)


def test_api_key_is_enforced(client, small_server, drawn_png):
    assert client.get("/healthz").status_code == 200  # liveness needs no key
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    assert client.get("/metrics", headers={"X-API-Key": "wrong-key-000"}).status_code == 401
    assert client.get("/metrics", headers=AUTH).status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert small_job(client, drawn_png, headers={}).status_code == 401
    assert client.get("/v1/videos/whatever").status_code == 401  # no probing of job ids without the key
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/no/such/path", "/v1/videos"):
        refused = client.get(path)  # nothing but /healthz without the key, API description pages included
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized", path
    assert client.get("/openapi.json", headers=AUTH).status_code == 200
    with connect(f"{small_server.ws_url}/v1/stream", open_timeout=30) as ws:
        ws.send(start_message(drawn_png))
        assert json.loads(ws.recv(timeout=30))["status"] == 401
    with connect(f"{small_server.ws_url}/v1/stream", open_timeout=30) as ws:  # browsers: key in the start message
        ws.send(start_message(drawn_png, api_key=KEY))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
    wait_idle(client)


def test_disconnecting_client_frees_its_worker(client, small_server, drawn_png):
    audio = pcm16(voice(4.0)).tobytes()
    with connect(f"{small_server.ws_url}/v1/stream", additional_headers=AUTH, open_timeout=30) as ws:
        ws.send(start_message(drawn_png))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        for start in range(0, len(audio), 3200):
            ws.send(audio[start:start + 3200])
        assert isinstance(ws.recv(timeout=120), bytes)  # rendering has started
        busy = small_job(client, drawn_png)  # the only worker is taken and there is no queue
        assert busy.status_code == 429 and busy.json()["error"] == "busy" and "try again" in busy.json()["message"]
        assert int(busy.headers["retry-after"]) >= 1
        with connect(f"{small_server.ws_url}/v1/stream", additional_headers=AUTH, open_timeout=30) as other:
            other.send(start_message(drawn_png))
            refused = json.loads(other.recv(timeout=30))
            assert refused["status"] == 429 and refused["retry_after"] >= 1
    # the client left mid-stream (no "end"): its job is cancelled within a render batch
    wait_idle(client)
    accepted = small_job(client, drawn_png)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    deadline = time.monotonic() + 120
    while client.get(f"/v1/videos/{job_id}", headers=AUTH).json()["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.get("/metrics", headers=AUTH).json()["jobs"]["cancelled"] >= 1


def test_quiet_stream_is_closed_and_frees_its_worker(client, small_server, drawn_png):
    with connect(f"{small_server.ws_url}/v1/stream", additional_headers=AUTH, open_timeout=30) as ws:
        ws.send(start_message(drawn_png))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        ws.send(pcm16(voice(0.2)).tobytes())
        started = time.monotonic()
        reply = json.loads(ws.recv(timeout=30))  # nothing more is sent
        assert reply["status"] == 408 and reply["error"] == "idle"
        assert 1.0 < time.monotonic() - started < 15
    wait_idle(client)
    assert small_job(client, drawn_png).status_code == 202
    wait_idle(client)
