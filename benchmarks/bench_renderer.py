"""Renderer speed and memory: seconds per frame at batch 1 and 8, peak RSS, bf16 (autocast or weights) and its error.

Every measurement runs in its own fresh process, so its peak resident memory is its own. Weights are seeded
random values of the published size (124M parameters, 512 px); speed does not depend on their values.

    python benchmarks/bench_renderer.py                 # full table, written to BENCHMARKS.md
    python benchmarks/bench_renderer.py --quick         # tiny 128-px model, a smoke run (not written)

Rows:
- audio-driven: motion latent -> frame (`render`, the source encoded once beforehand).
- video-driven: driving image -> frame (`encode_motion` + `render`).
- naive loop: the published inference pattern on the same networks: source re-encoded for every frame, one
  frame at a time (`model(driving, source)`). Not the published code itself; the issue quotes that code at
  3.2 s/frame (audio-driven) and 7.4 s/frame (video-driven) on this machine.
- demo model: the bundled 128 px demo renderer, audio-driven at batch 5 (the live avatar's batch).

dtypes: fp32; bf16 = bfloat16 autocast over float32 weights; bf16-weights = the renderer cast to bfloat16
(`load_renderer(..., dtype=torch.bfloat16)`), weights and activations end to end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch

from common import (NO_BF16_ROWS, TINY_RENDERER, cpu_autocast, cpu_flags, cpu_kind, header, kind_section, load_note,
                    median_seconds, native_bf16, peak_rss_mb, run_child, write_section)
from imtalker.config import RendererConfig
from imtalker.models.renderer import IMTRenderer
from imtalker.weights import bundled_demo_model, load_renderer


def build(config: RendererConfig) -> IMTRenderer:
    torch.manual_seed(0)
    return IMTRenderer(config).eval()


def child(mode: str, batch: int, dtype_name: str, repeats: int, quick: bool) -> dict:
    if mode == "demo":
        model = load_renderer(bundled_demo_model() / "renderer.safetensors")
        mode = "audio"
    else:
        model = build(TINY_RENDERER if quick else RendererConfig())
    config = model.config
    size = config.image_size
    generator = torch.Generator().manual_seed(1)
    source_image = torch.rand(1, 3, size, size, generator=generator)
    driving = torch.rand(batch, 3, size, size, generator=generator)
    with torch.inference_mode():
        motion = model.encode_motion(source_image) + 0.3 * torch.randn(batch, config.motion_dim, generator=generator)
        if mode == "bf16-error":
            return bf16_error(model, source_image, motion)
    if dtype_name == "bf16-weights":
        model = model.to(torch.bfloat16)
    with torch.inference_mode(), cpu_autocast(dtype_name):
        source = model.encode_source(source_image)
        if mode == "audio":
            run = lambda: model.render(source, motion)  # noqa: E731
        elif mode == "video":
            run = lambda: model.render(source, model.encode_motion(driving))  # noqa: E731
        elif mode == "naive":
            run = lambda: [model(driving[i:i + 1], source_image) for i in range(batch)]  # noqa: E731
        else:
            raise ValueError(mode)
        seconds, times = median_seconds(run, repeats)
    return {"s_per_frame": seconds / batch, "times": times, "peak_rss_mb": peak_rss_mb()}


def bf16_error(model: IMTRenderer, source_image: torch.Tensor, motion: torch.Tensor) -> dict:
    """Frames under bf16 autocast, and from the renderer cast to bf16, against fp32 frames for the same latents."""
    reference = model.render(model.encode_source(source_image), motion).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_frames = model.render(model.encode_source(source_image), motion).float()
    model = model.to(torch.bfloat16)
    weights_frames = model.render(model.encode_source(source_image), motion).float()
    return {"bf16": frame_error(autocast_frames, reference), "bf16-weights": frame_error(weights_frames, reference)}


def frame_error(frames: torch.Tensor, reference: torch.Tensor) -> dict:
    diff = (frames - reference).abs()
    mse = diff.square().mean().item()
    return {"max_abs": diff.max().item(), "mean_abs": diff.mean().item(),
            "psnr_db": 10 * math.log10(1 / mse) if mse > 0 else float("inf")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny 128-px model: checks the script, not the speed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "BATCH", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, batch, dtype_name = args.child
        print(json.dumps(child(mode, int(batch), dtype_name, args.repeats, args.quick)))
        return

    extra = ["--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
    script = Path(__file__)
    rows = []
    plan = [("audio-driven", "audio", 1, "fp32"), ("audio-driven", "audio", 8, "fp32"),
            ("video-driven", "video", 1, "fp32"), ("video-driven", "video", 8, "fp32"),
            ("audio-driven", "audio", 8, "bf16"), ("video-driven", "video", 8, "bf16"),
            ("audio-driven", "audio", 8, "bf16-weights"), ("video-driven", "video", 8, "bf16-weights"),
            ("naive loop, audio-driven", "naive", 2, "fp32"),
            ("demo model (128 px), audio-driven", "demo", 5, "fp32"),
            ("demo model (128 px), audio-driven", "demo", 5, "bf16")]
    # bf16 rows only where the CPU runs bf16 natively (the quick run checks the code path anywhere): elsewhere oneDNN
    # emulates it, some 14x slower than fp32, and the pipelines keep fp32 (export/precision.py)
    with_bf16 = args.quick or native_bf16()
    if not with_bf16:
        plan = [row for row in plan if row[3] == "fp32"]
    flags = cpu_flags()
    start_load = os.getloadavg()[0]
    for label, mode, batch, dtype_name in plan:
        result = run_child(script, [mode, str(batch), dtype_name] + extra)
        batch_text = "1 (per frame)" if mode == "naive" else str(batch)
        rows.append(f"| {label} | {dtype_name} | {batch_text} | {result['s_per_frame']:.3f} | "
                    f"{1 / result['s_per_frame']:.2f} | {result['peak_rss_mb']:.0f} | {flags} |")
        print(rows[-1], flush=True)
    error = run_child(script, ["bf16-error", "2", "fp32"] + extra) if with_bf16 else {}
    print(json.dumps(error))

    size = TINY_RENDERER.image_size if args.quick else 512
    body = header(f"Renderer, {size} px, CPU ({cpu_kind()})",
                  "python benchmarks/bench_renderer.py" + (" --quick" if args.quick else ""))
    body += (f"\nSeconds per frame are the median of {args.repeats} timed runs after one warm-up; peak RSS is the "
             f"whole process (weights included), each row in a fresh process; {load_note(start_load)}.\n\n"
             "| path | dtype | batch | s/frame | frames/s | peak RSS (MB) | CPU |\n|---|---|---|---|---|---|---|\n")
    body += "\n".join(rows)
    body += ("\n\nbf16 frames vs fp32 frames (batch 2, same latents; frames in [0, 1]):\n" if with_bf16
             else f"\n\n{NO_BF16_ROWS}\n")
    for name, e in error.items():
        body += (f"\n- {name}: max abs error {e['max_abs']:.4f}, mean abs error {e['mean_abs']:.5f}, "
                 f"PSNR {e['psnr_db']:.1f} dB")
    body += "\n"
    if not args.no_write and not args.quick:
        write_section(kind_section("bench_renderer"), body)  # the other kinds' tables stay
        print("written to BENCHMARKS.md")
    else:
        print(body)


if __name__ == "__main__":
    main()
