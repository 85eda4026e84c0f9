"""The demo renderer variant (`imtalker.models.demo_renderer`): its config, its keys, and what each of its changes to
the published renderer does from the first step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import imtalker
from imtalker.config import DemoRendererConfig, RendererConfig
from imtalker.models.demo_renderer import (CompactMotionEncoder, DemoRenderer, DemoSourceState, WARP_LEVEL,
                                           gather_neighbours, locality_bias, neighbourhood,
                                           neighbourhood_attention_with_top1, neighbourhood_radius)
from imtalker.models.motion_transfer import attention_with_top1
from imtalker.models.renderer import NUM_COARSE_LEVELS, IMTRenderer
from imtalker.weights import save_model

DEMO = DemoRendererConfig(image_size=128, feature_channels=(8, 8, 16, 16, 32), motion_channels=(8, 16, 16, 32, 32, 32),
                          adapt_dim=32, const_channels=8, num_heads=4, warp_hidden=16, warp_fields=4)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def model() -> DemoRenderer:
    torch.manual_seed(0)
    return DemoRenderer(DEMO).eval()


def without_correction(model: DemoRenderer) -> DemoRenderer:
    """A copy whose synthesis network paints no correction: its frames are exactly the (clamped) base images."""
    copy = DemoRenderer(model.config).eval()
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        copy.frame_decoder.final_conv[1].weight.zero_()
    return copy


def test_config_allows_five_levels_and_needs_a_positive_locality():
    assert DemoRendererConfig(image_size=128, feature_channels=(8, 8, 16, 16, 32), num_heads=4).num_levels == 5
    assert DemoRendererConfig().feature_channels == RendererConfig().feature_channels  # published sizes by default
    with pytest.raises(ValueError, match="multiple of 64"):
        DemoRendererConfig(image_size=96, feature_channels=(8, 8, 16, 16, 32), num_heads=4)
    with pytest.raises(ValueError, match="feature_channels needs 6 or 5 widths"):
        DemoRendererConfig(image_size=128, feature_channels=(8, 8, 16, 16), num_heads=4)
    with pytest.raises(ValueError, match="attention_locality"):
        DemoRendererConfig(attention_locality=0.0)
    with pytest.raises(ValueError, match="DemoRendererConfig"):
        DemoRenderer(RendererConfig())


def test_five_levels_give_appearance_on_a_grid_twice_as_fine(model):
    """The layout without the coarsest level: cross-attention down to size / 4 and one resampled level."""
    assert DEMO.coarse_grid == 32 == 128 // 4 and [m.ratio for m in model.imt[4:]] == [2]
    source = model.encode_source(torch.rand(1, 3, 128, 128))
    assert [f.shape[-1] for f in source.features] == [4, 8, 16, 32, 64]
    assert len(model.frame_decoder.upconv_blocks) == 4 and model.frame_decoder.fine_stage == 2
    frames = model.render(source, torch.randn(3, DEMO.motion_dim))
    assert frames.shape == (3, 3, 128, 128) and torch.isfinite(frames).all()


def test_keys_are_the_published_ones_with_the_compact_motion_encoder_and_the_demo_modules():
    six_levels = dict(image_size=128, feature_channels=(8, 8, 16, 16, 32, 32), motion_channels=DEMO.motion_channels,
                      adapt_dim=32, const_channels=8, num_heads=4)
    published = set(IMTRenderer(RendererConfig(**six_levels)).state_dict())
    demo = set(DemoRenderer(DemoRendererConfig(**six_levels)).state_dict())
    groups = lambda keys: {k.split(".")[0] for k in keys}
    assert groups(demo - published) == {"latent_token_encoder", "motion_skip", "motion_modulation", "source_warp"}
    assert groups(published - demo) == {"latent_token_encoder"}


def test_compact_motion_encoder_keeps_where_the_face_is(model, image):
    assert isinstance(model.latent_token_encoder, CompactMotionEncoder)
    assert len(model.latent_token_encoder.convs) == 5  # 128 px -> a 4 x 4 map, flattened
    frames = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    latents = model.encode_motion(frames)
    assert latents.shape == (3, DEMO.motion_dim) and latents.std(0).min() > 0
    torch.testing.assert_close(model.encode_motion(frames[1:2]), latents[1:2], atol=1e-5, rtol=1e-5)
    # the flattened map keeps position: the same face moved by 16 pixels gets another latent
    assert (model.encode_motion(torch.roll(image, 16, dims=3)) - model.encode_motion(image)).abs().max() > 1e-3


def test_locality_prior_makes_an_untrained_renderer_attend_to_its_own_cell(image):
    """A sharp prior: every driving cell attends to its own source cell, whatever the motion; the chunked inference
    path, the shared-source path and the training path agree."""
    bias = locality_bias(3, sigma=1.0)
    assert bias.shape == (9, 9) and bias[4, 4] == 0 and bias[0, 8] == pytest.approx(-4.0)  # corners: d^2 = 8
    torch.manual_seed(0)
    model = DemoRenderer(dataclasses.replace(DEMO, attention_locality=0.05)).eval()
    source = model.encode_source(image)
    motion = torch.randn(3, DEMO.motion_dim)
    with torch.no_grad():
        maps = model.decode_motion(model.adapt_motion(motion, source.identity))
        grid = maps[3].shape[-1]
        _, top1 = model.imt[3].block_efc(maps[3], source.keys[3], source.values[3], with_top1=True,
                                         bias=locality_bias(grid, 0.05))
        assert torch.equal(top1, torch.arange(grid * grid).expand(3, -1))
        per_frame = torch.cat([model.render_latents(source, m[None]).frame for m in motion])
        with torch.enable_grad():  # the training path: fused attention with the prior as its mask
            trained = model.render_latents(model.source_state(image.expand(3, -1, -1, -1)), motion.requires_grad_())
    torch.testing.assert_close(model.render(source, motion), per_frame)
    torch.testing.assert_close(trained.frame.detach(), per_frame, atol=1e-4, rtol=1e-4)


def test_motion_skip_adds_the_motion_maps_departure_to_the_attention(model, image):
    source = model.source_state(image)
    motion = torch.randn(2, DEMO.motion_dim, generator=torch.Generator().manual_seed(1), requires_grad=True)
    maps = model.decode_motion(model.adapt_motion(motion, source.identity))
    aligned = model.transfer(source, maps)
    with torch.no_grad():
        for level in range(4):
            bias = locality_bias(maps[level].shape[-1], DEMO.attention_locality)
            plain = model.imt[level].block_efc(maps[level], source.keys[level], source.values[level], bias=bias)
            torch.testing.assert_close(aligned[level], plain + model.motion_skip[level](maps[level],
                                                                                     source.motion_maps[level]))
    # with queries that ignore the motion the attention passes nothing back; the skip still does
    blind = DemoRenderer(DEMO).eval()
    blind.load_state_dict(model.state_dict())
    for level in blind.imt[:4]:
        torch.nn.init.zeros_(level.block_efc.q_proj.weight)
        torch.nn.init.zeros_(level.block_efc.q_proj.bias)
    blind_source = blind.source_state(image)
    coarse = blind.transfer(blind_source, blind.decode_motion(blind.adapt_motion(motion, blind_source.identity)))[:4]
    sum(a.square().sum() for a in coarse).backward()
    assert motion.grad is not None and motion.grad.abs().sum() > 0


def test_motion_modulation_starts_at_zero_and_leaves_the_source_latent_unmodulated(image):
    torch.manual_seed(0)
    model = DemoRenderer(DEMO).eval()
    source = model.encode_source(image)
    latents = torch.randn(3, DEMO.motion_dim)
    assert all(m.abs().max() == 0 for m in model.motion_modulation(latents, source.motion))  # zero-initialised
    unmodulated_own = model.render(source, source.motion)
    unmodulated = model.render(source, latents)
    with torch.no_grad():
        for layer in model.motion_modulation.stages:
            layer.weight.normal_(0, 1.0)
    assert (model.render(source, latents) - unmodulated).abs().max() > 1e-3
    torch.testing.assert_close(model.render(source, source.motion), unmodulated_own)  # departure 0: no modulation
    # training keeps a running scale of the departures and trains the maps
    model.train()
    for layer in model.motion_modulation.stages:
        torch.nn.init.zeros_(layer.weight)
    frames = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    fake, _ = model(frames, image.expand(3, -1, -1, -1))
    (fake - frames).abs().mean().backward()
    assert model.motion_modulation.stages[-1].weight.grad.abs().sum() > 0
    assert not torch.allclose(model.motion_modulation.departure_rms, torch.ones(DEMO.motion_dim))


def test_an_untrained_renderer_returns_its_source_and_the_warp_moves_it_by_a_smooth_flow(model, image):
    copy = without_correction(model)
    source = copy.encode_source(image)
    assert isinstance(source, DemoSourceState) and torch.equal(source.image, image)
    clamped = image.clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(copy.render(source, torch.randn(2, DEMO.motion_dim)), clamped.expand(2, -1, -1, -1),
                               atol=1e-5, rtol=0)
    assert (model.render(model.encode_source(image), torch.randn(2, DEMO.motion_dim)) - image).abs().max() < 0.05

    # every field 3 pixels to the right everywhere, all coefficients 1 / fields for a departure of one unit in the
    # first latent dimension: each output pixel samples the source 3 pixels further right
    warp = copy.source_warp
    with torch.no_grad():
        warp.field_head[-1].bias.view(warp.num_fields, 2)[:, 0] = 3 * 2 / 128
        warp.coefficients[0].weight.zero_()
        warp.coefficients[0].weight[0, 0] = 1.0 / warp.num_fields
        warp.coefficients[-1].weight.zero_()
        warp.coefficients[-1].weight[:, 0] = 1.0
    source = copy.encode_source(image)  # the fields are the source's: encoded anew
    torch.testing.assert_close(copy.render(source, source.motion), clamped, atol=1e-5, rtol=0)  # no departure
    pushed = source.motion.clone()
    pushed[0, 0] += warp.departure_rms[0]
    moved = copy.render(source, pushed)
    torch.testing.assert_close(moved[:, :, :, :-3], clamped[..., 3:], atol=1e-4, rtol=0)


def test_warp_fields_are_computed_once_per_source(model, image):
    calls = []
    hook = model.source_warp.field_head.register_forward_hook(lambda *args: calls.append(1))
    try:
        source = model.encode_source(image)
        assert len(calls) == 1
        model.render(source, torch.randn(5, DEMO.motion_dim), batch_size=2)
        assert len(calls) == 1
    finally:
        hook.remove()
    expected = model.source_warp.source_fields(source.motion_maps[WARP_LEVEL], source.features[WARP_LEVEL])
    assert torch.equal(source.warp_fields, expected)
    moved = source.to(torch.float64)
    assert isinstance(moved, DemoSourceState) and moved.warp_fields.dtype == moved.image.dtype == torch.float64


def test_training_reconstruction_has_the_base_and_flow_and_gradients_reach_the_warp(image):
    torch.manual_seed(0)
    model = DemoRenderer(DEMO).train()
    frames = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    result = model.reconstruct(frames, image.expand(2, -1, -1, -1))
    grid = 128 // 2 ** (DEMO.num_levels - WARP_LEVEL)  # the flow's grid: the third coarse level
    assert result.flow.shape == (2, 2, grid, grid) and result.base.shape == (2, 3, 128, 128)
    (result.base - frames).abs().mean().backward()
    assert model.source_warp.field_head[-1].weight.grad.abs().sum() > 0
    latent = torch.randn(2, DEMO.motion_dim, requires_grad=True)
    model.zero_grad()
    model.render_latents(model.source_state(image.expand(2, -1, -1, -1)), latent).frame.sum().backward()
    # the small initial correction passes gradients back: a zero layer would leave the decoder untrained
    assert model.frame_decoder.resblocks[-1].conv1.weight.grad.abs().sum() > 0
    assert latent.grad.abs().sum() > 0


def test_batching_does_not_change_frames(model, image):
    source = model.encode_source(image)
    motion = torch.randn(5, DEMO.motion_dim, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(model.render(source, motion, batch_size=2), model.render(source, motion),
                               atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        full, _ = model(image.expand(2, -1, -1, -1), image.expand(2, -1, -1, -1))
    torch.testing.assert_close(model.render(source, model.encode_motion(image).expand(2, -1)), full, atol=1e-5,
                               rtol=1e-5)


def test_saved_file_names_the_variant_and_loads_as_a_demo_renderer(model, image, tmp_path):
    path = save_model(model, tmp_path / "renderer.safetensors")
    loaded = imtalker.load_renderer(path)
    assert type(loaded) is DemoRenderer and loaded.config == DEMO
    latents = torch.randn(3, DEMO.motion_dim)
    torch.testing.assert_close(loaded.render(loaded.encode_source(image), latents),
                               model.render(model.encode_source(image), latents))


def test_neighbourhood_attention_is_the_full_attention_at_inference(model, image):
    """At inference the last coarse level attends over each query's neighbourhood (the source state holds them):
    the same output, the same arg-max cells and the same frames as the full attention, which the module runs."""
    source = model.encode_source(image)
    grid = model.config.coarse_grid
    side = 2 * neighbourhood_radius(grid, DEMO.attention_locality) + 1
    assert source.neighbour_keys.shape == source.neighbour_values.shape == (1, DEMO.num_heads, grid * grid,
                                                                           side * side, source.keys[-1].shape[-1])
    assert side * side < grid * grid
    full = dataclasses.replace(source, neighbour_keys=None, neighbour_values=None)
    motion = torch.randn(4, DEMO.motion_dim, generator=torch.Generator().manual_seed(7))
    attention = model.imt[NUM_COARSE_LEVELS - 1].block_efc
    calls = []
    hook = attention.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.inference_mode():
            driving = model.decode_motion(model.adapt_motion(motion, source.identity))[NUM_COARSE_LEVELS - 1]
            bias = locality_bias(grid, DEMO.attention_locality)
            out, top1 = model.attend_with_top1(attention, driving, source, bias)
            assert calls == []  # the neighbourhood path ran
            expected_out, expected_top1 = model.attend_with_top1(attention, driving, full, bias)
            assert calls == [1]
    finally:
        hook.remove()
    assert torch.equal(top1, expected_top1)
    torch.testing.assert_close(out, expected_out, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.render(source, motion), model.render(full, motion), atol=1e-6, rtol=0)


def test_neighbourhood_attention_declines_when_far_keys_could_matter():
    """Small scores: the far keys' bound is negligible and the result is the full attention's. Scores large enough
    to outweigh the prior beyond the neighbourhood: None, so the caller runs the full attention."""
    grid, sigma, heads, dim = 8, 0.5, 2, 4
    radius = neighbourhood_radius(grid, sigma)
    index, inside, distance = neighbourhood(grid, radius)
    assert index.shape == inside.shape == (grid * grid, (2 * radius + 1) ** 2) and distance.max() == 2 * radius ** 2
    assert not inside[0, 0] and inside[0, (2 * radius + 1) ** 2 // 2]  # a corner cell: its own cell only on the grid
    rng = torch.Generator().manual_seed(0)
    q = 0.1 * torch.randn(3, heads, grid * grid, dim, generator=rng)
    k, v = (torch.randn(1, heads, grid * grid, dim, generator=rng) for _ in range(2))
    neighbours = gather_neighbours(k, index), gather_neighbours(v, index)
    out, top1 = neighbourhood_attention_with_top1(q, k, *neighbours, grid, sigma)
    expected_out, expected_top1 = attention_with_top1(q, k, v, bias=locality_bias(grid, sigma))
    assert torch.equal(top1, expected_top1)
    torch.testing.assert_close(out, expected_out, atol=1e-6, rtol=0)
    assert neighbourhood_attention_with_top1(1e3 * q, k, *neighbours, grid, sigma) is None


def test_training_source_states_have_no_neighbourhoods(image):
    torch.manual_seed(0)
    model = DemoRenderer(DEMO).train()
    assert model.source_state(image).neighbour_keys is None
    with torch.no_grad():
        assert model.source_state(image.expand(2, -1, -1, -1)).neighbour_keys is None  # one source only
