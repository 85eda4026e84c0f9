"""The renderer's public API on small configs: shapes, input checks, caching, batching, training forward."""

from __future__ import annotations

import pytest
import torch

from imtalker.config import RendererConfig
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


def test_five_levels_give_appearance_on_a_grid_twice_as_fine():
    """The layout without the coarsest level: cross-attention down to size / 4 and one resampled level."""
    torch.manual_seed(0)
    config = RendererConfig(image_size=64, feature_channels=(8, 8, 16, 16, 32), motion_channels=(8, 8, 16, 16, 32, 32),
                            adapt_dim=16, const_channels=8, num_heads=4)
    model = IMTRenderer(config).eval()
    assert config.coarse_grid == 16 == 64 // 4 and [m.ratio for m in model.imt[4:]] == [2]
    source = model.encode_source(torch.rand(1, 3, 64, 64))
    assert [f.shape[-1] for f in source.features] == [2, 4, 8, 16, 32]
    assert len(model.frame_decoder.upconv_blocks) == 4 and model.frame_decoder.fine_stage == 2
    frames = model.render(source, torch.randn(3, config.motion_dim))
    assert frames.shape == (3, 3, 64, 64) and torch.isfinite(frames).all()
    with torch.no_grad():
        logits = model.self_attention_logits(model._encode_source(torch.rand(2, 3, 64, 64)))
    assert logits.shape == (2, 4, 16 * 16, 16 * 16)


def test_motion_norm_adds_batchnorm_to_the_motion_encoder_only_when_asked(tmp_path):
    import dataclasses

    import imtalker
    from imtalker.weights import save_model

    assert not any("norms" in k for k in IMTRenderer(SMALL).state_dict())  # the published layout
    config = dataclasses.replace(SMALL, motion_norm=True)
    torch.manual_seed(0)
    model = IMTRenderer(config)
    norms = {k for k in model.state_dict() if k.startswith("latent_token_encoder.norms.")}
    assert len(norms) == 5 * len(SMALL.motion_channels)  # weight, bias, running mean/var, batch count per width
    model.train()
    model.latent_token_encoder(torch.rand(4, 3, 128, 128))  # moves the running statistics
    model.eval()
    images = torch.rand(2, 3, 128, 128)
    loaded = imtalker.load_renderer(save_model(model, tmp_path / "renderer.safetensors"))
    assert loaded.config.motion_norm
    torch.testing.assert_close(loaded.encode_motion(images), model.encode_motion(images))


@pytest.mark.parametrize("size", [100, 64, 200])
def test_config_rejects_sizes_that_do_not_divide(size):
    with pytest.raises(ValueError, match="multiple of 128"):
        RendererConfig(image_size=size)


def test_config_takes_five_or_six_levels_only():
    with pytest.raises(ValueError, match="multiple of 64"):
        RendererConfig(image_size=96, feature_channels=(8, 8, 16, 16, 32))
    for widths in [(8, 8, 16, 16), (8, 8, 8, 16, 16, 32, 32)]:
        with pytest.raises(ValueError, match="feature_channels needs 6 widths"):
            RendererConfig(image_size=128, feature_channels=widths)


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
        state = model._encode_source(source)
        motion = model.latent_token_encoder(driving.contiguous(memory_format=torch.channels_last))
        aligned = model.transfer(state, model.decode_motion(model.adapt_motion(motion, state.identity)))
        whole = model.frame_decoder(aligned, fine_batch=None)
        per_frame = model.frame_decoder(aligned, fine_batch=1)
    torch.testing.assert_close(frames, whole)
    assert (per_frame - whole).abs().max() > 1e-5  # per-frame statistics differ (float noise is ~1e-7)


def test_self_attention_logits_score_every_source_position_against_every_other(model, image):
    state = model._encode_source(image.expand(2, -1, -1, -1))
    logits = model.self_attention_logits(state)
    n = (SMALL.image_size // 8) ** 2  # the finest cross-attention grid
    assert logits.shape == (2, SMALL.num_heads, n, n) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits[0], logits[1])


def test_bf16_autocast_runs_close_to_fp32(model, image):
    source = model.encode_source(image)
    motion = torch.randn(2, 32, generator=torch.Generator().manual_seed(6))
    reference = model.render(source, motion)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        frames = model.render(model.encode_source(image), motion)
    assert (frames.float() - reference).abs().mean() < 0.02


@pytest.mark.parametrize("chunk", [1 << 10, 1 << 14, 1 << 30])
def test_chunked_top1_equals_full_attention(chunk):
    """The chunked arg-max never needs the whole map, and chunking changes neither output nor arg-max."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 4, 256, 8, generator=g) * 3 for _ in range(3))
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
        expected_state = model._encode_source(source)
        expected_maps = model.decode_motion(model.adapt_motion(expected_motion, expected_state.identity))
    torch.testing.assert_close(result.frame, expected_frame)
    torch.testing.assert_close(result.motion, expected_motion)
    torch.testing.assert_close(model.self_attention_logits(result.source),
                               model.self_attention_logits(expected_state))
    torch.testing.assert_close(result.motion_maps, expected_maps)


def test_top1_gradient_leaves_frames_alone_and_lets_the_fine_levels_train_the_motion(image):
    torch.manual_seed(0)
    model = IMTRenderer(SMALL).eval()
    with torch.no_grad():
        source = model._encode_source(image)

    def fine_levels(switch: bool):
        model.top1_gradient = switch
        motion = torch.randn(2, SMALL.motion_dim, generator=torch.Generator().manual_seed(1), requires_grad=True)
        maps = model.decode_motion(model.adapt_motion(motion, source.identity))
        aligned = model.transfer(source, maps)[len(model.imt) - len(model.fine_levels):]
        return motion, aligned, model._render(source, motion)

    motion_off, fine_off, frames_off = fine_levels(False)
    motion_on, fine_on, frames_on = fine_levels(True)
    for a, b in zip(fine_off, fine_on):
        torch.testing.assert_close(a, b)  # the arg-max blocks, as published
    torch.testing.assert_close(frames_off, frames_on)
    assert not any(f.requires_grad for f in fine_off)  # the arg-max passes nothing back to the motion
    sum(f.square().sum() for f in fine_on).backward()
    assert motion_on.grad is not None and motion_on.grad.abs().sum() > 0



def test_motion_skip_feeds_the_driving_motion_maps_to_the_decoder(image, tmp_path):
    """Off by default (the published keys); on, the frame reads the motion maps directly, so the latent gets a gradient
    even where the attention passes none, and the extra weights round-trip through a saved file."""
    import dataclasses

    import imtalker
    from imtalker.weights import save_model

    assert not any(k.startswith("motion_skip.") for k in IMTRenderer(SMALL).state_dict())
    config = dataclasses.replace(SMALL, motion_skip=True)
    torch.manual_seed(0)
    model = IMTRenderer(config).eval()
    assert sorted({k.split(".")[1] for k in model.state_dict() if k.startswith("motion_skip.")}) == ["0", "1", "2", "3"]
    with torch.no_grad():
        source = model._encode_source(image)
    motion = torch.randn(2, config.motion_dim, generator=torch.Generator().manual_seed(1), requires_grad=True)
    maps = model.decode_motion(model.adapt_motion(motion, source.identity))
    with torch.no_grad():
        plain = [level.block_efc(m, k, v) for level, m, k, v in zip(model.imt, maps, source.keys, source.values)]
    aligned = model.transfer(source, maps)
    for level, (with_skip, without) in enumerate(zip(aligned, plain)):
        torch.testing.assert_close(with_skip, without + model.motion_skip[level](maps[level], source.motion_maps[level]))
    # the skip reads the departure from the source's own motion: none for the source itself
    own = model.transfer(source, source.motion_maps)
    torch.testing.assert_close(own[0], model.imt[0].block_efc(source.motion_maps[0], source.keys[0], source.values[0])
                               + model.motion_skip[0].proj(model.motion_skip[0].norm(torch.zeros_like(maps[0][:1]))))
    # with queries that ignore the motion the attention is uniform and passes nothing back; the frame still follows
    # the latent through the skip path
    def blind_frames(skip: bool) -> torch.Tensor:
        blind = IMTRenderer(dataclasses.replace(config, motion_skip=skip)).eval()
        blind.load_state_dict(model.state_dict(), strict=skip)
        for level in blind.imt[:4]:
            torch.nn.init.zeros_(level.block_efc.q_proj.weight)
            torch.nn.init.zeros_(level.block_efc.q_proj.bias)
        with torch.no_grad():
            blind_source = blind._encode_source(image)
        return blind._render(blind_source, motion)

    without = blind_frames(False)
    torch.testing.assert_close(without[0], without[1], rtol=0, atol=0)  # two latents, one frame
    frames = blind_frames(True)
    assert (frames[0] - frames[1]).abs().max() > 1e-6
    frames.sum().backward()
    assert motion.grad is not None and motion.grad.abs().sum() > 0
    latents = torch.randn(3, config.motion_dim)
    loaded = imtalker.load_renderer(save_model(model, tmp_path / "renderer.safetensors"))
    assert loaded.config.motion_skip
    torch.testing.assert_close(loaded.render(loaded.encode_source(image), latents),
                               model.render(model.encode_source(image), latents))


def test_attention_locality_makes_an_untrained_renderer_copy_its_source(image):
    """A sharp prior: every driving cell attends to its own source cell, whatever the motion; the chunked inference
    path, the shared-source path and the training path agree."""
    import dataclasses

    from imtalker.models.motion_transfer import locality_bias, split_heads, to_tokens

    bias = locality_bias(3, sigma=1.0)
    assert bias.shape == (9, 9) and bias[4, 4] == 0 and bias[0, 8] == pytest.approx(-4.0)  # corners: d^2 = 8
    assert IMTRenderer(SMALL).imt[0].block_efc.score_bias(4, 4, image) is None  # published: no prior
    torch.manual_seed(0)
    model = IMTRenderer(dataclasses.replace(SMALL, attention_locality=0.05)).eval()
    source = model.encode_source(image)
    motion = torch.randn(3, SMALL.motion_dim)
    with torch.no_grad():
        maps = model.decode_motion(model.adapt_motion(motion, source.identity))
        level = model.imt[3].block_efc
        out, top1 = level(maps[3], source.keys[3], source.values[3], with_top1=True)
        grid = maps[3].shape[-1]
        assert torch.equal(top1, torch.arange(grid * grid).expand(3, -1))
        values = level.proj(to_tokens(source.features[3]) @ level.v_proj.weight.T + level.v_proj.bias)
        torch.testing.assert_close(out, values.transpose(1, 2).reshape(1, -1, grid, grid).expand(3, -1, -1, -1))
        logits = model.attention_logits(source, maps)
        assert torch.equal(logits.argmax(-1), torch.arange(grid * grid).expand(3, SMALL.num_heads, -1))
        per_frame = torch.cat([model._render(source, m[None]) for m in motion])
        with torch.enable_grad():  # the training path: fused attention with the prior as its mask
            trained = model._render(model._encode_source(image.expand(3, -1, -1, -1)), motion.requires_grad_())
    torch.testing.assert_close(model.render(source, motion), per_frame)
    torch.testing.assert_close(trained.detach(), per_frame, atol=1e-4, rtol=1e-4)


def test_source_skip_starts_as_the_block_resampled_source_and_learns_corrections(image, tmp_path):
    """Off by default (published output layer); on, an untrained renderer whose arg-max is the identity returns nearly
    its source (exactly, without the correction), an arg-max that points elsewhere moves whole pixel blocks, and the
    frame has gradients for the decoder and the motion from the first step."""
    import dataclasses

    import imtalker
    from imtalker.weights import save_model

    assert IMTRenderer(SMALL).encode_source(image).pixels is None
    config = dataclasses.replace(SMALL, source_skip=True, attention_locality=0.05)
    torch.manual_seed(0)
    model = IMTRenderer(config).eval()
    assert set(model.state_dict()) == set(IMTRenderer(SMALL).state_dict())  # no new weights
    source = model.encode_source(image)
    grid, cell = config.coarse_grid, 128 // config.coarse_grid
    assert source.pixels.shape == (1, grid * grid, 3 * cell * cell)
    motion = torch.randn(2, config.motion_dim)
    assert (model.render(source, motion) - image).abs().max() < 0.05  # a small correction from the start
    correction = model.frame_decoder.final_conv[1]
    kept = correction.weight.detach().clone()
    with torch.no_grad():
        correction.weight.zero_()  # no correction: exactly the source's pixels
    frames = model.render(source, motion)
    torch.testing.assert_close(frames, image.clamp(1e-3, 1 - 1e-3).expand(2, -1, -1, -1), atol=1e-5, rtol=0)

    with torch.no_grad():
        maps = model.decode_motion(model.adapt_motion(motion, source.identity))
        _, top1 = model.imt[3].block_efc(maps[3], source.keys[3], source.values[3], with_top1=True)
    assert torch.equal(top1, torch.arange(grid * grid).expand(2, -1))

    class LeftNeighbourTop1(torch.nn.Module):  # each cell's arg-max becomes its left neighbour's
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, with_top1=False):
            if not with_top1:
                return self.inner(*args)
            out, top1 = self.inner(*args, with_top1=True)
            return out, torch.roll(top1.view(-1, grid, grid), 1, dims=2).flatten(1)

    attention = model.imt[3].block_efc
    model.imt[3].block_efc = LeftNeighbourTop1(attention)
    moved = model.render(source, motion)
    model.imt[3].block_efc = attention
    with torch.no_grad():
        correction.weight.copy_(kept)
    expected = torch.roll(image, cell, dims=3).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(moved[0], expected[0], atol=1e-5, rtol=0)

    model.train()
    latent = motion.clone().requires_grad_()
    trained = model._render(model._encode_source(image.expand(2, -1, -1, -1)), latent)
    trained.sum().backward()
    # the small initial correction passes gradients back: a zero layer would leave the decoder and motion untrained
    assert model.frame_decoder.resblocks[-1].conv1.weight.grad.abs().sum() > 0
    assert latent.grad.abs().sum() > 0
    latents = torch.randn(3, config.motion_dim)
    model.eval()
    loaded = imtalker.load_renderer(save_model(model, tmp_path / "renderer.safetensors"))
    assert loaded.config.source_skip
    torch.testing.assert_close(loaded.render(loaded.encode_source(image), latents),
                               model.render(model.encode_source(image), latents))


def test_compact_motion_encoder_is_an_option_with_its_own_keys(image, tmp_path):
    import dataclasses

    import imtalker
    from imtalker.models.renderer import CompactMotionEncoder, MotionEncoder
    from imtalker.weights import save_model

    with pytest.raises(ValueError, match="motion_encoder"):
        dataclasses.replace(SMALL, motion_encoder="tiny")
    assert isinstance(IMTRenderer(SMALL).latent_token_encoder, MotionEncoder)
    config = dataclasses.replace(SMALL, motion_encoder="compact")
    torch.manual_seed(0)
    model = IMTRenderer(config).eval()
    assert isinstance(model.latent_token_encoder, CompactMotionEncoder)
    assert len(model.latent_token_encoder.convs) == 5  # 128 px -> a 4 x 4 map, flattened
    frames = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    latents = model.encode_motion(frames)
    assert latents.shape == (3, config.motion_dim) and latents.std(0).min() > 0
    torch.testing.assert_close(model.encode_motion(frames[1:2]), latents[1:2], atol=1e-5, rtol=1e-5)
    # the flattened map keeps position: the same face moved by 16 pixels gets another latent
    moved = torch.roll(image, 16, dims=3)
    assert (model.encode_motion(moved) - model.encode_motion(image)).abs().max() > 1e-3
    loaded = imtalker.load_renderer(save_model(model, tmp_path / "renderer.safetensors"))
    assert loaded.config.motion_encoder == "compact"
    torch.testing.assert_close(loaded.encode_motion(frames), latents)


def test_motion_modulation_starts_unmodulated_and_learns_from_the_latent_departure(image, tmp_path):
    import dataclasses

    import imtalker
    from imtalker.weights import save_model

    config = dataclasses.replace(SMALL, motion_modulation=True)
    torch.manual_seed(0)
    plain = IMTRenderer(SMALL).eval()
    torch.manual_seed(0)
    model = IMTRenderer(config).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("motion_modulation.") for k in missing)
    frames = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    source = model.encode_source(image)
    latents = model.encode_motion(frames)
    # zero-initialised maps: the same frames as without the option
    torch.testing.assert_close(model.render(source, latents), plain.render(plain.encode_source(image), latents))

    with torch.no_grad():
        for layer in model.motion_modulation.stages:
            layer.weight.normal_(0, 1.0)
    modulated = model.render(source, latents)
    assert (modulated - plain.render(plain.encode_source(image), latents)).abs().max() > 1e-3
    # the source's own latent departs by nothing: no modulation, whatever the weights
    torch.testing.assert_close(model.render(source, source.motion), plain.render(plain.encode_source(image),
                                                                                 source.motion))

    # training keeps a running scale of the departures and trains the maps
    model.train()
    for layer in model.motion_modulation.stages:
        torch.nn.init.zeros_(layer.weight)
    fake, _ = model(frames, image.expand(3, -1, -1, -1))
    (fake - frames).abs().mean().backward()
    assert model.motion_modulation.stages[-1].weight.grad.abs().sum() > 0
    assert not torch.allclose(model.motion_modulation.departure_rms, torch.ones(config.motion_dim))
    model.eval()
    loaded = imtalker.load_renderer(save_model(model, tmp_path / "renderer.safetensors"))
    assert loaded.config.motion_modulation
    torch.testing.assert_close(loaded.motion_modulation.departure_rms, model.motion_modulation.departure_rms)


def test_source_warp_starts_as_the_source_and_moves_it_by_a_smooth_flow(image, tmp_path):
    """Off by default; it needs source_skip; on, an untrained renderer returns its source (exactly, without the
    correction), a flow moves it by fractions of a pixel block, and the flow head gets gradients from the first step."""
    import dataclasses

    import imtalker
    from imtalker.weights import save_model

    with pytest.raises(ValueError, match="source_skip"):
        dataclasses.replace(SMALL, source_warp=True)
    config = dataclasses.replace(SMALL, source_skip=True, source_warp=True)
    torch.manual_seed(0)
    model = IMTRenderer(config).eval()
    extra = set(model.state_dict()) - set(IMTRenderer(SMALL).state_dict())
    assert extra and all(k.startswith("source_warp.") for k in extra)
    source = model.encode_source(image)
    assert source.pixels is None and torch.equal(source.image, image)
    motion = torch.randn(2, config.motion_dim)
    correction = model.frame_decoder.final_conv[1]
    with torch.no_grad():
        correction.weight.zero_()
    torch.testing.assert_close(model.render(source, motion), image.clamp(1e-3, 1 - 1e-3).expand(2, -1, -1, -1),
                               atol=1e-5, rtol=0)

    # every field 3 pixels to the right everywhere, all coefficients 1 / fields for a departure of one unit in the
    # first latent dimension: each output pixel samples the source 3 pixels further right
    warp = model.source_warp
    last = warp.field_head[-1]
    with torch.no_grad():
        last.bias.view(warp.fields, 2)[:, 0] = 3 * 2 / 128
        warp.coefficients[0].weight.zero_()
        warp.coefficients[0].weight[0, 0] = 1.0 / warp.fields
        warp.coefficients[-1].weight.zero_()
        warp.coefficients[-1].weight[:, 0] = 1.0
        # the source's own latent departs by nothing: no move, whatever the fields
        torch.testing.assert_close(model.render(source, source.motion), image.clamp(1e-3, 1 - 1e-3), atol=1e-5,
                                   rtol=0)
        pushed = source.motion.clone()
        pushed[0, 0] += warp.departure_rms[0]
        moved = model.render(source, pushed)
    expected = image[..., 3:].clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(moved[:, :, :, :-3], expected, atol=1e-4, rtol=0)

    model.train()
    with torch.no_grad():
        last.bias.zero_()
    frames = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    result = model.reconstruct(frames, image.expand(2, -1, -1, -1))
    grid = source.features[2].shape[-1]  # the flow's grid: the third coarse level
    assert result.flow.shape == (2, 2, grid, grid) and result.base.shape == (2, 3, 128, 128)
    (result.base - frames).abs().mean().backward()
    assert last.weight.grad.abs().sum() > 0
    model.eval()
    latents = torch.randn(3, config.motion_dim)
    loaded = imtalker.load_renderer(save_model(model, tmp_path / "renderer.safetensors"))
    assert loaded.config.source_warp
    torch.testing.assert_close(loaded.render(loaded.encode_source(image), latents),
                               model.render(model.encode_source(image), latents))
