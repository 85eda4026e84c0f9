"""Exponential moving averages of trained networks, shared by the renderer and generator modules.

Inside a LightningModule each EMA copy is a frozen sub-module (e.g. `ema.*` next to `model.*`); in checkpoints the
copies are moved out of `state_dict` into `ema_state_dict` under the trained network's names, so
`read_checkpoint(path, ema=True)` reads them as the published generator's EMA is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    """The decay at `step`: `decay`, or with `warmup` min(decay, (1 + step) / (10 + step)), so that a short run has
    a usable average too."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


@torch.no_grad()
def update_ema(pairs: Iterable[tuple[nn.Module, nn.Module]], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for the parameters of each (ema, model) pair; buffers are copied."""
    for ema, model in pairs:
        for ema_p, p in zip(ema.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - decay)
        for ema_b, b in zip(ema.buffers(), model.buffers()):
            ema_b.copy_(b)


def move_ema_out(checkpoint: dict[str, Any], prefixes: Mapping[str, str]) -> None:
    """`state_dict` entries under each EMA prefix move to `ema_state_dict` under the trained network's prefix."""
    state = checkpoint["state_dict"]
    ema = {}
    for ema_prefix, prefix in prefixes.items():
        for key in [k for k in state if k.startswith(ema_prefix)]:
            ema[prefix + key[len(ema_prefix):]] = state.pop(key)
    checkpoint["ema_state_dict"] = ema


def move_ema_in(checkpoint: dict[str, Any], prefixes: Mapping[str, str]) -> None:
    """Inverse of `move_ema_out`; a checkpoint without `ema_state_dict` starts the EMA from the weights."""
    state = checkpoint["state_dict"]
    source = checkpoint.get("ema_state_dict")
    if source is None:
        source = {k: v for k, v in state.items() if k.startswith(tuple(prefixes.values()))}
    for key, value in source.items():
        for ema_prefix, prefix in prefixes.items():
            if key.startswith(prefix):
                state[ema_prefix + key[len(prefix):]] = value
