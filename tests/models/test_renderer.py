"""Renderer parity with the published code (golden numbers) and behaviour of the public API."""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
import pytest
import torch

from imtalker import load_renderer
from imtalker.config import RendererConfig
from imtalker.models.discriminator import MultiScaleDiscriminator
from imtalker.models.motion_transfer import attention_head_mean, guided_resample, pool_blocks, split_heads, to_tokens
from imtalker.models.renderer import IMTRenderer


@pytest.fixture(scope="module")
def golden_run(renderer_reference, discriminator_reference, tmp_path_factory):
    """The full-size renderer, synthesised weights -> published-format renderer.ckpt -> load_renderer, run once."""
    ref = renderer_reference
    gen = IMTRenderer(RendererConfig()).state_dict()  # structural buffers come from the architecture
    gen.update(ref.state_dict())
    disc = MultiScaleDiscriminator().state_dict()
    disc.update(discriminator_reference.state_dict())
    checkpoint = {
        "epoch": 3,
        "global_step": 1234,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": {**{f"gen.{k}": v for k, v in gen.items()}, **{f"disc.{k}": v for k, v in disc.items()}},
        "hyper_parameters": argparse.Namespace(lr=1e-4, dataset=pathlib.PurePosixPath("/data/hdtf")),
    }
    path = tmp_path_factory.mktemp("published") / "renderer.ckpt"
    torch.save(checkpoint, path)
    del checkpoint, gen, disc
    model = load_renderer(path)
    source_image = ref.input("x_reference", (1, 3, 512, 512), 0.5, 0.25).clamp(0, 1)
    driving_image = ref.input("x_current", (1, 3, 512, 512), 0.5, 0.25).clamp(0, 1)

    stages = {}
    hooks = []
    for group in ("upconv_blocks", "resblocks", "transformer_blocks"):
        for i, module in enumerate(getattr(model.frame_decoder, group)):
            name = f"frame_decoder.{group}.{i}"
            hooks.append(module.register_forward_hook(lambda m, a, out, name=name: stages.__setitem__(name, out)))
    with torch.inference_mode():
        source = model.encode_source(source_image)
        motion_cur = model.encode_motion(driving_image)
        adapted_cur = model.adapt_motion(motion_cur, source.identity)
        maps_cur = model.decode_motion(adapted_cur)
        aligned = model.transfer(source, maps_cur)
        frame = model.render(source, motion_cur)
        q = split_heads(model.imt[3].block_efc.q_proj(to_tokens(maps_cur[3])), 8)
        head_mean = attention_head_mean(q, source.keys[3])
    for hook in hooks:
        hook.remove()
    return dict(model=model, source=source, motion_cur=motion_cur, adapted_cur=adapted_cur, maps_cur=maps_cur,
                aligned=aligned, frame=frame, stages=stages, head_mean=head_mean)


def test_state_dict_matches_published_layout(renderer_reference):
    model = IMTRenderer()
    state = model.state_dict()
    assert list(state) == renderer_reference.keys()
    for entry in renderer_reference.entries:
        assert list(state[entry["key"]].shape) == entry["shape"], entry["key"]
    renderer_reference.check_structural(state)


def test_source_encoding_matches_golden(golden_run, renderer_reference):
    ref, src = renderer_reference, golden_run["source"]
    for level in range(6):
        ref.check(f"app_features.{level}", src.features[level])
    ref.check("app_identity", src.identity)
    ref.check("motion_ref", src.motion)
    ref.check("adapted_ref", golden_run["model"].adapt_motion(src.motion, src.identity))
    for level in range(4):
        ref.check(f"motion_maps_ref.{level}", src.motion_maps[level])


def test_driving_path_matches_golden(golden_run, renderer_reference):
    ref = renderer_reference
    ref.check("motion_cur", golden_run["motion_cur"])
    ref.check("adapted_cur", golden_run["adapted_cur"])
    for level in range(4):
        ref.check(f"motion_maps_cur.{level}", golden_run["maps_cur"][level])


def test_coarse_attention_and_top1_match_golden(golden_run, renderer_reference):
    ref = renderer_reference
    ref.check("coarse_attention_head_mean", golden_run["head_mean"])
    expected_top1 = torch.from_numpy(ref.expected["coarse_top1_index"])
    assert torch.equal(golden_run["head_mean"][0].argmax(dim=-1), expected_top1)
    top2 = golden_run["head_mean"][0].topk(2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1]).numpy()
    np.testing.assert_allclose(margin, ref.expected["coarse_top1_margin"], atol=1e-6, rtol=1e-3)


def test_every_recorded_renderer_tensor_is_checked(renderer_reference):
    checked = ({f"app_features.{i}" for i in range(6)} | {f"aligned.{i}" for i in range(6)}
               | {f"motion_maps_{w}.{i}" for w in ("ref", "cur") for i in range(4)}
               | {f"frame_decoder.{g}.{i}" for g in ("upconv_blocks", "resblocks", "transformer_blocks") for i in range(5)}
               | {"app_identity", "motion_ref", "motion_cur", "adapted_ref", "adapted_cur", "frame",
                  "coarse_attention_head_mean", "resampler_r2", "resampler_r4"})
    assert set(renderer_reference.names()) == checked


def test_motion_transfer_and_synthesis_match_golden(golden_run, renderer_reference):
    ref = renderer_reference
    for level in range(6):
        ref.check(f"aligned.{level}", golden_run["aligned"][level])
    for name, value in golden_run["stages"].items():
        if name == "frame_decoder.transformer_blocks.4":
            # the published final_conv starts with an in-place LeakyReLU(0.2), which rewrote this recorded
            # output before it was saved
            value = torch.nn.functional.leaky_relu(value, 0.2)
        ref.check(name, value)
    ref.check("frame", golden_run["frame"])


@pytest.mark.parametrize("ratio", [2, 4])
def test_guided_resampler_matches_golden(renderer_reference, ratio):
    ref = renderer_reference
    size = 16 * ratio
    values = ref.input(f"resampler_values_r{ratio}", (2, 8, size, size), 0.0, 1.0)
    logits = ref.input(f"resampler_logits_r{ratio}", (2, 256, 256), 0.0, 4.0)
    top1 = torch.softmax(logits, dim=-1).argmax(dim=-1)
    pooled = pool_blocks(values, ratio)
    ref.check(f"resampler_r{ratio}", guided_resample(pooled, top1, grid=16, ratio=ratio))


def test_batched_render_equals_single_frames(golden_run):
    model, source = golden_run["model"], golden_run["source"]
    motion = golden_run["motion_cur"] + torch.linspace(-0.5, 0.5, 3)[:, None]  # three distinct latents
    together = model.render(source, motion)
    in_pairs = model.render(source, motion, batch_size=2)  # a batch of two, then the third frame alone
    assert together.shape == in_pairs.shape == (3, 3, 512, 512)
    torch.testing.assert_close(together, in_pairs, atol=1e-5, rtol=1e-5)
    assert (together[0] - together[2]).abs().max() > 1e-3  # different latents give different frames
