"""Train the bundled demo model from nothing, on this machine's CPU, in one resumable command.

    python scripts/train_demo_model.py --work runs/demo            # ~90 min on 2 CPU cores
    python scripts/train_demo_model.py --work runs/demo --install  # then copy it into the package

Stages (each one skips what an earlier, interrupted run finished; run the same command again to continue):

1. a synthetic talking-head corpus (`imtalker synth-data`): training clips (seed 0) and held-out clips (seed 1,
   other faces and voices) for the evaluation;
2. `imtalker prepare` of both at the demo resolution (128 px);
3. renderer training (configs/demo-renderer.yaml) for a wall-clock budget, then export;
4. motion-generator training with the log-mel front end (configs/demo-generator.yaml) on the exported renderer's
   motion latents, for a wall-clock budget, then export;
5. float16 copies of the three networks (what the package ships), then the evaluation of those on the held-out
   clips (`imtalker eval`): self-reenactment PSNR/SSIM and lip-sync correlation;
6. with --install: the weights, configs, evaluation and a model card go to src/imtalker/assets/demo_model/.

A fine-tune of the generator alone (`--generator-from DIR`: DIR's renderer is kept and its generator and log-mel
front end are the starting point) skips stage 3; `--true-tracks` conditions the generator on the synthetic corpus's
true head pose, gaze and camera (converted to the published conventions) instead of the tracks `prepare` measured.

The wall-clock budgets are Lightning's `max_time`, whose elapsed time is kept in the checkpoints, so a killed run
that resumes does not train longer than the budget in total.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
INSTALL_DIR = REPO / "src" / "imtalker" / "assets" / "demo_model"
DEMO_SIZE = 128


def _minutes(value: float) -> str:
    """Minutes -> Lightning's "DD:HH:MM:SS"."""
    seconds = int(value * 60)
    return f"{seconds // 86400:02d}:{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _stage(name: str):
    print(f"\n== {name} ({time.strftime('%H:%M:%S')})", flush=True)


def make_data(work: Path, clips: int, seconds: float, heldout: int, workers: int) -> None:
    from imtalker.data.synthetic import write_corpus
    from imtalker.training.prepare import PrepareConfig, prepare_dataset

    _stage(f"synthetic corpus: {clips} training clips of {seconds:g} s, {heldout} held-out clips of 8 s")
    write_corpus(work / "corpus", clips=clips, seed=0, seconds=seconds, workers=workers)
    write_corpus(work / "heldout-corpus", clips=heldout, seed=1, seconds=8.0, workers=workers)
    _stage("prepare (face crops, audio, tracks)")
    for corpus, out in (("corpus", "data"), ("heldout-corpus", "heldout")):
        report = prepare_dataset(work / corpus, work / out, PrepareConfig(size=DEMO_SIZE), workers=workers)
        print(f"{out}: {len(report.written)} clips prepared, {len(report.existing)} already there, "
              f"{len(report.skipped)} skipped {report.skipped or ''}", flush=True)


def true_tracks_stage(work: Path) -> None:
    """Replaces each prepared clip's measured tracks by the corpus's ground truth in the published conventions."""
    from imtalker.data.dataset import CLIPS
    from imtalker.preprocess.conventions import legacy_to_published, write_tracks
    from imtalker.training.data import synthetic_truth

    _stage("true head pose, gaze and camera as the generator's conditions")
    for folder in ("data", "heldout"):
        for clip in sorted((work / folder / CLIPS).iterdir()):
            truth = synthetic_truth(clip, ("pose", "gaze", "camera"))
            write_tracks(clip / "tracks.npz", legacy_to_published(
                {"pose": truth["pose"], "gaze": truth["gaze"], "cam": truth["camera"]}))


def train_renderer_stage(work: Path, minutes: float, config: dict) -> Path:
    from imtalker.training.run import export_run, train_renderer

    _stage(f"renderer training ({minutes:g} min budget)")
    run = work / "renderer"
    train_renderer(work / "data", run, config, overrides={"max_time": _minutes(minutes)}, enable_progress_bar=False)
    export_run(run, work / "weights")
    return work / "weights" / "renderer.safetensors"


def train_generator_stage(work: Path, renderer: Path, minutes: float, init: Path | None = None,
                          lr: float | None = None) -> None:
    from imtalker.training.run import export_run, read_config, train_generator

    _stage(f"motion generator {'fine-tuning' if init else 'training'} ({minutes:g} min budget)")
    run = work / "generator"
    config = read_config(CONFIGS / "demo-generator.yaml")
    if lr is not None:
        config["training"]["lr"] = lr
    train_generator(work / "data", renderer, run, config, overrides={"max_time": _minutes(minutes)}, init=init,
                    enable_progress_bar=False)
    export_run(run, work / "weights")


def pack_stage(work: Path) -> Path:
    """The exported networks stored as float16 (half the bytes in the package); the evaluation measures these."""
    import torch
    from imtalker.weights import load_audio_encoder, load_generator, load_renderer, save_model

    _stage("pack: float16 copies of the weights")
    packed = work / "demo_model"
    for name, load in (("renderer", load_renderer), ("generator", load_generator),
                       ("audio_encoder", load_audio_encoder)):
        save_model(load(work / "weights" / f"{name}.safetensors"), packed / f"{name}.safetensors", dtype=torch.float16)
    return packed


def evaluate_stage(work: Path, weights: Path) -> dict:
    from imtalker.evaluation import evaluate

    _stage(f"evaluation on the held-out clips ({weights.relative_to(work)})")
    result = evaluate(weights, work / "heldout", work / "heldout-corpus", seed=0)
    (work / "eval.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1), flush=True)
    return result


def _last_step(run: Path) -> int:
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
    return int(state["global_step"])


def install(work: Path, result: dict, timings: dict, args: argparse.Namespace) -> None:
    from imtalker.apps.demo import write_model_card
    from imtalker.training.run import read_config

    _stage(f"install into {INSTALL_DIR.relative_to(REPO)}")
    INSTALL_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("renderer.safetensors", "generator.safetensors", "audio_encoder.safetensors"):
        shutil.copy2(work / "demo_model" / name, INSTALL_DIR / name)
    for name in ("demo-renderer.yaml", "demo-generator.yaml"):
        shutil.copy2(CONFIGS / name, INSTALL_DIR / name)
    (INSTALL_DIR / "eval.json").write_text(json.dumps(result, indent=1))
    def recipe(name: str) -> str:
        section = read_config(CONFIGS / name)["training"]
        return ", ".join(f"{key} {value}" for key, value in section.items() if key != "weights")

    weights = read_config(CONFIGS / "demo-renderer.yaml")["training"].get("weights", {})
    training = {
        "renderer_recipe": recipe("demo-renderer.yaml"), "generator_recipe": recipe("demo-generator.yaml"),
        "renderer_losses": "loss weights " + ", ".join(f"{k} {v:g}" for k, v in weights.items() if v),
        "renderer_steps": _last_step(work / "renderer"), "generator_steps": _last_step(work / "generator"),
        "training_clips": args.clips, "clip_seconds": args.seconds, "heldout_clips": args.heldout, "renderer_minutes": args.renderer_minutes,
        "generator_minutes": args.generator_minutes, "minutes": timings, "machine": f"{platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}", "date": date.today().isoformat(),
        "command": "python scripts/train_demo_model.py --work runs/demo --install",
        "conditions": "pose, gaze and cam in the published conventions (FLAME axis-angle, SMIRK camera, L2CS gaze; "
                      "docs/conditions.md)" + (", the corpus's true values" if args.true_tracks else
                                               ", as imtalker prepare measured them"),
    }
    (INSTALL_DIR / "training.json").write_text(json.dumps(training, indent=1))
    write_model_card(INSTALL_DIR, training, result)
    print(f"installed: {sorted(p.name for p in INSTALL_DIR.iterdir())}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "demo", help="working folder (resumable)")
    parser.add_argument("--clips", type=int, default=400, help="training clips (many short clips: many identities)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each training clip")
    parser.add_argument("--heldout", type=int, default=6, help="held-out clips for the evaluation")
    parser.add_argument("--renderer-minutes", type=float, default=58.0, help="wall-clock cap of the renderer run")
    parser.add_argument("--generator-minutes", type=float, default=13.0)
    parser.add_argument("--workers", type=int, default=2, help="processes for the corpus and prepare stages")
    parser.add_argument("--generator-from", type=Path, help="fine-tune this weights folder's generator on its "
                        "renderer instead of training both")
    parser.add_argument("--generator-lr", type=float, help="learning rate of the generator run (default: the recipe's)")
    parser.add_argument("--true-tracks", action="store_true", help="condition the generator on the corpus's true "
                        "pose, gaze and camera")
    parser.add_argument("--install", action="store_true", help="copy the result into the package")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    # Minutes per stage, summed over the runs of this work folder: a resumed run adds its own time, and a stage an
    # earlier run finished adds next to nothing, so the model card reports what the whole training really took.
    timings_file = args.work / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    def lap(name: str, t0: float) -> None:
        timings[name] = round(timings.get(name, 0.0) + (time.monotonic() - t0) / 60, 1)
        timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 1)
        timings_file.write_text(json.dumps(timings, indent=1))

    t0 = time.monotonic()
    make_data(args.work, args.clips, args.seconds, args.heldout, args.workers)
    lap("data", t0)
    from imtalker.training.run import read_config

    if args.true_tracks:
        true_tracks_stage(args.work)
    t0 = time.monotonic()
    if args.generator_from is None:
        renderer = train_renderer_stage(args.work, args.renderer_minutes, read_config(CONFIGS / "demo-renderer.yaml"))
    else:
        renderer = args.work / "weights" / "renderer.safetensors"
        renderer.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(args.generator_from / "renderer.safetensors", renderer)
    lap("renderer", t0)
    t0 = time.monotonic()
    train_generator_stage(args.work, renderer, args.generator_minutes, args.generator_from, args.generator_lr)
    lap("generator", t0)
    t0 = time.monotonic()
    result = evaluate_stage(args.work, pack_stage(args.work))
    lap("evaluation", t0)
    print(f"\nminutes, all runs of {args.work}: {timings}", flush=True)
    if args.install:
        install(args.work, result, timings, args)


if __name__ == "__main__":
    main()
