"""GPU rows of BENCHMARKS.md: renderer frames/s by batch, precision and compilation; generator seconds per second of
audio; live first-frame latency, alone and with several sessions sharing one GPU. Run by benchmarks/gpu_check.sh.

    python benchmarks/bench_gpu.py                      # needs CUDA; writes the "GPU" section of BENCHMARKS.md
    python benchmarks/bench_gpu.py --budget 420         # stop starting new rows after 420 s (default)

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

from common import header, write_or_print
from imtalker.config import GeneratorConfig, RendererConfig
from imtalker.export.compiled import compile_networks
from imtalker.models.generator import MotionGenerator
from imtalker.models.renderer import IMTRenderer
from imtalker.sampling import SamplingOptions, sample_motion

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
BATCHES = (1, 8, 16)


def autocast(dtype_name: str):
    dtype = DTYPES[dtype_name]
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else torch.autocast("cuda", enabled=False)


def timed(fn, repeats: int, warmup: int) -> float:
    """Median seconds of fn after warm-up, with the GPU synchronised around each run."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def renderer_rows(deadline: float) -> list[str]:
    rows = []
    for compiled in (False, True):
        torch.manual_seed(0)
        renderer = IMTRenderer(RendererConfig()).cuda().eval()
        if compiled:
            compile_networks(renderer)
        rng = torch.Generator(device="cuda").manual_seed(1)
        image = torch.rand(1, 3, 512, 512, device="cuda", generator=rng)
        for dtype_name in DTYPES:
            for batch in BATCHES:
                label = f"| renderer, audio-driven | {dtype_name} | {'compiled' if compiled else 'eager'} | {batch} |"
                if time.monotonic() > deadline:
                    rows.append(f"{label} not measured (time budget) | |")
                    continue
                try:
                    with torch.inference_mode(), autocast(dtype_name):
                        source = renderer.encode_source(image)
                        motion = source.motion.float() + 0.3 * torch.randn(batch, 32, device="cuda", generator=rng)
                        seconds = timed(lambda: renderer.render(source, motion), repeats=5, warmup=2)
                    rows.append(f"{label} {batch / seconds:.1f} | {1000 * seconds / batch:.1f} |")
                except Exception as err:  # a precision or compile path this GPU/torch lacks: say so, go on
                    rows.append(f"{label} failed: {type(err).__name__}: {str(err).splitlines()[0][:80]} | |")
                print(rows[-1], flush=True)
        del renderer
        torch.cuda.empty_cache()
    return rows


def generator_rows(deadline: float) -> list[str]:
    rows = []
    torch.manual_seed(0)
    generator = MotionGenerator(GeneratorConfig()).cuda().eval()
    features = torch.randn(1, 100, generator.config.audio_dim, device="cuda")
    ref = torch.randn(1, generator.config.motion_dim, device="cuda")
    for dtype_name in DTYPES:
        label = f"| generator, cfg 3, nfe 10 | {dtype_name} | eager |"
        if time.monotonic() > deadline:
            rows.append(f"{label} not measured (time budget) |")
            continue
        with autocast(dtype_name):
            seconds = timed(lambda: sample_motion(generator, features, ref, options=SamplingOptions(seed=0)), 3, 1)
        rows.append(f"{label} {seconds / 4:.3f} |")
        print(rows[-1], flush=True)
    return rows


def live_rows(deadline: float, sessions_counts=(1, 4)) -> list[str]:
    from bench_live import in_process, speech, summarise

    from imtalker.pipelines import AudioDrivenPipeline
    from imtalker.weights import bundled_demo_model

    _, samples = speech()
    samples = samples[: 16000 * 4]  # 4 s: enough for the first frame and a steady rate
    pipe = AudioDrivenPipeline.from_pretrained(bundled_demo_model(), device="cuda")
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
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs CUDA (torch.cuda.is_available() is False)")
    start = time.monotonic()
    # the live and generator rows are short: they keep a share of the budget the renderer rows cannot take
    renderer = renderer_rows(start + 0.7 * args.budget)
    generator = generator_rows(start + 0.8 * args.budget)
    live = live_rows(start + args.budget)

    body = header(f"GPU: {torch.cuda.get_device_name()}", "bash benchmarks/gpu_check.sh")
    body += (f"- CUDA {torch.version.cuda}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB\n\n"
             "Renderer, published size (512 px), random weights, audio-driven (source encoded once); fp16 / bf16 "
             "are autocast (--fp16 / --bf16), compiled is torch.compile of the per-frame work (--compile), "
             "compilation in the warm-up.\n\n"
             "| what | precision | mode | batch | frames/s | ms/frame |\n|---|---|---|---|---|---|\n"
             + "\n".join(renderer) +
             "\n\n| what | precision | mode | s per s of audio |\n|---|---|---|---|\n" + "\n".join(generator) +
             "\n\nLive: paced 200 ms pieces; first-frame latency is the lag of the first speech frame behind its "
             "audio (median over sessions, and the worst); sessions share one pipeline on one GPU.\n\n"
             "| what | sessions | first-frame latency (s) | median lag (s) |\n|---|---|---|---|\n" + "\n".join(live)
             + "\n")
    write_or_print("bench_gpu", body, write=not args.no_write)


if __name__ == "__main__":
    main()
