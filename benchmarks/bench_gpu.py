"""GPU rows of BENCHMARKS.md: renderer frames/s by batch, precision and compilation; generator seconds per second of
audio; live first-frame latency, alone and with several sessions sharing one GPU. Run by benchmarks/gpu_check.sh.

    python benchmarks/bench_gpu.py                      # needs CUDA; writes the "GPU" section of BENCHMARKS.md
    python benchmarks/bench_gpu.py --budget 420         # stop starting new rows after 420 s (default)
    python benchmarks/bench_gpu.py --quick --device cpu # tiny networks on the CPU: checks the script, not the speed

Renderer: published-size random weights (512 px, 124M parameters), audio-driven `render` of a source encoded once,
batches 1, 8 and 16, fp32 / fp16 / bf16 (autocast, the pipelines' --fp16 / --bf16), eager or `torch.compile`d
(`imtalker.export.compiled.compile_networks`, --compile). Each row is the median of timed runs after warm-up (the
warm-up includes compilation), synchronised. Rows the time budget does not reach say "not measured".
Generator: published size, two 2-second chunks, cfg 3, nfe 10. Live: the bundled demo model, a `StreamingSession`
fed 200 ms pieces paced like a microphone (benchmarks/bench_live.py); several sessions share one pipeline (one copy
of the weights on the GPU) from their own threads.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import torch

from common import TINY_RENDERER, header, write_or_print
from imtalker.config import GeneratorConfig, RendererConfig
from imtalker.export.compiled import compile_networks
from imtalker.models.generator import MotionGenerator
from imtalker.models.renderer import IMTRenderer
from imtalker.sampling import SamplingOptions, sample_motion

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
BATCHES = (1, 8, 16)
# --quick: networks small enough for a CPU, so that the script is checked where no GPU is
TINY_GENERATOR = GeneratorConfig(hidden_dim=64, depth=2, num_heads=4)


def autocast(device: torch.device, dtype_name: str):
    dtype = DTYPES[dtype_name]
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds of fn after warm-up, with the GPU synchronised around each run."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def renderer_rows(device: torch.device, deadline: float, quick: bool) -> list[str]:
    rows = []
    for compiled in (False, True):
        torch.manual_seed(0)
        config = TINY_RENDERER if quick else RendererConfig()
        renderer = IMTRenderer(config).to(device).eval()
        if compiled:
            # the quick run traces without generating code: inductor would compile for minutes on a CPU
            compile_networks(renderer, **({"backend": "eager"} if quick else {}))
        rng = torch.Generator(device=device).manual_seed(1)
        image = torch.rand(1, 3, config.image_size, config.image_size, device=device, generator=rng)
        for dtype_name in DTYPES:
            for batch in (1, 2) if quick else BATCHES:
                label = f"| renderer, audio-driven | {dtype_name} | {'compiled' if compiled else 'eager'} | {batch} |"
                if time.monotonic() > deadline:
                    rows.append(f"{label} not measured (time budget) | |")
                    continue
                try:
                    with torch.inference_mode(), autocast(device, dtype_name):
                        source = renderer.encode_source(image)
                        motion = source.motion.float() + 0.3 * torch.randn(batch, 32, device=device, generator=rng)
                        seconds = timed(lambda: renderer.render(source, motion), device, repeats=1 if quick else 5,
                                        warmup=1 if quick else 2)
                    rows.append(f"{label} {batch / seconds:.1f} | {1000 * seconds / batch:.1f} |")
                except Exception as err:  # a precision or compile path this GPU/torch lacks: say so, go on
                    rows.append(f"{label} failed: {type(err).__name__}: {str(err).splitlines()[0][:80]} | |")
                print(rows[-1], flush=True)
        del renderer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def generator_rows(device: torch.device, deadline: float, quick: bool) -> list[str]:
    rows = []
    torch.manual_seed(0)
    generator = MotionGenerator(TINY_GENERATOR if quick else GeneratorConfig()).to(device).eval()
    features = torch.randn(1, 100, generator.config.audio_dim, device=device)
    ref = torch.randn(1, generator.config.motion_dim, device=device)
    for dtype_name in DTYPES:
        label = f"| generator, cfg 3, nfe 10 | {dtype_name} | eager |"
        if time.monotonic() > deadline:
            rows.append(f"{label} not measured (time budget) |")
            continue
        with autocast(device, dtype_name):
            seconds = timed(lambda: sample_motion(generator, features, ref, options=SamplingOptions(seed=0)), device,
                            1 if quick else 3, 1)
        rows.append(f"{label} {seconds / 4:.3f} |")
        print(rows[-1], flush=True)
    return rows


def live_rows(device: torch.device, deadline: float, sessions_counts=(1, 4), seconds: float = 4.0) -> list[str]:
    from bench_live import in_process, speech, summarise

    from imtalker.pipelines import AudioDrivenPipeline
    from imtalker.weights import bundled_demo_model

    _, samples = speech()
    samples = samples[: int(16000 * seconds)]  # 4 s: enough for the first frame and a steady rate
    pipe = AudioDrivenPipeline.from_pretrained(bundled_demo_model(), device=device)
    source = pipe.encode_crop(pipe.crop_source(str(bundled_demo_model().parent / "demo_portrait.png"), crop=False))
    options = {"nfe": 10, "hop": 5, "lookahead": 2}
    rows = []
    for count in sessions_counts:
        label = f"| live, demo model, hop 5 | {count} |"
        if time.monotonic() > deadline:
            rows.append(f"{label} not measured (time budget) | |")
            continue
        results = [None] * count

        def run(i):
            results[i] = summarise(in_process(pipe, source, samples, options, None), samples)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        first = [r["first_speech_lag"] for r in results]
        rows.append(f"{label} {np.median(first):.3f} (max {max(first):.3f}) | "
                    f"{np.median([r['median_lag'] for r in results]):.3f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=420, help="seconds after which no new row starts")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu with --quick")
    parser.add_argument("--quick", action="store_true", help="tiny networks, one session, 2 s of speech: checks the "
                                                             "script (on a CPU too), not the speed; not written")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs CUDA (torch.cuda.is_available() is False); --quick --device cpu checks "
                         "the script")
    if device.type != "cuda" and not args.quick:
        raise SystemExit("bench_gpu.py measures a GPU; on a CPU only --quick runs (a check of the script)")
    start = time.monotonic()
    # the live and generator rows are short: they keep a share of the budget the renderer rows cannot take
    renderer = renderer_rows(device, start + 0.7 * args.budget, args.quick)
    generator = generator_rows(device, start + 0.8 * args.budget, args.quick)
    live = live_rows(device, start + args.budget, (1,) if args.quick else (1, 4), 2.0 if args.quick else 4.0)

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        memory = f"CUDA {torch.version.cuda}, {torch.cuda.get_device_properties(device).total_memory / 2**30:.0f} GiB"
    else:
        name, memory = "none (a --quick check of the script on the CPU)", "no CUDA"
    body = header(f"GPU: {name}", "bash benchmarks/gpu_check.sh")
    body += (f"- {memory}\n\n"
             f"Renderer, {'tiny (128 px, --quick)' if args.quick else 'published size (512 px)'}, random weights, "
             "audio-driven (source encoded once); fp16 / bf16 "
             "are autocast (--fp16 / --bf16), compiled is torch.compile of the per-frame work (--compile), "
             "compilation in the warm-up.\n\n"
             "| what | precision | mode | batch | frames/s | ms/frame |\n|---|---|---|---|---|---|\n"
             + "\n".join(renderer) +
             "\n\n| what | precision | mode | s per s of audio |\n|---|---|---|---|\n" + "\n".join(generator) +
             "\n\nLive: paced 200 ms pieces; first-frame latency is the lag of the first speech frame behind its "
             "audio (median over sessions, and the worst); sessions share one pipeline on one GPU.\n\n"
             "| what | sessions | first-frame latency (s) | median lag (s) |\n|---|---|---|---|\n" + "\n".join(live)
             + "\n")
    write_or_print("bench_gpu", body, write=not (args.no_write or args.quick))
    if args.quick and any(" failed: " in row for row in renderer + generator + live):
        raise SystemExit("a row failed: the script itself is broken")  # a GPU run goes on past such rows instead


if __name__ == "__main__":
    main()
