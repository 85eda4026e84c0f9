"""End-to-end audio-driven generation: peak memory for short vs long audio, and seconds per second of video.

Each row runs `AudioDrivenPipeline.to_file` (audio file -> features -> motion -> frames -> H.264/AAC mp4) in a fresh
process with seeded random weights, on a 512x512 portrait with face crop off (random weights have no face to find).
- "small" networks (128 px, the size of the planned demo model) run 10 s, 60 s and 120 s of audio: past one
  audio-feature window (14 s) memory must not grow with the length, because everything is done chunk by chunk.
- "published" networks (512 px renderer, 39M generator, wav2vec2-base) give the end-to-end speed on CPU.

    python benchmarks/bench_pipeline.py            # written to BENCHMARKS.md
    python benchmarks/bench_pipeline.py --quick    # short clips, not written
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config

from common import header, peak_rss_mb, run_child, write_or_print
from imtalker import GeneratorConfig, RendererConfig
from imtalker.models.audio import AudioEncoder
from imtalker.models.generator import MotionGenerator
from imtalker.models.renderer import IMTRenderer
from imtalker.pipelines import AudioDrivenPipeline

SMALL_RENDERER = RendererConfig(image_size=128, feature_channels=(16, 16, 32, 32, 64, 64),
                                motion_channels=(16, 32, 32, 64, 64, 64), adapt_dim=64)
SMALL_GENERATOR = GeneratorConfig(hidden_dim=128, depth=2, num_heads=4, audio_dim=64)
SMALL_AUDIO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def speech_file(path: Path, seconds: float) -> Path:
    """A vowel-like voice with a syllable rhythm, 16-bit 22.05 kHz wav (resampled by the pipeline)."""
    rate = 22050
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        for start in range(0, int(seconds * rate), rate):  # a second at a time, so making it costs no memory
            t = np.arange(start, min(start + rate, int(seconds * rate))) / rate
            voice = 0.3 * np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
            f.writeframes((voice * 32767).astype(np.int16).tobytes())
    return path


def child(size: str, seconds: float) -> dict:
    torch.manual_seed(0)
    if size == "small":
        models = IMTRenderer(SMALL_RENDERER), MotionGenerator(SMALL_GENERATOR), AudioEncoder(Wav2Vec2Config(**SMALL_AUDIO))
    else:
        models = IMTRenderer(), MotionGenerator(), AudioEncoder(Wav2Vec2Config())
    pipe = AudioDrivenPipeline(*models)
    portrait = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        audio = speech_file(Path(folder) / "speech.wav", seconds)
        rss_before = peak_rss_mb()
        start = time.perf_counter()
        pipe.to_file(Path(folder) / "out.mp4", portrait, audio, crop=False, seed=0, nfe=10, cfg_scale=3.0,
                     max_seconds=None)
        elapsed = time.perf_counter() - start
    return {"seconds_per_second": elapsed / seconds, "elapsed": elapsed, "peak_rss_mb": peak_rss_mb(),
            "rss_after_load_mb": rss_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], float(args.child[1]))))
        return

    plan = ([("small", 2.0), ("small", 8.0)] if args.quick
            else [("small", 10.0), ("small", 60.0), ("small", 120.0), ("published", 4.0)])
    rows = []
    for size, seconds in plan:
        result = run_child(Path(__file__), [size, str(seconds)], timeout=3600)
        rows.append(f"| {size} | {seconds:g} s ({int(seconds * 25)} frames) | {result['seconds_per_second']:.2f} | "
                    f"{result['elapsed']:.1f} | {result['rss_after_load_mb']:.0f} | {result['peak_rss_mb']:.0f} |")
        print(rows[-1], flush=True)
    body = header("End-to-end audio-driven pipeline, CPU",
                  "python benchmarks/bench_pipeline.py" + (" --quick" if args.quick else ""))
    body += ("\nfp32, nfe 10, cfg 3, batch 8, face crop off; wall time includes audio decoding, features, motion, "
             "rendering and H.264/AAC encoding.\n\n"
             "| networks | audio | s per s of video | total s | RSS after loading (MB) | peak RSS (MB) |\n"
             "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    write_or_print("bench_pipeline", body, write=not (args.quick or args.no_write))


if __name__ == "__main__":
    main()
