"""Checking what clients send: generation options, portrait bytes and uploaded audio, all into `InputError`s with
messages that name the field (never a server path).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...constants import DEFAULT_CFG_SCALE, DEFAULT_NFE, SAMPLE_RATE
from ...errors import InputError

MAX_NFE = 50  # more Euler points than this buys nothing and would let one request hold a worker for long
MAX_CFG_SCALE = 10.0
MAX_FACE_INDEX = 15
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class GenerationOptions:
    """Per-request knobs, as `AudioDrivenPipeline.to_file` takes them."""

    cfg_scale: float = DEFAULT_CFG_SCALE
    nfe: int = DEFAULT_NFE
    seed: int | None = None
    crop: bool = True
    paste_back: bool = False
    face_index: int | None = None
    # head motion as descriptions ("yaw=20deg", "nod", "look-at-camera": docs/conditions.md), None: the generator's own
    pose: str | None = None
    gaze: str | None = None
    cam: str | None = None

    def sampler_options(self) -> dict[str, Any]:
        return {"cfg_scale": self.cfg_scale, "nfe": self.nfe, "seed": self.seed}

    def head_motion(self) -> dict[str, str | None]:
        return {"pose": self.pose, "gaze": self.gaze, "cam": self.cam}


def parse_options(values: Mapping[str, Any], extra: tuple[str, ...] = ()) -> tuple[GenerationOptions, dict]:
    """Options from form fields (strings) or JSON (typed); unknown names are refused, so typos do not pass silently.

    Args:
        values: name -> value.
        extra: other names the caller handles itself (returned as they are in the second item).

    Returns:
        (the options, {name: value} of the `extra` names present).
    """
    known = {"cfg_scale", "nfe", "seed", "crop", "paste_back", "face_index", "pose", "gaze", "cam"}
    unknown = sorted(set(values) - known - set(extra))
    if unknown:
        raise InputError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(known | set(extra)))}")
    options = GenerationOptions(
        cfg_scale=parse_float(values.get("cfg_scale"), "cfg_scale", DEFAULT_CFG_SCALE, 0.0, MAX_CFG_SCALE),
        nfe=parse_int(values.get("nfe"), "nfe", DEFAULT_NFE, 2, MAX_NFE),
        seed=parse_int(values.get("seed"), "seed", None, 0, 2**63 - 1),
        crop=parse_bool(values.get("crop"), "crop", True),
        paste_back=parse_bool(values.get("paste_back"), "paste_back", False),
        face_index=parse_int(values.get("face_index"), "face_index", None, 0, MAX_FACE_INDEX),
        **{name: parse_head_motion(values.get(name), name) for name in ("pose", "gaze", "cam")},
    )
    return options, {name: values[name] for name in extra if name in values}


MAX_DESCRIPTION_CHARS = 200


def parse_head_motion(value: Any, name: str) -> str | None:
    """A pose / gaze / cam description, checked (never a file: a client cannot name the server's files)."""
    from ...preprocess.conditions import parse_description

    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_CHARS:
        raise InputError(f"{name} must be a description of at most {MAX_DESCRIPTION_CHARS} characters, "
                         "such as \"yaw=20deg\" or \"nod\"")
    return parse_description(value, name).text


def parse_bool(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    raise InputError(f"{name} must be true or false, got {value!r}")


def parse_int(value: Any, name: str, default: int | None, low: int, high: int) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return default
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise InputError(f"{name} must be a whole number, got {value!r}")
    try:
        number = int(value.strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {number}")
    return number


def parse_float(value: Any, name: str, default: float, low: float, high: float) -> float:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return default
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise InputError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return number


def decode_portrait(data: bytes, max_pixels: int) -> np.ndarray:
    """Portrait bytes (jpg, png, webp, ...) -> (H, W, 3) uint8, through `imtalker.io.image.load_image`.

    The size in the header is checked before anything is decoded, so a small file that claims a huge image (a
    decompression bomb) costs nothing.
    """
    from PIL import Image, UnidentifiedImageError

    from ...io.image import load_image

    if not data:
        raise InputError("portrait is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # PIL's own guard, for images far past any limit (twice its default)
        raise InputError(f"portrait has more pixels than the limit of {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError("portrait cannot be read as an image (not an image)") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise InputError(f"portrait is {width}x{height} pixels, more than the limit of {max_pixels} pixels")
        try:
            image.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise InputError(f"portrait is corrupt or truncated ({err})") from None
        return rename(load_image, "image", "portrait")(image)


def load_uploaded_audio(path: Path, max_seconds: float) -> np.ndarray:
    """An uploaded audio file (saved under a server-made name) -> mono float32 at 16 kHz, via `load_audio`."""
    from ...io.audio import load_audio

    try:
        return load_audio(path, sample_rate=SAMPLE_RATE, max_seconds=max_seconds)
    except InputError as err:
        raise InputError(str(err).replace(f"audio file '{path}'", "audio").replace(str(path), "audio")) from None


def rename(function, old: str, new: str):
    """Wrap a loader so its InputError messages say `new` where they said `old` (e.g. the field name)."""

    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except InputError as err:
            message = str(err)
            raise type(err)(new + message[len(old):] if message.startswith(old) else message) from None

    return call
