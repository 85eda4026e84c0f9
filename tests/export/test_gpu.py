"""The GPU path: half precision and torch.compile through the pipelines, several live sessions on one GPU.

The CUDA tests are skipped without a GPU; benchmarks/gpu_check.sh runs them on a GPU machine. The compiled networks
are also checked on the CPU, with torch.compile's "eager" backend (no code generation) and with inductor, in the
slow suite (`python -m pytest -m slow tests/export`).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from helpers.tiny_models import GENERATOR, RENDERER, save_tiny_weights
from imtalker.export.compiled import compile_networks
from imtalker.models.generator import MotionGenerator
from imtalker.models.renderer import IMTRenderer
from imtalker.pipelines import AudioDrivenPipeline
from imtalker.sampling import SamplingOptions, sample_motion

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh)")


def render_and_sample(renderer, generator, device="cpu"):
    rng = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 128, 128, generator=rng).to(device)
    features = torch.randn(1, 60, GENERATOR.audio_dim, generator=rng).to(device)
    with torch.inference_mode():
        source = renderer.encode_source(image)
        motion = sample_motion(generator, features, source.motion, options=SamplingOptions(nfe=3, seed=0))
        return renderer.render(source, motion[0, :6]).float().cpu(), motion.float().cpu()


@pytest.mark.slow  # dynamo's trace of the renderer takes about a minute on 2 cores, even without code generation
@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_compiled_networks_give_the_same_frames_and_motion(backend):
    torch.manual_seed(0)
    renderer, generator = IMTRenderer(RENDERER).eval(), MotionGenerator(GENERATOR).eval()
    frames, motion = render_and_sample(renderer, generator)
    compile_networks(renderer, generator, backend=backend)
    compiled_frames, compiled_motion = render_and_sample(renderer, generator)
    torch.testing.assert_close(compiled_frames, frames, atol=1e-4, rtol=0)
    torch.testing.assert_close(compiled_motion, motion, atol=1e-4, rtol=0)


def test_compiling_shared_networks_again_keeps_the_compiled_ones():
    """A second pipeline on a renderer another one compiled (the web UI's tabs) does not wrap it twice."""
    renderer, generator = IMTRenderer(RENDERER).eval(), MotionGenerator(GENERATOR).eval()
    compile_networks(renderer, generator, backend="eager")  # lazy: nothing is traced until the first call
    compiled = renderer.render_latents, generator.fmt.forward
    assert getattr(compiled[0], "__func__", None) is not IMTRenderer.render_latents  # replaced on the instance
    compile_networks(renderer, generator, backend="eager")
    assert renderer.render_latents is compiled[0] and generator.fmt.forward is compiled[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("weights"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_half_precision_pipeline_is_close_to_fp32(weights, dtype, compile):
    audio = (0.3 * np.sin(np.arange(16000) * 0.05)).astype(np.float32), 16000
    portrait = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    options = dict(crop=False, seed=0, nfe=3)
    reference = np.stack(list(AudioDrivenPipeline.from_pretrained(weights, device="cuda").frames(
        portrait, audio, **options)))
    pipe = AudioDrivenPipeline.from_pretrained(weights, device="cuda", dtype=dtype, compile=compile)
    frames = np.stack(list(pipe.frames(portrait, audio, **options)))
    assert frames.shape == reference.shape
    assert psnr(frames, reference) > 35


@cuda
def test_cuda_sessions_sharing_one_pipeline_match_sessions_run_alone(weights):
    from imtalker.pipelines.streaming import StreamingSession

    pipe = AudioDrivenPipeline.from_pretrained(weights, device="cuda")
    portrait = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    source = pipe.prepare_source(portrait, crop=False)
    speech = [(0.3 * np.sin(np.arange(32000) * f)).astype(np.float32) for f in (0.03, 0.05, 0.07)]

    def run(samples):
        session = StreamingSession(pipe, source, seed=0, nfe=3, hop=5, sample_format="f32le")
        frames = [f.image for piece in np.array_split(samples, 10) for f in session.push(piece.tobytes())]
        return np.stack(frames + [f.image for f in session.finish()])

    alone = [run(samples) for samples in speech]
    together = [None] * len(speech)
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, run(speech[i]))) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for a, b in zip(alone, together):
        assert a.shape == b.shape and psnr(a, b) > 40
