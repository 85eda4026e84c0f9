"""Which renderer class a config builds: the published network or the demo variant."""

from __future__ import annotations

from ..config import RendererConfig
from .demo_renderer import DemoRenderer
from .renderer import IMTRenderer

RENDERER_CLASSES: dict[str, type[IMTRenderer]] = {"published": IMTRenderer, "demo": DemoRenderer}


def build_renderer(config: RendererConfig | None = None) -> IMTRenderer:
    """The renderer of `config`'s variant (`config.variant`), untrained; None is the published one."""
    config = config or RendererConfig()
    return RENDERER_CLASSES[config.variant](config)
