"""onnxruntime beside PyTorch on this CPU: renderer seconds per frame (batch 8), generator and audio front end
seconds per second of audio, for the demo model and for published-size random weights, after checking the exported
graphs' parity.

    python benchmarks/bench_onnx.py                 # parity check + full table, written to BENCHMARKS.md
    python benchmarks/bench_onnx.py --quick         # tiny networks, a smoke run (not written)

First it runs the published-size parity test against the golden numbers (`pytest -m slow
tests/export/test_onnx_golden.py`), then each measurement in its own fresh process (peak RSS is its own). The
graphs are exported once per model into a temporary folder before the timed runs; both backends use
`torch.get_num_threads()` threads. The machine may be shared: every row carries the 1-minute
load average at its start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import ROOT, cpu_flags, header, median_seconds, peak_rss_mb, run_child, write_section
from imtalker.config import RendererConfig
from imtalker.models.generator import MotionGenerator
from imtalker.models.renderer import IMTRenderer
from imtalker.sampling import SamplingOptions, sample_motion
from imtalker.weights import bundled_demo_model, load_audio_encoder, load_generator, load_renderer

TINY = RendererConfig(image_size=128, feature_channels=(8, 8, 16, 16, 32, 32),
                      motion_channels=(8, 16, 16, 32, 32, 32), adapt_dim=32, const_channels=8, num_heads=4)
AUDIO_SECONDS = 4  # generator rows: two 2-second chunks
TINY_WAV2VEC2 = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                     conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def networks(model: str, quick: bool, with_audio: bool = False):
    """(renderer, generator, log-mel audio encoder or None) of `model`: the bundled demo model, or seeded random
    weights of the published size (wav2vec2-base for the audio encoder). The audio encoder only `with_audio`:
    loading it imports transformers, some 150 MB the other rows' peak memory should not count."""
    if model == "demo":
        folder = bundled_demo_model()
        return (load_renderer(folder / "renderer.safetensors"), load_generator(folder / "generator.safetensors"),
                load_audio_encoder(folder / "audio_encoder.safetensors") if with_audio else None)
    torch.manual_seed(0)
    from imtalker.config import GeneratorConfig

    audio = wav2vec2(quick) if with_audio else None
    if quick:
        return (IMTRenderer(TINY).eval(), MotionGenerator(GeneratorConfig(hidden_dim=64, depth=2, num_heads=4)).eval(),
                audio)
    return IMTRenderer(RendererConfig()).eval(), MotionGenerator(GeneratorConfig()).eval(), audio


def wav2vec2(quick: bool):
    """wav2vec2-base with random weights (a tiny one for --quick)."""
    from transformers import Wav2Vec2Config

    from imtalker.models.audio import AudioEncoder

    return AudioEncoder(Wav2Vec2Config(**TINY_WAV2VEC2) if quick else Wav2Vec2Config()).eval()


def child(model: str, backend: str, mode: str, batch: int, repeats: int, quick: bool, folder: str) -> dict:
    renderer, generator, audio_encoder = networks(model, quick, with_audio=mode in ("export", "front_end"))
    if mode == "export":
        from imtalker.export.graphs import export_onnx

        export_onnx(folder, renderer, generator, audio_encoder)
        return {"peak_rss_mb": peak_rss_mb()}
    if backend == "onnxruntime":
        from imtalker.export.runtime import onnxruntime_networks

        renderer, generator, audio_encoder = onnxruntime_networks(renderer, generator, folder,
                                                                  audio_encoder=audio_encoder)
    size, dim = renderer.config.image_size, renderer.config.motion_dim
    rng = torch.Generator().manual_seed(1)
    source_image = torch.rand(1, 3, size, size, generator=rng)
    driving = torch.rand(batch, 3, size, size, generator=rng)
    load = os.getloadavg()[0]
    with torch.inference_mode():
        source = renderer.encode_source(source_image)
        motion = source.motion + 0.3 * torch.randn(batch, dim, generator=rng)
        if mode == "audio":
            run, per = (lambda: renderer.render(source, motion)), batch  # noqa: E731
        elif mode == "video":
            run, per = (lambda: renderer.render(source, renderer.encode_motion(driving))), batch  # noqa: E731
        elif mode == "front_end":
            waveform = torch.randn(1, 16000 * AUDIO_SECONDS, generator=rng)
            frames = AUDIO_SECONDS * 25
            run, per = (lambda: audio_encoder(waveform, frames)), AUDIO_SECONDS  # noqa: E731
        elif mode == "generator":
            features = torch.randn(1, AUDIO_SECONDS * 25, generator.config.audio_dim, generator=rng)
            options = SamplingOptions(seed=0)  # cfg 3.0, nfe 10: the defaults
            run, per = (lambda: sample_motion(generator, features, source.motion, options=options)), AUDIO_SECONDS  # noqa: E731
        else:
            raise ValueError(mode)
        seconds, times = median_seconds(run, repeats)
    return {"seconds": seconds / per, "times": times, "peak_rss_mb": peak_rss_mb(),
            "load": [load, os.getloadavg()[0]]}


def parity_check() -> str:
    """Run the published-size golden parity test; its one-line pytest summary."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow",
                             str(ROOT / "tests" / "export" / "test_onnx_golden.py")], capture_output=True, text=True,
                            cwd=ROOT)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-500:]
    if result.returncode != 0:
        raise SystemExit(f"the published-size ONNX parity test failed:\n{result.stdout[-3000:]}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny networks: checks the script, not the speed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    parser.add_argument("--skip-parity", action="store_true", help="do not run the published-size parity test first")
    parser.add_argument("--child", nargs=5, metavar=("MODEL", "BACKEND", "MODE", "BATCH", "FOLDER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, backend, mode, batch, folder = args.child
        print(json.dumps(child(model, backend, mode, int(batch), args.repeats, args.quick, folder)))
        return

    parity = "skipped (--quick or --skip-parity)" if args.quick or args.skip_parity else parity_check()
    print(f"parity: {parity}", flush=True)
    extra = ["--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
    script = Path(__file__)
    rows = []
    flags = cpu_flags()
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        for model, label in (("demo", "demo model, 128 px"), ("published", "published size (random), 512 px")):
            folder = str(Path(tmp) / model)
            run_child(script, [model, "onnxruntime", "export", "1", folder] + extra, timeout=3600)
            rows_of_model = [("audio", "renderer, audio-driven, batch 8", "s/frame"),
                             ("video", "renderer, video-driven, batch 8", "s/frame"),
                             ("generator", "generator, cfg 3, nfe 10", "s per s of audio")]
            front_end = "log-mel audio front end" if model == "demo" else "wav2vec2-base audio front end"
            rows_of_model.append(("front_end", front_end, "s per s of audio"))
            for mode, what, unit in rows_of_model:
                results = {backend: run_child(script, [model, backend, mode, "8", folder] + extra, timeout=3600)
                           for backend in ("torch", "onnxruntime")}
                torch_s, ort_s = results["torch"]["seconds"], results["onnxruntime"]["seconds"]
                loads = ", ".join(f"{r['load'][0]:.1f}-{r['load'][1]:.1f}" for r in results.values())
                rows.append(f"| {label} | {what} | {unit} | {torch_s:.3g} | {ort_s:.3g} | {torch_s / ort_s:.2f}x | "
                            f"{results['torch']['peak_rss_mb']:.0f} / {results['onnxruntime']['peak_rss_mb']:.0f} | "
                            f"{loads} | {flags} |")
                print(rows[-1], flush=True)

    body = header("onnxruntime beside PyTorch, CPU", "python benchmarks/bench_onnx.py" + (" --quick" if args.quick else ""))
    body += (f"- published-size parity (onnxruntime vs the golden numbers and PyTorch, 1e-4, equal attention "
             f"arg-max): {parity}\n\n"
             f"Median of {args.repeats} timed runs after one warm-up, each row in a fresh process (peak RSS is the "
             "whole process, weights included); fp32 both. onnxruntime runs the renderer's graphs on "
             "`OnnxRenderer.frames_per_run` frames at a time (one at 512 px, four at 128 px), PyTorch the whole batch. "
             "The load column is the 1-minute load average at the start and end of the torch and onnxruntime runs: "
             "above about 2 the 2 cores were shared with other work and the times are inflated.\n\n"
             "| model | what | unit | torch | onnxruntime | torch / ort | peak RSS torch / ort (MB) | load | CPU |\n"
             "|---|---|---|---|---|---|---|---|---|\n")
    body += "\n".join(rows) + "\n"
    if not args.no_write and not args.quick:
        write_section("bench_onnx", body)
        print("written to BENCHMARKS.md")
    else:
        print(body)


if __name__ == "__main__":
    main()
