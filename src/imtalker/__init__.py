"""imtalker: talking-face video with implicit motion transfer (IMTalker, arXiv 2511.22167)."""

from .config import DiscriminatorConfig, GeneratorConfig, RendererConfig
from .weights import CheckpointError, load_audio_encoder, load_generator, load_renderer, save_model

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DiscriminatorConfig",
    "GeneratorConfig",
    "RendererConfig",
    "load_audio_encoder",
    "load_generator",
    "load_renderer",
    "save_model",
    "__version__",
]
