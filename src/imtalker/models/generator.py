"""Flow-matching motion generator (MODEL.md section 4).

Audio features (and optional pose, gaze and camera tracks) are projected to small per-frame conditions; a DiT-style
transformer (`fmt`) predicts the velocity of a rectified flow over motion latents, and `MotionGenerator.sample`
integrates it chunk by chunk. Attribute names are the published state-dict keys (without the `model.` prefix).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GeneratorConfig
from ..sampling import euler_step, fit_frames, guided_velocity, num_chunks, repeat_pad, time_grid

TIME_FREQ_DIM = 256  # width of the sinusoidal flow-time embedding fed to `t_embedder`
TIME_MAX_PERIOD = 10000.0


class ConditionProjection(nn.Sequential):
    """Linear -> LayerNorm -> SiLU, one vector per frame (children `0`, `1` hold the weights)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.SiLU())


class FrameEmbedder(nn.Module):
    """Embeds [reference latent, noisy latent] per frame into the transformer width."""

    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class RotaryEmbedding(nn.Module):
    """Rotary position tables over frame indices; `inv_freq` is a persistent buffer of the published checkpoint."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=True)

    def forward(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (cos, sin), each (num_frames, head_dim), in float32."""
        positions = torch.arange(num_frames, device=self.inv_freq.device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq.float())  # (N, head_dim / 2)
        angles = torch.cat([angles, angles], dim=-1)  # (N, head_dim)
        return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[a, b] -> [-b, a] over the halves of the last axis."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates (B, H, N, head_dim) queries or keys by the frame-index tables (N, head_dim)."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of the flow time followed by a two-layer MLP (DiT)."""

    def __init__(self, hidden_dim: int, freq_dim: int = TIME_FREQ_DIM):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Args: t (B,) flow times. Returns (B, hidden_dim)."""
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(TIME_MAX_PERIOD) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]  # (B, half)
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, freq_dim)
        return self.mlp(embedding.to(self.mlp[0].weight.dtype))


class Attention(nn.Module):
    """Full multi-head self-attention over frames with rotary queries and keys."""

    def __init__(self, hidden_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.proj = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
        q, k, v = qkv.unbind(0)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5)  # (B, H, N, hd)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, hidden_dim: int, mlp_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_dim, mlp_dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(mlp_dim, hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    """Transformer block with per-frame adaptive LayerNorm (shift, scale, gate) from the condition."""

    def __init__(self, hidden_dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_dim, num_heads)
        self.norm2 = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_dim, int(hidden_dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, 6 * hidden_dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Args: x (B, N, hidden), c (B, N, hidden). Returns (B, N, hidden)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), cos, sin)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN (shift, scale) then a linear map back to the motion latent size."""

    def __init__(self, hidden_dim: int, out_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, 2 * hidden_dim))
        self.linear = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class FlowMatchingTransformer(nn.Module):
    """Velocity network of the motion flow (`fmt`, MODEL.md 4.2); conditions come in already projected."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        hidden = config.hidden_dim
        self.x_embedder = FrameEmbedder(2 * config.motion_dim, hidden)
        self.rotary_emb = RotaryEmbedding(hidden // config.num_heads, config.rope_base)
        self.t_embedder = TimestepEmbedder(hidden)
        self.c_embedder = nn.Linear(config.cond_dim, hidden)
        self.blocks = nn.ModuleList(DiTBlock(hidden, config.num_heads, config.mlp_ratio) for _ in range(config.depth))
        self.decoder = FinalLayer(hidden, config.motion_dim)

    def forward(
        self,
        t: torch.Tensor | float,
        x: torch.Tensor,
        a: torch.Tensor,
        prev_x: torch.Tensor,
        prev_a: torch.Tensor,
        ref: torch.Tensor,
        gaze: torch.Tensor,
        prev_gaze: torch.Tensor,
        pose: torch.Tensor,
        prev_pose: torch.Tensor,
        cam: torch.Tensor,
        prev_cam: torch.Tensor,
    ) -> torch.Tensor:
        """Velocity of the whole sequence (context + clip).

        Args:
            t: flow time, a float, a 0-d tensor or (B,).
            x: (B, L, motion_dim) noisy clip latents.
            a: (B, L, cond_dim) projected audio of the clip.
            prev_x: (B, P, motion_dim) context latents.
            prev_a: (B, P, cond_dim) projected context audio.
            ref: (B, motion_dim) reference motion latent.
            gaze, pose, cam: (B, L, cond_dim) projected clip conditions.
            prev_gaze, prev_pose, prev_cam: (B, P, cond_dim) projected context conditions.

        Returns:
            (B, P + L, motion_dim) velocity for every frame; callers keep `[:, P:]`.
        """
        x = torch.cat([prev_x, x], dim=1)  # (B, N, motion_dim)
        b, n, _ = x.shape
        cond = (
            torch.cat([prev_a, a], dim=1)
            + torch.cat([prev_pose, pose], dim=1)
            + torch.cat([prev_cam, cam], dim=1)
            + torch.cat([prev_gaze, gaze], dim=1)
        )  # (B, N, cond_dim)
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(b)  # (B,)

        h = self.x_embedder(torch.cat([ref[:, None].expand(-1, n, -1), x], dim=-1))  # (B, N, hidden)
        c = self.c_embedder(cond) + self.t_embedder(t)[:, None]  # (B, N, hidden)
        cos, sin = self.rotary_emb(n)
        for block in self.blocks:
            h = block(h, c, cos, sin)
        return self.decoder(h, c)  # (B, N, motion_dim)


class MotionGenerator(nn.Module):
    """Audio-driven motion generator: condition projections plus the flow-matching transformer."""

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        self.config = config = config or GeneratorConfig()
        self.fmt = FlowMatchingTransformer(config)
        self.audio_projection = ConditionProjection(config.audio_dim, config.cond_dim)
        self.gaze_projection = ConditionProjection(config.gaze_dim, config.cond_dim)
        self.pose_projection = ConditionProjection(config.pose_dim, config.cond_dim)
        self.cam_projection = ConditionProjection(config.cam_dim, config.cond_dim)

    def velocity(
        self,
        t: torch.Tensor | float,
        x: torch.Tensor,
        a: torch.Tensor,
        prev_x: torch.Tensor,
        prev_a: torch.Tensor,
        ref: torch.Tensor,
        gaze: torch.Tensor,
        prev_gaze: torch.Tensor,
        pose: torch.Tensor,
        prev_pose: torch.Tensor,
        cam: torch.Tensor,
        prev_cam: torch.Tensor,
        cfg_scale: float = 1.0,
    ) -> torch.Tensor:
        """Velocity with classifier-free guidance on the audio.

        Same arguments as `FlowMatchingTransformer.forward` (conditions already projected), plus `cfg_scale`. For
        `cfg_scale != 1` the unconditional pass replaces the clip audio `a` by zeros and keeps the context audio
        `prev_a` (this is what the published model computes); both passes share one batched call.

        Returns:
            (B, P + L, motion_dim) velocity for every frame.
        """
        if cfg_scale == 1:
            return self.fmt(t, x, a, prev_x, prev_a, ref, gaze, prev_gaze, pose, prev_pose, cam, prev_cam)

        def twice(*tensors: torch.Tensor) -> list[torch.Tensor]:
            return [torch.cat([v, v]) for v in tensors]

        a2 = torch.cat([a, torch.zeros_like(a)])
        t2 = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0]).repeat(2)
        x2, prev_x2, prev_a2, ref2 = twice(x, prev_x, prev_a, ref)
        gaze2, prev_gaze2, pose2, prev_pose2, cam2, prev_cam2 = twice(gaze, prev_gaze, pose, prev_pose, cam, prev_cam)
        v_cond, v_uncond = self.fmt(
            t2, x2, a2, prev_x2, prev_a2, ref2, gaze2, prev_gaze2, pose2, prev_pose2, cam2, prev_cam2
        ).chunk(2)
        return guided_velocity(v_cond, v_uncond, cfg_scale)

    @torch.inference_mode()
    def sample(
        self,
        audio_features: torch.Tensor,
        ref_motion: torch.Tensor,
        pose: torch.Tensor | None = None,
        gaze: torch.Tensor | None = None,
        cam: torch.Tensor | None = None,
        cfg_scale: float = 3.0,
        nfe: int = 10,
        noise: Sequence[torch.Tensor] | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Samples motion latents for every audio frame (MODEL.md 4.3).

        The sequence is cut into chunks of `clip_frames`; each chunk sees the last `prev_frames` of the previous
        chunk (latents and conditions) as context, and the first chunk sees zeros.

        Args:
            audio_features: (B, T, audio_dim) raw audio features, one per video frame.
            ref_motion: (B, motion_dim) reference motion latent of the source image.
            pose: optional (B, T', pose_dim) or (T', pose_dim) head pose; cut or zero-padded to T frames.
            gaze: optional (B, T', gaze_dim) or (T', gaze_dim) gaze (pitch, yaw), likewise.
            cam: optional (B, T', cam_dim) or (T', cam_dim) camera translation, likewise.
            cfg_scale: audio guidance scale; 1 disables guidance (one network pass per step).
            nfe: points of the Euler time grid (nfe - 1 steps), at least 2.
            noise: optional initial noise, one (B, clip_frames, motion_dim) tensor per chunk (ceil(T / clip_frames)
                chunks). Takes precedence over `seed`.
            seed: seeds a private `torch.Generator` for the noise, leaving the global RNG untouched; None draws from
                the global RNG.

        Returns:
            (B, T, motion_dim) motion latents, on the model's device and dtype.

        Raises:
            TypeError: a tensor argument is not a tensor.
            ValueError: a shape, dtype, batch size or sampler setting is not what is expected.
        """
        cfg = self.config
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
        if not isinstance(cfg_scale, numbers.Real) or not math.isfinite(cfg_scale):
            raise ValueError(f"cfg_scale must be a finite number, got {cfg_scale!r}")
        if isinstance(nfe, bool) or not isinstance(nfe, numbers.Integral) or nfe < 2:
            raise ValueError(f"nfe must be an integer >= 2 (nfe - 1 Euler steps), got {nfe!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")

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
        sampler = ChunkSampler(self, ref_motion, cfg_scale=cfg_scale, nfe=nfe, seed=seed)
        outputs = []
        for k in range(chunks):
            window = slice(k * clip, (k + 1) * clip)
            outputs.append(sampler.step(
                audio_features[:, window],
                **{name: (track[:, window] if track is not None else None) for name, track in tracks.items()},
                noise=noise[k] if noise is not None else None))
        return torch.cat(outputs, dim=1)  # (B, T, motion_dim)


class ChunkSampler:
    """Samples motion one chunk at a time, carrying the context between chunks (MODEL.md 4.3).

    `MotionGenerator.sample` runs it over a whole sequence; streaming callers feed chunks as the audio arrives.
    Every chunk but the last must hold exactly `clip_frames` frames; a shorter chunk is padded by repeating its
    last frame and ends the sequence.
    """

    def __init__(self, model: MotionGenerator, ref_motion: torch.Tensor, cfg_scale: float = 3.0, nfe: int = 10,
                 seed: int | None = None):
        param = next(model.parameters())
        self.model, self.device, self.dtype = model, param.device, param.dtype
        self.ref_motion = ref_motion.to(self.device, self.dtype)
        self.cfg_scale, self.nfe = cfg_scale, nfe
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed)) if seed is not None else None
        self.times = time_grid(nfe, device=self.device)  # float32 even for half models, so the step sizes stay exact
        self.prev_x: torch.Tensor | None = None  # (B, prev, motion_dim); None before the first chunk
        self.prev_conds: dict[str, torch.Tensor] = {}
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
        audio = model.audio_projection(audio_features.to(self.device, self.dtype))  # (B, n, cond_dim)
        conds = {"a": repeat_pad(audio, clip)}
        projections = {"pose": model.pose_projection, "gaze": model.gaze_projection, "cam": model.cam_projection}
        for name, track in (("pose", pose), ("gaze", gaze), ("cam", cam)):
            if track is None:  # a missing track is zero in the projected space: it adds nothing to the sum
                conds[name] = audio.new_zeros(batch, clip, cfg.cond_dim)
            else:
                conds[name] = repeat_pad(projections[name](track.to(self.device, self.dtype)), clip)
        if self.prev_x is None:
            self.prev_x = audio.new_zeros(batch, prev, cfg.motion_dim)
            self.prev_conds = {name: audio.new_zeros(batch, prev, cfg.cond_dim) for name in conds}
        if noise is not None:
            z = noise.to(self.device, self.dtype)
        else:
            # drawn in float32 so a seed gives the same noise whatever the model dtype
            z = torch.randn((batch, clip, cfg.motion_dim), generator=self.generator, device=self.device,
                            dtype=torch.float32).to(self.dtype)
        times, context = self.times, self.prev_x.shape[1]
        for i in range(self.nfe - 1):
            v = model.velocity(
                times[i], z, conds["a"], self.prev_x, self.prev_conds["a"], self.ref_motion,
                conds["gaze"], self.prev_conds["gaze"], conds["pose"], self.prev_conds["pose"],
                conds["cam"], self.prev_conds["cam"], cfg_scale=self.cfg_scale,
            )[:, context:]  # (B, clip, motion_dim)
            z = euler_step(z, v, times[i], times[i + 1])
        self.prev_x = z[:, -prev:] if prev else z[:, :0]
        self.prev_conds = {name: value[:, -prev:] if prev else value[:, :0] for name, value in conds.items()}
        return z[:, :n]


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
