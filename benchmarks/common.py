"""Shared helpers of the benchmark scripts: child-process runs, machine description, BENCHMARKS.md sections."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from imtalker.config import RendererConfig
from imtalker.export.precision import autocast_dtype, x86_cpu_flags

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
# the --quick runs' renderer: small enough for a CPU, every stage of the published one
TINY_RENDERER = RendererConfig(image_size=128, feature_channels=(16, 16, 32, 32, 64, 64),
                               motion_channels=(16, 32, 32, 64, 64, 64), adapt_dim=64)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of fn over `repeats` runs after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def run_child(script: Path, args: list[str], timeout: float = 1800) -> dict:
    """Run one measurement in a fresh interpreter (so peak RSS belongs to it alone); it prints one JSON line."""
    result = subprocess.run([sys.executable, str(script), "--child", *args], capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cpuinfo_field(name: str) -> str | None:
    """The first value of a /proc/cpuinfo field ("model name", "flags"), or None off Linux."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


# the flags that decide how fast bf16 and int8 matrix work runs through oneDNN
MATRIX_FLAGS = ("avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")


def cpu_kind() -> str:
    """"AMX", "AVX-512" or "AVX2": what decides the renderer's speed and whether bf16 runs natively. The hosts differ
    between sessions, so the CPU benchmarks with bf16 rows keep one BENCHMARKS.md section per kind."""
    flags = x86_cpu_flags() or set()
    return "AMX" if "amx_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2"


def kind_section(name: str) -> str:
    """The BENCHMARKS.md section of benchmark `name` for this kind of CPU, e.g. "bench_renderer/avx2"."""
    return f"{name}/{cpu_kind().lower().replace('-', '')}"


def cpu_flags() -> str:
    """CPU model, its widest vector instructions and its bf16/int8 matrix flags, e.g. "AMD EPYC: avx512f,
    avx512_bf16, avx512_vnni; no AMX" or "AMD EPYC: avx2 (no avx512), no bf16/int8 matrix flags; no AMX"."""
    cpu = cpuinfo_field("model name") or platform.processor() or "unknown CPU"
    flags = x86_cpu_flags() or set()
    vector = "avx512f" if "avx512f" in flags else "avx2 (no avx512)" if "avx2" in flags else "no avx2"
    matrix = ", ".join(flag for flag in MATRIX_FLAGS if flag in flags) or "no bf16/int8 matrix flags"
    amx = "" if "amx_bf16" in flags else "; no AMX"
    return f"{cpu}: {vector}, {matrix}{amx}"


# the CPU renderer rows' dtypes and the autocast dtype of each: bf16 = autocast over float32 weights,
# bf16-weights = the renderer cast to bfloat16 (weights and activations end to end, no autocast)
CPU_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "bf16-weights": None}


def cpu_autocast(dtype_name: str) -> torch.autocast:
    dtype = CPU_DTYPES[dtype_name]
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)


# said in place of the bf16 rows of a table on a CPU without bf16 instructions
NO_BF16_ROWS = ("No bf16 rows: this CPU has no bf16 instructions (avx512_bf16 or AMX), so bf16 would only be emulated, "
                "several times slower than fp32, and the pipelines keep fp32 here.")


def native_bf16() -> bool:
    """Whether this CPU runs bf16 matrix work natively; where it does not, the pipelines keep fp32 and a benchmark
    leaves out its bf16 rows (they would take some 14x the fp32 time). Logs the pipelines' warning where it does not."""
    return autocast_dtype(torch.bfloat16, torch.device("cpu")) is not None


def load_note(start: float) -> str:
    """The 1-minute load average at the start and the end of a run; other work on the machine slows every row."""
    end = os.getloadavg()[0]
    busy = "the machine was shared (loaded)" if max(start, end) > 2.5 else "quiet"
    return f"load average {start:.1f} at the start, {end:.1f} at the end: {busy}"


def machine_description() -> str:
    cpu = cpuinfo_field("model name") or platform.processor() or "unknown CPU"
    memory = ""
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f", {kib / 1024**2:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{memory}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}")


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section between this benchmark's markers in BENCHMARKS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_or_print(name: str, body: str, write: bool) -> None:
    """Write the section to BENCHMARKS.md (`write_section`), or only print it (quick runs, --no-write)."""
    if write:
        write_section(name, body)
        print("written to BENCHMARKS.md")
    else:
        print(body)


def header(title: str, command: str) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"## {title}\n\n- command: `{command}`\n- machine: {machine_description()}\n- date: {now}\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """`imtalker serve ARGS` in a subprocess on a free loopback port, returned once /healthz answers."""

    def __init__(self, *serve_args: str, start_timeout: float = 300):
        import httpx

        self.port = free_port()
        self.command = [sys.executable, "-m", "imtalker", "serve", "--port", str(self.port), "--quiet", *serve_args]
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url, self.ws_url = f"http://127.0.0.1:{self.port}", f"ws://127.0.0.1:{self.port}"
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {self.process.stderr.read()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> str:
        """Terminate it; its stderr."""
        self.process.terminate()
        try:
            _, errors = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, errors = self.process.communicate()
        return errors
