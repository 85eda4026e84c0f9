"""Batch generation: many short videos with the demo model, one CLI call per job against `imtalker batch`.

40 audio-driven jobs of 1 s (25 frames) each, over two portraits (the bundled one and its mirror image) and four
1-second pieces of the bundled speech, seeds 0-39, face crop on. Every mode runs as the command a user types, in a
fresh process, and is timed from start to exit:

- one CLI call per job: `imtalker generate` 40 times (interpreter start, model loading, face detection and portrait
  encoding every time);
- `imtalker batch --workers 1`: the networks loaded once, each portrait found and encoded once;
- `imtalker batch --workers 2`: a local pool of two processes, one torch thread each;
- `imtalker batch --ray --workers 2`: two Ray actors (one CPU each) on a local Ray instance started by the command.

Start-up and scheduling = wall - (sum of the jobs' own seconds in results.jsonl) / workers: what the mode costs
beyond rendering.

    python benchmarks/bench_batch.py            # written to BENCHMARKS.md
    python benchmarks/bench_batch.py --quick    # 4 jobs, no Ray, not written
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from common import header, write_section
import imtalker
from imtalker.io.audio import load_audio

ASSETS = Path(imtalker.__file__).parent / "assets"
SECONDS_PER_JOB = 1


def make_inputs(folder: Path, jobs: int) -> Path:
    """Two portraits, four 1 s speech pieces and a manifest of `jobs` lines; returns the manifest."""
    portrait = Image.open(ASSETS / "demo_portrait.png").convert("RGB")
    portrait.save(folder / "ann.png")
    portrait.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "bob.png")
    speech = load_audio(ASSETS / "demo_speech.wav", sample_rate=16000)
    for index in range(4):
        piece = speech[index * 16000 * SECONDS_PER_JOB:(index + 1) * 16000 * SECONDS_PER_JOB]
        with wave.open(str(folder / f"s{index}.wav"), "wb") as file:
            file.setnchannels(1)
            file.setsampwidth(2)
            file.setframerate(16000)
            file.writeframes((np.clip(piece, -1, 1) * 32767).astype("<i2").tobytes())
    lines = [{"portrait": ["ann.png", "bob.png"][i % 2], "audio": f"s{i % 4}.wav", "output": f"v{i:02d}.mp4",
              "seed": i} for i in range(jobs)]
    manifest = folder / "jobs.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def imtalker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "imtalker", *args]


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def run_cli_per_job(folder: Path, manifest: Path, weights: str) -> dict:
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    out = folder / "cli"
    out.mkdir()
    wall = sum(timed(imtalker_command("generate", "-i", line["portrait"], "-a", line["audio"], "-o",
                                      str(out / line["output"]), "--weights", weights, "--seed", str(line["seed"]),
                                      "-q"), folder) for line in lines)
    return {"jobs": len(lines), "wall": wall, "workers": 1, "job_seconds": [wall / len(lines)] * len(lines)}


def run_batch_mode(folder: Path, manifest: Path, weights: str, name: str, extra: list[str], workers: int) -> dict:
    out = folder / name
    wall = timed(imtalker_command("batch", str(manifest), "--out", str(out), "--weights", weights, "-q", *extra),
                 folder)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    if any(record["status"] != "done" for record in records):
        raise RuntimeError(f"{name}: not every job finished: {records}")
    return {"jobs": len(records), "wall": wall, "workers": workers,
            "job_seconds": [record["seconds"] for record in records],
            "reused": sum(bool(record.get("portrait_reused")) for record in records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40, help="jobs per mode")
    parser.add_argument("--weights", help="weights folder (default: the bundled demo model)")
    parser.add_argument("--quick", action="store_true", help="4 jobs, no Ray, not written")
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray row")
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    jobs = 4 if args.quick else args.jobs
    weights = args.weights or str(imtalker.bundled_demo_model())
    load_before = os.getloadavg()
    modes = [("one `imtalker generate` per job", None, None, 1),
             ("`imtalker batch --workers 1`", "workers1", ["--workers", "1"], 1),
             ("`imtalker batch --workers 2` (local pool)", "workers2", ["--workers", "2"], 2)]
    if not (args.quick or args.no_ray):
        modes.append(("`imtalker batch --ray --workers 2` (local Ray instance)", "ray2", ["--ray", "--workers", "2"],
                      2))
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        manifest = make_inputs(folder, jobs)
        for label, name, extra, workers in modes:
            if name is None:
                result = run_cli_per_job(folder, manifest, weights)
            else:
                result = run_batch_mode(folder, manifest, weights, name, extra, workers)
            rows.append((label, result))
            print(label, json.dumps({k: v for k, v in result.items() if k != "job_seconds"}), flush=True)
    load_after = os.getloadavg()

    command = "python benchmarks/bench_batch.py" + (f" --jobs {args.jobs}" if args.jobs != 40 else "") + (
        " --no-ray" if args.no_ray else "")
    body = header("Batch generation", command)
    body += (f"\n{jobs} audio-driven jobs of {SECONDS_PER_JOB} s ({SECONDS_PER_JOB * 25} frames) with the demo model "
             "(128 px), two portraits with the face crop, seeds 0-39; each mode is the command a user types, timed "
             "from start to exit. Job (s): the median of the jobs' own seconds (results.jsonl; for the CLI, the "
             "wall time per call). Start-up and scheduling: wall - sum of job seconds / workers. OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', 'unset')} for every command. Load average "
             f"before / after: {load_before[0]:.1f} / {load_after[0]:.1f} (2 cores: above 2, other work shared "
             "the CPU and the timings are pessimistic).\n\n"
             "| mode | wall (s) | jobs/min | job (s) | start-up and scheduling (s) | portraits reused |\n"
             "|---|---|---|---|---|---|\n")
    for label, r in rows:
        batch = "reused" in r  # the CLI's job seconds are its wall time per call: start-up is inside them
        overhead = f"{r['wall'] - sum(r['job_seconds']) / r['workers']:.1f}" if batch else "in every job"
        reused = f"{r['reused']} of {r['jobs']}" if batch else "-"
        body += (f"| {label} | {r['wall']:.1f} | {r['jobs'] / r['wall'] * 60:.1f} | "
                 f"{statistics.median(r['job_seconds']):.2f} | {overhead} | {reused} |\n")
    results = dict(rows)
    cli, single = results["one `imtalker generate` per job"], results["`imtalker batch --workers 1`"]
    body += (f"\nOne CLI call per job costs {cli['wall'] / cli['jobs'] - single['wall'] / single['jobs']:.2f} s more "
             f"per job than `--workers 1` ({single['wall'] / single['jobs']:.2f} s per job in the batch, start-up "
             "included): interpreter start, model loading, face detector start and portrait encoding.\n")
    print(body)
    if not (args.quick or args.no_write):
        write_section("bench_batch", body)
        print("written to BENCHMARKS.md")


if __name__ == "__main__":
    main()
