"""A face-state expert for the renderer's training on the synthetic corpus (not in the published recipe).

A small frozen network that reads a frame and says how open the mouth is, how round the lips are and how closed the
eyes are. It is trained first, in a minute or two, on the corpus's own ground truth (`mouth`, `rounding`, `blink` in
the `.npz` beside each synthetic video); the renderer's `expert` loss then asks a rendered frame to read the same as
the real one. An L1 loss alone lets a short run hedge where it is unsure, blurring the lips of an opening mouth into
skin, which no reader takes for an open mouth; the expert loss pays only for a mouth that looks open (the role a
lip-sync expert plays in Wav2Lip, here for the renderer and with known ground truth).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ..errors import InputError
from ..models.layers import StridedEncoder
from .data import clip_folders, synthetic_truth

logger = logging.getLogger(__name__)

FACE_STATES = ("mouth", "rounding", "blink")


class FaceStateExpert(StridedEncoder):
    """Frames (B, 3, S, S) in [0, 1] -> (B, 3) mouth opening, lip rounding and blink, in the corpus's units."""

    fitting = True  # False once fitted: from then on .train() leaves it in eval mode

    def __init__(self, image_size: int = 128, widths: tuple[int, ...] = (16, 32, 64, 64, 128)):
        super().__init__((3, *widths), image_size, len(FACE_STATES))
        self.image_size = image_size

    def train(self, mode: bool = True) -> "FaceStateExpert":
        """Once fitted it stays in eval mode (its BatchNorm statistics fixed) inside a module that trains."""
        return super().train(mode and self.fitting)


def face_state_truth(clip: Path) -> np.ndarray:
    """(N, 3) ground truth of a prepared synthetic clip (`synthetic_truth`), in `FACE_STATES` order."""
    truth = synthetic_truth(clip, FACE_STATES)
    return np.stack([truth[name] for name in FACE_STATES], axis=1)


def train_face_state_expert(data: str | os.PathLike, *, steps: int = 600, batch_size: int = 32, lr: float = 2e-3,
                            image_size: int = 128, seed: int = 0) -> tuple[FaceStateExpert, dict[str, float]]:
    """Fit a `FaceStateExpert` on the training clips of a prepared synthetic corpus.

    Returns:
        The expert (eval mode, frozen) and its mean absolute error per state on the validation clips, beside the
        error of always answering the training mean.
    """
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)

    def load(split: str):
        clips = clip_folders(data, split)
        return ([np.load(c / "frames.npy", mmap_mode="r") for c in clips], [face_state_truth(c) for c in clips])

    frames, truths = load("train")
    val_frames, val_truths = load("val")
    expert = FaceStateExpert(image_size)
    optimizer = torch.optim.Adam(expert.parameters(), lr=lr)

    def batch(clip_frames, clip_truths, size):
        picks = [(int(c), int(generator.integers(len(clip_frames[c])))) for c in
                 generator.integers(len(clip_frames), size=size)]
        images = torch.from_numpy(np.stack([clip_frames[c][t] for c, t in picks])).permute(0, 3, 1, 2).float() / 255
        if images.shape[-1] != image_size:
            images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True)
        return images, torch.from_numpy(np.stack([clip_truths[c][t] for c, t in picks]))

    expert.train()
    for step in range(steps):
        for group in optimizer.param_groups:  # cosine to zero: a short fit ends settled
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        images, target = batch(frames, truths, batch_size)
        loss = F.l1_loss(expert(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    expert.fitting = False
    expert.eval().requires_grad_(False)
    images, target = batch(val_frames, val_truths, 256)
    with torch.no_grad():
        error = (expert(images) - target).abs().mean(0)
    mean = torch.from_numpy(np.concatenate(truths).mean(0))
    baseline = (target - mean).abs().mean(0)
    report = {**{name: float(e) for name, e in zip(FACE_STATES, error)},
              **{f"{name}_mean_baseline": float(b) for name, b in zip(FACE_STATES, baseline)}}
    logger.info("face-state expert, validation L1: %s", report)
    return expert, report


def save_face_state_expert(expert: FaceStateExpert, path: str | os.PathLike) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in expert.state_dict().items()}, str(tmp),
              metadata={"kind": "face_state_expert", "image_size": str(expert.image_size)})
    os.replace(tmp, path)
    return path


def load_face_state_expert(path: str | os.PathLike) -> FaceStateExpert:
    """A frozen expert from `save_face_state_expert`'s file (safetensors: no pickled code runs)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"face-state expert not found: {path}")
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("kind") != "face_state_expert":
        raise InputError(f"{path} is not a face-state expert file")
    expert = FaceStateExpert(int(metadata["image_size"]))
    expert.load_state_dict(load_file(str(path)))
    expert.fitting = False
    return expert.eval().requires_grad_(False)
