"""The bundled demo model: how long `imtalker demo` takes on a fresh interpreter, and its quality on held-out clips.

- Time: `python -m imtalker demo` in a new process, as a user runs it (imports, loading the three networks, the
  bundled portrait's face crop, 4 s of speech -> 100 frames, H.264/AAC encoding); median of the repeats.
- Quality: a held-out synthetic corpus (seed 1: faces and voices the model never saw) is generated and prepared
  afresh, then `imtalker.evaluation.evaluate` measures self-reenactment PSNR/SSIM and lip-sync correlation. With the
  defaults (6 clips of 8 s) it is the same held-out set `scripts/train_demo_model.py` evaluated on, so the numbers
  can be checked against the model card.

    python benchmarks/bench_demo.py                         # the bundled model, written to BENCHMARKS.md
    python benchmarks/bench_demo.py --weights runs/demo/weights   # a trained model not installed yet
    python benchmarks/bench_demo.py --quick                 # one run, one 3-second clip, not written
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import header, write_section
from imtalker.apps.demo import demo_evaluation
from imtalker.weights import bundled_demo_model
from imtalker.evaluation import evaluate
from imtalker.data.synthetic import demo_asset, write_corpus
from imtalker.training.prepare import PrepareConfig, prepare_dataset


def time_demo(folder: Path, repeats: int, weights: Path | None) -> dict:
    """`imtalker demo`, or with `weights` the same job through `imtalker generate`."""
    times = []
    for k in range(repeats):
        out = folder / f"demo{k}.mp4"
        command = ["demo"] if weights is None else [
            "generate", "-i", str(demo_asset("demo_portrait.png")), "-a", str(demo_asset("demo_speech.wav")),
            "--weights", str(weights), "--seed", "0"]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "imtalker", *command, "--out" if weights is None else "-o", str(out),
                        "-q"], check=True, timeout=600)
        times.append(time.perf_counter() - start)
    import av

    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    return {"median": statistics.median(times), "times": times, "frames": frames}


def measure_quality(folder: Path, weights: Path, clips: int, seconds: float) -> dict:
    write_corpus(folder / "corpus", clips=clips, seed=1, seconds=seconds, progress=False)
    prepare_dataset(folder / "corpus", folder / "data", PrepareConfig(size=128, min_seconds=min(2.4, seconds)))
    return evaluate(weights, folder / "data", progress=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=6, help="held-out clips (seed 1)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each held-out clip")
    parser.add_argument("--weights", type=Path, help="a 128 px weights folder instead of the bundled demo model")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.clips, args.seconds = 1, 1, 3.0
    if args.weights is None and bundled_demo_model() is None:
        raise SystemExit("no bundled demo model in imtalker/assets/demo_model; pass --weights DIR")
    weights = args.weights or bundled_demo_model()

    with tempfile.TemporaryDirectory() as tmp:
        timing = time_demo(Path(tmp), args.repeats, args.weights)
        print(f"imtalker demo: median {timing['median']:.1f} s over {args.repeats} runs, {timing['frames']} frames",
              flush=True)
        result = measure_quality(Path(tmp), weights, args.clips, args.seconds)
    s = result["summary"]
    recorded = (demo_evaluation() or {}).get("summary", {}) if args.weights is None else {}

    def cell(value, spec):
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    command = "python benchmarks/bench_demo.py" + (f" --weights {args.weights}" if args.weights else "") + (
        " --quick" if args.quick else "")
    body = header("Demo model (CPU)", command)
    body += (f"\nweights: {'the bundled demo model' if args.weights is None else args.weights}\n\n"
             f"`imtalker demo` (fresh interpreter, bundled portrait + {timing['frames'] / 25:g} s of speech, "
             f"{timing['frames']} frames at 128 px): **{timing['median']:.1f} s** median of {args.repeats} "
             f"({', '.join(f'{t:.1f}' for t in timing['times'])}); the issue's limit is 120 s.\n\n"
             f"Held-out synthetic clips (seed 1, {args.clips} x {args.seconds:g} s, regenerated and prepared by this "
             "run):\n\n"
             "| measure | this run | model card (training run) | target |\n|---|---|---|---|\n"
             f"| self-reenactment PSNR (dB) | {cell(s['psnr'], '.2f')} | {cell(recorded.get('psnr'), '.2f')} | >= 28 |\n"
             f"| no-motion baseline PSNR (dB): frame 0 copied | {cell(s.get('psnr_copy'), '.2f')} | "
             f"{cell(recorded.get('psnr_copy'), '.2f')} | |\n"
             f"| self-reenactment SSIM | {cell(s['ssim'], '.3f')} | {cell(recorded.get('ssim'), '.3f')} | |\n"
             f"| lip-sync r (generated mouth vs ground truth) | {cell(s['lipsync'], '.3f')} | "
             f"{cell(recorded.get('lipsync'), '.3f')} | >= 0.6 |\n"
             f"| lip-sync r, real frames (measurement ceiling) | {cell(s['lipsync_ceiling'], '.3f')} | "
             f"{cell(recorded.get('lipsync_ceiling'), '.3f')} | |\n"
             f"| lip-sync r, another clip's audio (chance) | {cell(s['lipsync_chance'], '.3f')} | "
             f"{cell(recorded.get('lipsync_chance'), '.3f')} | |\n")
    print(body)
    print(json.dumps(s))
    if not (args.quick or args.no_write):
        write_section("bench_demo", body)
        print("written to BENCHMARKS.md")


if __name__ == "__main__":
    main()
