"""Talking-head videos and a prepared dataset for the training tests (real faces: the skimage astronaut)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from imtalker.config import RendererConfig
from imtalker.training.prepare import PrepareConfig, PrepareReport, prepare_dataset
from imtalker.io.video import VideoWriter
from helpers.tiny_models import RENDERER

SIZE = 128
CLIP_FRAMES = 75  # 3 s


def write_talking_video(path, shift: int, frames: int = CLIP_FRAMES, pitch: float = 220.0):
    """The astronaut's face moving up and down a little, with a tone as its audio."""
    photo = skdata.astronaut()
    audio = (0.2 * np.sin(2 * np.pi * pitch * np.arange(frames * 640) / 16000)).astype(np.float32)
    with VideoWriter(path, audio=audio) as writer:
        for i in range(frames):
            s = int(6 * math.sin(i / 5 + shift))
            writer.write(np.ascontiguousarray(photo[20 + s:276 + s, 120 + 4 * shift:376 + 4 * shift])[None])
    return path


@pytest.fixture(scope="session")
def talking_videos(tmp_path_factory):
    """Three usable videos, one corrupt file and one video without a face (in a subfolder)."""
    folder = tmp_path_factory.mktemp("videos")
    for k in range(3):
        write_talking_video(folder / f"speaker{k}.mp4", shift=k, pitch=200 + 40 * k)
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    (folder / "more").mkdir()
    with VideoWriter(folder / "more" / "wall.mp4", audio=np.zeros(CLIP_FRAMES * 640, np.float32)) as writer:
        writer.write(np.full((CLIP_FRAMES, 128, 128, 3), 90, np.uint8))
    return folder


@dataclass
class Prepared:
    folder: Path
    report: PrepareReport
    size: int = SIZE
    frames: int = CLIP_FRAMES  # per clip


@pytest.fixture(scope="session")
def prepared(talking_videos, tmp_path_factory) -> Prepared:
    """The videos prepared at 128 px."""
    out = tmp_path_factory.mktemp("prepared") / "data"
    return Prepared(out, prepare_dataset(talking_videos, out, PrepareConfig(size=SIZE)))


@pytest.fixture(scope="session")
def tiny_renderer_config() -> RendererConfig:
    return RENDERER
