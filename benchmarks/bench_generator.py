"""Motion generator and audio encoder speed: compute seconds per second of audio (real-time factor).

Published-size networks with seeded random weights: the flow-matching generator (39M parameters; 2-second chunks,
classifier-free guidance, Euler steps) and a wav2vec2-base audio encoder (94M parameters, built from its default
config, no download). Each row runs in a fresh process so its peak RSS is its own.

    python benchmarks/bench_generator.py            # written to BENCHMARKS.md
    python benchmarks/bench_generator.py --quick    # tiny networks, a smoke run (not written)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import Wav2Vec2Config

from common import header, median_seconds, peak_rss_mb, run_child, write_section
from imtalker.sampling import SamplingOptions, sample_motion
from imtalker.config import GeneratorConfig
from imtalker.constants import FPS, SAMPLE_RATE
from imtalker.models.audio import AudioEncoder, num_frames_for_samples
from imtalker.models.generator import MotionGenerator

TINY_GENERATOR = GeneratorConfig(hidden_dim=64, depth=2, num_heads=4, audio_dim=64)
TINY_AUDIO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def child(mode: str, seconds: float, nfe: int, cfg_scale: float, repeats: int, quick: bool) -> dict:
    torch.manual_seed(0)
    num_samples = int(seconds * SAMPLE_RATE)
    frames = num_frames_for_samples(num_samples)
    with torch.inference_mode():
        if mode == "generator":
            model = MotionGenerator(TINY_GENERATOR if quick else GeneratorConfig()).eval()
            features = torch.randn(1, frames, model.config.audio_dim)
            reference = torch.randn(1, model.config.motion_dim)
            options = SamplingOptions(cfg_scale=cfg_scale, nfe=nfe, seed=0)
            run = lambda: sample_motion(model, features, reference, options=options)  # noqa: E731
        elif mode == "audio":
            model = AudioEncoder(Wav2Vec2Config(**TINY_AUDIO) if quick else Wav2Vec2Config()).eval()
            waveform = torch.randn(1, num_samples)
            run = lambda: model(waveform, frames)  # noqa: E731
        else:
            raise ValueError(mode)
        elapsed, times = median_seconds(run, repeats)
    return {"rtf": elapsed / seconds, "frames": frames, "times": times, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "SECONDS", "NFE", "CFG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, seconds, nfe, cfg = args.child
        print(json.dumps(child(mode, float(seconds), int(nfe), float(cfg), args.repeats, args.quick)))
        return

    extra = ["--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
    rows = []
    plan = [("motion generator", "generator", 10, 3.0), ("motion generator", "generator", 10, 1.0),
            ("motion generator", "generator", 5, 3.0), ("wav2vec2-base audio encoder", "audio", 0, 0.0)]
    for label, mode, nfe, cfg in plan:
        result = run_child(Path(__file__), [mode, str(args.seconds), str(nfe), str(cfg)] + extra)
        settings = f"nfe {nfe}, cfg {cfg:g}" if mode == "generator" else "-"
        rows.append(f"| {label} | {settings} | {args.seconds:g} s ({result['frames']} frames) | {result['rtf']:.4f} | "
                    f"{1 / result['rtf']:.1f}x | {result['peak_rss_mb']:.0f} |")
        print(rows[-1], flush=True)

    body = header("Motion generator and audio encoder, CPU",
                  "python benchmarks/bench_generator.py" + (" --quick" if args.quick else ""))
    body += (f"\nCompute seconds per second of audio (median of {args.repeats} runs after one warm-up), fp32, "
             f"{FPS} motion latents per second.\n\n"
             "| network | settings | audio | s per s of audio | faster than real time | peak RSS (MB) |\n"
             "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    if not args.no_write and not args.quick:
        write_section("bench_generator", body)
        print("written to BENCHMARKS.md")
    else:
        print(body)


if __name__ == "__main__":
    main()
