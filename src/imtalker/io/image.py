"""Still images in: any common file, a PIL image, an array or a tensor -> RGB uint8 (H, W, 3)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from .media import check_file, describe_error

MIN_IMAGE_SIZE = 64  # pixels; smaller images cannot hold a usable face


def load_image(source: Any) -> np.ndarray:
    """Loads an image as RGB uint8.

    EXIF orientation is applied. Transparent images are composited onto white; grey, palette and 16-bit
    images are converted to 8-bit RGB. For animated files the first frame is used.

    Args:
        source: a path to an image file (jpg, png, webp, bmp, ...), a PIL image, a NumPy array (H, W, 3) /
            (H, W, 4) / (H, W), uint8 or float in [0, 1], or a torch tensor (3, H, W), float in [0, 1].

    Returns:
        uint8 array of shape (H, W, 3), RGB.

    Raises:
        InputError: the file is missing, not an image or corrupt; the array has a wrong shape or range; the
            image is smaller than 64 pixels on a side.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        check_file(path, "image file")
        name = f"image file '{path}'"
        try:
            with Image.open(path) as image:
                array = _pil_to_rgb(image)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as error:
            reason = "not an image" if isinstance(error, UnidentifiedImageError) else describe_error(error)
            raise InputError(f"{name} cannot be read as an image ({reason})") from None
    elif isinstance(source, Image.Image):
        name = "image"
        try:
            array = _pil_to_rgb(source)
        except (OSError, ValueError) as error:
            raise InputError(f"image cannot be converted to RGB ({describe_error(error)})") from None
    else:
        name = "image array"
        array = _array_to_rgb(source)
    height, width = array.shape[:2]
    if min(height, width) < MIN_IMAGE_SIZE:
        raise InputError(f"{name} is {width}x{height} pixels; it must be at least {MIN_IMAGE_SIZE} on each side")
    return array


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    image.load()  # decode now, so truncated files fail here
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(image, dtype=np.float64)
        scale = 257.0 if grey.max(initial=0) > 255 or image.mode.startswith("I;16") else 1.0
        grey = np.clip(grey / scale + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _array_to_rgb(array: Any) -> np.ndarray:
    if hasattr(array, "detach") and hasattr(array, "permute"):  # torch tensor (C, H, W)
        tensor = array.detach().cpu()
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
            raise InputError(f"image tensor must have shape (3, H, W), got {tuple(array.shape)}")
        if tensor.is_floating_point():
            tensor = tensor.float()
        array = tensor.permute(1, 2, 0).numpy()
    if not isinstance(array, np.ndarray):
        raise InputError(f"image must be a path, a PIL image or an array, got {type(array).__name__}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(f"image array must have shape (H, W, 3), (H, W, 4) or (H, W), got {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"image array must be uint8 or float in [0, 1], got {array.dtype}")
        if array.size and not np.isfinite(array).all():
            raise InputError("image array contains NaN or infinite values")
        if array.size and (array.min() < -1e-3 or array.max() > 1 + 1e-3):
            raise InputError(f"image array is float but not in [0, 1] (range {array.min():.3g} to "
                             f"{array.max():.3g})")
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:  # composite onto white
        alpha = array[..., 3:].astype(np.float32) / 255.0
        array = (array[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(array)
