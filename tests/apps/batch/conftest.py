"""Batch fixtures: tiny random networks, two portraits and short speech files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.batch import write_speech
from helpers.tiny_models import save_tiny_weights


@pytest.fixture(scope="session")
def batch_inputs(tmp_path_factory) -> Path:
    """weights/, ann.png, bob.png (128 px noise portraits: jobs use crop false), s0.wav, s1.wav (0.4 s) and
    long.wav (8 s, a job long enough to be killed while it renders)."""
    root = tmp_path_factory.mktemp("batch")
    save_tiny_weights(root / "weights")
    rng = np.random.default_rng(0)
    for name in ("ann", "bob"):
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(root / f"{name}.png")
    for index in range(2):
        write_speech(root / f"s{index}.wav", 0.4, index)
    write_speech(root / "long.wav", 8.0, 2)
    return root
