"""Streaming feature windows: how far incremental features (and the motion they drive) are from whole-file ones,
and what each window size costs in latency.

A `StreamingSession` is fed a 12 s voice in 20 ms pieces; its features and motion latents are recorded (the renderer
is skipped: it does not depend on the window) and compared with the offline pipeline's, which encodes files up to
14 s in one piece. Published-size front ends with seeded random weights (no trained weights are downloaded):
wav2vec2-base (94M) and the log-mel encoder (default size), each driving a published-size motion generator
(nfe 10, cfg 3, seed 0) whose audio width matches it. For scale, the last row of each encoder compares whole-file
features with those of the same audio shifted by 10 ms.

    python benchmarks/bench_streaming.py            # written to BENCHMARKS.md
    python benchmarks/bench_streaming.py --quick    # tiny networks, two windows, not written
    python benchmarks/bench_streaming.py --weights weights/   # trained networks (printed, not written)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config

from common import header, median_seconds, run_child, write_or_print
from imtalker.sampling import SamplingOptions, sample_motion
from imtalker import GeneratorConfig, RendererConfig
from imtalker.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from imtalker.models.audio import AudioEncoder
from imtalker.models.generator import MotionGenerator
from imtalker.models.mel import MelAudioEncoder, MelConfig
from imtalker.models.renderer import IMTRenderer
from imtalker.pipelines import AudioDrivenPipeline
from imtalker.pipelines.streaming import StreamingSession

TINY_RENDERER = RendererConfig(image_size=128, feature_channels=(8, 8, 16, 16, 32, 32),
                               motion_channels=(8, 16, 16, 32, 32, 32), adapt_dim=32, const_channels=8, num_heads=4)
WINDOWS = [(0, 0), (0, 5), (25, 5), (50, 0), (50, 5), (50, 10), (50, 25), (100, 5), (100, 25)]
QUICK_WINDOWS = [(0, 0), (50, 5)]
PIECE_SECONDS = 0.02


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voice with a gliding pitch, syllable rhythm, loudness changes and breathy gaps, at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.3 * t) + 10 * np.sin(2 * np.pi * 1.7 * t))
    pitch /= SAMPLE_RATE
    envelope = np.clip(np.sin(2 * np.pi * 3.5 * t + np.sin(2 * np.pi * 0.5 * t)), 0, None) ** 0.7
    envelope *= 0.6 + 0.4 * np.sin(2 * np.pi * 0.2 * t)
    voice = sum(np.sin(k * pitch) / k for k in range(1, 8)) * envelope
    voice += 0.05 * rng.standard_normal(t.size) * (envelope < 0.1)
    return (0.3 * voice / np.abs(voice).max()).astype(np.float32)


def build(encoder_name: str, quick: bool, weights: str | None = None) -> AudioDrivenPipeline:
    torch.manual_seed(0)
    if weights:  # trained networks: their own audio encoder and generator
        from imtalker.weights import find_weights, load_audio_encoder, load_generator

        paths = find_weights(weights, need=("generator", "audio_encoder"))
        return AudioDrivenPipeline(IMTRenderer(TINY_RENDERER), load_generator(paths["generator"]),
                                   load_audio_encoder(paths["audio_encoder"]))
    if encoder_name == "wav2vec2":
        config = Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                conv_dim=(32,) * 7) if quick else Wav2Vec2Config()
        encoder = AudioEncoder(config)
    else:
        encoder = MelAudioEncoder(MelConfig(hidden_dim=32, feature_dim=64) if quick else MelConfig())
    generator = MotionGenerator(GeneratorConfig(hidden_dim=64, depth=2, num_heads=4, audio_dim=encoder.feature_dim)
                                if quick else GeneratorConfig(audio_dim=encoder.feature_dim))
    return AudioDrivenPipeline(IMTRenderer(TINY_RENDERER), generator, encoder)


def child(encoder_name: str, seconds: float, quick: bool, weights: str | None = None) -> dict:
    pipe = build(encoder_name, quick, weights)
    source = pipe.prepare_source(np.full((128, 128, 3), 128, np.uint8), crop=False)
    pipe.render_frames = lambda src, motion, batch_size=8, paste_back=False: iter(motion)  # motion, not pixels
    audio = speech_like(seconds)
    frames = math.ceil(audio.size * FPS / SAMPLE_RATE)
    options = dict(cfg_scale=3.0, nfe=10, seed=0)
    with torch.inference_mode():
        whole = pipe.audio_encoder(torch.from_numpy(audio)[None], frames)[0]  # (T, C): the offline features
        motion = sample_motion(pipe.generator, whole[None], source.state.motion, options=SamplingOptions(**options))[0]
        shifted = pipe.audio_encoder(torch.from_numpy(np.concatenate([np.zeros(160, np.float32), audio[:-160]]))[None],
                                     frames)[0]
    scale_f, scale_m = whole.abs().mean().item(), motion.std().item()
    rows = []
    for context, lookahead in QUICK_WINDOWS if quick else WINDOWS:
        session = StreamingSession(pipe, source, context_frames=context, lookahead_frames=lookahead, **options)
        features, step = [], session._sampler.step

        def record_step(chunk, *args, **kw):  # the 2-second schedule: every chunk's features are committed
            features.append(chunk[0])
            return step(chunk, *args, **kw)

        session._sampler.step = record_step
        piece = int(PIECE_SECONDS * SAMPLE_RATE)
        streamed = [f.image for p in range(0, audio.size, piece) for f in session.push(audio[p:p + piece])]
        streamed += [f.image for f in session.finish()]
        window = context + session.clip_frames + lookahead  # what one chunk costs the encoder, timed on its own
        piece_audio = torch.from_numpy(audio[:window * SAMPLES_PER_FRAME])[None]
        with torch.inference_mode():
            encode_seconds, _ = median_seconds(lambda: pipe.audio_encoder(piece_audio, window), repeats=5)
        feature_diff = (torch.cat(features) - whole).abs()
        motion_diff = (torch.stack(streamed) - motion).abs()
        rows.append({"context": context, "lookahead": lookahead,
                     "feature_max": feature_diff.max().item(), "feature_mean": feature_diff.mean().item(),
                     "feature_rel": feature_diff.mean().item() / scale_f,
                     "motion_max": motion_diff.max().item(), "motion_mean": motion_diff.mean().item(),
                     "motion_rel": motion_diff.mean().item() / scale_m,
                     "encode_ms": 1000 * encode_seconds,
                     "latency_s": (session.clip_frames + lookahead) / FPS})
    shift = (shifted - whole).abs()
    return {"rows": rows, "feature_scale": scale_f, "motion_scale": scale_m, "frames": frames,
            "shift_max": shift.max().item(), "shift_mean": shift.mean().item(),
            "shift_rel": shift.mean().item() / scale_f}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--weights", help="measure trained networks from this folder (its audio encoder and "
                                          "generator) instead of random ones")
    parser.add_argument("--child", nargs=2, metavar=("ENCODER", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], float(args.child[1]), args.quick, args.weights)))
        return

    seconds = 4.0 if args.quick else args.seconds
    lines = []
    extra = (["--quick"] if args.quick else []) + (["--weights", args.weights] if args.weights else [])
    for encoder in ("weights",) if args.weights else ("wav2vec2", "mel"):
        result = run_child(Path(__file__), [encoder, str(seconds)] + extra, timeout=3600)
        for row in result["rows"]:
            lines.append(f"| {encoder} | {row['context']} ({row['context'] / FPS:g} s) | {row['lookahead']} "
                         f"({row['lookahead'] / FPS:g} s) | {row['feature_max']:.3f} | {row['feature_mean']:.4f} | "
                         f"{100 * row['feature_rel']:.1f}% | {row['motion_max']:.3f} | {row['motion_mean']:.4f} | "
                         f"{100 * row['motion_rel']:.1f}% | {row['latency_s']:.2f} | {row['encode_ms']:.0f} |")
            print(lines[-1], flush=True)
        lines.append(f"| {encoder} | whole file, audio shifted 10 ms (for scale) | - | {result['shift_max']:.3f} | "
                     f"{result['shift_mean']:.4f} | {100 * result['shift_rel']:.1f}% | - | - | - | - | - |")
        print(lines[-1], flush=True)
    size = f"trained ({args.weights})" if args.weights else "tiny" if args.quick else "published-size"
    body = header("Streaming feature windows, CPU", "python benchmarks/bench_streaming.py"
                  + (" --quick" if args.quick else ""))
    body += (f"\n{size} front ends and generator, seeded random weights; {seconds:g} s voice pushed in "
             f"{PIECE_SECONDS * 1000:g} ms pieces; compared with whole-file features and the motion sampled from "
             "them (nfe 10, cfg 3, seed 0). Relative columns: mean abs difference over the mean abs feature / the "
             "motion's standard deviation. Latency: audio a chunk's first frame waits for (the 2 s chunk plus the "
             "look-ahead), before any compute; encode: encoder time for one chunk's window (median of 5, after a "
             "warm-up).\n\n"
             "| encoder | context frames | look-ahead frames | feature max abs | feature mean abs | feature rel | "
             "motion max abs | motion mean abs | motion rel | latency (s) | encode (ms) |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")
    write_or_print("streaming", body, write=not (args.quick or args.no_write or args.weights))


if __name__ == "__main__":
    main()
