"""The renderer's public API on small configs: shapes, input checks, caching, batching, training forward."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from imtalker.config import RendererConfig
from imtalker.models.layers import ConvResBlock, conv_batchnorm
from imtalker.models.motion_transfer import attention_head_mean, attention_with_top1
from imtalker.models.renderer import IMTRenderer, SourceState

SMALL = RendererConfig(image_size=128, feature_channels=(8, 8, 16, 16, 32, 32),
                       motion_channels=(8, 16, 16, 32, 32, 32), adapt_dim=32, const_channels=8, num_heads=4)


@pytest.fixture(scope="module")
def model() -> IMTRenderer:
    torch.manual_seed(0)
    return IMTRenderer(SMALL).eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("config", [
    SMALL,
    RendererConfig(image_size=256, feature_channels=(8, 8, 16, 16, 32, 32), motion_channels=(8, 8, 16, 16, 32, 32),
                   adapt_dim=16, num_heads=2),
])
def test_shapes_for_smaller_configs(config):
    torch.manual_seed(0)
    model = IMTRenderer(config).eval()
    size = config.image_size
    source = model.encode_source(torch.rand(1, 3, size, size))
    assert [f.shape[-1] for f in source.features] == [size // 64, size // 32, size // 16, size // 8, size // 4,
                                                      size // 2]
    motion = model.encode_motion(torch.rand(3, 3, size, size))
    assert motion.shape == (3, config.motion_dim)
    frames = model.render(source, motion)
    assert frames.shape == (3, 3, size, size)
    assert frames.min() >= 0 and frames.max() <= 1


@pytest.mark.parametrize("size", [100, 64, 200])
def test_config_rejects_sizes_that_do_not_divide(size):
    with pytest.raises(ValueError, match="multiple of 128"):
        RendererConfig(image_size=size)


def test_config_takes_the_six_published_levels_only():
    for widths in [(8, 8, 16, 16), (8, 8, 16, 16, 32), (8, 8, 8, 16, 16, 32, 32)]:
        with pytest.raises(ValueError, match="feature_channels needs 6 widths"):
            RendererConfig(image_size=128, feature_channels=widths)


def test_config_has_only_the_published_sizes():
    import dataclasses

    assert [f.name for f in dataclasses.fields(RendererConfig)] == [
        "image_size", "feature_channels", "motion_channels", "motion_dim", "adapt_dim", "const_channels", "num_heads",
        "window_size"]
    with pytest.raises(TypeError):
        RendererConfig(motion_skip=True)


def test_config_rejects_widths_not_divisible_by_heads():
    with pytest.raises(ValueError, match="num_heads"):
        RendererConfig(feature_channels=(30, 64, 128, 256, 512, 512))


@pytest.mark.parametrize("bad, message", [
    (torch.rand(3, 128, 128), r"shape \(B, 3, 128, 128\)"),
    (torch.rand(1, 3, 64, 64), r"shape \(B, 3, 128, 128\)"),
    (torch.rand(1, 4, 128, 128), r"shape \(B, 3, 128, 128\)"),
    (torch.randint(0, 255, (1, 3, 128, 128), dtype=torch.uint8), "float tensor"),
    (torch.rand(1, 3, 128, 128) * 255, r"values must lie in \[0, 1\]"),
    (torch.full((1, 3, 128, 128), float("nan")), r"values must lie in \[0, 1\]"),
    (torch.rand(0, 3, 128, 128), "empty batch"),
    ([[0.5]], "torch.Tensor"),
])
def test_image_checks(model, bad, message):
    with pytest.raises(ValueError, match=message):
        model.encode_source(bad)
    with pytest.raises(ValueError, match=message):
        model.encode_motion(bad)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(4, 31), r"\(N, 32\)"),
    (torch.rand(32), r"\(N, 32\)"),
    (torch.rand(0, 32), r"\(N, 32\)"),
    (torch.zeros(2, 32, dtype=torch.long), "finite float"),
    (torch.full((2, 32), float("inf")), "finite float"),
])
def test_motion_checks(model, image, bad, message):
    source = model.encode_source(image)
    with pytest.raises(ValueError, match=message):
        model.render(source, bad)


def test_render_needs_a_source_state(model):
    with pytest.raises(ValueError, match="SourceState"):
        model.render(torch.rand(1, 3, 128, 128), torch.rand(1, 32))


def test_source_batch_must_be_one_or_match(model):
    source = model.encode_source(torch.rand(2, 3, 128, 128))
    assert model.render(source, torch.randn(2, 32)).shape == (2, 3, 128, 128)
    with pytest.raises(ValueError, match="source batch 2"):
        model.render(source, torch.randn(3, 32))


def test_cached_source_equals_full_forward(model, image):
    """encode_source + render is the training forward with the source work done once."""
    driving = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    source = model.encode_source(image)
    cached = model.render(source, model.encode_motion(driving))
    with torch.no_grad():
        full, motion = model(driving, image.expand(2, -1, -1, -1))
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    assert motion.shape == (2, 32)


def test_batch_size_argument_does_not_change_frames(model, image):
    source = model.encode_source(image)
    motion = torch.randn(5, 32, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(model.render(source, motion, batch_size=2), model.render(source, motion),
                               atol=1e-5, rtol=1e-5)


def test_source_state_moves_between_dtypes(model, image):
    source = model.encode_source(image)
    moved = source.to(torch.float64)
    assert isinstance(moved, SourceState)
    assert all(t.dtype == torch.float64 for t in moved.features + moved.keys + moved.pooled)


def test_training_forward_has_gradients(model, image):
    model.train()
    try:
        frame, motion = model(torch.rand(2, 3, 128, 128), image.expand(2, -1, -1, -1))
        (frame.mean() + motion.square().mean()).backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        for prefix in ("dense_feature_encoder.down_blocks.0", "latent_token_encoder.res_blocks.0", "adapt.in_layer",
                       "latent_token_decoder.style_conv_layers.1", "imt.3.block_efc.q_proj", "frame_decoder.final_conv"):
            assert any(name.startswith(prefix) and g is not None and g.abs().sum() > 0 for name, g in grads.items()), prefix
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_training_normalises_over_the_whole_batch_on_cpu(image):
    """The one-frame passes of CPU inference must not reach training, whose BatchNorm uses batch statistics."""
    torch.manual_seed(0)
    model = IMTRenderer(SMALL).train()
    driving, source = torch.rand(4, 3, 128, 128), image.expand(4, -1, -1, -1)
    with torch.no_grad():
        frames, _ = model(driving, source)
        state = model.source_state(source)
        motion = model.latent_token_encoder(driving.contiguous(memory_format=torch.channels_last))
        aligned = model.transfer(state, model.decode_motion(model.adapt_motion(motion, state.identity)))
        whole = model.frame_decoder(aligned, fine_batch=None)
        per_frame = model.frame_decoder(aligned, fine_batch=1)
    torch.testing.assert_close(frames, whole)
    assert (per_frame - whole).abs().max() > 1e-5  # per-frame statistics differ (float noise is ~1e-7)


@pytest.mark.parametrize("training", [False, True])
def test_upsampling_block_equals_upsample_then_convolve(training):
    """The up blocks fold the nearest 2x upsampling into a transposed convolution: the published two steps, to float
    rounding, in eval mode (BatchNorm folded) and in training mode (batch statistics), gradients included."""
    torch.manual_seed(0)
    block = ConvResBlock(16, 8, resample="up").train(training)
    block.norm.norm.running_mean.normal_()
    block.norm.norm.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 16, 10, 12, requires_grad=True)
    folded = conv_batchnorm(x, block.conv1, block.norm.norm, upsample=True)
    two_steps = block.norm(block.conv1(F.interpolate(x, scale_factor=2.0, mode="nearest")))
    assert folded.shape == (3, 8, 20, 24)
    torch.testing.assert_close(folded, two_steps, atol=1e-5, rtol=1e-5)
    (folded_grad,) = torch.autograd.grad(folded.square().sum(), x)
    (two_steps_grad,) = torch.autograd.grad(two_steps.square().sum(), x)
    torch.testing.assert_close(folded_grad, two_steps_grad, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="3x3 convolution with stride 1"):
        conv_batchnorm(x, torch.nn.Conv2d(16, 8, 1), block.norm.norm, upsample=True)


def test_bf16_autocast_runs_close_to_fp32(model, image):
    source = model.encode_source(image)
    motion = torch.randn(2, 32, generator=torch.Generator().manual_seed(6))
    reference = model.render(source, motion)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        frames = model.render(model.encode_source(image), motion)
        mixed = model.render(source, motion)  # a source encoded once in float32, frames under autocast
    assert (frames.float() - reference).abs().mean() < 0.02
    assert (mixed.float() - reference).abs().mean() < 0.02


def test_bf16_weights_render_close_to_fp32(model, image):
    """Weights and activations in bfloat16 end to end: float32 images and latents go in unchanged."""
    motion = torch.randn(2, 32, generator=torch.Generator().manual_seed(6))
    reference = model.render(model.encode_source(image), motion)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    driving = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(8))
    frames = bf16.render(bf16.encode_source(image), motion)
    assert frames.dtype == torch.bfloat16 and bf16.encode_motion(driving).dtype == torch.bfloat16
    assert (frames.float() - reference).abs().mean() < 0.02


@pytest.mark.parametrize("heads", [4, 3])  # the head sum stands in for the mean; 3 heads still divide
@pytest.mark.parametrize("chunk", [1 << 10, 1 << 14, 1 << 30])
def test_chunked_top1_equals_full_attention(chunk, heads):
    """The chunked arg-max never needs the whole map, and chunking changes neither output nor arg-max."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, heads, 256, 8, generator=g) * 3 for _ in range(3))
    out, top1 = attention_with_top1(q, k, v, chunk_elements=chunk)
    probs = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, dim=-1)
    torch.testing.assert_close(out, probs @ v, atol=1e-4, rtol=1e-4)
    assert torch.equal(top1, attention_head_mean(q, k).argmax(dim=-1))


def test_reconstruct_returns_the_forward_outputs_the_source_state_and_the_motion_maps(model, image):
    driving = torch.rand(2, 3, SMALL.image_size, SMALL.image_size, generator=torch.Generator().manual_seed(3))
    source = image.expand(2, -1, -1, -1)
    with torch.no_grad():
        result = model.reconstruct(driving, source)
        expected_frame, expected_motion = model(driving, source)
        expected_state = model.source_state(source)
        expected_maps = model.decode_motion(model.adapt_motion(expected_motion, expected_state.identity))
    torch.testing.assert_close(result.frame, expected_frame)
    torch.testing.assert_close(result.motion, expected_motion)
    torch.testing.assert_close(result.source.keys, expected_state.keys)
    torch.testing.assert_close(result.motion_maps, expected_maps)
