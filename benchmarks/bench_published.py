"""Side by side with the published research code: the same renderer, the same weights, the same CPU, one run.

    python benchmarks/bench_published.py --published-code PATH   # PATH: a checkout of the authors' IMTalker repository

The published repository is not a dependency and nothing of it is copied here: the script imports `renderer/models.py`
from the checkout it is given, loads our seeded random weights of the published size into that network (the state-dict
keys are the published ones; only the source encoder's first block, which the per-frame work never runs, differs
between the repository's current code and the released checkpoint), checks that both render the same frames for the
same latents, and times the per-frame work both ways:

- published code: what its app does per frame, one frame at a time in float32 under `torch.no_grad`: adapt the
  latent, decode the motion maps, `decode` (attention maps held whole); video-driven adds `mot_encode` of the frame.
- ours: `IMTRenderer.render` (audio-driven) and `encode_motion` + `render` (video-driven) at batch 8, the source
  encoded once, in float32, under bfloat16 autocast, and with the weights cast to bfloat16.

The ratios are the published code's median seconds per frame, and its fastest frame (its times swing more than
ours), over our median. Each row runs in a fresh process; bf16 rows only on a CPU with bf16 instructions.

A second, interleaved measurement holds both networks in one process and alternates them in rounds (one batch of
ours, then two of the published code's frames, fp32): a change of the host's speed during the run (other tenants of
a virtual machine) then moves both sides of a round alike, and the ratio is the median of the rounds' ratios.

The published renderer imports `timm` for two helpers its constructors call (`to_2tuple`, `trunc_normal_`) and imports
`torchvision.transforms` and `matplotlib.pyplot` without using them in the network. `timm` and `torchvision` cannot be
installed beside this CPU build of torch (their wheels pull a CUDA torch), so where they are missing the script
registers small stand-ins for exactly those names before importing the published modules.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from common import (NO_BF16_ROWS, cpu_autocast, cpu_flags, cpu_kind, header, kind_section, load_note, native_bf16,
                    peak_rss_mb, run_child, write_or_print)
from imtalker.config import RendererConfig
from imtalker.models.renderer import IMTRenderer

BATCH = 8  # our batch; the published code renders one frame at a time
PUBLISHED_ARGS = {"num_heads": 8, "swin_res_threshold": 128, "window_size": 8}  # its app's renderer options


def published_renderer(checkout: Path) -> torch.nn.Module:
    """The published `IMTRenderer`, imported from a checkout of the authors' repository."""
    folder = checkout / "renderer"
    if not (folder / "models.py").is_file():
        raise SystemExit(f"error: {checkout} is not a checkout of the published IMTalker code (no renderer/models.py)")
    stand_ins = {
        "timm.models.layers": {"to_2tuple": lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x),
                               "trunc_normal_": torch.nn.init.trunc_normal_},
        "torchvision.transforms": {}, "matplotlib.pyplot": {},
    }
    for name, attributes in stand_ins.items():
        if importlib.util.find_spec(name.split(".")[0]) is None:
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                module = sys.modules.setdefault(".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
            module.__dict__.update(attributes)
    # the published modules import each other as `renderer.*`: register the folder as that package
    spec = importlib.machinery.ModuleSpec("renderer", None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    sys.modules["renderer"] = importlib.util.module_from_spec(spec)
    models = importlib.import_module("renderer.models")
    return models.IMTRenderer(types.SimpleNamespace(**PUBLISHED_ARGS)).eval()


def networks(checkout: Path) -> tuple[IMTRenderer, torch.nn.Module]:
    torch.manual_seed(0)
    ours = IMTRenderer(RendererConfig()).eval()
    theirs = published_renderer(checkout)
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    # the repository's current source encoder lacks the released checkpoint's first down block; the per-frame work
    # never runs the source encoder, and both sides take the source features from ours
    stray = [key for key in unexpected if not key.startswith("dense_feature_encoder.")]
    if missing or stray:
        raise SystemExit(f"error: the published network's keys differ: missing {missing[:5]}, unexpected {stray[:5]}")
    return ours, theirs


def inputs(ours: IMTRenderer, batch: int):
    """Source image, motion latents near the source's (B, 32) and driving images, seeded."""
    generator = torch.Generator().manual_seed(1)
    source_image = torch.rand(1, 3, 512, 512, generator=generator)
    driving = torch.rand(batch, 3, 512, 512, generator=generator)
    with torch.inference_mode():
        motion = ours.encode_motion(source_image) + 0.3 * torch.randn(batch, 32, generator=generator)
    return source_image, motion, driving


def published_frame(theirs, source, reference_maps, motion=None, driving=None) -> torch.Tensor:
    """One frame the published way: (motion encoder,) identity adaptation, motion decoder, decode."""
    if driving is not None:
        motion = theirs.mot_encode(driving)
    maps = theirs.mot_decode(theirs.adapt(motion, source.identity))
    return theirs.decode(maps, reference_maps, source.features)


PUBLISHED_FRAMES_PER_ROUND = 2  # interleaved: the published code's frames per round, beside one batch of ours


def child(checkout: Path, side: str, mode: str, dtype_name: str, repeats: int) -> dict:
    ours, theirs = networks(checkout)
    if side == "parity":
        return parity(ours, theirs)
    if side == "interleaved":
        return interleaved(ours, theirs, mode, repeats)
    source_image, motion, driving = inputs(ours, BATCH if side == "ours" else repeats + 1)
    if side == "published":
        with torch.no_grad():
            source = ours.encode_source(source_image)
            reference_maps = theirs.mot_decode(theirs.adapt(source.motion, source.identity))
            times = []
            for i in range(repeats + 1):  # the first frame warms up
                start = time.perf_counter()
                if mode == "audio":
                    published_frame(theirs, source, reference_maps, motion=motion[i:i + 1])
                else:
                    published_frame(theirs, source, reference_maps, driving=driving[i:i + 1])
                times.append(time.perf_counter() - start)
    else:
        del theirs
        if dtype_name == "bf16-weights":
            ours = ours.to(torch.bfloat16)
        with torch.inference_mode(), cpu_autocast(dtype_name):
            source = ours.encode_source(source_image)
            times = []
            for _ in range(repeats + 1):  # the first batch warms up
                start = time.perf_counter()
                ours.render(source, motion if mode == "audio" else ours.encode_motion(driving))
                times.append((time.perf_counter() - start) / BATCH)
    per_frame = times[1:]
    return {"median": statistics.median(per_frame), "fastest": min(per_frame), "times": per_frame,
            "peak_rss_mb": peak_rss_mb()}


def interleaved(ours: IMTRenderer, theirs, mode: str, rounds: int) -> dict:
    """fp32 seconds per frame of both codes in alternating rounds (after one warm-up round), and each round's ratio."""
    source_image, motion, driving = inputs(ours, BATCH)
    with torch.inference_mode():
        source = ours.encode_source(source_image)
        reference_maps = theirs.mot_decode(theirs.adapt(source.motion, source.identity))
    ours_times, theirs_times = [], []
    for _ in range(rounds + 1):
        with torch.inference_mode():
            start = time.perf_counter()
            ours.render(source, motion if mode == "audio" else ours.encode_motion(driving))
            ours_times.append((time.perf_counter() - start) / BATCH)
        with torch.no_grad():  # as the published app runs
            start = time.perf_counter()
            for i in range(PUBLISHED_FRAMES_PER_ROUND):
                if mode == "audio":
                    published_frame(theirs, source, reference_maps, motion=motion[i:i + 1])
                else:
                    published_frame(theirs, source, reference_maps, driving=driving[i:i + 1])
            theirs_times.append((time.perf_counter() - start) / PUBLISHED_FRAMES_PER_ROUND)
    ours_times, theirs_times = ours_times[1:], theirs_times[1:]
    ratios = [t / o for t, o in zip(theirs_times, ours_times)]
    return {"ours": statistics.median(ours_times), "published": statistics.median(theirs_times),
            "ratio": statistics.median(ratios), "ratios": ratios}


def parity(ours: IMTRenderer, theirs) -> dict:
    """Largest difference between the two codes' frames, audio-driven and video-driven (2 frames each)."""
    source_image, motion, driving = inputs(ours, 2)
    source = ours.encode_source(source_image)
    with torch.no_grad():
        reference_maps = theirs.mot_decode(theirs.adapt(source.motion, source.identity))
        audio_theirs = torch.cat([published_frame(theirs, source, reference_maps, motion=m[None]) for m in motion])
        video_theirs = torch.cat([published_frame(theirs, source, reference_maps, driving=d[None]) for d in driving])
    # one frame at a time, as the published code renders: a batch stacks the frames' queries into other matrix
    # shapes, whose rounding flips more near-ties of the arg-max (random weights give nearly flat attention)
    audio_ours = torch.cat([ours.render(source, m[None]) for m in motion])
    video_ours = torch.cat([ours.render(source, ours.encode_motion(d[None])) for d in driving])
    return {"audio": (audio_theirs - audio_ours).abs().max().item(),
            "video": (video_theirs - video_ours).abs().max().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--published-code", type=Path, required=True,
                        help="a checkout of the published IMTalker repository (its renderer/ folder is imported)")
    parser.add_argument("--repeats", type=int, default=4, help="timed frames (published) or batches (ours)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "MODE", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    checkout = args.published_code.expanduser().resolve()
    if args.child:
        side, mode, dtype_name = args.child
        print(json.dumps(child(checkout, side, mode, dtype_name, args.repeats)))
        return
    published_renderer(checkout)  # a wrong path fails here, before any timing

    script = Path(__file__)
    extra = ["--published-code", str(checkout), "--repeats", str(args.repeats)]
    difference = run_child(script, ["parity", "audio", "fp32"] + extra)
    print(json.dumps(difference), flush=True)
    start_load = os.getloadavg()[0]
    published = {mode: run_child(script, ["published", mode, "fp32"] + extra) for mode in ("audio", "video")}
    rows = []
    flags = cpu_flags()
    with_bf16 = native_bf16()
    dtypes = ("fp32", "bf16", "bf16-weights") if with_bf16 else ("fp32",)
    for mode in ("audio", "video"):
        p = published[mode]
        rows.append(f"| published code | {mode}-driven | fp32 | 1 | {p['median']:.3f} | {p['fastest']:.3f} | 1.00x | "
                    f"1.00x | {p['peak_rss_mb']:.0f} | {flags} |")
        print(rows[-1], flush=True)
        for dtype_name in dtypes:
            r = run_child(script, ["ours", mode, dtype_name] + extra)
            rows.append(f"| imtalker | {mode}-driven | {dtype_name} | {BATCH} | {r['median']:.3f} | "
                        f"{r['fastest']:.3f} | {p['median'] / r['median']:.2f}x | {p['fastest'] / r['median']:.2f}x | "
                        f"{r['peak_rss_mb']:.0f} | {flags} |")
            print(rows[-1], flush=True)

    mixed = {mode: run_child(script, ["interleaved", mode, "fp32"] + extra) for mode in ("audio", "video")}
    mixed_rows = []
    for mode, m in mixed.items():
        mixed_rows.append(f"| {mode}-driven | {len(m['ratios'])} | {m['published']:.3f} | {m['ours']:.3f} | "
                          f"{m['ratio']:.2f}x | {min(m['ratios']):.2f}-{max(m['ratios']):.2f}x | {flags} |")
        print(mixed_rows[-1], flush=True)

    body = header(f"Side by side with the published code, renderer 512 px, CPU ({cpu_kind()})",
                  "python benchmarks/bench_published.py --published-code PATH")
    body += (f"\nThe published code's per-frame work and ours on the same random weights of the published size, in one "
             f"run on one machine; {load_note(start_load)}. Seconds per frame: median and fastest of {args.repeats} "
             "timed frames (published, one at a time) or batches (ours, batch 8), after one warm-up; each row in a "
             "fresh process. The ratios are the published code's median, and its fastest frame, over the row's median. "
             "Rendered one frame at a time, the two codes' frames for the same latents differ by at most "
             f"{difference['audio']:.1e} (audio-driven) and {difference['video']:.1e} (video-driven), float32.\n\n"
             "| code | path | dtype | batch | s/frame (median) | s/frame (fastest) | vs published median | "
             "vs published fastest | peak RSS (MB) | CPU |\n|---|---|---|---|---|---|---|---|---|---|\n")
    body += "\n".join(rows) + "\n"
    body += (f"\nInterleaved, fp32, both networks in one process: {args.repeats} rounds after a warm-up one, each "
             f"one batch of ours (batch {BATCH}) and then {PUBLISHED_FRAMES_PER_ROUND} of the published code's frames; "
             "the ratio is the median of the rounds' ratios, so a change of the host's speed between rounds cancels."
             "\n\n| path | rounds | published s/frame (median) | ours s/frame (median) | ratio (median of rounds) | "
             "ratio range | CPU |\n|---|---|---|---|---|---|---|\n")
    body += "\n".join(mixed_rows) + "\n"
    if not with_bf16:
        body += f"\n{NO_BF16_ROWS}\n"
    write_or_print(kind_section("bench_published"), body, write=not args.no_write)  # the other kinds' tables stay


if __name__ == "__main__":
    main()
