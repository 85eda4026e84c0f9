"""Checkpoint loading: published layouts, our safetensors format, and refusal of bad files."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib

import pytest
import torch
from safetensors.torch import save_file
from transformers import Wav2Vec2Config, Wav2Vec2Model

from imtalker.sampling import SamplingOptions, sample_motion
from imtalker import (CheckpointError, GeneratorConfig, RendererConfig, load_audio_encoder, load_generator,
                      load_renderer, save_model)
from imtalker.config import (DemoRendererConfig, config_to_dict, renderer_config_from_dict,
                             renderer_config_to_dict)
from imtalker.models.audio import AudioEncoder
from imtalker.models.demo_renderer import DemoRenderer
from imtalker.models.generator import MotionGenerator
from imtalker.models.renderer import IMTRenderer
from imtalker.weights import checkpoint_entries, describe_checkpoint

TINY_RENDERER = RendererConfig(image_size=128, feature_channels=(8, 8, 16, 16, 32, 32),
                               motion_channels=(8, 16, 16, 32, 32, 32), adapt_dim=32, const_channels=8, num_heads=4)
TINY_GENERATOR = GeneratorConfig(hidden_dim=64, depth=2, num_heads=4, audio_dim=16)


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial values in every float parameter and BatchNorm statistic, so a wrong load cannot hide."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not name.endswith(("kernel", "attn_mask", "inv_freq")):
                tensor.copy_(torch.rand_like(tensor) * 0.2 + (0.9 if "running_var" in name else -0.1))
    return model.eval()


def lightning_file(path: pathlib.Path, state: dict, **extra) -> pathlib.Path:
    torch.save({"epoch": 1, "global_step": 10, "state_dict": state,
                "hyper_parameters": argparse.Namespace(lr=1e-4, root=pathlib.PurePosixPath("/data")), **extra}, path)
    return path


@pytest.fixture(scope="module")
def tiny_renderer() -> IMTRenderer:
    return randomized(IMTRenderer(TINY_RENDERER))


@pytest.fixture(scope="module")
def source_image() -> torch.Tensor:
    return torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))


def render_once(model: IMTRenderer, image: torch.Tensor) -> torch.Tensor:
    source = model.encode_source(image)
    return model.render(source, source.motion + 0.1)


# -- renderer -------------------------------------------------------------------------------------------------


def test_renderer_safetensors_round_trip(tiny_renderer, source_image, tmp_path):
    path = save_model(tiny_renderer, tmp_path / "renderer.safetensors")
    loaded = load_renderer(path)
    assert loaded.config == TINY_RENDERER
    assert not loaded.training
    for key, value in tiny_renderer.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(render_once(loaded, source_image), render_once(tiny_renderer, source_image))
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def test_renderer_from_published_lightning_layout(tiny_renderer, source_image, tmp_path):
    state = {f"gen.{k}": v for k, v in tiny_renderer.state_dict().items()}
    state["disc.scale1.convs.0.0.weight"] = torch.zeros(4, 3, 1, 1)  # training-only part is skipped
    path = lightning_file(tmp_path / "renderer.ckpt", state, optimizer_states=[{"state": {}}])
    loaded = load_renderer(path, config=TINY_RENDERER)
    assert torch.equal(render_once(loaded, source_image), render_once(tiny_renderer, source_image))


def test_renderer_dtype_and_device_arguments(tiny_renderer, tmp_path):
    path = save_model(tiny_renderer, tmp_path / "r.safetensors")
    loaded = load_renderer(path, device="cpu", dtype=torch.bfloat16)
    assert next(loaded.parameters()).dtype == torch.bfloat16


def test_mismatched_checkpoint_names_the_keys(tiny_renderer, tmp_path):
    state = {f"gen.{k}": v for k, v in tiny_renderer.state_dict().items()}
    state["gen.adapt.final_linear.weightt"] = state.pop("gen.adapt.final_linear.weight")
    path = lightning_file(tmp_path / "renamed.ckpt", state)
    with pytest.raises(CheckpointError, match=r"missing keys: adapt\.final_linear\.weight.*unexpected keys: "
                                              r"adapt\.final_linear\.weightt"):
        load_renderer(path, config=TINY_RENDERER)


def test_published_size_expected_for_a_file_without_config(tiny_renderer, tmp_path):
    path = lightning_file(tmp_path / "small.ckpt", {f"gen.{k}": v for k, v in tiny_renderer.state_dict().items()})
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_renderer(path)  # a 128-px file read as the published 512-px model


def test_wrong_kind_is_named(tiny_renderer, tmp_path):
    generator = randomized(MotionGenerator(TINY_GENERATOR))
    gen_path = lightning_file(tmp_path / "generator.ckpt", {f"model.{k}": v for k, v in generator.state_dict().items()})
    with pytest.raises(CheckpointError, match="not a renderer checkpoint.*motion generator"):
        load_renderer(gen_path)
    ren_path = lightning_file(tmp_path / "renderer.ckpt", {f"gen.{k}": v for k, v in tiny_renderer.state_dict().items()})
    with pytest.raises(CheckpointError, match="renderer checkpoint.*not a motion generator"):
        load_generator(ren_path)
    ours = save_model(generator, tmp_path / "generator.safetensors")
    with pytest.raises(CheckpointError, match="is a generator checkpoint, not a renderer"):
        load_renderer(ours)


# -- renderer variants ----------------------------------------------------------------------------------------

TINY_DEMO = DemoRendererConfig(image_size=128, feature_channels=(8, 8, 16, 16, 32),
                               motion_channels=(8, 16, 16, 32, 32, 32), adapt_dim=32, const_channels=8, num_heads=4,
                               warp_hidden=16, warp_fields=4)
# the demo variant's config as files wrote it before the variant had a class: the switches as fields
RETIRED_DEMO_CONFIG = {"image_size": 128, "feature_channels": [8, 8, 16, 16, 32],
                       "motion_channels": [8, 16, 16, 32, 32, 32], "motion_dim": 32, "adapt_dim": 32,
                       "const_channels": 8, "num_heads": 4, "window_size": 8,
                       "motion_norm": True, "motion_skip": True, "attention_locality": 0.5, "source_skip": True,
                       "motion_encoder": "compact", "motion_modulation": True, "source_warp": True}


def header(path: pathlib.Path) -> dict:
    with open(path, "rb") as f:
        return json.loads(f.read(int.from_bytes(f.read(8), "little")))["__metadata__"]


def test_renderer_files_name_their_variant_and_load_as_its_class(tiny_renderer, tmp_path):
    published = save_model(tiny_renderer, tmp_path / "published.safetensors")
    assert json.loads(header(published)["config"])["variant"] == "published"
    assert type(load_renderer(published)) is IMTRenderer
    torch.manual_seed(0)
    demo = save_model(DemoRenderer(TINY_DEMO), tmp_path / "demo.safetensors")
    assert header(demo)["kind"] == "renderer" and json.loads(header(demo)["config"])["variant"] == "demo"
    loaded = load_renderer(demo)
    assert type(loaded) is DemoRenderer and loaded.config == TINY_DEMO
    assert describe_checkpoint(demo)["config"]["attention_locality"] == 0.5


def test_retired_switch_configs_are_read_as_the_network_they_describe(tiny_renderer, tmp_path):
    """Files written before the demo variant had a class carry the switches; the tensors are read unchanged."""
    config = dataclasses.replace(TINY_DEMO, warp_hidden=64, warp_fields=16)  # the warp's sizes were constants then
    torch.manual_seed(0)
    demo = randomized(DemoRenderer(config))
    state = {k: v.contiguous() for k, v in demo.state_dict().items()}
    old = tmp_path / "old-demo.safetensors"
    save_file(state, str(old), metadata={"format": "imtalker", "format_version": "1", "kind": "renderer",
                                         "config": json.dumps(RETIRED_DEMO_CONFIG)})
    loaded = load_renderer(old)
    assert type(loaded) is DemoRenderer and loaded.config == config
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    assert describe_checkpoint(old)["config"] == renderer_config_to_dict(config)

    switches_off = {**config_to_dict(TINY_RENDERER), "motion_norm": False, "motion_skip": False,
                    "attention_locality": None, "source_skip": False, "motion_encoder": "published",
                    "motion_modulation": False, "source_warp": False}
    assert renderer_config_from_dict(switches_off) == TINY_RENDERER
    plain = tmp_path / "old-published.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_renderer.state_dict().items()}, str(plain),
              metadata={"kind": "renderer", "config": json.dumps(switches_off)})
    assert type(load_renderer(plain)) is IMTRenderer

    mixed = {**RETIRED_DEMO_CONFIG, "source_warp": False}  # block moves: a path no class has any more
    with pytest.raises(ValueError, match="no renderer class builds them"):
        renderer_config_from_dict(mixed)
    save_file(state, str(old), metadata={"kind": "renderer", "config": json.dumps(mixed)})
    with pytest.raises(CheckpointError, match="unusable renderer config"):
        load_renderer(old)
    with pytest.raises(ValueError, match="unknown renderer variant 'tiny'; known: published, demo"):
        renderer_config_from_dict({"variant": "tiny"})


def test_the_bundled_demo_renderer_is_read_as_the_demo_variant():
    from imtalker.weights import bundled_demo_model

    path = bundled_demo_model() / "renderer.safetensors"
    assert json.loads(header(path)["config"])["source_warp"] is True  # written with the retired switches
    model = load_renderer(path)
    assert type(model) is DemoRenderer
    assert model.config.attention_locality == 0.5 and model.config.num_levels == 5


# -- refusing bad files ---------------------------------------------------------------------------------------


class _Payload:
    """Pickles into a call of os.system: what a malicious checkpoint does."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("loader", [load_renderer, load_generator])
def test_pickled_payload_is_refused_and_never_runs(loader, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"gen.x": torch.zeros(1)}, "callbacks": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load.*system"):
        loader(path)
    assert not marker.exists()


def test_checkpoint_entries_are_the_plain_values_without_running_or_reading_anything(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "run.ckpt"
    entries = {"global_step": 1234, "epoch": 3, "imtalker": {"kind": "renderer", "config": {"num_heads": [4, 8]}},
               "loops": {"fit_loop": {"state_dict": {}, "batches": 7.5}}, "name": "run"}
    state = torch.nn.Linear(3, 2).state_dict()  # an OrderedDict with attributes (`_metadata`)
    torch.save({**entries, "state_dict": state, "optimizer_states": [{"state": {}}],
                "hyper_parameters": argparse.Namespace(lr=1e-4, path=pathlib.PurePosixPath("/data")),
                "callbacks": _Payload(marker)}, path)
    read = checkpoint_entries(path)
    assert {k: read[k] for k in entries} == entries
    assert set(read["state_dict"]) == set(state)
    assert not isinstance(read["state_dict"]["weight"], torch.Tensor)  # a stand-in: no tensor data is read
    assert not marker.exists()
    text = tmp_path / "text.ckpt"
    text.write_bytes(b"this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        checkpoint_entries(text)
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="expected a dict"):
        checkpoint_entries(tmp_path / "list.ckpt")


@pytest.mark.parametrize("name, content", [
    ("random.ckpt", os.urandom(4096)),
    ("text.ckpt", b"this is not a checkpoint\n"),
    ("empty.ckpt", b""),
    ("broken.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"),
])
def test_corrupt_files_get_a_clear_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"not a readable"):
        load_renderer(path)


def test_truncated_checkpoint(tiny_renderer, tmp_path):
    path = lightning_file(tmp_path / "full.ckpt", {f"gen.{k}": v for k, v in tiny_renderer.state_dict().items()})
    data = path.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_renderer(cut, config=TINY_RENDERER)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_renderer("/nonexistent/renderer.ckpt")


def test_checkpoint_that_is_not_a_dict(tmp_path):
    path = tmp_path / "list.ckpt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_renderer(path)


# -- generator ------------------------------------------------------------------------------------------------


def test_generator_published_layout_state_and_ema(tmp_path):
    generator = randomized(MotionGenerator(TINY_GENERATOR))
    state = {f"model.{k}": v for k, v in generator.state_dict().items()}
    ema = {k: v + 1 if v.is_floating_point() and not k.endswith("inv_freq") else v for k, v in state.items()}
    path = lightning_file(tmp_path / "generator.ckpt", state, ema_state_dict=ema)
    plain = load_generator(path)
    assert plain.config == TINY_GENERATOR  # sizes read off the weights
    assert torch.equal(plain.fmt.c_embedder.weight, generator.fmt.c_embedder.weight)
    averaged = load_generator(path, ema=True)
    assert torch.equal(averaged.fmt.c_embedder.weight, generator.fmt.c_embedder.weight + 1)


def test_generator_without_ema_refuses_ema_request(tmp_path):
    generator = randomized(MotionGenerator(TINY_GENERATOR))
    path = lightning_file(tmp_path / "g.ckpt", {f"model.{k}": v for k, v in generator.state_dict().items()})
    with pytest.raises(CheckpointError, match="ema_state_dict"):
        load_generator(path, ema=True)


def test_generator_golden_sample_through_published_file(generator_reference, tmp_path):
    """Manifest -> published generator.ckpt (with wav2vec2 keys beside) -> load_generator -> golden sample."""
    state = MotionGenerator().state_dict()
    state.update(generator_reference.state_dict())
    wav2vec2 = {"model.audio_encoder.wav2vec2.masked_spec_embed": torch.zeros(768)}
    path = lightning_file(tmp_path / "generator.ckpt", {**{f"model.{k}": v for k, v in state.items()}, **wav2vec2})
    model = load_generator(path)
    r = generator_reference
    sample = sample_motion(model, r.input("audio_features", (1, 117, 768), 0, 0.5), r.input("ref_motion", (1, 32), 0, 1),
                           pose=r.input("pose", (117, 3), 0, 0.2), gaze=r.input("gaze", (117, 2), 0, 0.2),
                           cam=r.input("cam", (117, 3), 0, 0.2), noise=list(r.input("noise", (3, 1, 50, 32), 0, 1)),
                           options=SamplingOptions(cfg_scale=3.0, nfe=10))
    r.check("sample_cond_cfg3_nfe10", sample)


def test_generator_safetensors_round_trip(tmp_path):
    generator = randomized(MotionGenerator(TINY_GENERATOR))
    loaded = load_generator(save_model(generator, tmp_path / "generator.safetensors"))
    audio, ref = torch.randn(1, 60, 16), torch.randn(1, 32)
    options = SamplingOptions(nfe=3, seed=5)
    assert torch.equal(sample_motion(loaded, audio, ref, options=options), sample_motion(generator, audio, ref, options=options))


# -- audio encoder --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_wav2vec2(audio_reference) -> tuple[Wav2Vec2Config, dict]:
    config = Wav2Vec2Config(**audio_reference.config)
    return config, audio_reference.state_dict()


def golden_audio_features(encoder: AudioEncoder, audio_reference) -> None:
    waveform = audio_reference.input("waveform", (1, 52923), 0, 0.3)
    audio_reference.check("audio_features", encoder(waveform, 83, normalize=False))


def test_audio_encoder_from_huggingface_folder(tiny_wav2vec2, audio_reference, tmp_path):
    config, state = tiny_wav2vec2
    model = Wav2Vec2Model(config)
    model.load_state_dict(state, strict=True)
    model.save_pretrained(tmp_path / "w2v")
    golden_audio_features(load_audio_encoder(tmp_path / "w2v"), audio_reference)


def test_audio_encoder_from_old_ctc_folder(tiny_wav2vec2, audio_reference, tmp_path):
    """The published wav2vec2-base-960h layout: pytorch_model.bin, `wav2vec2.` prefix, weight_g/weight_v, CTC head."""
    config, state = tiny_wav2vec2
    old = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v")
        old[f"wav2vec2.{key}"] = value
    old["lm_head.weight"] = torch.zeros(32, 64)
    old["lm_head.bias"] = torch.zeros(32)
    folder = tmp_path / "wav2vec2-base-960h"
    folder.mkdir()
    torch.save(old, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    golden_audio_features(load_audio_encoder(folder), audio_reference)


def test_audio_encoder_from_generator_checkpoint_and_round_trip(tiny_wav2vec2, audio_reference, tmp_path):
    config, state = tiny_wav2vec2
    generator = randomized(MotionGenerator(TINY_GENERATOR))
    full = {f"model.{k}": v for k, v in generator.state_dict().items()}
    full.update({f"model.audio_encoder.wav2vec2.{k}": v for k, v in state.items()})
    path = lightning_file(tmp_path / "generator.ckpt", full)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    encoder = load_audio_encoder(path)
    golden_audio_features(encoder, audio_reference)
    assert isinstance(load_generator(path), MotionGenerator)  # the wav2vec2 keys do not disturb the generator
    golden_audio_features(load_audio_encoder(save_model(encoder, tmp_path / "audio.safetensors")), audio_reference)


def test_audio_folder_without_config(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_audio_encoder(tmp_path)


def test_mel_audio_encoder_round_trip(tmp_path):
    from imtalker.models.mel import MelAudioEncoder, MelConfig

    torch.manual_seed(0)
    encoder = MelAudioEncoder(MelConfig(hidden_dim=32, feature_dim=24, n_mels=40)).eval()
    loaded = load_audio_encoder(save_model(encoder, tmp_path / "audio_encoder.safetensors"))
    assert isinstance(loaded, MelAudioEncoder) and loaded.config == encoder.config and loaded.feature_dim == 24
    waveform = torch.randn(1, 16000)
    with torch.inference_mode():
        assert torch.equal(loaded(waveform, 25), encoder(waveform, 25))
