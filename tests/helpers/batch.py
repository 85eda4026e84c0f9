"""Batch test helpers: short speech files, manifests, and a killer of the worker that renders a given job."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import wave
from pathlib import Path

import numpy as np


def write_speech(path: Path, seconds: float, seed: int) -> Path:
    """A voice-like tone with noise, 16 kHz 16-bit mono WAV."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    signal_ = 0.3 * np.sin(2 * np.pi * (120 + 40 * seed) * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    pcm = (np.clip(signal_ + 0.02 * rng.standard_normal(t.size), -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(16000)
        file.writeframes(pcm.tobytes())
    return path


def write_manifest(path: Path, jobs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def small_jobs(root: Path, count: int) -> list[dict]:
    """`count` audio-driven jobs of 0.4 s over the two portraits in `root` (see the batch_inputs fixture)."""
    return [{"portrait": str(root / ["ann.png", "bob.png"][i % 2]), "audio": str(root / f"s{i % 2}.wav"),
             "output": f"v{i}.mp4", "crop": False, "seed": i} for i in range(count)]


def kill_when_writing(out_dir: Path, stem: str, timeout: float = 120.0) -> dict:
    """Start a thread that SIGKILLs the process writing `out_dir/.<stem>.*.tmp.mp4` (the video writer's temporary
    file) as soon as one has it open; the returned dict gets the killed pid under "pid"."""
    killed: dict = {}
    prefix = f".{stem}."

    def writer_pid() -> int | None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if os.path.dirname(target) == str(out_dir) and os.path.basename(target).startswith(prefix):
                        return int(pid)
            except OSError:
                continue
        return None

    def watch() -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and "pid" not in killed:
            pid = writer_pid()
            if pid is not None and pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    return killed
