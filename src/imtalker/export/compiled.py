"""`torch.compile` of the per-frame work (docs/deploy.md): the renderer's `render_latents` (motion decoding,
transfer, synthesis) and the generator's velocity step, the two places every frame's time goes.

The compiled callables replace the methods on the instances only, so the modules' state dicts, weights digests and
checkpoints are unchanged. The first call for each input shape compiles (tens of seconds); the pipelines' last,
shorter batch of a file compiles once more.
"""

from __future__ import annotations

import torch

from ..models.generator import MotionGenerator
from ..models.renderer import IMTRenderer


def compile_networks(renderer: IMTRenderer, generator: MotionGenerator | None = None, **options) -> None:
    """Compile, in place, the renderer's per-frame work and the generator's velocity step (`options` as
    `torch.compile` takes them, e.g. mode="max-autotune" on a GPU)."""
    renderer.render_latents = torch.compile(renderer.render_latents, **options)
    if generator is not None:
        generator.fmt.forward = torch.compile(generator.fmt.forward, **options)
