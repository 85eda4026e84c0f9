"""Motion over a clip: head pose that wanders and nods with the voice, gaze, blinks and camera drift
(:func:`sample_head_motion`), and the camera track they give in the tracks convention (:func:`camera_track`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...constants import FPS
from .drawing import make_view, surface_points
from .faces import FaceState, Identity
from .speech import moving_average

def _wander(rng: np.random.Generator, num_frames: int, amplitude: float, low: float = 0.05,
            high: float = 0.4, components: int = 3) -> np.ndarray:
    """A slow random signal ``(num_frames,)`` within ``±amplitude``: a sum of sinusoids of random frequency (Hz)."""
    t = np.arange(num_frames) / FPS
    freqs = np.exp(rng.uniform(np.log(low), np.log(high), components))
    phases = rng.uniform(0, 2 * np.pi, components)
    weights = rng.uniform(0.3, 1.0, components)
    signal = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(axis=0)
    return amplitude * signal / weights.sum()


def _blinks(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Eye closure per frame ``(num_frames,)``: blinks every 2-5 s, each closing in 70 ms and opening in 130 ms."""
    t = np.arange(num_frames) / FPS
    closure = np.zeros(num_frames)
    start = rng.uniform(0.4, 2.5)
    while start < num_frames / FPS:
        u = t - start
        closing = np.clip(u / 0.07, 0.0, 1.0)
        opening = np.clip(1.0 - (u - 0.07) / 0.13, 0.0, 1.0)
        profile = np.where(u < 0.07, closing, opening) * (u >= 0)
        closure = np.maximum(closure, profile * profile * (3 - 2 * profile))  # smoothstep
        start += rng.uniform(2.0, 5.0)
    return closure


@dataclass(frozen=True)
class _Motion:
    pose: np.ndarray  # (N, 3)
    gaze: np.ndarray  # (N, 2)
    blink: np.ndarray  # (N,)
    shift: np.ndarray  # (N, 2)
    zoom: np.ndarray  # (N,)


def sample_head_motion(rng: np.random.Generator, num_frames: int, voicing: np.ndarray) -> _Motion:
    """Head pose, gaze, blinks and camera motion for a clip; the head nods a little with the voice."""
    limit = math.radians(15.0)
    nod = moving_average(voicing.astype(np.float64), 7)
    nod = 0.05 * (nod - nod.mean())
    yaw = _wander(rng, num_frames, math.radians(11.0))
    pitch = _wander(rng, num_frames, math.radians(7.0)) + nod
    roll = _wander(rng, num_frames, math.radians(6.0))
    pose = np.clip(np.stack([yaw, pitch, roll], axis=-1), -limit, limit)
    # The eyes partly counter-rotate the head (people keep looking at the camera) and drift.
    gaze = np.stack([_wander(rng, num_frames, 0.12, 0.1, 0.5) - 0.3 * pitch,
                     _wander(rng, num_frames, 0.25, 0.1, 0.5) - 0.4 * yaw], axis=-1)
    shift = np.stack([_wander(rng, num_frames, 0.025, 0.03, 0.2), _wander(rng, num_frames, 0.02, 0.03, 0.2)], -1)
    zoom = 1.0 + _wander(rng, num_frames, 0.05, 0.03, 0.15)
    return _Motion(pose, gaze, _blinks(rng, num_frames), shift, zoom)


def camera_track(identity: Identity, motion: _Motion, size: int) -> np.ndarray:
    """``(N, 3)`` camera in the tracks convention: the point between the eyes relative to the image centre in
    image widths, and depth relative to :data:`imtalker.preprocess.tracks.Z_REF` (face spanning half the image width)."""
    cams = np.zeros((motion.pose.shape[0], 3))
    point = surface_points(identity, np.array([0.0, identity.eye_y]), -0.05)
    for k in range(cams.shape[0]):
        state = FaceState(pose=tuple(motion.pose[k]), shift=tuple(motion.shift[k]), zoom=float(motion.zoom[k]))
        view = make_view(identity, state, size)
        px = view.project(point)
        cams[k, :2] = (px - size / 2.0) / size
        cams[k, 2] = size / (4.0 * view.scale)  # face height 2 units: z / Z_REF = (W / 2) / face height
    return cams
