"""The published-size renderer exported to ONNX and run in onnxruntime against the golden numbers of the published
code (tests/data/reference): source state, motion latent, frame and the finest attention's arg-max.

Slow (a 124M-parameter trace and two large onnxruntime sessions): `python -m pytest -m slow tests/export`, and
`python benchmarks/bench_onnx.py` runs it before measuring.
"""

from __future__ import annotations

import pytest
import torch

from imtalker.config import RendererConfig
from imtalker.models.renderer import IMTRenderer

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from imtalker.export.runtime import onnxruntime_networks  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def published(renderer_reference, tmp_path_factory):
    ref = renderer_reference
    state = IMTRenderer(RendererConfig()).state_dict()  # structural buffers come from the architecture
    state.update(ref.state_dict())
    renderer = IMTRenderer(RendererConfig())
    renderer.load_state_dict(state)
    renderer.eval().requires_grad_(False)
    onnx_renderer = onnxruntime_networks(renderer, folder=tmp_path_factory.mktemp("onnx-512")).renderer
    return renderer, onnx_renderer


def test_published_size_graphs_match_golden_and_pytorch(published, renderer_reference):
    ref = renderer_reference
    renderer, onnx_renderer = published
    source_image = ref.input("x_reference", (1, 3, 512, 512), 0.5, 0.25).clamp(0, 1)
    driving_image = ref.input("x_current", (1, 3, 512, 512), 0.5, 0.25).clamp(0, 1)
    source = onnx_renderer.encode_source(source_image)
    for level in range(6):
        ref.check(f"app_features.{level}", source.features[level])
    ref.check("app_identity", source.identity)
    ref.check("motion_ref", source.motion)
    motion = onnx_renderer.encode_motion(driving_image)
    ref.check("motion_cur", motion)
    frames, top1 = onnx_renderer.render_with_top1(source, motion)
    ref.check("frame", frames)
    assert top1[0].tolist() == ref.expected["coarse_top1_index"].tolist()

    # the same at batch 2 (a dynamic axis) against the PyTorch renderer, 1e-4
    torch_source = renderer.encode_source(source_image)
    latents = torch.cat([motion, torch_source.motion])
    with torch.inference_mode():
        expected = renderer.render(torch_source, latents)
    got, top1 = onnx_renderer.render_with_top1(source, latents)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert top1[0].tolist() == ref.expected["coarse_top1_index"].tolist()
