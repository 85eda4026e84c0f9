"""Flow-matching motion generator (docs/architecture.md §4).

Audio features (and optional pose, gaze and camera tracks) are projected to small per-frame conditions; a DiT-style
transformer (`fmt`) predicts the velocity of a rectified flow over motion latents. Integrating it chunk by chunk is
`imtalker.sampling`'s job. Attribute names are the published state-dict keys (without the `model.` prefix).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GeneratorConfig

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


@dataclass(frozen=True)
class MotionConditions:
    """Projected per-frame conditions, each (B, N, cond_dim): the model adds them up (a missing track is zeros)."""

    audio: torch.Tensor
    pose: torch.Tensor
    gaze: torch.Tensor
    cam: torch.Tensor

    def map(self, fn) -> "MotionConditions":
        """The same conditions with `fn` applied to each tensor."""
        return MotionConditions(*(fn(getattr(self, f.name)) for f in dataclasses.fields(self)))

    def after(self, context: "MotionConditions") -> "MotionConditions":
        """`context` frames followed by these, along the frame axis."""
        return MotionConditions(*(torch.cat([getattr(context, f.name), getattr(self, f.name)], dim=1)
                                  for f in dataclasses.fields(self)))

    def total(self) -> torch.Tensor:
        """The summed condition (B, N, cond_dim), in the published order of addition."""
        return self.audio + self.pose + self.cam + self.gaze


class FlowMatchingTransformer(nn.Module):
    """Velocity network of the motion flow (`fmt`, docs/architecture.md §4.2); conditions come in already projected."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        hidden = config.hidden_dim
        self.x_embedder = FrameEmbedder(2 * config.motion_dim, hidden)
        self.rotary_emb = RotaryEmbedding(hidden // config.num_heads, config.rope_base)
        self.t_embedder = TimestepEmbedder(hidden)
        self.c_embedder = nn.Linear(config.cond_dim, hidden)
        self.blocks = nn.ModuleList(DiTBlock(hidden, config.num_heads, config.mlp_ratio) for _ in range(config.depth))
        self.decoder = FinalLayer(hidden, config.motion_dim)

    def forward(self, t: torch.Tensor | float, x: torch.Tensor, prev_x: torch.Tensor, ref: torch.Tensor,
                conditions: MotionConditions, prev_conditions: MotionConditions) -> torch.Tensor:
        """Velocity of the whole sequence (context + clip).

        Args:
            t: flow time, a float, a 0-d tensor or (B,).
            x: (B, L, motion_dim) noisy clip latents.
            prev_x: (B, P, motion_dim) context latents.
            ref: (B, motion_dim) reference motion latent.
            conditions: projected clip conditions, each (B, L, cond_dim).
            prev_conditions: projected context conditions, each (B, P, cond_dim).

        Returns:
            (B, P + L, motion_dim) velocity for every frame; callers keep `[:, P:]`.
        """
        x = torch.cat([prev_x, x], dim=1)  # (B, N, motion_dim)
        b, n, _ = x.shape
        cond = conditions.after(prev_conditions).total()  # (B, N, cond_dim)
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

    def project(self, audio_features: torch.Tensor, pose: torch.Tensor | None = None,
                gaze: torch.Tensor | None = None, cam: torch.Tensor | None = None) -> MotionConditions:
        """Raw per-frame inputs (B, N, audio_dim / pose_dim / gaze_dim / cam_dim) -> projected conditions.

        A missing track is zeros in the projected space, where it adds nothing to the sum."""
        audio = self.audio_projection(audio_features)  # (B, N, cond_dim)

        def projected(projection: nn.Module, track: torch.Tensor | None) -> torch.Tensor:
            return torch.zeros_like(audio) if track is None else projection(track)

        return MotionConditions(audio, projected(self.pose_projection, pose), projected(self.gaze_projection, gaze),
                                projected(self.cam_projection, cam))

    def velocity(self, t: torch.Tensor | float, x: torch.Tensor, prev_x: torch.Tensor, ref: torch.Tensor,
                 conditions: MotionConditions, prev_conditions: MotionConditions,
                 cfg_scale: float = 1.0) -> torch.Tensor:
        """Velocity with classifier-free guidance on the audio.

        Same arguments as `FlowMatchingTransformer.forward`, plus `cfg_scale`. For `cfg_scale != 1` the
        unconditional pass replaces the clip audio by zeros and keeps the context audio (this is what the published
        model computes); both passes share one batched call.

        Returns:
            (B, P + L, motion_dim) velocity for every frame.
        """
        if cfg_scale == 1:
            return self.fmt(t, x, prev_x, ref, conditions, prev_conditions)

        def twice(v: torch.Tensor) -> torch.Tensor:
            return torch.cat([v, v])

        unconditional_audio = torch.cat([conditions.audio, torch.zeros_like(conditions.audio)])
        conditions2 = dataclasses.replace(conditions.map(twice), audio=unconditional_audio)
        t2 = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0]).repeat(2)
        v_cond, v_uncond = self.fmt(t2, twice(x), twice(prev_x), twice(ref), conditions2,
                                    prev_conditions.map(twice)).chunk(2)
        return v_uncond + cfg_scale * (v_cond - v_uncond)  # classifier-free guidance
