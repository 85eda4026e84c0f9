"""How far the live (hop) schedule's motion is from the offline 2-second schedule's, per way of filling the window.

The bundled demo model samples motion for speech four ways: offline (whole-file features, 2 s chunks: the
reference), streamed in 2 s chunks, and streamed in hops with each window padding option and look-ahead. Two
measures, both with seeds 0-2:

- **smoothness**: mean abs frame-to-frame change of the latents over the offline motion's (1: as smooth).
- **motion vs offline**: mean abs difference of the latents over the offline motion's standard deviation, and
  their Pearson correlation over time (mean over the 32 dimensions), against the offline motion of every seed. Two
  offline runs with different seeds give the floor (sampling noise alone); a schedule near it loses nothing.
- **lip sync** (synthetic clips with ground-truth mouth opening, as `imtalker eval` scores it without landmarks on
  the generated frames): Pearson r of the mouth-region contrast of the rendered frames with the ground truth
  (`imtalker.evaluation.mouth_contrast`, box found by the face mesh on the source), mean over clips and seeds.

    python benchmarks/live_schedule_quality.py            # prints the table (docs/streaming.md quotes it)
    python benchmarks/live_schedule_quality.py --quick    # one clip, one seed, fewer schedules
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import imtalker
from common import machine_description
from imtalker.constants import FPS, SAMPLE_RATE
from imtalker.data.synthetic import make_clip
from imtalker.evaluation import Evaluator, mouth_contrast
from imtalker.metrics import pearson
from imtalker.pipelines import AudioDrivenPipeline
from imtalker.pipelines.streaming import StreamingSession
from imtalker.sampling import SamplingOptions, sample_motion

SENTENCE = ("The quick brown fox jumps over the lazy dog, and then it runs back home "
            "to tell its friends about the adventure.")
# (label, StreamingSession options); None is the offline reference
SCHEDULES = [
    ("offline, 2 s chunks (reference)", None),
    ("stream, 2 s chunks, look-ahead 5", {}),
    ("hop 5, look-ahead 2, pad zeros", {"hop": 5, "lookahead_frames": 2, "padding": "zeros"}),
    ("hop 5, look-ahead 2, pad repeat", {"hop": 5, "lookahead_frames": 2, "padding": "repeat"}),
    ("hop 5, look-ahead 2, short window", {"hop": 5, "lookahead_frames": 2, "padding": "none"}),
    ("hop 5, look-ahead 0, pad zeros", {"hop": 5, "lookahead_frames": 0, "padding": "zeros"}),
    ("hop 5, look-ahead 5, pad zeros", {"hop": 5, "lookahead_frames": 5, "padding": "zeros"}),
    ("hop 5, look-ahead 2, pad zeros, nfe 5", {"hop": 5, "lookahead_frames": 2, "padding": "zeros", "nfe": 5}),
    ("hop 5, look-ahead 2, pad repeat, nfe 5", {"hop": 5, "lookahead_frames": 2, "padding": "repeat", "nfe": 5}),
]


def speech_inputs() -> list[tuple[str, np.ndarray]]:
    """Real speech: an espeak-ng sentence when espeak-ng is installed, and the bundled demo speech."""
    from imtalker.io.audio import load_audio

    speech = [("demo_speech.wav", load_audio(Path(imtalker.__file__).parent / "assets" / "demo_speech.wav"))]
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "sentence.wav"
            subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), SENTENCE], check=True, capture_output=True)
            speech.insert(0, ("espeak-ng sentence", load_audio(path)))
    return speech


def motion_of(pipe, source, waveform: np.ndarray, options: dict | None, seed: int) -> torch.Tensor:
    """(T, 32) motion latents for the waveform under one schedule (the renderer is skipped)."""
    nfe = (options or {}).get("nfe", 10)
    if options is None:
        frames = int(np.ceil(waveform.size * FPS / SAMPLE_RATE))
        with torch.inference_mode():
            features = pipe.audio_encoder(torch.from_numpy(waveform)[None], frames)
        return sample_motion(pipe.generator, features, source.state.motion,
                             options=SamplingOptions(3.0, nfe, seed))[0]
    render = pipe.render_frames
    pipe.render_frames = lambda src, motion, batch_size=8, paste_back=False: iter(motion)
    try:
        session = StreamingSession(pipe, source, seed=seed, **{"nfe": nfe, **options})
        motion = [f.image for f in session.push(waveform)] + [f.image for f in session.finish()]
    finally:
        pipe.render_frames = render
    return torch.stack(motion)


def compare(motion: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(mean abs difference / reference std, mean over dimensions of the correlation over time)."""
    l1 = (motion - reference).abs().mean().item() / reference.std().item()
    corr = np.nanmean([pearson(motion[:, d].numpy(), reference[:, d].numpy()) for d in range(motion.shape[1])])
    return l1, float(corr)


def jitter(motion: torch.Tensor) -> float:
    """Mean abs frame-to-frame change of the latents (hop boundaries that jump show here)."""
    return (motion[1:] - motion[:-1]).abs().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clips", type=int, default=3, help="synthetic clips for the lip-sync measure")
    args = parser.parse_args()
    torch.manual_seed(0)
    seeds = [0] if args.quick else [0, 1, 2]
    schedules = SCHEDULES[:3] if args.quick else SCHEDULES
    weights = imtalker.bundled_demo_model()
    evaluator = Evaluator(weights, seed=0)
    pipe: AudioDrivenPipeline = evaluator.audio
    started = time.perf_counter()

    # motion vs offline, on real speech and the synthetic clips' voices
    clips = [make_clip(1, 4.0, 256, index=i) for i in range(1 if args.quick else args.clips)]
    inputs = speech_inputs() + [(f"synthetic clip {i}", clip.audio) for i, clip in enumerate(clips)]
    portrait = pipe.prepare_source(Path(imtalker.__file__).parent / "assets" / "demo_portrait.png")
    motion = {label: {name: [motion_of(pipe, portrait, wave, options, s) for s in seeds] for name, wave in inputs}
              for label, options in schedules}
    reference = motion[schedules[0][0]]
    rows = {}
    for label, _ in schedules:
        pairs = [compare(m, r) for name, _ in inputs for i, m in enumerate(motion[label][name])
                 for j, r in enumerate(reference[name]) if label != schedules[0][0] or i != j]
        rows[label] = {"l1": float(np.mean([p[0] for p in pairs])) if pairs else float("nan"),
                       "corr": float(np.mean([p[1] for p in pairs])) if pairs else float("nan"),
                       "jitter": float(np.mean([jitter(m) / jitter(r) for name, _ in inputs
                                                for m, r in zip(motion[label][name], reference[name])]))}

    # lip sync on the synthetic clips: rendered frames' mouth-region contrast against the ground truth
    for label, options in schedules:
        scores = []
        for clip in clips:
            crop = pipe.crop_source(clip.frames[0])
            source = pipe.encode_crop(crop)
            box = evaluator.mouth_box(np.asarray(crop.square))
            scale = pipe.image_size / crop.square.shape[0]
            box = None if box is None else tuple(int(round(v * scale)) for v in box)
            for seed in seeds:
                latents = motion_of(pipe, source, clip.audio, options, seed)
                frames = list(pipe.render_frames(source, latents))
                scores.append(pearson(mouth_contrast(frames, box), clip.mouth[:len(frames)]))
        rows[label]["lipsync"] = float(np.nanmean(scores))
    evaluator.close()

    print(f"machine: {machine_description()}; {time.perf_counter() - started:.0f} s")
    print(f"inputs: {', '.join(f'{name} ({wave.size / SAMPLE_RATE:.1f} s)' for name, wave in inputs)}; "
          f"seeds {seeds}; cfg 3; nfe 10 unless said")
    print("| schedule | motion L1 / std vs offline | motion correlation with offline | frame-to-frame change / "
          "offline's | lip sync r (mouth region) |")
    print("|---|---|---|---|---|")
    for label, _ in schedules:
        row = rows[label]
        name = "offline, another seed (floor)" if label == schedules[0][0] else label
        print(f"| {name} | {row['l1']:.3f} | {row['corr']:.3f} | {row['jitter']:.2f} | {row['lipsync']:.3f} |")


if __name__ == "__main__":
    main()
