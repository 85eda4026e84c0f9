"""Head pose, gaze and camera described in words: ``yaw=20deg``, ``nod``, ``turn:-20..20deg``, ``look-at-camera``.

A description is a comma-separated list of terms whose values add up per axis (docs/conditions.md, "Descriptions"):

* ``AXIS=VALUE`` holds an axis at a value; ``AXIS=A..B`` moves it evenly from A to B over the video.
  Pose axes ``yaw`` (> 0 turns the head towards the image's left), ``pitch`` (> 0 looks up), ``roll``
  (> 0 clockwise in the image); gaze axes ``yaw``, ``pitch`` with the same signs, in the camera frame (the direction
  the eyes look, head turn included, as L2CS measures it); camera axes ``s``, ``tx``, ``ty`` (SMIRK's, no unit).
* Angles take ``deg`` (the default) or ``rad``.
* Named motions: pose ``nod[:AMP][@HZ]`` (pitch swings, 10 deg at 1 Hz), ``shake[:AMP][@HZ]`` (yaw swings, 20 deg
  at 0.5 Hz), ``turn:A..B`` (yaw ramp), ``tilt:A..B`` (roll ramp), ``still`` (frontal); gaze ``look-at-camera``
  (0, 0); camera ``still`` (the corpus's base framing).

:func:`parse_description` checks a description once (every error is one :class:`InputError` line);
:meth:`HeadMotion.track` then gives the ``(T, d)`` track in the published conventions for any length, and
:meth:`HeadMotion.at` the rows of given frames (a live session, whose length is not known, can use every
description without a ramp).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..constants import FPS
from ..errors import InputError
from .conventions import Z_REF_METRES, euler_to_flame

__all__ = ["AXES", "TRACK_FILE_SUFFIXES", "HeadMotion", "parse_description", "track_from_description"]

# a condition value (--pose, --gaze, --cam) that ends with one of these is a track file, anything else a description
TRACK_FILE_SUFFIXES = (".npy", ".npz", ".csv", ".txt")

AXES = {"pose": ("yaw", "pitch", "roll"), "gaze": ("pitch", "yaw"), "cam": ("s", "tx", "ty")}
ANGULAR = {"pose": True, "gaze": True, "cam": False}
MAX_ANGLE_DEG = 90.0
# The camera of the synthetic corpus's base framing (z = 1.25 Z_REF, centred): what ``still`` means for ``cam``.
STILL_CAM = (2.0 / (1.25 * Z_REF_METRES), 0.0, 0.0)
# name -> (kind, axis, default amplitude in degrees, default frequency in Hz) of the swinging motions
SWINGS = {"nod": ("pose", "pitch", 10.0, 1.0), "shake": ("pose", "yaw", 20.0, 0.5)}
RAMPS = {"turn": ("pose", "yaw"), "tilt": ("pose", "roll")}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_VALUE = re.compile(rf"^({_NUMBER})\s*(deg|rad)?$")


@dataclass(frozen=True)
class _Term:
    axis: int
    start: float  # radians for angles
    end: float  # = start for a constant
    amplitude: float = 0.0  # swing amplitude (radians), 0 for none
    frequency: float = 0.0  # Hz


@dataclass(frozen=True)
class HeadMotion:
    """A parsed description of one condition (``kind`` pose, gaze or cam)."""

    kind: str
    text: str
    terms: tuple[_Term, ...]
    base: tuple[float, ...]  # the value every term adds to (zeros, or the still camera)

    @property
    def needs_length(self) -> bool:
        """Whether a term is a ramp over the whole video (a live session, of unknown length, cannot use it)."""
        return any(term.start != term.end for term in self.terms)

    def at(self, frames: np.ndarray, num_frames: int | None = None) -> np.ndarray:
        """The condition at frame indices ``frames`` (n,) of a video of ``num_frames`` frames, as ``(n, d)``
        float32 in the published conventions."""
        frames = np.asarray(frames, np.float64)
        if self.needs_length and num_frames is None:
            raise InputError(f"{self.kind} {self.text!r} has a ramp (A..B), which needs a known length")
        progress = frames / max(1, (num_frames or 1) - 1)
        values = np.tile(np.asarray(self.base, np.float64), (len(frames), 1))  # (n, d)
        for term in self.terms:
            values[:, term.axis] += term.start + (term.end - term.start) * progress
            if term.amplitude:
                values[:, term.axis] += term.amplitude * np.sin(2 * math.pi * term.frequency * frames / FPS)
        if self.kind == "pose":  # (yaw, pitch, roll) -> FLAME axis-angle
            values = euler_to_flame(values)
        elif self.kind == "gaze":  # (pitch, yaw) up / towards the image's left -> L2CS (horizontal, vertical)
            values = values[:, ::-1]
        return values.astype(np.float32)

    def track(self, num_frames: int) -> np.ndarray:
        """The whole ``(num_frames, d)`` track."""
        return self.at(np.arange(num_frames), num_frames)


def _value(text: str, kind: str, what: str) -> float:
    match = _VALUE.match(text.strip())
    if not match:
        unit = " with deg or rad" if ANGULAR[kind] else ""
        raise InputError(f"{kind}: {what} must be a number{unit}, got {text.strip()!r}")
    number, unit = float(match.group(1)), match.group(2)
    if not ANGULAR[kind]:
        if unit:
            raise InputError(f"{kind}: {what} takes no unit, got {text.strip()!r}")
        return number
    degrees = math.degrees(number) if unit == "rad" else number
    if abs(degrees) > MAX_ANGLE_DEG:
        raise InputError(f"{kind}: {what} must be within +-{MAX_ANGLE_DEG:g} deg, got {text.strip()!r}")
    return math.radians(degrees)


def _range(text: str, kind: str, what: str) -> tuple[float, float]:
    """``A`` or ``A..B`` (a unit on B alone applies to both: ``-20..20deg``)."""
    if ".." not in text:
        value = _value(text, kind, what)
        return value, value
    low, high = (part.strip() for part in text.split("..", 1))
    low_match, high_match = _VALUE.match(low), _VALUE.match(high)
    if low_match and high_match and high_match.group(2) and not low_match.group(2):
        low += high_match.group(2)
    return _value(low, kind, what), _value(high, kind, what)


def _term(text: str, kind: str) -> _Term | None:
    """One term; None for ``still`` / ``look-at-camera`` (the base value)."""
    axes = AXES[kind]
    name, sep, rest = text.partition("=")
    if sep:
        name = name.strip()
        if name not in axes:
            raise InputError(f"{kind}: unknown axis {name!r}; {kind} axes are {', '.join(axes)}")
        start, end = _range(rest, kind, name)
        return _Term(axes.index(name), start, end)
    name, _, arguments = text.partition(":")
    if "@" in name and not arguments:  # `nod@2hz`: a frequency with the default amplitude
        name, _, frequency = name.partition("@")
        arguments = f"@{frequency}"
    name = name.strip()
    if name == "still" and kind in ("pose", "cam") or name == "look-at-camera" and kind == "gaze":
        if arguments:
            raise InputError(f"{kind}: {name!r} takes no arguments, got {text!r}")
        return None
    if name in SWINGS and SWINGS[name][0] == kind:
        _, axis, amplitude, frequency = SWINGS[name]
        amplitude_text, _, frequency_text = arguments.partition("@")
        amplitude = _value(amplitude_text, kind, f"{name} amplitude") if amplitude_text.strip() else \
            math.radians(amplitude)
        if frequency_text:
            match = re.fullmatch(rf"\s*({_NUMBER})\s*(?:hz)?\s*", frequency_text, re.IGNORECASE)
            if not match or not 0 < float(match.group(1)) <= FPS / 2:
                raise InputError(f"{kind}: {name} frequency must be in (0, {FPS / 2:g}] Hz, got {frequency_text!r}")
            frequency = float(match.group(1))
        return _Term(axes.index(axis), 0.0, 0.0, amplitude, frequency)
    if name in RAMPS and RAMPS[name][0] == kind:
        if not arguments.strip():
            raise InputError(f"{kind}: {name} needs a range, e.g. {name}:-20..20deg")
        start, end = _range(arguments, kind, name)
        return _Term(axes.index(RAMPS[name][1]), start, end)
    known = {"pose": "yaw=, pitch=, roll=, nod, shake, turn:A..B, tilt:A..B, still",
             "gaze": "yaw=, pitch=, look-at-camera", "cam": "s=, tx=, ty=, still"}[kind]
    raise InputError(f"{kind}: cannot read {text.strip()!r}; a {kind} description is a comma-separated list of "
                     f"{known} (docs/conditions.md)")


def parse_description(text: str, kind: str) -> HeadMotion:
    """Parses a description of a pose, gaze or cam track (grammar in the module docstring).

    Raises:
        InputError: an unknown kind, an empty or unreadable description, or a value out of range.
    """
    if kind not in AXES:
        raise InputError(f"unknown condition {kind!r}; known: {', '.join(AXES)}")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{kind}: empty description")
    terms = tuple(term for term in (_term(part, kind) for part in text.split(",")) if term is not None)
    if kind == "cam":
        base = STILL_CAM
        scale = [term for term in terms if term.axis == 0]
        if scale:  # `s=` sets the scale rather than adding to the still framing's
            base = (0.0,) + STILL_CAM[1:]
            if min(min(t.start, t.end) for t in scale) <= 0:
                raise InputError("cam: s (the scale) must be positive")
    else:
        base = (0.0,) * len(AXES[kind])
    return HeadMotion(kind, text.strip(), terms, base)


def track_from_description(text: str, kind: str, num_frames: int) -> np.ndarray:
    """``(num_frames, d)`` float32 track of a description (published conventions)."""
    return parse_description(text, kind).track(num_frames)
