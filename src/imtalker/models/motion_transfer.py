"""Implicit motion transfer (docs/architecture.md §3.5): align source appearance to the driving motion without
optical flow.

Coarse levels use cross-attention (query = driving motion map, key = source motion map, value = source
appearance). The two finest levels copy pooled source blocks chosen by the arg-max of the finest coarse
attention (head mean), which is found query chunk by query chunk so the full map is never stored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Attention-score elements held at once (B x heads x queries x keys): 2**20 floats = 4 MiB. Chunks this small stay
# in cache and below the allocator's mmap threshold; on a 2-core CPU they ran 4x faster than 128 MiB chunks.
ATTENTION_CHUNK_ELEMENTS = 1 << 20
# per frame and query chunk in a captured graph, whose runtime plans its own buffers: 16 MiB of scores
TRACED_ATTENTION_CHUNK_ELEMENTS = 1 << 22


def capturing_graph() -> bool:
    """Whether this call is being captured into a graph (`torch.onnx.export`'s trace, `torch.compile`): loops then
    unroll, so the code takes paths whose loop counts do not depend on the batch."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C), row-major over (H, W)."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W) as a channels-last view (no copy)."""
    return x.view(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C / heads)."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, D) -> (B, N, heads * D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/output projections (`q_proj`, `k_proj`, `v_proj`, `proj`)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Token sequences (B, N, C) -> (B, Nq, C)."""
        q = split_heads(self.q_proj(q), self.num_heads)
        k = split_heads(self.k_proj(k), self.num_heads)
        v = split_heads(self.v_proj(v), self.num_heads)
        if torch.jit.is_tracing():  # an ONNX graph has no fused attention: bound its score buffers
            return self.proj(merge_heads(attention_in_query_chunks(q, k, v)[0]))
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))


def tile_bias(bias: torch.Tensor | None, num_queries: int) -> torch.Tensor | None:
    """One grid's score bias (P, Nk) repeated down to `num_queries` rows, for several frames' queries stacked."""
    return None if bias is None else bias.repeat(num_queries // bias.shape[0], 1)


class CrossAttention(Attention):
    """`block_efc`: attention from driving motion (queries) to the source (keys, values), keys cached per source."""

    def project_source(self, source_motion: torch.Tensor, source_features: torch.Tensor):
        """Per-source keys and values, (B, heads, N, D) each; computed once per source image."""
        k = split_heads(self.k_proj(to_tokens(source_motion)), self.num_heads)
        v = split_heads(self.v_proj(to_tokens(source_features)), self.num_heads)
        return k, v

    def forward(self, driving_motion: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                with_top1: bool = False, bias: torch.Tensor | None = None):
        """Attend from the driving motion map to the projected source.

        Args:
            driving_motion: (B, C, H, W) motion map of the driving frames.
            k, v: (B or 1, heads, H*W, C / heads) from `project_source`.
            with_top1: also return, per query, the key index with the highest head-mean probability.
            bias: None (published), or scores (H*W, H*W) added to every head's before the softmax (a prior).

        Returns:
            The aligned feature map (B, C, H, W), and with `with_top1` the arg-max indices (B, H*W).
        """
        b, c, h, w = driving_motion.shape
        q = split_heads(self.q_proj(to_tokens(driving_motion)), self.num_heads)  # (B, heads, N, D)
        # a captured graph keeps the frames apart: stacking them would tie its shapes to the batch
        shared = not capturing_graph() and k.shape[0] == 1 and b > 1
        if shared:  # one source for all frames: stack the frames' queries instead of copying keys B times
            q = q.transpose(0, 1).reshape(1, self.num_heads, b * h * w, -1)
        if bias is not None:
            bias = bias.to(q.dtype)
        if with_top1:
            out, top1 = attention_with_top1(q, k, v, bias=bias)
        else:
            out, top1 = F.scaled_dot_product_attention(q, k, v, attn_mask=tile_bias(bias, q.shape[2])), None
        if shared:
            out = out.view(self.num_heads, b, h * w, -1).transpose(0, 1)
            top1 = top1.view(b, h * w) if top1 is not None else None
        out = from_tokens(self.proj(merge_heads(out)), h, w)  # (B, C, H, W)
        return (out, top1) if with_top1 else out


def attention_with_top1(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        chunk_elements: int = ATTENTION_CHUNK_ELEMENTS, bias: torch.Tensor | None = None):
    """Softmax attention plus the arg-max over keys of the head-averaged probabilities, in query chunks.

    The score buffers are allocated once and reused: fresh 8 MiB blocks every chunk fragmented the heap until
    resident memory reached several GiB on long runs.

    Args:
        q: (B, heads, Nq, D); k, v: (B, heads, Nk, D).
        bias: None, or scores (P, Nk) added to every head's, query i taking row i % P (several frames' queries
            stacked along Nq share one grid's prior).

    Returns:
        (output (B, heads, Nq, D), top1 (B, Nq) int64).
    """
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        # training: the arg-max has no gradient, so the output comes from differentiable fused attention
        with torch.no_grad():
            _, top1 = attention_with_top1(q, k, v, chunk_elements, bias)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=tile_bias(bias, q.shape[2])), top1
    if capturing_graph():
        return attention_in_query_chunks(q, k, v, bias=bias)
    b, heads, nq, d = q.shape
    nk = k.shape[2]
    chunk = max(1, min(nq, chunk_elements // (b * heads * nk)))
    # one dtype for the out= products: under autocast the queries may be bfloat16 while the source's keys and
    # values, encoded once, are float32 (autocast does not cast the operands of out= calls)
    kt = (k.transpose(-2, -1) * (1 / math.sqrt(d))).to(q.dtype)
    v = v.to(q.dtype)
    bias = bias.to(q.dtype) if bias is not None else None
    out = q.new_empty(b, heads, nq, d)
    top1 = torch.empty(b, nq, dtype=torch.long, device=q.device)
    scores = q.new_empty(b * heads * chunk * nk)
    probs = torch.empty_like(scores)
    # the arg-max of the head mean is the arg-max of the head sum when dividing by the head count is exact (a
    # power of two): the division then changes no comparison, so it is skipped
    divide_by_heads = heads & (heads - 1) != 0
    for start in range(0, nq, chunk):
        n = min(chunk, nq - start)
        s = scores[: b * heads * n * nk].view(b, heads, n, nk)
        p = probs[: b * heads * n * nk].view(b, heads, n, nk)
        torch.matmul(q[:, :, start:start + n], kt, out=s)
        if bias is not None:
            s += bias[torch.arange(start, start + n, device=q.device) % bias.shape[0]]
        torch.softmax(s, dim=-1, out=p)
        out[:, :, start:start + n] = p @ v
        # a plain sum over the head axis: mean(out=) zero-filled, summed and divided in three passes, 4x slower
        head_sum = p.sum(dim=1)  # (B, n, Nk)
        if divide_by_heads:
            head_sum /= heads
        top1[:, start:start + n] = head_sum.argmax(dim=-1)
    return out, top1


def attention_in_query_chunks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None,
                              chunk_elements: int = TRACED_ATTENTION_CHUNK_ELEMENTS):
    """Softmax attention and the arg-max over keys of the head-mean probabilities, in out-of-place operations over
    query chunks, for graph capture (`torch.onnx.export`, `torch.compile`).

    A trace records loops unrolled, so the query chunks are a fixed number that depends on the query and key counts
    only, not on the batch: an exported graph keeps a dynamic batch axis, and a runtime without fused attention holds
    one chunk's scores (`chunk_elements` per frame) at a time instead of every query's (512 MiB per frame for the
    4096 tokens of a 64 x 64 map). Each frame's queries are chunked on their own.

    Args:
        q: (B, heads, Nq, D); k, v: (1 or B, heads, Nk, D).
        bias: None, or scores (Nq, Nk) added to every head's.

    Returns:
        (output (B, heads, Nq, D), top1 (B, Nq) int64).
    """
    heads, nq, d = (int(n) for n in q.shape[1:])
    chunk = max(1, min(nq, chunk_elements // (heads * int(k.shape[2]))))
    kt = k.transpose(-2, -1) * (1 / math.sqrt(d))
    outs, top1 = [], []
    for start in range(0, nq, chunk):
        scores = q[:, :, start:start + chunk] @ kt  # (B, heads, chunk, Nk)
        if bias is not None:
            scores = scores + bias[start:start + chunk]
        probs = torch.softmax(scores, dim=-1)
        outs.append(probs @ v)
        top1.append(probs.mean(dim=1).argmax(dim=-1))
    return torch.cat(outs, dim=2), torch.cat(top1, dim=1)


def attention_head_mean(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The full head-mean attention map (B, Nq, Nk), for inspection and tests (memory grows as Nq * Nk)."""
    scale = 1 / math.sqrt(q.shape[-1])
    return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1).mean(dim=1)


def pool_blocks(features: torch.Tensor, ratio: int) -> torch.Tensor:
    """Average the ratio x ratio blocks of a source feature map: (B, C, H, W) -> tokens (B, H/r * W/r, C)."""
    return to_tokens(F.avg_pool2d(features, ratio)).contiguous()


def guided_resample(pooled: torch.Tensor, top1: torch.Tensor, grid: int, ratio: int) -> torch.Tensor:
    """Fill each ratio x ratio output block with the pooled source block its coarse cell attends to most.

    Args:
        pooled: (B or 1, grid * grid, C) pooled source blocks from `pool_blocks`.
        top1: (B, grid * grid) arg-max key index per low-resolution cell.

    Returns:
        (B, C, grid * ratio, grid * ratio), channels-last.
    """
    b, c = top1.shape[0], pooled.shape[2]
    pooled = pooled.expand(b, -1, -1)
    picked = torch.gather(pooled, 1, top1[:, :, None].expand(-1, -1, c))  # (B, N, C)
    picked = picked.view(b, grid, 1, grid, 1, c)
    picked = picked.expand(-1, -1, ratio, -1, ratio, -1).reshape(b, grid * ratio, grid * ratio, c)
    return picked.permute(0, 3, 1, 2)


class GuidedResampler(nn.Module):
    """Parameter-free fine level of `imt`; holds only the upsampling ratio."""

    def __init__(self, ratio: int):
        super().__init__()
        self.ratio = ratio

    def forward(self, pooled: torch.Tensor, top1: torch.Tensor, grid: int) -> torch.Tensor:
        return guided_resample(pooled, top1, grid, self.ratio)


class CoarseLevel(nn.Module):
    """Coarse `imt.L` level; the published checkpoint nests the attention under `block_efc`."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.block_efc = CrossAttention(dim, num_heads)
