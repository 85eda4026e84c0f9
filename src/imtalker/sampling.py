"""Flow-matching ODE sampling helpers (MODEL.md section 4.3).

Pure tensor functions with no modules or state: the chunk loop in `MotionGenerator.sample` composes them, and
tests or other samplers can reuse them on their own.
"""

from __future__ import annotations

import torch


def time_grid(
    nfe: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Flow times of an `nfe`-point Euler schedule from noise (t = 0) to data (t = 1).

    Args:
        nfe: number of grid points; the sampler takes `nfe - 1` steps, so at least 2.
        device: device of the returned tensor.
        dtype: dtype of the returned tensor.

    Returns:
        (nfe,) tensor `linspace(0, 1, nfe)`.
    """
    if nfe < 2:
        raise ValueError(f"nfe must be at least 2 (nfe - 1 Euler steps), got {nfe}")
    return torch.linspace(0.0, 1.0, nfe, device=device, dtype=dtype)


def euler_step(x: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """One explicit Euler step of dx/dt = velocity: x + (t_next - t) * velocity.

    Args:
        x: (B, L, D) state at time `t`.
        velocity: (B, L, D) velocity at (t, x).
        t: current time (scalar tensor or float).
        t_next: next time (scalar tensor or float).

    Returns:
        (B, L, D) state at time `t_next`.
    """
    return x + (t_next - t) * velocity


def guided_velocity(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_uncond + scale * (v_cond - v_uncond).

    Args:
        v_cond: velocity with every condition.
        v_uncond: velocity with the audio condition dropped.
        scale: guidance scale; 1 returns `v_cond` (up to rounding).

    Returns:
        The guided velocity, same shape as the inputs.
    """
    return v_uncond + scale * (v_cond - v_uncond)


def num_chunks(num_frames: int, clip_frames: int) -> int:
    """Number of `clip_frames`-long chunks that cover `num_frames` frames (the last may be shorter)."""
    return -(-num_frames // clip_frames)


def fit_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Cut a per-frame sequence to `num_frames` frames, or zero-pad it at the end.

    Args:
        x: (B, T, C) per-frame values.
        num_frames: wanted length.

    Returns:
        (B, num_frames, C).
    """
    length = x.shape[1]
    if length >= num_frames:
        return x[:, :num_frames]
    return torch.cat([x, x.new_zeros(x.shape[0], num_frames - length, x.shape[2])], dim=1)


def repeat_pad(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Pad a per-frame sequence to `num_frames` frames by repeating its last frame.

    Args:
        x: (B, T, C) with T >= 1 and T <= num_frames.
        num_frames: wanted length.

    Returns:
        (B, num_frames, C).
    """
    missing = num_frames - x.shape[1]
    if missing <= 0:
        return x
    return torch.cat([x, x[:, -1:].expand(-1, missing, -1)], dim=1)
