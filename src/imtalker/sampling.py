"""Sampling motion from the flow-matching generator (docs/architecture.md §4.3).

`SamplingOptions` holds the sampler's settings with their defaults, checked once. `sample_motion` integrates the
generator's velocity over a whole sequence, chunk by chunk; `ChunkSampler` does one chunk at a time for callers that
receive audio as it arrives. `HopSampler` commits a few frames at a time (the live schedule, `HopSchedule`): each
step samples a window that starts with the new frames and keeps only them. All compose the pure tensor functions
below (time grid, Euler step, guidance, padding).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from .constants import CLIP_FRAMES, DEFAULT_CFG_SCALE, DEFAULT_NFE, LIVE_HOP_FRAMES, LIVE_LOOKAHEAD_FRAMES
from .errors import InputError
from .models.generator import MotionConditions

if TYPE_CHECKING:
    from .models.generator import MotionGenerator



@dataclass(frozen=True)
class SamplingOptions:
    """Settings of the motion sampler, checked when made.

    Args:
        cfg_scale: audio guidance scale; 1 disables guidance (one network pass per step).
        nfe: points of the Euler time grid (nfe - 1 steps), at least 2.
        seed: seeds a private `torch.Generator` for the noise, leaving the global RNG untouched; None draws from
            the global RNG.

    Raises:
        InputError (a ValueError): a setting out of range or of the wrong type.
    """

    cfg_scale: float = DEFAULT_CFG_SCALE
    nfe: int = DEFAULT_NFE
    seed: int | None = None

    def __post_init__(self):
        if isinstance(self.cfg_scale, bool) or not isinstance(self.cfg_scale, numbers.Real) or not math.isfinite(
                self.cfg_scale):
            raise InputError(f"cfg_scale must be a finite number, got {self.cfg_scale!r}")
        if isinstance(self.nfe, bool) or not isinstance(self.nfe, numbers.Integral) or self.nfe < 2:
            raise InputError(f"nfe must be an integer >= 2 (nfe - 1 Euler steps), got {self.nfe!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)):
            raise InputError(f"seed must be an integer or None, got {self.seed!r}")


WINDOW_PADDINGS = ("repeat", "zeros", "none")


@dataclass(frozen=True)
class HopSchedule:
    """When motion is committed while the audio arrives, checked when made (docs/streaming.md, "Live schedule").

    Frames are committed `hop` at a time, each hop as soon as its audio and `lookahead` frames of audio after it
    have arrived. The generator samples a window whose context is the last committed frames and whose clip starts
    with the hop, followed by the look-ahead frames; only the hop is kept. `hop` = `clip_frames` (50) with
    `lookahead` 5 is the 2-second chunk schedule of the offline pipeline, number for number.

    Args:
        hop: frames committed per step, 1 to the generator's `clip_frames`.
        lookahead: frames of audio after the hop that must have arrived first (every frame waits for them); they
            are encoded with the hop and, as far as the clip reaches, condition the generator.
        padding: what fills the rest of the clip, whose audio has not been heard: "repeat" (the last heard
            frame's conditions, as the offline sampler pads a short last chunk), "zeros" (no audio condition, as in
            guidance's unconditional pass) or "none" (a clip of just the heard frames). Measured on the demo model
            (docs/streaming.md), "repeat" keeps the offline lip sync; "zeros" and "none" lose it.

    Raises:
        InputError (a ValueError): a setting out of range or of the wrong type.
    """

    hop: int = LIVE_HOP_FRAMES
    lookahead: int = LIVE_LOOKAHEAD_FRAMES
    padding: str = "repeat"

    def __post_init__(self):
        for name, value, low in (("hop", self.hop, 1), ("lookahead", self.lookahead, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise InputError(f"{name} must be an integer >= {low} (frames of 40 ms), got {value!r}")
        if self.padding not in WINDOW_PADDINGS:
            raise InputError(f"padding must be one of {', '.join(WINDOW_PADDINGS)}, got {self.padding!r}")

    def check_fits(self, clip_frames: int = CLIP_FRAMES) -> "HopSchedule":
        """This schedule, after checking that a hop fits in the generator's clip of `clip_frames`."""
        if self.hop > clip_frames:
            raise InputError(f"hop must be at most the generator's clip of {clip_frames} frames, got {self.hop}")
        return self

    def window_frames(self, clip_frames: int = CLIP_FRAMES) -> int:
        """Frames of heard audio in one step's clip: the hop and as much look-ahead as the clip holds."""
        return min(self.hop + self.lookahead, clip_frames)


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


@torch.inference_mode()
def sample_motion(
    generator: "MotionGenerator",
    audio_features: torch.Tensor,
    ref_motion: torch.Tensor,
    *,
    pose: torch.Tensor | None = None,
    gaze: torch.Tensor | None = None,
    cam: torch.Tensor | None = None,
    options: SamplingOptions = SamplingOptions(),
    noise: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Samples motion latents for every audio frame (docs/architecture.md §4.3).

    The sequence is cut into chunks of `clip_frames`; each chunk sees the last `prev_frames` of the previous
    chunk (latents and conditions) as context, and the first chunk sees zeros.

    Args:
        audio_features: (B, T, audio_dim) raw audio features, one per video frame.
        ref_motion: (B, motion_dim) reference motion latent of the source image.
        pose: optional (B, T', pose_dim) or (T', pose_dim) head pose; cut or zero-padded to T frames.
        gaze: optional (B, T', gaze_dim) or (T', gaze_dim) gaze (pitch, yaw), likewise.
        cam: optional (B, T', cam_dim) or (T', cam_dim) camera translation, likewise.
        options: guidance, steps and seed (`SamplingOptions`).
        noise: optional initial noise, one (B, clip_frames, motion_dim) tensor per chunk (ceil(T / clip_frames)
            chunks). Takes precedence over `seed`.

    Returns:
        (B, T, motion_dim) motion latents, on the model's device and dtype.

    Raises:
        TypeError: a tensor argument is not a tensor.
        ValueError: a shape, dtype, batch size or sampler setting is not what is expected.
    """
    cfg = generator.config
    _check_tensor("audio_features", audio_features, ndim=3, last_dim=cfg.audio_dim, layout="(B, T, audio_dim)")
    batch, num_frames = audio_features.shape[:2]
    if batch == 0 or num_frames == 0:
        shape = tuple(audio_features.shape)
        raise ValueError(f"audio_features needs at least one sample and one frame, got shape {shape}")
    _check_tensor("ref_motion", ref_motion, ndim=2, last_dim=cfg.motion_dim, layout="(B, motion_dim)")
    if ref_motion.shape[0] != batch:
        raise ValueError(f"ref_motion has batch {ref_motion.shape[0]}, expected {batch} as in audio_features")
    tracks = {"pose": (pose, cfg.pose_dim), "gaze": (gaze, cfg.gaze_dim), "cam": (cam, cfg.cam_dim)}
    for name, (track, dim) in tracks.items():
        if track is not None:
            _check_track(name, track, dim, batch)
    if not isinstance(options, SamplingOptions):
        raise TypeError(f"options must be a SamplingOptions, got {type(options).__name__}")

    clip = cfg.clip_frames
    chunks = num_chunks(num_frames, clip)
    noise_shape = (batch, clip, cfg.motion_dim)
    if noise is not None:
        _check_noise(noise, chunks, noise_shape)

    def fitted(track):  # cut or zero-pad a track to T frames, with a batch axis
        if track is None:
            return None
        return fit_frames(track.expand(batch, -1, -1) if track.ndim == 2 else track, num_frames)

    tracks = {name: fitted(track) for name, (track, _) in tracks.items()}
    sampler = ChunkSampler(generator, ref_motion, options)
    outputs = []
    for k in range(chunks):
        window = slice(k * clip, (k + 1) * clip)
        outputs.append(sampler.step(
            audio_features[:, window],
            **{name: (track[:, window] if track is not None else None) for name, track in tracks.items()},
            noise=noise[k] if noise is not None else None))
    return torch.cat(outputs, dim=1)  # (B, T, motion_dim)


class ChunkSampler:
    """Samples motion one chunk at a time, carrying the context between chunks (docs/architecture.md §4.3).

    `sample_motion` runs it over a whole sequence; streaming callers feed chunks as the audio arrives.
    Every chunk but the last must hold exactly `clip_frames` frames; a shorter chunk is padded by repeating its
    last frame and ends the sequence.
    """

    def __init__(self, model: "MotionGenerator", ref_motion: torch.Tensor,
                 options: SamplingOptions = SamplingOptions()):
        param = next(model.parameters())
        self.model, self.device, self.dtype = model, param.device, param.dtype
        self.ref_motion = ref_motion.to(self.device, self.dtype)
        self.options = options
        seed = options.seed
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed)) if seed is not None else None
        # float32 even for half models, so the step sizes stay exact
        self.times = time_grid(options.nfe, device=self.device)
        self.prev_x: torch.Tensor | None = None  # (B, prev, motion_dim); None before the first chunk
        self.prev_conditions: MotionConditions | None = None
        self.finished = False

    @torch.inference_mode()
    def step(self, audio_features: torch.Tensor, pose: torch.Tensor | None = None, gaze: torch.Tensor | None = None,
             cam: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Motion latents (B, n, motion_dim) for the next n <= clip_frames frames of raw audio features (B, n, A)."""
        model, cfg = self.model, self.model.config
        clip, prev = cfg.clip_frames, cfg.prev_frames
        batch, n = audio_features.shape[:2]
        if self.finished:
            raise ValueError("a chunk shorter than clip_frames ended the sequence; start a new ChunkSampler")
        if not 1 <= n <= clip:
            raise ValueError(f"a chunk holds 1 to {clip} frames, got {n}")
        self.finished = n < clip
        conditions = model.project(*(None if v is None else v.to(self.device, self.dtype)
                                     for v in (audio_features, pose, gaze, cam)))
        conditions = conditions.map(lambda c: repeat_pad(c, clip))  # (B, clip, cond_dim) each
        if self.prev_x is None:
            self.prev_x = conditions.audio.new_zeros(batch, prev, cfg.motion_dim)
            self.prev_conditions = conditions.map(lambda c: c.new_zeros(batch, prev, cfg.cond_dim))
        if noise is not None:
            z = noise.to(self.device, self.dtype)
        else:
            # drawn in float32 so a seed gives the same noise whatever the model dtype
            z = torch.randn((batch, clip, cfg.motion_dim), generator=self.generator, device=self.device,
                            dtype=torch.float32).to(self.dtype)
        times, context = self.times, self.prev_x.shape[1]
        for i in range(self.options.nfe - 1):
            v = model.velocity(times[i], z, self.prev_x, self.ref_motion, conditions, self.prev_conditions,
                               cfg_scale=self.options.cfg_scale)[:, context:]  # (B, clip, motion_dim)
            z = euler_step(z, v, times[i], times[i + 1])
        self.prev_x = z[:, -prev:] if prev else z[:, :0]
        self.prev_conditions = conditions.map(lambda c: c[:, -prev:] if prev else c[:, :0])
        return z[:, :n]


class HopSampler:
    """Samples motion a hop at a time while audio arrives, carrying the committed frames as context (`HopSchedule`).

    Each `step` samples a window: the context (the last `prev_frames` committed latents and their projected
    conditions; zeros before there are any, as for `ChunkSampler`'s first chunk), then a clip that starts with the
    frames given, padded as `padding` says, from fresh noise; it keeps the first `commit` frames. With whole clips
    committed this is `ChunkSampler`'s schedule and draws the same noise, so the results are the same.
    `forget` takes back committed frames that were never shown, `append` commits frames made elsewhere (the blend
    after an interrupted stream).
    """

    def __init__(self, model: "MotionGenerator", ref_motion: torch.Tensor,
                 options: SamplingOptions = SamplingOptions(), padding: str = "repeat"):
        if padding not in WINDOW_PADDINGS:
            raise InputError(f"padding must be one of {', '.join(WINDOW_PADDINGS)}, got {padding!r}")
        param = next(model.parameters())
        self.model, self.device, self.dtype = model, param.device, param.dtype
        self.ref_motion = ref_motion.to(self.device, self.dtype)
        self.options, self.padding = options, padding
        seed = options.seed
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed)) if seed is not None else None
        self.times = time_grid(options.nfe, device=self.device)  # float32, so the step sizes stay exact
        # committed frames (B, n, ...), the first prev_frames zeros; the last prev_frames are the next context, and
        # up to clip_frames more are kept so that frames committed but never shown can be taken back
        self.history_x: torch.Tensor | None = None
        self.history_conditions: MotionConditions | None = None
        self.committed_frames = 0  # frames committed and not taken back

    @torch.inference_mode()
    def step(self, audio_features: torch.Tensor, commit: int, noise: torch.Tensor | None = None, *,
             silent: bool = False, pose: torch.Tensor | None = None, gaze: torch.Tensor | None = None,
             cam: torch.Tensor | None = None) -> torch.Tensor:
        """Commit the first `commit` frames of a window whose clip holds these n raw audio features (B, n, A).

        Args:
            audio_features: (B, n, audio_dim), 1 <= n <= clip_frames: the frames to commit, then look-ahead.
            commit: frames to keep, 1 to n.
            noise: optional initial noise (B, window, motion_dim), window = n with padding "none", else
                clip_frames.
            silent: nobody speaks in this window: its clip has no audio condition (zeros, as in guidance's
                unconditional pass, which is then the only pass), so the generator samples its own motion without
                speech. Silence's features would instead drive it as audio, which it never saw and drifts on
                (docs/streaming.md, "Always-on sessions"). The features still become the context's conditions.
            pose, gaze, cam: optional head-motion conditions of the same n frames, (B, n, 3 / 2 / 3).

        Returns:
            (B, commit, motion_dim) motion latents.
        """
        model, cfg = self.model, self.model.config
        clip = cfg.clip_frames
        batch, n = audio_features.shape[:2]
        if not 1 <= n <= clip:
            raise ValueError(f"a window holds 1 to {clip} frames, got {n}")
        if not 1 <= commit <= n:
            raise ValueError(f"commit must be 1 to the window's {n} frames, got {commit}")
        conditions = self._project(audio_features, pose, gaze, cam)
        self._start(conditions, batch)
        window = n if self.padding == "none" else clip
        pad = fit_frames if self.padding == "zeros" else repeat_pad
        clip_conditions = conditions.map(lambda c: pad(c, window))
        cfg_scale = self.options.cfg_scale
        if silent:
            clip_conditions = replace(clip_conditions, audio=torch.zeros_like(clip_conditions.audio))
            cfg_scale = 1.0  # with no audio condition both passes of guidance are the same
        if noise is not None:
            z = noise.to(self.device, self.dtype)
        else:
            # drawn in float32 so a seed gives the same noise whatever the model dtype
            z = torch.randn((batch, window, cfg.motion_dim), generator=self.generator, device=self.device,
                            dtype=torch.float32).to(self.dtype)
        prev = cfg.prev_frames
        prev_x = self.history_x[:, self.history_x.shape[1] - prev:]
        prev_conditions = self.history_conditions.map(lambda c: c[:, c.shape[1] - prev:])
        times = self.times
        for i in range(self.options.nfe - 1):
            v = model.velocity(times[i], z, prev_x, self.ref_motion, clip_conditions, prev_conditions,
                               cfg_scale=cfg_scale)[:, prev:]
            z = euler_step(z, v, times[i], times[i + 1])
        kept = z[:, :commit]
        self._commit(kept, conditions.map(lambda c: c[:, :commit]))
        return kept

    @torch.inference_mode()
    def append(self, motion: torch.Tensor, audio_features: torch.Tensor, pose: torch.Tensor | None = None,
               gaze: torch.Tensor | None = None, cam: torch.Tensor | None = None) -> None:
        """Commit frames made outside the sampler: latents (B, k, motion_dim) with their raw audio (B, k, A) and
        optional head-motion conditions (B, k, d)."""
        conditions = self._project(audio_features, pose, gaze, cam)
        self._start(conditions, motion.shape[0])
        self._commit(motion.to(self.device, self.dtype), conditions)

    def _project(self, *raw: torch.Tensor | None) -> MotionConditions:
        return self.model.project(*(None if v is None else v.to(self.device, self.dtype) for v in raw))

    def forget(self, frames: int) -> None:
        """Take back the last `frames` committed frames (never shown), so the next window does not see them."""
        held = 0 if self.history_x is None else self.history_x.shape[1] - self.model.config.prev_frames
        if not 0 <= frames <= held:
            raise ValueError(f"cannot take back {frames} frames: the last {held} committed frames are held")
        if frames:
            self.history_x = self.history_x[:, :-frames]
            self.history_conditions = self.history_conditions.map(lambda c: c[:, :-frames])
            self.committed_frames -= frames

    def _start(self, conditions: MotionConditions, batch: int) -> None:
        if self.history_x is None:
            cfg = self.model.config
            self.history_x = conditions.audio.new_zeros(batch, cfg.prev_frames, cfg.motion_dim)
            self.history_conditions = conditions.map(lambda c: c.new_zeros(batch, cfg.prev_frames, cfg.cond_dim))

    def _commit(self, motion: torch.Tensor, conditions: MotionConditions) -> None:
        keep = self.model.config.prev_frames + self.model.config.clip_frames  # bounded, however long the stream
        self.history_x = torch.cat([self.history_x, motion], dim=1)[:, -keep:]
        self.history_conditions = conditions.after(self.history_conditions).map(lambda c: c[:, -keep:])
        self.committed_frames += motion.shape[1]


def _check_tensor(name: str, x: object, *, ndim: int, last_dim: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim != ndim or x.shape[-1] != last_dim:
        raise ValueError(f"{name} must have shape {layout} with last dim {last_dim}, got {tuple(x.shape)}")


def _check_track(name: str, x: object, dim: int, batch: int) -> None:
    layout = f"(B, T, {dim}) or (T, {dim})"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim not in (2, 3) or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(x.shape)}")
    if x.ndim == 3 and x.shape[0] != batch:
        raise ValueError(f"{name} has batch {x.shape[0]}, expected {batch} as in audio_features")


def _check_noise(noise: object, chunks: int, shape: tuple[int, int, int]) -> None:
    if isinstance(noise, torch.Tensor) and noise.ndim != 4:
        got = tuple(noise.shape)
        raise ValueError(f"noise must be {chunks} tensors of shape {shape}, got one tensor of shape {got}")
    if not isinstance(noise, (Sequence, torch.Tensor)):
        raise TypeError(f"noise must be a sequence of {chunks} tensors, got {type(noise).__name__}")
    if len(noise) != chunks:
        raise ValueError(f"noise must hold one tensor per chunk: expected {chunks}, got {len(noise)}")
    for k, z in enumerate(noise):
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"noise[{k}] must be a torch.Tensor, got {type(z).__name__}")
        if not z.is_floating_point():
            raise ValueError(f"noise[{k}] must be a floating-point tensor, got dtype {z.dtype}")
        if tuple(z.shape) != shape:
            raise ValueError(f"noise[{k}] must have shape {shape}, got {tuple(z.shape)}")
