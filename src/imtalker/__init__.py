"""imtalker: talking-face video with implicit motion transfer (IMTalker, arXiv 2511.22167).

    import imtalker
    pipe = imtalker.AudioDrivenPipeline.from_pretrained("weights/")      # or the bundled demo model
    pipe.to_file("talking.mp4", "face.jpg", "speech.wav", seed=0)

The layers, from input to output: `io` (audio, video, images), `preprocess` (face crop, paste-back, tracks), audio
features (`models.audio`, `models.mel`, `features`), `sampling` (motion latents from the generator), `models.renderer`
(frames), `pipelines` (the whole path, offline and streaming); `training`, `evaluation` and `apps` (CLI, UI, server)
sit on top.
"""

from importlib.metadata import PackageNotFoundError, version

from .config import DemoRendererConfig, DiscriminatorConfig, GeneratorConfig, RendererConfig
from .errors import CheckpointError, IMTalkerError, InputError, NoFaceError

# The weights loaders import torch and the pipelines transformers (wav2vec2), seconds together; they load on first
# use so that `imtalker --help`, a CLI call with a bad argument and the light modules stay quick.
_LAZY = {
    "bundled_demo_model": "weights",
    "load_audio_encoder": "weights",
    "load_generator": "weights",
    "load_renderer": "weights",
    "resolve_weights": "weights",
    "save_model": "weights",
    "AudioDrivenPipeline": "pipelines",
    "PreparedSource": "pipelines",
    "VideoDrivenPipeline": "pipelines",
    "StreamingSession": "pipelines.streaming",
    "SamplingOptions": "sampling",
    "sample_motion": "sampling",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'imtalker' has no attribute {name!r}")


try:
    __version__ = version("imtalker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AudioDrivenPipeline",
    "CheckpointError",
    "DemoRendererConfig",
    "DiscriminatorConfig",
    "GeneratorConfig",
    "IMTalkerError",
    "InputError",
    "NoFaceError",
    "PreparedSource",
    "RendererConfig",
    "SamplingOptions",
    "StreamingSession",
    "VideoDrivenPipeline",
    "bundled_demo_model",
    "load_audio_encoder",
    "load_generator",
    "load_renderer",
    "resolve_weights",
    "sample_motion",
    "save_model",
    "__version__",
]
