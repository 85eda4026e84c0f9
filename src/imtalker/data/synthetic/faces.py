"""Who is drawn and how they look in one frame: a person's :class:`Identity` (colours, hair, proportions), drawn
by :func:`sample_identity`, and the per-frame :class:`FaceState` (pose, gaze, mouth, blink, camera)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

_SKIN_TONES = ((246, 216, 192), (241, 194, 167), (224, 172, 138), (198, 140, 105), (160, 106, 74), (112, 72, 50))
_HAIR_COLOURS = ((28, 24, 24), (62, 40, 28), (105, 70, 42), (196, 160, 100), (150, 72, 38), (150, 148, 146))
_IRIS_COLOURS = ((85, 55, 35), (60, 40, 25), (70, 110, 160), (80, 120, 85), (105, 110, 115))
HAIR_STYLES = ("short", "long", "bob", "receding", "fringe")


@dataclass(frozen=True)
class Identity:
    """What a synthetic person looks like. Colours are RGB 0-255; lengths are in face units (the face-local geometry
    of :mod:`imtalker.data.synthetic`).

    Attributes:
        skin, hair, lips, iris, shirt: Colours.
        background_top, background_bottom: Colours of the background's vertical gradient.
        hair_style: Index into :data:`HAIR_STYLES`.
        face_height: Face height (forehead top to chin) as a fraction of the image height.
        face_width: Half-width of the face (half-height = 1).
        chin_taper: How much narrower the face gets towards the chin.
        eye_spacing: Half the distance between the eye centres.
        eye_y: Height of the eye centres.
        eye_size: Half-width of an eye.
        brow_height: Distance of the brows above the eyes.
        brow_thickness: Thickness of the brows at their inner end.
        brow_arch: How far the brow's arch rises.
        nose_length: Height of the nose tip.
        nose_width: Half-width of the nostrils' wings.
        mouth_y: Height of the mouth.
        mouth_width: Half-width of the mouth.
        lip_thickness: Thickness of the lower lip (the upper one is 0.7 of it).
        light: Horizontal direction of the key light, -1 (from the image's left) to 1.
    """

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    lips: tuple[float, float, float]
    iris: tuple[float, float, float]
    shirt: tuple[float, float, float]
    background_top: tuple[float, float, float]
    background_bottom: tuple[float, float, float]
    hair_style: int
    face_height: float
    face_width: float
    chin_taper: float
    eye_spacing: float
    eye_y: float
    eye_size: float
    brow_height: float
    brow_thickness: float
    brow_arch: float
    nose_length: float
    nose_width: float
    mouth_y: float
    mouth_width: float
    lip_thickness: float
    light: float


def _jitter_colour(rng: np.random.Generator, colour: Sequence[float], amount: float) -> tuple[float, float, float]:
    scale = 1.0 + amount * rng.uniform(-1, 1)
    tint = amount * 0.5 * rng.uniform(-1, 1, 3)
    return tuple(float(np.clip(c * (scale + t), 0, 255)) for c, t in zip(colour, tint))


def luma(colour: Sequence[float]) -> float:
    return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]


def _background(rng: np.random.Generator, skin: Sequence[float]) -> tuple[tuple, tuple]:
    """A muted two-colour gradient whose brightness differs from the skin's, so the face stands out."""
    hue = rng.uniform(0, 180)
    sat = rng.uniform(20, 110)
    skin_luma = luma(skin)
    value = rng.uniform(40, 110) if skin_luma > 150 else rng.uniform(170, 235)
    colours = []
    for dv in (rng.uniform(-25, 25), rng.uniform(-25, 25)):
        hsv = np.uint8([[[hue, sat, np.clip(value + dv, 0, 255)]]])
        colours.append(tuple(float(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]))
    return colours[0], colours[1]


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draws a person: colours, hair style and the proportions of the face.

    Args:
        rng: Random source.

    Returns:
        The identity. All proportions stay within ranges a face detector accepts.
    """
    skin = _jitter_colour(rng, _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))], 0.06)
    hair = _jitter_colour(rng, _HAIR_COLOURS[int(rng.integers(len(_HAIR_COLOURS)))], 0.1)
    lips = tuple(float(np.clip(c, 0, 255)) for c in
                 np.array(skin) * np.array([0.78, 0.5, 0.52]) * rng.uniform(0.85, 1.05) + np.array([20, 0, 5]))
    iris = _jitter_colour(rng, _IRIS_COLOURS[int(rng.integers(len(_IRIS_COLOURS)))], 0.1)
    shirt_hsv = np.uint8([[[rng.uniform(0, 180), rng.uniform(30, 200), rng.uniform(50, 220)]]])
    shirt = tuple(float(c) for c in cv2.cvtColor(shirt_hsv, cv2.COLOR_HSV2RGB)[0, 0])
    top, bottom = _background(rng, skin)
    return Identity(
        skin=skin, hair=hair, lips=lips, iris=iris, shirt=shirt, background_top=top, background_bottom=bottom,
        hair_style=int(rng.integers(len(HAIR_STYLES))),
        face_height=float(rng.uniform(0.37, 0.43)),
        face_width=float(rng.uniform(0.68, 0.8)),
        chin_taper=float(rng.uniform(0.12, 0.3)),
        eye_spacing=float(rng.uniform(0.28, 0.33)),
        eye_y=float(rng.uniform(-0.2, -0.12)),
        eye_size=float(rng.uniform(0.11, 0.135)),
        brow_height=float(rng.uniform(0.15, 0.2)),
        brow_thickness=float(rng.uniform(0.035, 0.06)),
        brow_arch=float(rng.uniform(0.015, 0.05)),
        nose_length=float(rng.uniform(0.2, 0.28)),
        nose_width=float(rng.uniform(0.09, 0.12)),
        mouth_y=float(rng.uniform(0.5, 0.56)),
        mouth_width=float(rng.uniform(0.19, 0.24)),
        lip_thickness=float(rng.uniform(0.06, 0.085)),
        light=float(rng.uniform(-1, 1)),
    )


@dataclass(frozen=True)
class FaceState:
    """What changes from frame to frame.

    Attributes:
        pose: ``(yaw, pitch, roll)`` in radians (conventions in :mod:`imtalker.data.synthetic`).
        gaze: ``(pitch, yaw)`` of the eyes relative to the head, radians.
        mouth: Mouth opening in [0, 1].
        rounding: Lip rounding in [0, 1].
        blink: Eye closure in [0, 1] (1 = closed).
        shift: Camera motion: ``(dx, dy)`` image shift of the face as a fraction of the image size.
        zoom: Camera zoom factor (1 = base framing).
    """

    pose: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gaze: tuple[float, float] = (0.0, 0.0)
    mouth: float = 0.0
    rounding: float = 0.0
    blink: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0
