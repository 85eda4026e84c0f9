"""Synthesis network `frame_decoder` (docs/architecture.md §3.6): aligned feature pyramid -> RGB frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvResBlock
from .motion_transfer import Attention, from_tokens, merge_heads, split_heads, to_tokens


def feed_forward(dim: int, gap: bool) -> nn.Sequential:
    """Linear(d, 2d) -> GELU -> Linear(2d, d). The global block's checkpoint numbers the second linear 3."""
    layers = [nn.Linear(dim, 2 * dim), nn.GELU()]
    if gap:
        layers.append(nn.Identity())  # published dropout slot (p = 0)
    layers.append(nn.Linear(2 * dim, dim))
    return nn.Sequential(*layers)


class GlobalBlock(nn.Module):
    """Self-attention over all H*W tokens with learned query/key position embeddings."""

    def __init__(self, dim: int, resolution: int, num_heads: int):
        super().__init__()
        self.q_pos_embedding = nn.Parameter(0.02 * torch.randn(1, resolution * resolution, dim))
        self.k_pos_embedding = nn.Parameter(0.02 * torch.randn(1, resolution * resolution, dim))
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm_ffn = nn.LayerNorm(dim)
        self.mlp = feed_forward(dim, gap=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = to_tokens(x)  # (B, N, C)
        q = self.norm_q(s + self.q_pos_embedding)
        k = self.norm_kv(s + self.k_pos_embedding)
        v = self.norm_kv(s)
        s = s + self.attn(q, k, v)
        s = s + self.mlp(self.norm_ffn(s))
        return from_tokens(s, h, w)


def relative_position_index(window: int) -> torch.Tensor:
    """Swin relative-position index (w^2, w^2) into a ((2w-1)^2, heads) bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]) + (window - 1)  # (2, w^2, w^2)
    return rel[0] * (2 * window - 1) + rel[1]


def shifted_window_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    """-100 between tokens of one window that came from different regions after the cyclic shift."""
    region = torch.zeros(resolution, resolution)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for ys in bounds:
        for xs in bounds:
            region[ys, xs] = label
            label += 1
    region = window_partition(region[None, :, :, None], window).squeeze(-1)  # (nW, w^2)
    mask = region[:, None, :] - region[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, w^2, C), windows row-major and tokens row-major inside a window."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_token_order(resolution: int, window: int, shift: int) -> torch.Tensor:
    """Token indices that cyclically shift a row-major (H*W) grid by (-shift, -shift) and partition it into windows.

    Gathering tokens with this order does the roll and the window partition in one copy; LayerNorm and the
    projections act per token, so they may run before or after it with the same result.
    """
    grid = torch.arange(resolution * resolution).view(1, resolution, resolution, 1)
    grid = torch.roll(grid, (-shift, -shift), dims=(1, 2))
    return window_partition(grid, window).flatten()


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(0.02 * torch.randn((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                masked_windows: torch.Tensor | None = None) -> torch.Tensor:
        """Attention inside each window.

        Args:
            q, k, v: (B * nW, w^2, C) windows.
            mask: (nW, w^2, w^2) shifted-window mask, or None.
            masked_windows: indices of the windows whose mask is not all zero (with `mask`).
        """
        n = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).contiguous().to(q.dtype)  # (heads, w^2, w^2); contiguous, or SDPA copies
        q = split_heads(self.q(q), self.num_heads)  # (B * nW, heads, w^2, D)
        k = split_heads(self.k(k), self.num_heads)
        v = split_heads(self.v(v), self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None])
        if mask is not None:
            # Only windows along the wrapped border mix regions (their mask is non-zero): recompute just those,
            # instead of adding a (nW, heads, w^2, w^2) mask to every window.
            num_windows = mask.shape[0]
            rows = (torch.arange(0, q.shape[0], num_windows, device=q.device)[:, None] + masked_windows).flatten()
            border_bias = bias[None] + mask[masked_windows, None].to(q.dtype)  # (M, heads, w^2, w^2)
            border_bias = border_bias.repeat(q.shape[0] // num_windows, 1, 1, 1)
            border = F.scaled_dot_product_attention(q[rows], k[rows], v[rows], attn_mask=border_bias)
            out = out.index_copy(0, rows, border)  # out of place: autograd keeps the attention output
        return self.proj(merge_heads(out))


class WindowBlock(nn.Module):
    """Swin-style block: (shifted) window attention then MLP, pre-norm, with separate q and kv norms."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, shift: int):
        super().__init__()
        self.window = window
        self.shift = shift
        if shift:
            self.register_buffer("attn_mask", shifted_window_mask(resolution, window, shift))
            masked = self.attn_mask.flatten(1).ne(0).any(dim=1).nonzero().flatten()
            self.register_buffer("masked_windows", masked, persistent=False)
        else:
            self.attn_mask = self.masked_windows = None
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm_ffn = nn.LayerNorm(dim)
        self.mlp = feed_forward(dim, gap=False)
        order = window_token_order(resolution, window, shift)
        self.register_buffer("token_order", order, persistent=False)
        self.register_buffer("token_restore", torch.argsort(order), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = to_tokens(x)  # (B, N, C); a free view for channels-last input
        # shifted and partitioned in one gather; index_select, not s[:, order]: the same copy, 2-4x faster on CPU
        windows = s.index_select(1, self.token_order).view(-1, self.window**2, c)  # (B * nW, w^2, C)
        kv = self.norm_kv(windows)
        out = self.attn(self.norm_q(windows), kv, kv, self.attn_mask, self.masked_windows)  # (B * nW, w^2, C)
        s = s + out.view(b, h * w, c).index_select(1, self.token_restore)
        s = s + self.mlp(self.norm_ffn(s))
        return from_tokens(s, h, w)


class TransformerStage(nn.Module):
    """`transformer_blocks.i`: one global block (coarse) or an unshifted + shifted window pair (fine)."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, use_windows: bool):
        super().__init__()
        if use_windows:
            blocks = [WindowBlock(dim, resolution, num_heads, window, shift=0),
                      WindowBlock(dim, resolution, num_heads, window, shift=window // 2)]
        else:
            blocks = [GlobalBlock(dim, resolution, num_heads)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class FrameDecoder(nn.Module):
    """Upsample from the coarsest aligned map, merging each finer one, to a sigmoid RGB frame."""

    def __init__(self, feature_channels: tuple[int, ...], image_size: int, num_heads: int, window: int):
        super().__init__()
        widths = feature_channels[::-1]  # coarse to fine: 512, 512, 256, 128, 64, 32
        stages = len(widths) - 1
        # the last two stages (image_size / 4 and / 2) run at high resolution with few channels: window attention
        self.fine_stage = stages - 2
        self.upconv_blocks = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        self.transformer_blocks = nn.ModuleList()
        for i in range(stages):
            resolution = image_size // 2 ** (stages - i)  # 16 ... 256 for 512 px
            self.upconv_blocks.append(ConvResBlock(widths[i], widths[i + 1], resample="up"))
            self.resblocks.append(ConvResBlock(2 * widths[i + 1], widths[i + 1]))
            self.transformer_blocks.append(
                TransformerStage(widths[i + 1], resolution, num_heads, window, use_windows=i >= self.fine_stage))
        self.final_conv = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(widths[-1], 12, 3, padding=1))

    def forward(self, aligned: list[torch.Tensor], fine_batch: int | None = None) -> torch.Tensor:
        """Synthesise frames from the aligned pyramid.

        Args:
            aligned: one map per level (six published), coarse to fine, (B, C_i, H_i, W_i).
            fine_batch: frames per pass through the two finest stages (None: all at once). The results do not
                depend on it; small passes keep their large activations in cache and out of fresh pages.

        Returns:
            (B, 3, image_size, image_size) in [0, 1].
        """
        x = aligned[0]
        for i in range(self.fine_stage):
            x = self.stage(i, x, aligned[i + 1])
        step = fine_batch or x.shape[0]
        return torch.cat([self.finish(x[j:j + step], [a[j:j + step] for a in aligned[self.fine_stage + 1:]])
                          for j in range(0, x.shape[0], step)])

    def stage(self, i: int, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Stage i: upsample, merge the aligned map of the next finer level, then attention."""
        x = self.upconv_blocks[i](x)
        x = self.resblocks[i](torch.cat([x, skip], dim=1))
        return self.transformer_blocks[i](x)

    def finish(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """The fine stages and the output layer: (B, 3, S, S) in [0, 1]."""
        for i, skip in enumerate(skips, start=self.fine_stage):
            x = self.stage(i, x, skip)
        return torch.sigmoid(F.pixel_shuffle(self.final_conv(x), 2))
