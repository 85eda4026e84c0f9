"""The bundled demo model: a small IMTalker trained by `scripts/train_demo_model.py` on the synthetic corpus.

Once installed (`scripts/train_demo_model.py --install` writes `imtalker/assets/demo_model/`: three `.safetensors`
files, the configs, the evaluation and a model card) it ships inside the package, so `imtalker demo`, `imtalker ui`
and `imtalker serve` work offline with no other download; `imtalker.weights.bundled_demo_model()` finds it. It knows
only synthetic faces and voices; its measured quality is in its MODEL_CARD.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..weights import bundled_demo_model

WEIGHT_FILES = ("renderer.safetensors", "generator.safetensors", "audio_encoder.safetensors")


def _parameters(path: Path) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(str(path)).values())


def _f(value: float | None, spec: str) -> str:
    """A number for the card; an undefined one (None in the evaluation's JSON) reads n/a."""
    return "n/a" if value is None else format(value, spec)


def write_model_card(folder: str | Path, training: dict, evaluation: dict) -> Path:
    """Write `MODEL_CARD.md` for a demo model folder from its training record and evaluation result."""
    folder = Path(folder)
    summary = evaluation["summary"]
    sizes = {name: (folder / name).stat().st_size for name in WEIGHT_FILES}
    params = {name: _parameters(folder / name) for name in WEIGHT_FILES}
    columns = (("psnr", ".2f"), ("psnr_copy", ".2f"), ("ssim", ".3f"), ("lipsync", ".3f"), ("lipsync_ceiling", ".3f"),
               ("lipsync_chance", ".3f"), ("lipsync_region", ".3f"), ("lipsync_region_ceiling", ".3f"),
               ("lipsync_region_chance", ".3f"))
    losses = training.get("renderer_losses", "L1 + identity-consistency loss")
    gain = (summary.get("psnr") or 0.0) - (summary.get("psnr_copy") or 0.0)
    follows = ("" if gain >= 1.0 else f" The renderer moves the mouth and eyes but hardly the head: its frames keep "
               f"close to the source's head pose, so self-reenactment scores only {gain:.2f} dB above copying the "
               "source frame.")
    conditions = f"- Conditions: {training['conditions']}\n" if training.get("conditions") else ""
    rows = "\n".join(f"| {c['clip']} | " + " | ".join(_f(c.get(name), spec) for name, spec in columns) + " |"
                      for c in evaluation["clips"])
    card = """# imtalker demo model

A small IMTalker (renderer + flow-matching motion generator + log-mel audio front end) trained from scratch on a
synthetic talking-head corpus, on a CPU, by the package's own training pipeline. It exists so that a fresh install
can make a talking video offline (`imtalker demo`); it is not a model of real faces.

## Networks

| file | parameters | bytes |
|---|---|---|
""" + "\n".join(f"| {name} | {params[name]:,} | {sizes[name]:,} |" for name in WEIGHT_FILES) + f"""

Renderer: `demo-renderer.yaml` (128 x 128 px). Generator: `demo-generator.yaml` (4 blocks of 128,
log-mel front end with 64 bands; no downloaded weights anywhere).

## Data

`imtalker synth-data`: {training['training_clips']} clips of {training['clip_seconds']:g} s (seed 0) of procedurally drawn faces (skin, hair,
background, face shape vary) with head pose, blinks, gaze and a mouth that follows a formant-synthesised voice
with syllable rhythm, prepared with `imtalker prepare --size 128` (mediapipe face crops). Evaluation uses
{training['heldout_clips']} further clips made with seed 1: faces and voices never seen in training.

## Training

- Renderer: {losses}; no discriminator and no VGG19 perceptual terms (no weights can be downloaded); {training['renderer_recipe']}; {training['renderer_steps']:,} steps (wall-clock cap
  {training['renderer_minutes']:g} min).
- Generator: rectified flow with the velocity-difference term, condition dropout, EMA;
  {training['generator_recipe']}; windows of 10 + 50 frames, {training['generator_steps']:,} steps (wall-clock cap
  {training['generator_minutes']:g} min), on the motion latents of the trained renderer.
{conditions}- Machine: {training['machine']}; {training['date']}. Stage times (min): {training['minutes']}.
- Command: `{training['command']}`

## Measured quality (held-out synthetic clips)

`imtalker eval --weights <this folder> runs/demo/heldout` (seed {evaluation['settings']['seed']}, cfg
{evaluation['settings']['cfg_scale']}, {evaluation['settings']['nfe']} steps):

- Self-reenactment (video-driven, frame 0 as the source): **PSNR {_f(summary['psnr'], '.2f')} dB**,
  SSIM {_f(summary['ssim'], '.3f')} over {summary['frames']} frames of {summary['clips']} clips (copying the source
  frame unchanged scores {_f(summary.get('psnr_copy'), '.2f')} dB).
- Lip sync (audio-driven): correlation of the mouth opening measured on the generated frames (face mesh) with the
  ground-truth opening: **r = {_f(summary['lipsync'], '.3f')}** (mean over clips). The same measurement on the real
  frames gives {_f(summary['lipsync_ceiling'], '.3f')} (the landmarker's ceiling); frames generated from another
  clip's audio give {_f(summary['lipsync_chance'], '.3f')} (chance). The mesh found the mouth in
  {_f(summary['detected'], '.1%')} of the generated frames.
- Lip sync by the mouth-region contrast (luminance spread in a box around the source's mouth; needs no landmarks on
  the generated frames): **r = {_f(summary.get('lipsync_region'), '.3f')}**; real frames
  {_f(summary.get('lipsync_region_ceiling'), '.3f')}, another clip's audio {_f(summary.get('lipsync_region_chance'), '.3f')}.

| clip | PSNR | PSNR copy | SSIM | lip sync r (mesh) | ceiling | other audio | r (region) | ceiling | other audio |
|---|---|---|---|---|---|---|---|---|---|
{rows}

## Limits

128 px output; synthetic faces only (real photos are rendered as the closest synthetic-looking face); the head-pose,
gaze and camera conditions were trained on the synthetic tracks.{follows} Licence: the package's.
"""
    path = folder / "MODEL_CARD.md"
    path.write_text(card)
    return path


def demo_evaluation() -> dict | None:
    """The recorded evaluation of the bundled model (None when not bundled)."""
    folder = bundled_demo_model()
    path = folder / "eval.json" if folder else None
    return json.loads(path.read_text()) if path and path.is_file() else None
