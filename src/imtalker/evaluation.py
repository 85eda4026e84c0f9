"""Quality of a model on held-out prepared clips: reconstruction and lip sync (`imtalker eval`).

Two measurements per clip of a folder made by `imtalker prepare`:

- **Self-reenactment** (video-driven): the clip's first face crop is the source, every frame's motion latent drives
  it, and the rendered frames are compared with the real ones: PSNR and SSIM over frames 1..N-1 (frame 0 is the
  source itself). Beside it, the PSNR of frame 0 copied as every frame: the no-motion baseline to beat.
- **Lip sync** (audio-driven): the clip's audio drives the source through the generator; the mouth opening is
  measured on the rendered frames with the face mesh (`imtalker.data.synthetic.measure_mouth_opening`) and correlated
  (Pearson) with the clip's ground-truth opening. That ground truth comes from the synthetic corpus (`mouth` in the
  `.npz` beside each source video); for other videos, the opening measured on the real frames stands in for it.
  Two references frame the number: the same measurement on the real frames (the ceiling the landmarker allows)
  and on frames generated from *another* clip's audio (the chance level, near 0).
  A second lip-sync number needs no landmarks on the generated frames, which a blurred small model may not get:
  the **mouth-region contrast**, the spread of luminance in a box around the mouth of the source frame (found by the
  face mesh on the real source). An open mouth shows dark inside, teeth and lips where a closed one shows skin and
  a lip line; on the real synthetic frames it follows the ground truth with r of about 0.8-0.98.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .metrics import pearson, psnr, ssim
from .constants import DEFAULT_CFG_SCALE, DEFAULT_NFE

logger = logging.getLogger(__name__)

MEASURE_SIZE = 256  # frames are upscaled to this side before the face mesh measures the mouth
INNER_MOUTH_POINTS = (78, 308, 13, 14)  # face mesh: inner-lip corners, middle of the upper and lower inner lip


@dataclass
class ClipScores:
    """Scores of one held-out clip."""

    clip: str
    frames: int
    psnr: float  # self-reenactment, mean over frames 1..N-1, dB
    ssim: float
    psnr_copy: float  # the source frame itself taken as every frame: what a renderer must beat
    lipsync: float  # correlation of the generated mouth opening with the ground truth
    lipsync_ceiling: float  # correlation of the opening measured on the real frames with the ground truth
    lipsync_chance: float  # generated from another clip's audio, against this clip's ground truth
    detected: float  # share of generated frames where the face mesh found the mouth
    lipsync_region: float  # the same three with the mouth-region contrast instead of the face mesh
    lipsync_region_ceiling: float
    lipsync_region_chance: float
    ground_truth: str  # "synthetic" (the corpus's mouth track) or "measured" (landmarks of the real frames)


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)


def _upscaled(frames, size: int = MEASURE_SIZE) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.fromarray(np.asarray(f)).resize((size, size), Image.Resampling.BICUBIC)) for f in frames]


def mouth_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel bounds around the mouth from face-mesh points (478, 2) in pixels: 0.8 of the
    inner-lip width wide and 0.6 of it high, centred on the inner lips, so an opening mouth stays inside it."""
    points = np.asarray(landmarks, np.float64)[list(INNER_MOUTH_POINTS)]
    (cx, cy), width = points.mean(0), max(np.ptp(points[:, 0]), 1.0)
    return (int(cy - 0.3 * width), int(cy + 0.3 * width) + 1, int(cx - 0.4 * width), int(cx + 0.4 * width) + 1)


def mouth_contrast(frames, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """Standard deviation of the luminance (0-1) inside `box` per frame; NaN for every frame without a box."""
    frames = [np.asarray(f) for f in frames]
    if box is None:
        return np.full(len(frames), np.nan, np.float32)
    top, bottom, left, right = (max(v, 0) for v in box)
    luma = np.array([0.299, 0.587, 0.114], np.float32) / 255
    return np.array([(f[top:bottom, left:right].astype(np.float32) @ luma).std() for f in frames], np.float32)


def _ground_truth_mouth(source_video: str | None, corpus: Path | None) -> np.ndarray | None:
    """The corpus's mouth track for a prepared clip, from the `.npz` beside its source video, when there is one."""
    if not source_video:
        return None
    candidates = [Path(source_video).with_suffix(".npz")]
    if corpus is not None:
        candidates.insert(0, corpus / Path(source_video).with_suffix(".npz").name)
    for path in candidates:
        if path.is_file():
            with np.load(path) as data:
                if "mouth" in data:
                    return np.asarray(data["mouth"], np.float32)
    return None


class Evaluator:
    """Runs the two measurements with one set of pipelines (see the module docstring).

    Args:
        weights: a weights folder (renderer, generator, audio encoder), as for `AudioDrivenPipeline.from_pretrained`.
        seed, cfg_scale, nfe: audio-driven sampling options.
        batch_size: frames rendered at once.
        device: torch device.
    """

    def __init__(self, weights: str | os.PathLike, *, seed: int = 0, cfg_scale: float = DEFAULT_CFG_SCALE, nfe: int = DEFAULT_NFE,
                 batch_size: int = 8, device: str = "cpu"):
        from .preprocess.face import FaceDetector
        from .pipelines import AudioDrivenPipeline

        self.audio = AudioDrivenPipeline.from_pretrained(weights, device=device)
        self.renderer = self.audio.renderer
        self.seed, self.cfg_scale, self.nfe, self.batch_size = seed, cfg_scale, nfe, batch_size
        self.detector = FaceDetector(max_faces=1)

    def close(self) -> None:
        self.detector.close()

    def reenact(self, frames: np.ndarray) -> tuple[float, float, float]:
        """(PSNR, SSIM) of frames 1..N-1 rendered from frame 0 with their own motion latents, and the PSNR of
        frame 0 itself against them (the no-motion baseline)."""
        size = self.renderer.config.image_size
        real = _to_tensor(frames)
        if real.shape[-1] != size:
            real = F.interpolate(real, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        source = self.audio.prepare_source(frames[0], crop=False)
        scores = []
        for chunk in real[1:].split(self.batch_size):
            with torch.inference_mode():
                motion = self.renderer.encode_motion(chunk.to(self.audio.device))
            fake = _to_tensor(np.stack(list(self.audio.render_frames(source, motion, self.batch_size))))
            copy = real[:1].expand_as(chunk)
            scores.append(torch.stack([psnr(fake, chunk), ssim(fake, chunk), psnr(copy, chunk)], 1))
        psnr_mean, ssim_mean, copy_mean = torch.cat(scores).mean(0).tolist()
        return psnr_mean, ssim_mean, copy_mean

    def talk(self, source_frame: np.ndarray, waveform: np.ndarray) -> list[np.ndarray]:
        """Frames generated from speech for a face crop."""
        return list(self.audio.frames(source_frame, waveform, crop=False, seed=self.seed, cfg_scale=self.cfg_scale,
                                      nfe=self.nfe, batch_size=self.batch_size, max_seconds=None))

    def mouth(self, frames) -> np.ndarray:
        from .data.synthetic import measure_mouth_opening

        return measure_mouth_opening(_upscaled(frames), detector=self.detector)

    def mouth_box(self, frame: np.ndarray) -> tuple[int, int, int, int] | None:
        """`mouth_box` of a (real) frame, in its own pixels; None when the face mesh finds no face."""
        faces = [f for f in self.detector.detect(_upscaled([frame])[0]) if f.landmarks is not None]
        if not faces:
            return None
        points = max(faces, key=lambda f: f.area).landmarks * (frame.shape[0] / MEASURE_SIZE)
        return mouth_box(points)


def evaluate(weights: str | os.PathLike, data: str | os.PathLike, corpus: str | os.PathLike | None = None, *,
             seed: int = 0, cfg_scale: float = DEFAULT_CFG_SCALE, nfe: int = DEFAULT_NFE, max_clips: int | None = None,
             device: str = "cpu", progress: bool = True) -> dict:
    """Evaluate a model on every clip of a prepared folder (all splits: use a folder of held-out videos).

    Args:
        weights: weights folder.
        data: a folder made by `imtalker prepare`.
        corpus: where the synthetic corpus's `.npz` ground truth lies, if not beside the source videos named in
            the manifest.
        seed, cfg_scale, nfe: audio-driven sampling.
        max_clips: evaluate only the first clips.
        device: torch device.
        progress: print a line per clip.

    Returns:
        {"summary": {...}, "clips": [ClipScores as dicts], "settings": {...}}. The summary has `psnr`, `ssim` (mean
        over all frames), `lipsync` (mean of the per-clip correlations), `lipsync_ceiling`, `lipsync_chance`, and
        the same three for the mouth-region contrast (`lipsync_region...`).

    Raises:
        InputError: not a prepared folder, or no clips.
    """
    from .data.dataset import CLIPS, load_manifest

    manifest = load_manifest(data)
    clips = manifest["clips"][:max_clips] if max_clips else manifest["clips"]
    if not clips:
        raise InputError(f"{data} has no clips to evaluate")
    corpus = Path(corpus) if corpus is not None else None
    evaluator = Evaluator(weights, seed=seed, cfg_scale=cfg_scale, nfe=nfe, device=device)
    loaded = []
    for entry in clips:
        folder = Path(data) / CLIPS / entry["id"]
        loaded.append((entry, np.load(folder / "frames.npy", mmap_mode="r"), np.load(folder / "audio.npy")))
    results: list[ClipScores] = []
    try:
        for index, (entry, frames, waveform) in enumerate(loaded):
            frames = np.array(frames)  # a writable copy of the memory map
            psnr_mean, ssim_mean, copy_mean = evaluator.reenact(frames)
            real_mouth = evaluator.mouth(frames)
            truth = _ground_truth_mouth(entry.get("source"), corpus)
            kind = "synthetic" if truth is not None else "measured"
            truth = real_mouth if truth is None else truth
            talking = evaluator.talk(frames[0], waveform)
            generated = evaluator.mouth(talking)
            other_audio = loaded[(index + 1) % len(loaded)][2] if len(loaded) > 1 else waveform[::-1].copy()
            other_talking = evaluator.talk(frames[0], other_audio)
            chance = evaluator.mouth(other_talking)
            box = evaluator.mouth_box(frames[0])
            scores = ClipScores(
                clip=entry["id"], frames=len(frames), psnr=psnr_mean, ssim=ssim_mean, psnr_copy=copy_mean,
                lipsync=pearson(generated, truth), lipsync_ceiling=pearson(real_mouth, truth),
                lipsync_chance=pearson(chance, truth), detected=float(np.isfinite(generated).mean()),
                lipsync_region=pearson(mouth_contrast(talking, box), truth),
                lipsync_region_ceiling=pearson(mouth_contrast(frames, box), truth),
                lipsync_region_chance=pearson(mouth_contrast(other_talking, box), truth), ground_truth=kind)
            results.append(scores)
            if progress:
                print(f"{entry['id']}: PSNR {scores.psnr:.2f} dB (source copied: {scores.psnr_copy:.2f}), SSIM "
                      f"{scores.ssim:.3f}, lip sync r {scores.lipsync:.3f} "
                      f"(ceiling {scores.lipsync_ceiling:.3f}, other audio {scores.lipsync_chance:.3f}); mouth-region "
                      f"contrast r {scores.lipsync_region:.3f} (ceiling {scores.lipsync_region_ceiling:.3f}, other "
                      f"audio {scores.lipsync_region_chance:.3f})", flush=True)
    finally:
        evaluator.close()

    def mean(name: str, weighted: bool = False) -> float:
        values = np.array([getattr(r, name) for r in results], np.float64)
        weights_ = np.array([r.frames - 1 for r in results], np.float64) if weighted else np.ones(len(results))
        keep = np.isfinite(values)
        return float(np.average(values[keep], weights=weights_[keep])) if keep.any() else math.nan

    summary = {"clips": len(results), "frames": int(sum(r.frames for r in results)),
               "psnr": mean("psnr", weighted=True), "ssim": mean("ssim", weighted=True),
               "psnr_copy": mean("psnr_copy", weighted=True), "lipsync": mean("lipsync"),
               "lipsync_ceiling": mean("lipsync_ceiling"), "lipsync_chance": mean("lipsync_chance"),
               "detected": mean("detected"), "lipsync_region": mean("lipsync_region"),
               "lipsync_region_ceiling": mean("lipsync_region_ceiling"),
               "lipsync_region_chance": mean("lipsync_region_chance")}
    return _json_safe({"summary": summary, "clips": [asdict(r) for r in results],
                       "settings": {"weights": str(weights), "data": str(data), "seed": seed, "cfg_scale": cfg_scale,
                                    "nfe": nfe}})


def _json_safe(value):
    """NaN (an undefined correlation) -> None, so the result is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
