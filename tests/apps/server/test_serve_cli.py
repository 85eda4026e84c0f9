"""`imtalker serve`: help, one-line errors with exit code 2, and a real run that serves and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

import imtalker.apps.cli
import imtalker.weights
from imtalker.apps.cli import main
from helpers.server import free_port


def test_help_shows_the_api(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in ("--workers", "--max-queue", "--api-key", "/v1/stream", "examples:"):
        assert text in out


def test_no_weights_exits_2(monkeypatch, capsys):
    monkeypatch.delenv("IMTALKER_HOME", raising=False)
    monkeypatch.setattr(imtalker.weights, "bundled_demo_model", lambda: None)  # a build without the bundled demo model
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--weights" in err and "IMTALKER_HOME" in err


def test_bad_settings_exit_2(weights, capsys):
    assert main(["serve", "--weights", str(weights), "--workers", "0"]) == 2
    assert "workers must be a positive integer" in capsys.readouterr().err
    assert main(["serve", "--weights", str(weights), "--api-key", "short"]) == 2


def test_serves_then_stops_on_sigterm(weights):
    port = free_port()
    env = {**os.environ, "IMTALKER_API_KEY": "a-key-for-the-cli-test"}
    process = subprocess.Popen([sys.executable, "-m", "imtalker", "serve", "--weights", str(weights), "--port",
                                str(port), "--workers", "1", "--quiet"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 401  # the key came from the env
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully (workers stopped, scratch folder removed), then re-raises the signal
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
