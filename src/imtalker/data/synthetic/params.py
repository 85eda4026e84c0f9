"""What every part of the generator shares: its version, the limits on seed, length and size with their checks,
and how a clip's ``(seed, index)`` splits into the independent random streams of its identity, speech and motion."""

from __future__ import annotations

import math

import numpy as np

from ...constants import FPS
from ...errors import InputError

SYNTH_VERSION = 1  # bump when the output of a (seed, index) changes
MAX_SECONDS = 3600.0
MIN_SIZE, MAX_SIZE = 64, 2048


def seed_sequences(seed: int, index: int) -> list[np.random.SeedSequence]:
    """Independent streams for identity, speech and motion of clip ``index``: each depends on (seed, index) only."""
    return np.random.SeedSequence([int(seed), int(index)]).spawn(3)


def check_seed(seed: int, index: int) -> None:
    for name, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputError(f"{name} must be a non-negative integer, got {value!r}")


def check_seconds(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)) \
            or not math.isfinite(seconds) or not 1.0 / FPS <= seconds <= MAX_SECONDS:
        raise InputError(f"seconds must be a number between {1.0 / FPS:g} and {MAX_SECONDS:g}, got {seconds!r}")
    return float(seconds)


def check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE \
            or size % 2:
        raise InputError(f"size must be an even number of pixels between {MIN_SIZE} and {MAX_SIZE}, got {size!r}")
    return int(size)


def frame_count(seconds: float) -> int:
    return max(1, math.floor(check_seconds(seconds) * FPS + 0.5))  # halves round up (round() goes to even)
