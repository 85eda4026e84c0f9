"""Metrics that need no network weights: PSNR, SSIM, the landmark distance LMD and a Pearson correlation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def psnr(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [0, 1], per image (B,)."""
    mse = (fake - real).square().flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def ssim(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Structural similarity (11x11 Gaussian window, sigma 1.5, on each channel) of images in [0, 1], per image (B,)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    coords = torch.arange(11, dtype=fake.dtype, device=fake.device) - 5
    g = torch.exp(-coords.square() / (2 * 1.5 ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(fake.shape[1], 1, 11, 11)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=x.shape[1])

    mu_x, mu_y = blur(fake), blur(real)
    var_x = blur(fake * fake) - mu_x.square()
    var_y = blur(real * real) - mu_y.square()
    cov = blur(fake * real) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return value.flatten(1).mean(1)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two series over the frames where both are finite (NaN with fewer than 3 such frames or a
    constant series)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or a[keep].std() == 0 or b[keep].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def landmark_distance(fake: np.ndarray, real: np.ndarray) -> float:
    """LMD: the mean Euclidean distance between corresponding landmarks of generated and real frames.

    Args:
        fake, real: (T, P, 2) landmark positions in pixels of the same frame size; frames where the landmarker found
            no face hold NaN and are left out.

    Returns:
        The mean over frames found in both and over points, in pixels (NaN when no frame is found in both).
    """
    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    n = min(len(fake), len(real))
    distance = np.linalg.norm(fake[:n] - real[:n], axis=-1)  # (T, P)
    keep = np.isfinite(distance).all(1)
    return float(distance[keep].mean()) if keep.any() else float("nan")
