"""Issue 18: a stream flooding the server is slowed down instead of filling its memory, requests addressed to
another host (DNS rebinding) are refused, too many connections get 503 with Retry-After, and the smaller holes:
huge images, an ambiguous portrait, the AAC priming in the streamed MP4 (tests/apps/server/test_server.py)."""

from __future__ import annotations

import base64
import gc
import json
import socket
import struct
import threading
import time
import zlib
from contextlib import ExitStack

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from imtalker.apps.server import ServerSettings
from imtalker.apps.server.intake import END, AudioInbox, PcmIntake
from imtalker.apps.server.metrics import rss_mb
from helpers.server import FAST, drawn_portrait, pcm16, png_bytes, running_server, voice, wav_bytes

FLOOD_RATE = 768000  # f32le: 3 MB of audio a second, the costliest start message
FLOOD_SECONDS = 3.0
# What a queued flooding stream may get the server to take in FLOOD_SECONDS: its inbox (1 s of 16 kHz audio,
# which is 3 MB of 768 kHz f32le), a message being read and one waiting (4 MiB each), and the kernel's socket
# buffers on both sides (up to 32 + 4 MB with Linux defaults). Without backpressure it was ~150 MB a second.
MAX_FLOOD_ACCEPTED_MB = 60
MAX_FLOOD_RSS_GROWTH_MB = 100


@pytest.fixture(scope="module")
def tight_server(pipe):
    with running_server(pipe, workers=1, max_queue=1, ws_buffer_seconds=1.0, max_connections=6,
                        ws_idle_seconds=20.0) as running:
        yield running


def start_message(portrait: bytes, **extra) -> str:
    return json.dumps({"type": "start", "portrait": base64.b64encode(portrait).decode(), "sample_rate": 16000,
                       "options": {**FAST, "crop": False}, **extra})


def wait_idle(url: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            metrics = client.get("/metrics").json()
            if metrics["active_jobs"] == 0 and metrics["queue_length"] == 0 and metrics["streams_active"] == 0:
                return metrics
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)


def normal_stream(ws_url: str, portrait: bytes) -> int:
    """A short well-behaved stream; the number of frames it got."""
    with connect(f"{ws_url}/v1/stream", open_timeout=30) as ws:
        ws.send(start_message(portrait))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        ws.send(pcm16(voice(0.3)).tobytes())
        ws.send(json.dumps({"type": "end"}))
        frames = 0
        while isinstance(message := ws.recv(timeout=120), bytes):
            frames += 1
        assert json.loads(message)["type"] == "done"
        return frames


def flood(ws, seconds: float) -> int:
    """Send 768 kHz f32le as fast as the socket takes it for `seconds`, then cut the connection; bytes sent."""
    noise = (np.random.default_rng(0).standard_normal(1 << 20) * 0.05).astype("<f4").tobytes()
    sent = 0
    cut = threading.Timer(seconds, lambda: ws.socket.shutdown(socket.SHUT_RDWR))
    cut.start()
    try:
        while True:
            ws.send(noise)
            sent += len(noise)
    except Exception:  # the cut
        pass
    finally:
        cut.cancel()
    return sent


def test_a_flooding_stream_is_slowed_down_not_buffered(tight_server, drawn_png):
    """The worker is busy, so the flooding stream waits in the queue: the server takes its 1 s buffer and stops
    reading. Memory stays flat, and once the client is gone nothing of its stream is left."""
    normal_stream(tight_server.ws_url, drawn_png)  # warm-up: the portrait encoded, the networks run once
    gc.collect()
    before = rss_mb()
    with connect(f"{tight_server.ws_url}/v1/stream", open_timeout=30) as busy:
        busy.send(start_message(drawn_png))
        assert json.loads(busy.recv(timeout=30))["type"] == "ready"  # holds the only worker, sends nothing yet
        with connect(f"{tight_server.ws_url}/v1/stream", open_timeout=30, close_timeout=1) as flooder:
            flooder.send(start_message(drawn_png, sample_rate=FLOOD_RATE, format="f32le"))
            ready = json.loads(flooder.recv(timeout=30))
            assert ready["type"] == "ready" and ready["buffer_seconds"] == 1.0
            accepted = flood(flooder, FLOOD_SECONDS)
        grown = rss_mb() - before
        busy.send(pcm16(voice(0.3)).tobytes())
        busy.send(json.dumps({"type": "end"}))
        while isinstance(message := busy.recv(timeout=120), bytes):
            pass
        assert json.loads(message)["type"] == "done"  # the worker's own stream is served normally
    print(f"\nqueued flood: {accepted / 2**20:.0f} MB taken in {FLOOD_SECONDS:g} s, RSS +{grown:.0f} MB")
    assert accepted / 2**20 < MAX_FLOOD_ACCEPTED_MB, accepted / 2**20
    assert grown < MAX_FLOOD_RSS_GROWTH_MB, grown
    wait_idle(tight_server.url)
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is AudioInbox]  # nothing of either stream is kept


def test_a_flooding_stream_that_runs_is_paced_by_its_render(tight_server, drawn_png):
    """With the worker free, the flood is taken only as fast as the stream renders (plus the buffers above), and
    the stream is still a valid one: after "end", frames come for all the audio taken."""
    noise = (np.random.default_rng(0).standard_normal(1 << 20) * 0.05).astype("<f4").tobytes()
    with connect(f"{tight_server.ws_url}/v1/stream", open_timeout=30, close_timeout=1, max_size=None) as flooder:
        flooder.send(start_message(drawn_png, sample_rate=FLOOD_RATE, format="f32le"))
        assert json.loads(flooder.recv(timeout=30))["type"] == "ready"
        frames, done = [], []

        def read():
            try:
                while True:
                    message = flooder.recv(timeout=120)
                    if isinstance(message, bytes):
                        frames.append(message)
                    elif json.loads(message)["type"] in ("done", "error"):
                        done.append(json.loads(message))
                        return
            except Exception:
                pass

        reader = threading.Thread(target=read)
        reader.start()
        accepted, deadline = 0, time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < deadline:  # each send waits while the server is not reading
            flooder.send(noise)
            accepted += len(noise)
        flooder.send(json.dumps({"type": "end"}))
        reader.join()
    print(f"\nrunning flood: {accepted / 2**20:.0f} MB taken in {FLOOD_SECONDS:g} s, {len(frames)} frames")
    assert done and done[0]["type"] == "done", done
    # the buffers, plus the audio the stream rendered (on a quiet machine the tiny networks render seconds of it)
    rendered_mb = done[0]["frames"] / 25 * FLOOD_RATE * 4 / 2**20
    assert accepted / 2**20 < MAX_FLOOD_ACCEPTED_MB + rendered_mb, (accepted / 2**20, rendered_mb)
    assert 0 < len(frames) == done[0]["frames"]  # every frame of the audio taken, as the done message counts
    wait_idle(tight_server.url)


def test_pcm_intake_matches_the_session_resampling():
    """Converting on arrival keeps the length rule of `load_audio`: round(n * 16000 / rate) samples in all."""
    rng = np.random.default_rng(0)
    for rate, n in ((768000, 768000 + 13), (22050, 57330), (8000, 4001), (16000, 1234)):
        intake = PcmIntake(rate, "f32le")
        data = (rng.standard_normal(n) * 0.1).astype("<f4").tobytes()
        pieces = [intake.convert(data[i:i + 9999]) for i in range(0, len(data), 9999)]  # splits samples too
        total = sum(p.size for p in pieces) + intake.finish().size
        assert total == round(n * 16000 / rate)
        assert intake.seconds_received == pytest.approx(n / rate)


def test_audio_inbox_holds_at_most_its_capacity():
    import asyncio

    async def scenario():
        inbox = AudioInbox(1000, asyncio.get_running_loop())
        putter = asyncio.create_task(inbox.put(np.zeros(3500, np.float32)))
        await asyncio.sleep(0.05)
        assert not putter.done() and inbox.held == 1000  # waits for room: the backpressure
        taken = 0
        while taken < 3500:
            item = await asyncio.to_thread(inbox.get, 1.0)
            taken += item.size
            assert inbox.held <= 1000
        await putter
        inbox.close()
        assert inbox.held == 0

    asyncio.run(scenario())


def test_audio_inbox_hands_over_everything_waiting_up_to_the_end():
    """A worker that fell behind takes its whole backlog at once, with when it started waiting (so its session
    knows how late it is and catches up)."""
    import asyncio

    async def scenario():
        inbox = AudioInbox(10_000, asyncio.get_running_loop())
        before = time.monotonic()
        for value in (1, 2, 3):
            await inbox.put(np.full(800, value, np.float32))
            await asyncio.sleep(0.05)
        inbox.put_end()
        first, arrived_at = await asyncio.to_thread(inbox.get_with_time, 1.0)
        assert first.size == 2400 and np.array_equal(first[::800], [1, 2, 3]) and inbox.held == 0
        assert before <= arrived_at < before + 0.05  # when the first piece came: the backlog's wait counts
        assert await asyncio.to_thread(inbox.get, 1.0) is END

    asyncio.run(scenario())


# -- hosts and origins -----------------------------------------------------------------------------------------


def test_requests_for_another_host_are_refused(tight_server, drawn_png):
    """DNS rebinding: evil.example resolves to 127.0.0.1; its page's requests name evil.example as Host and Origin."""
    rebinding = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    files = {"portrait": ("p.png", drawn_png), "audio": ("a.wav", wav_bytes(voice(0.2)))}
    with httpx.Client(base_url=tight_server.url, timeout=30) as client:
        for reply in (client.post("/v1/videos", files=files, data={"crop": "false"}, headers=rebinding),
                      client.get("/metrics", headers=rebinding), client.get("/healthz", headers=rebinding)):
            assert reply.status_code == 421 and reply.json()["error"] == "wrong_host", reply.text
            assert "--allow-host" in reply.json()["message"]
        port = tight_server.settings.port
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "127.0.0.2", "LOCALHOST"):
            assert client.get("/metrics", headers={"Host": host}).status_code == 200, host
        same_site = client.get("/metrics", headers={"Origin": tight_server.url})
        assert same_site.status_code == 200
    raw = socket.create_connection(("127.0.0.1", tight_server.settings.port))
    with connect("ws://evil.example:8000/v1/stream", sock=raw, origin="http://evil.example:8000",
                 open_timeout=30) as ws:
        reply = json.loads(ws.recv(timeout=30))
        assert reply["status"] == 421 and reply["error"] == "wrong_host"


@pytest.mark.parametrize("settings, host, allowed", [
    ({}, "localhost:8000", True), ({}, "127.0.0.1", True), ({}, "[::1]:8000", True), ({}, "127.9.9.9", True),
    ({}, "evil.example", False), ({}, "192.168.1.5:8000", False), ({}, "localhost.evil.example", False),
    ({"allow_hosts": ("studio.lan",)}, "studio.lan:8000", True), ({"allow_hosts": ("*",)}, "evil.example", True),
    ({"host": "studio.lan"}, "STUDIO.lan:8000", True), ({"host": "192.168.1.5"}, "192.168.1.5:8000", True),
    ({"host": "0.0.0.0"}, "192.168.1.5:8000", True), ({"host": "0.0.0.0"}, "evil.example:8000", False),
])
def test_allowed_hosts(settings, host, allowed):
    assert ServerSettings(**settings).allows_host(host) is allowed


def test_origin_must_name_an_allowed_host(pipe):
    from imtalker.apps.server.errors import ApiError
    from imtalker.apps.server.state import ServerState

    state = ServerState(ServerSettings(allow_origins=("https://app.example",)), pipe, None, None)
    state.check_origin({"origin": "https://app.example", "host": "localhost:8000"})
    state.check_origin({"origin": "http://localhost:8000", "host": "localhost:8000"})
    with pytest.raises(ApiError) as refused:
        state.check_origin({"origin": "http://evil.example:8000", "host": "evil.example:8000"})
    assert refused.value.status == 403


# -- connections, retries, inputs ------------------------------------------------------------------------------


def test_too_many_connections_get_503_with_retry_after(tight_server):
    """max_connections 6: six idle WebSockets (no start message yet) fill it; the seventh request gets 503."""
    with ExitStack() as idle:
        for _ in range(6):
            idle.enter_context(connect(f"{tight_server.ws_url}/v1/stream", open_timeout=30))
        time.sleep(0.2)
        reply = httpx.get(f"{tight_server.url}/metrics", timeout=30)
        assert reply.status_code == 503 and reply.json()["error"] == "unavailable"
        assert int(reply.headers["retry-after"]) >= 1
        with connect(f"{tight_server.ws_url}/v1/stream", open_timeout=30) as extra:
            message = json.loads(extra.recv(timeout=30))
            assert message["status"] == 503 and message["retry_after"] >= 1
    time.sleep(0.2)
    assert httpx.get(f"{tight_server.url}/metrics", timeout=30).status_code == 200


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, with almost no data (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(5000, 5000), (30000, 30000)])  # over our limit; over PIL's own bomb limit too
def test_huge_images_are_413(tight_server, size):
    reply = httpx.post(f"{tight_server.url}/v1/portraits", files={"portrait": ("p.png", huge_png(*size))},
                       data={"crop": "false"}, timeout=30)
    assert reply.status_code == 413 and reply.json()["error"] == "too_large", reply.text


def test_portrait_and_portrait_id_together_are_400(tight_server, drawn_png):
    files = {"portrait": ("p.png", drawn_png), "audio": ("a.wav", wav_bytes(voice(0.2)))}
    reply = httpx.post(f"{tight_server.url}/v1/videos", files=files,
                       data={"crop": "false", "portrait_id": "0" * 32}, timeout=30)
    assert reply.status_code == 400 and "not both" in reply.json()["message"]
    with connect(f"{tight_server.ws_url}/v1/stream", open_timeout=30) as ws:
        ws.send(start_message(drawn_png, portrait_id="0" * 32))
        assert json.loads(ws.recv(timeout=30))["status"] == 400


def open_and_never_read(port: int, start: str) -> socket.socket:
    """A WebSocket client that opens a stream and then reads nothing (a raw socket with a tiny receive buffer, so
    the server's sends back up at once instead of filling a client library's queue)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(1)  # byte by byte: nothing after the handshake is taken from the socket
    assert reply.startswith(b"HTTP/1.1 101"), reply
    payload, mask = start.encode(), b"\x01\x02\x03\x04"
    length = struct.pack("!BH", 0x80 | 126, len(payload)) if len(payload) < 65536 else struct.pack(
        "!BQ", 0x80 | 127, len(payload))
    sock.sendall(b"\x81" + length + mask + bytes(b ^ mask[k % 4] for k, b in enumerate(payload)))
    return sock


def test_a_client_that_stops_reading_is_dropped_without_stalling_another(pipe, drawn_png):
    """An always-on stream whose client never reads backs up; the server gives up on it after `ws_idle_seconds`
    (its worker is free again) while a second client's stream is served in full meanwhile."""
    big = png_bytes(np.tile(drawn_portrait(160), (4, 4, 1)))  # 640 px: pasted-back frames of ~100 kB
    with running_server(pipe, workers=2, max_queue=0, ws_idle_seconds=2.0) as server:
        stalled = open_and_never_read(server.settings.port, json.dumps({
            "type": "start", "portrait": base64.b64encode(big).decode(), "sample_rate": 16000, "idle": True,
            "image_format": "png", "options": {**FAST, "crop": False, "paste_back": True}}))
        try:
            deadline = time.monotonic() + 30
            while server.state.metrics.snapshot()["frames_rendered"] < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.state.jobs.stats()["running"] == 1  # it runs: its frames are rendered and back up
            assert normal_stream(server.ws_url, drawn_png) == 8  # served while the other stream blocks
            deadline = time.monotonic() + 60
            while server.state.jobs.stats()["running"] and time.monotonic() < deadline:
                time.sleep(0.1)
            stats = server.state.jobs.stats()
            # an always-on stream runs until its client ends it: none running means the stalled one was dropped
            # (408 slow_client cancels its job) and its worker freed
            assert stats["running"] == 0 and stats["cancelled"] >= 1
        finally:
            stalled.close()
