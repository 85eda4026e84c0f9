"""Training step times of the shipped configs on this machine (one process, CPU unless a GPU is there).

Each config's networks are built as `imtalker train` builds them and trained for a few steps on random batches of
the right shapes (the step time does not depend on what the pictures show); the median time of an optimiser step
after two warm-up steps is reported. Each row runs in a fresh process.

    python benchmarks/bench_training.py            # written to BENCHMARKS.md
    python benchmarks/bench_training.py --quick    # the tiny configs only, 3 steps (not written)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import ROOT, header, peak_rss_mb, run_child, write_section

CONFIGS = ["renderer-128-tiny.yaml", "demo-renderer.yaml", "generator-tiny-mel.yaml", "demo-generator.yaml"]
QUICK_CONFIGS = ["renderer-128-tiny.yaml", "generator-tiny-mel.yaml"]


class StepTimer:
    """Wall time of each training batch (Lightning callback)."""

    def __init__(self):
        import lightning

        class Callback(lightning.Callback):
            def on_train_batch_start(cb, trainer, module, batch, batch_idx):
                self.started = time.perf_counter()

            def on_train_batch_end(cb, trainer, module, outputs, batch, batch_idx):
                self.times.append(time.perf_counter() - self.started)

        self.times: list[float] = []
        self.callback = Callback()


class RandomItems(torch.utils.data.Dataset):
    """`count` random items shaped like one of the training datasets' items."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], count: int):
        self.shapes, self.count = shapes, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(index)
        return {name: torch.rand(shape, generator=gen) for name, shape in self.shapes.items()}


def child(config_name: str, steps: int) -> dict:
    from imtalker.config import DiscriminatorConfig, GeneratorConfig, config_from_dict, renderer_config_from_dict
    from imtalker.constants import SAMPLES_PER_FRAME
    from imtalker.models.mel import MelConfig
    from imtalker.preprocess.face import NUM_LANDMARKS
    from imtalker.training.generator_module import GeneratorModule, GeneratorTrainingConfig
    from imtalker.training.renderer_module import RendererModule, training_config_from
    from imtalker.training.run import read_config
    from imtalker.training.trainer import fit

    torch.manual_seed(0)
    config = read_config(ROOT / "configs" / config_name)
    if config_name.startswith(("renderer", "demo-renderer")):
        model = renderer_config_from_dict(config.get("model") or {})
        training = training_config_from(config.get("training") or {})
        disc = config_from_dict(DiscriminatorConfig,
                                {"image_size": model.image_size, **config.get("discriminator", {})})
        module = RendererModule(model, training, disc)
        s = model.image_size
        shapes = {"source": (3, s, s), "driving": (3, s, s), "other": (3, s, s), "mask": (1, s, s)}
        if training.needs_landmarks:
            shapes.update(source_landmarks=(NUM_LANDMARKS, 2), driving_landmarks=(NUM_LANDMARKS, 2))
        networks = [module.gen] + ([module.disc] if module.disc is not None else [])
    else:
        mel_values = (config.get("audio") or {}).get("mel")
        mel = config_from_dict(MelConfig, mel_values) if mel_values is not None else None
        values = dict(config.get("model") or {})
        if mel is not None:
            values.setdefault("audio_dim", mel.feature_dim)
        model = config_from_dict(GeneratorConfig, values)
        training = config_from_dict(GeneratorTrainingConfig, config.get("training") or {})
        module = GeneratorModule(model, training, mel)
        window = model.prev_frames + model.clip_frames
        shapes = {"motion": (window, model.motion_dim), "ref": (model.motion_dim,)}
        shapes.update({"waveform": (window * SAMPLES_PER_FRAME,)} if mel is not None else
                      {"audio": (window, model.audio_dim)})
        networks = [module.model] + ([module.audio_encoder] if module.audio_encoder is not None else [])
    parameters = sum(p.numel() for net in networks for p in net.parameters() if p.requires_grad)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as run:
        fit(module, RandomItems(shapes, training.batch_size * (steps + 2)), default_root_dir=run,
            max_steps=steps + 2, loggers=(), checkpoint_every_n_steps=10_000, callbacks=[timer.callback],
            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=True)
    times = timer.times[2:]
    return {"median": statistics.median(times), "times": times, "batch": training.batch_size,
            "parameters": parameters, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per config (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable numbers on a shared machine)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "STEPS", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import json

        torch.set_num_threads(int(args.child[2]))
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    torch.set_num_threads(args.threads)  # named in the machine line of the table
    steps = 3 if args.quick else args.steps
    rows = ["| config | parameters (trained) | batch per device | s / step (median) | steps timed | peak RSS |",
            "|---|---|---|---|---|---|"]
    for name in QUICK_CONFIGS if args.quick else CONFIGS:
        result = run_child(Path(__file__), [name, str(steps), str(args.threads)])
        rows.append(f"| `configs/{name}` | {result['parameters'] / 1e6:.2f} M | {result['batch']} | "
                    f"{result['median']:.2f} | {len(result['times'])} | {result['peak_rss_mb']:.0f} MB |")
        print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    body = "\n".join([header("Training step times, one process",
                             f"python benchmarks/bench_training.py --threads {args.threads}"
                             + (" --quick" if args.quick else "")),
                      f"- load average at the end: {load:.1f} on {os.cpu_count()} cores"
                      + (" (the machine was shared: other jobs ran)" if load > 1.5 else ""),
                      "- random batches of the training shapes; an optimiser step includes the discriminator's "
                      "where the config has one, gradient clipping and the EMA update", "", *rows])
    print(body)
    if not args.no_write and not args.quick:
        write_section("training_steps", body)


if __name__ == "__main__":
    sys.exit(main())
