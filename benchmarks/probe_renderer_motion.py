"""Does a renderer move with its motion? Held-out reenactment, frame spread and a linear probe of its motion latents.

The diagnostics that told the demo-model runs apart (docs/demo-model.md), on prepared synthetic corpora:

- reenactment: each held-out clip's frame 0 is the source, frames 5, 10, ... drive it; PSNR against the real frames
  and against copying the source (the no-motion baseline), as `imtalker eval` measures;
- frame spread: the per-pixel variance over time of those rendered frames, beside the real frames' (a renderer that
  ignores motion has a spread near 0 however sharp its frames are);
- mouth following: the Pearson correlation of the mouth-region contrast of those rendered frames (box from the
  source's face mesh, `imtalker.evaluation.mouth_contrast`) with the corpus's mouth opening, beside the real
  frames' (a renderer can move its frames without opening the mouth);
- probe R^2: a least-squares map from the latents' deviations from their clip mean to the ground truth's (mouth
  opening, blink, head pose, gaze from the corpus's `.npz`), fitted on training clips and scored on held-out ones.

    python benchmarks/probe_renderer_motion.py runs/demo/renderer/checkpoints/last.ckpt
    python benchmarks/probe_renderer_motion.py runs/demo/weights/renderer.safetensors --samples runs/demo/probe.png

Run from the repository root (prepared clips name their source videos relative to it). Prints its numbers; it
writes nothing to BENCHMARKS.md (it is a diagnostic for training runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from imtalker.evaluation import mouth_box, mouth_contrast
from imtalker.metrics import pearson, psnr
from imtalker.training.data import synthetic_truth
from imtalker.weights import load_renderer

TRUTH = ("mouth", "blink", "pose", "gaze")
TRUTH_COLUMNS = ("mouth", "blink", "pitch", "yaw", "roll", "gaze_x", "gaze_y")


def clip_folders(data: Path, limit: int | None = None) -> list[Path]:
    folders = sorted(p for p in (data / "clips").iterdir() if (p / "frames.npy").is_file())
    return folders[:limit] if limit else folders


def ground_truth(clip: Path, frames: slice) -> np.ndarray:
    """(N, 7) synthetic ground truth of a prepared clip, from the `.npz` beside its source video."""
    truth = synthetic_truth(clip, TRUTH)
    return np.concatenate([truth[name][frames].reshape(-1, 1 if truth[name].ndim == 1 else truth[name].shape[1])
                           for name in TRUTH], axis=1)


def frames_of(clip: Path, frames: slice) -> torch.Tensor:
    return torch.from_numpy(np.load(clip / "frames.npy", mmap_mode="r")[frames].copy()).permute(0, 3, 1, 2) / 255


def reenact(renderer, clips: list[Path], drive: slice, samples: Path | None) -> dict[str, float]:
    scores, copies, spread, real_spread, rows, mouth, real_mouth = [], [], [], [], [], [], []
    for clip in clips:
        source, driving = frames_of(clip, slice(0, 1)), frames_of(clip, drive)
        rendered = renderer.render(renderer.encode_source(source), renderer.encode_motion(driving), batch_size=8)
        scores.append(psnr(rendered, driving))
        copies.append(psnr(source.expand_as(driving), driving))
        spread.append(rendered.var(dim=0).mean().item())
        real_spread.append(driving.var(dim=0).mean().item())
        box = mouth_box(np.load(clip / "landmarks.npy")[0])
        truth = ground_truth(clip, drive)[:len(driving), 0]
        mouth.append(pearson(mouth_contrast(_uint8(rendered), box), truth))
        real_mouth.append(pearson(mouth_contrast(_uint8(driving), box), truth))
        rows.append(torch.cat([torch.cat(list(driving[:6]), dim=2), torch.cat(list(rendered[:6]), dim=2)], dim=1))
    if samples is not None:  # real frames above, rendered below, one pair of rows per clip
        from PIL import Image

        grid = (torch.cat(rows, dim=1).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(np.ascontiguousarray(grid)).save(samples)
    return {"psnr": torch.cat(scores).mean().item(), "psnr_copy": torch.cat(copies).mean().item(),
            "spread": float(np.mean(spread)), "real_spread": float(np.mean(real_spread)),
            "mouth_r": float(np.nanmean(mouth)), "real_mouth_r": float(np.nanmean(real_mouth))}


def _uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def centred_latents(renderer, clips: list[Path], every: int) -> tuple[np.ndarray, np.ndarray]:
    """Latents and ground truth of every `every`-th frame, each minus its clip's mean."""
    latents, truths = [], []
    for clip in clips:
        frames = slice(None, None, every)
        z = renderer.encode_motion(frames_of(clip, frames)).numpy()
        y = ground_truth(clip, frames)[:len(z)]
        latents.append(z - z.mean(axis=0))
        truths.append(y - y.mean(axis=0))
    return np.concatenate(latents), np.concatenate(truths)


def probe(renderer, train: list[Path], heldout: list[Path], every: int = 4) -> dict[str, float]:
    x_fit, y_fit = centred_latents(renderer, train, every)
    x_test, y_test = centred_latents(renderer, heldout, every)
    weights = np.linalg.lstsq(np.c_[x_fit, np.ones(len(x_fit))], y_fit, rcond=None)[0]
    predicted = np.c_[x_test, np.ones(len(x_test))] @ weights
    r2 = 1 - ((predicted - y_test) ** 2).sum(axis=0) / ((y_test - y_test.mean(axis=0)) ** 2).sum(axis=0)
    return dict(zip(TRUTH_COLUMNS, r2.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("renderer", type=Path, help="renderer weights: our .safetensors or a training .ckpt")
    parser.add_argument("--data", type=Path, default=Path("runs/demo/data"), help="prepared training clips (probe fit)")
    parser.add_argument("--heldout", type=Path, default=Path("runs/demo/heldout"), help="prepared held-out clips")
    parser.add_argument("--fit-clips", type=int, default=40, help="training clips the probe is fitted on")
    parser.add_argument("--samples", type=Path, help="also save real / rendered frames as a PNG grid here")
    args = parser.parse_args()
    torch.manual_seed(0)
    renderer = load_renderer(args.renderer).eval()
    heldout = clip_folders(args.heldout)
    scores = reenact(renderer, heldout, slice(5, 165, 5), args.samples)
    print(f"held-out reenactment ({len(heldout)} clips, source = frame 0): PSNR {scores['psnr']:.2f} dB, copying "
          f"the source {scores['psnr_copy']:.2f} dB; frame spread {scores['spread']:.3g} (real "
          f"{scores['real_spread']:.3g}); mouth-contrast r {scores['mouth_r']:.2f} (real {scores['real_mouth_r']:.2f})")
    r2 = probe(renderer, clip_folders(args.data, args.fit_clips), heldout)
    print("probe R^2 (held-out, within-clip deviations): " + ", ".join(f"{k} {v:.2f}" for k, v in r2.items()))


if __name__ == "__main__":
    main()
