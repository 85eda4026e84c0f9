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
    `torch.compile` takes them, e.g. mode="max-autotune" on a GPU). A network compiled already (one that pipelines
    share) is left as it is."""
    if not is_compiled(renderer, "render_latents"):
        renderer.render_latents = torch.compile(renderer.render_latents, **options)
    if generator is not None and not is_compiled(generator.fmt, "forward"):
        generator.fmt.forward = torch.compile(generator.fmt.forward, **options)


def is_compiled(module: torch.nn.Module, method: str) -> bool:
    """Whether `compile_networks` replaced `method` on this instance (the class's method is never replaced)."""
    return method in vars(module)
