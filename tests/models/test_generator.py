"""Motion generator: published state-dict layout, golden parity (docs/architecture.md §4), the sampler's contract."""

from __future__ import annotations

import pytest
import torch

from imtalker.config import GeneratorConfig
from imtalker.models.generator import MotionConditions, MotionGenerator
from imtalker.sampling import (SamplingOptions, euler_step, fit_frames, guided_velocity, num_chunks, repeat_pad,
                               sample_motion, time_grid)

FRAMES = 117  # golden sampling length: chunks of 50, 50 and 17 frames

TINY = GeneratorConfig(hidden_dim=64, depth=2, num_heads=4, audio_dim=16)


@pytest.fixture(scope="module")
def reference_model(generator_reference) -> MotionGenerator:
    model = MotionGenerator(GeneratorConfig()).eval()
    state = generator_reference.state_dict()
    # Structural buffers are not synthesised: the model's own rotary inv_freq goes in as is.
    for entry in generator_reference.structural():
        state[entry["key"]] = model.state_dict()[entry["key"]]
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def golden_inputs(generator_reference) -> dict[str, torch.Tensor]:
    r = generator_reference
    return {
        "audio_features": r.input("audio_features", (1, FRAMES, 768), 0, 0.5),
        "ref_motion": r.input("ref_motion", (1, 32), 0, 1),
        "pose": r.input("pose", (FRAMES, 3), 0, 0.2),
        "gaze": r.input("gaze", (FRAMES, 2), 0, 0.2),
        "cam": r.input("cam", (FRAMES, 3), 0, 0.2),
        "noise": r.input("noise", (3, 1, 50, 32), 0, 1),
        "prev_x": r.input("prev_x", (1, 10, 32), 0, 1),
        "prev_audio": r.input("prev_audio", (1, 10, 768), 0, 0.5),
    }


@pytest.fixture(scope="module")
def tiny_model() -> MotionGenerator:
    torch.manual_seed(0)
    return MotionGenerator(TINY).eval()


def tiny_inputs(num_frames: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(num_frames)
    audio = torch.randn(batch, num_frames, TINY.audio_dim, generator=g)
    ref = torch.randn(batch, TINY.motion_dim, generator=g)
    return audio, ref


# ---------------------------------------------------------------------------------------------------------------
# Published layout and golden numbers
# ---------------------------------------------------------------------------------------------------------------


def test_state_dict_matches_manifest(reference_model, generator_reference):
    state = reference_model.state_dict()
    assert list(state) == generator_reference.keys()  # same keys, in the published order
    for entry in generator_reference.entries:
        assert list(state[entry["key"]].shape) == entry["shape"], entry["key"]
    generator_reference.check_structural(state)


def test_rotary_buffer_is_persistent():
    model = MotionGenerator(TINY)
    assert "fmt.rotary_emb.inv_freq" in model.state_dict()
    assert model.fmt.rotary_emb.inv_freq.shape == (TINY.hidden_dim // TINY.num_heads // 2,)


def _single_call_args(model: MotionGenerator, inputs: dict[str, torch.Tensor]) -> tuple:
    """Inputs of the recorded transformer call: clip frames 0..49, context = frames 40..49 of each condition."""
    a = model.audio_projection(inputs["audio_features"][:, :50])
    prev_a = model.audio_projection(inputs["prev_audio"])
    pose = model.pose_projection(inputs["pose"][None, :50])
    gaze = model.gaze_projection(inputs["gaze"][None, :50])
    cam = model.cam_projection(inputs["cam"][None, :50])
    conditions = MotionConditions(audio=a, pose=pose, gaze=gaze, cam=cam)
    prev_conditions = MotionConditions(audio=prev_a, pose=pose[:, 40:], gaze=gaze[:, 40:], cam=cam[:, 40:])
    return inputs["noise"][0], inputs["prev_x"], inputs["ref_motion"], conditions, prev_conditions


@torch.no_grad()
def test_fmt_velocity_parity(reference_model, generator_reference, golden_inputs):
    args = _single_call_args(reference_model, golden_inputs)
    generator_reference.check("fmt_velocity", reference_model.fmt(torch.tensor(0.3), *args))
    generator_reference.check("fmt_velocity", reference_model.velocity(0.3, *args, cfg_scale=1.0))


@torch.no_grad()
def test_fmt_velocity_cfg_parity(reference_model, generator_reference, golden_inputs):
    # The published unconditional pass zeroes only the clip audio; the context audio stays (checked by this number).
    args = _single_call_args(reference_model, golden_inputs)
    generator_reference.check("fmt_velocity_cfg3", reference_model.velocity(0.3, *args, cfg_scale=3.0))


@pytest.mark.parametrize(
    ("name", "with_conditions", "cfg_scale", "nfe"),
    [
        ("sample_cond_cfg3_nfe10", True, 3.0, 10),
        ("sample_nocond_cfg1_nfe10", False, 1.0, 10),
        ("sample_cond_cfg2_nfe5", True, 2.0, 5),
    ],
)
def test_sample_parity(reference_model, generator_reference, golden_inputs, name, with_conditions, cfg_scale, nfe):
    conditions = {k: golden_inputs[k] for k in ("pose", "gaze", "cam")} if with_conditions else {}
    motion = sample_motion(reference_model, golden_inputs["audio_features"], golden_inputs["ref_motion"], **conditions,
                           noise=list(golden_inputs["noise"]), options=SamplingOptions(cfg_scale=cfg_scale, nfe=nfe))
    generator_reference.check(name, motion)


# ---------------------------------------------------------------------------------------------------------------
# Sampler contract on a tiny config
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [1, 50, 51, 123])
def test_sample_shapes(tiny_model, num_frames):
    audio, ref = tiny_inputs(num_frames, batch=2)
    pose = torch.randn(num_frames + 5, 3)  # longer than T: cut
    gaze = torch.randn(2, max(num_frames - 3, 1), 2)  # shorter: zero-padded
    motion = sample_motion(tiny_model, audio, ref, pose=pose, gaze=gaze, options=SamplingOptions(nfe=2, seed=0))
    assert motion.shape == (2, num_frames, TINY.motion_dim)
    assert motion.dtype == torch.float32
    assert torch.isfinite(motion).all()


def test_seed_determinism(tiny_model):
    audio, ref = tiny_inputs(60)
    state = torch.get_rng_state()
    first = sample_motion(tiny_model, audio, ref, options=SamplingOptions(nfe=3, seed=7))
    assert torch.equal(state, torch.get_rng_state()), "a seeded run must not touch the global RNG"
    assert torch.equal(first, sample_motion(tiny_model, audio, ref, options=SamplingOptions(nfe=3, seed=7)))
    other = sample_motion(tiny_model, audio, ref, options=SamplingOptions(nfe=3, seed=8))
    assert not torch.allclose(first, other)


def test_noise_list_is_honoured(tiny_model):
    audio, ref = tiny_inputs(70)
    noise = [torch.randn(1, TINY.clip_frames, TINY.motion_dim) for _ in range(2)]
    a = sample_motion(tiny_model, audio, ref, noise=noise, options=SamplingOptions(nfe=3, seed=1))
    # explicit noise wins over the seed
    b = sample_motion(tiny_model, audio, ref, noise=noise, options=SamplingOptions(nfe=3, seed=2))
    assert torch.equal(a, b)
    stacked = torch.stack(noise)  # (K, B, L, D)
    assert torch.equal(a, sample_motion(tiny_model, audio, ref, noise=stacked, options=SamplingOptions(nfe=3)))
    c = sample_motion(tiny_model, audio, ref, noise=[noise[0], -noise[1]], options=SamplingOptions(nfe=3))
    assert torch.equal(a[:, : TINY.clip_frames], c[:, : TINY.clip_frames])  # chunk 0 does not see chunk 1
    assert not torch.allclose(a[:, TINY.clip_frames :], c[:, TINY.clip_frames :])


def test_chunk_context_matches_manual_loop(tiny_model):
    """Chunk 1 starts from the last prev_frames of chunk 0 (latents and padded conditions), docs/architecture.md §4.3."""
    cfg = TINY
    audio, ref = tiny_inputs(cfg.clip_frames + 7)
    noise = [torch.randn(1, cfg.clip_frames, cfg.motion_dim) for _ in range(2)]
    motion = sample_motion(tiny_model, audio, ref, noise=noise, options=SamplingOptions(cfg_scale=1.0, nfe=3))

    with torch.no_grad():
        a = repeat_pad(tiny_model.audio_projection(audio), 2 * cfg.clip_frames)
        zero = torch.zeros(1, cfg.clip_frames, cfg.cond_dim)
        zero_prev = torch.zeros(1, cfg.prev_frames, cfg.cond_dim)
        times = time_grid(3)
        prev_x, prev_a, chunks = torch.zeros(1, cfg.prev_frames, cfg.motion_dim), zero_prev, []
        for k in range(2):
            z, a_k = noise[k], a[:, k * cfg.clip_frames : (k + 1) * cfg.clip_frames]
            for n in range(2):
                v = tiny_model.fmt(times[n], z, prev_x, ref, MotionConditions(a_k, zero, zero, zero),
                                   MotionConditions(prev_a, zero_prev, zero_prev, zero_prev))
                z = euler_step(z, v[:, cfg.prev_frames :], times[n], times[n + 1])
            chunks.append(z)
            prev_x, prev_a = z[:, -cfg.prev_frames :], a_k[:, -cfg.prev_frames :]
    torch.testing.assert_close(motion, torch.cat(chunks, 1)[:, : audio.shape[1]])


def test_sampling_helpers():
    assert torch.equal(time_grid(3), torch.tensor([0.0, 0.5, 1.0]))
    x, v = torch.ones(1, 2, 3), torch.full((1, 2, 3), 2.0)
    assert torch.equal(euler_step(x, v, 0.25, 0.75), torch.full((1, 2, 3), 2.0))
    assert torch.equal(guided_velocity(v, x, 3.0), torch.full((1, 2, 3), 4.0))
    assert [num_chunks(n, 50) for n in (1, 50, 51, 117)] == [1, 1, 2, 3]
    seq = torch.arange(6.0).view(1, 3, 2)
    assert torch.equal(fit_frames(seq, 2), seq[:, :2])
    assert torch.equal(fit_frames(seq, 4)[:, 3], torch.zeros(1, 2))
    assert torch.equal(repeat_pad(seq, 5)[:, 3:], seq[:, 2:].expand(1, 2, 2))


# ---------------------------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------------------------


def _bad_calls():
    audio, ref = tiny_inputs(60)
    d = TINY.motion_dim
    clip = TINY.clip_frames
    return {
        "audio ndim": dict(audio_features=audio[0], ref_motion=ref),
        "audio dim": dict(audio_features=torch.randn(1, 60, TINY.audio_dim + 1), ref_motion=ref),
        "audio dtype": dict(audio_features=audio.long(), ref_motion=ref),
        "no frames": dict(audio_features=audio[:, :0], ref_motion=ref),
        "ref shape": dict(audio_features=audio, ref_motion=ref[:, :-1]),
        "ref dtype": dict(audio_features=audio, ref_motion=ref.to(torch.int32)),
        "batch mismatch": dict(audio_features=audio, ref_motion=ref.expand(2, -1)),
        "pose dim": dict(audio_features=audio, ref_motion=ref, pose=torch.randn(60, 2)),
        "pose ndim": dict(audio_features=audio, ref_motion=ref, pose=torch.randn(1, 1, 60, 3)),
        "gaze batch": dict(audio_features=audio, ref_motion=ref, gaze=torch.randn(3, 60, 2)),
        "cam dtype": dict(audio_features=audio, ref_motion=ref, cam=torch.zeros(60, 3, dtype=torch.int64)),
                "noise count": dict(audio_features=audio, ref_motion=ref, noise=[torch.randn(1, clip, d)]),
        "noise shape": dict(audio_features=audio, ref_motion=ref, noise=[torch.randn(1, clip - 1, d)] * 2),
        "noise batch": dict(audio_features=audio, ref_motion=ref, noise=[torch.randn(2, clip, d)] * 2),
            }


@pytest.mark.parametrize("settings", [dict(nfe=1), dict(nfe=2.0), dict(cfg_scale=float("nan")), dict(cfg_scale=True),
                                      dict(seed="1")])
def test_sampling_options_reject_bad_settings(settings):
    with pytest.raises(ValueError):
        SamplingOptions(**settings)


@pytest.mark.parametrize("case", list(_bad_calls()))
def test_sample_rejects_bad_input(tiny_model, case):
    with pytest.raises(ValueError):
        sample_motion(tiny_model, **_bad_calls()[case])


def test_sample_error_message_says_what_came(tiny_model):
    audio, ref = tiny_inputs(60)
    with pytest.raises(ValueError, match=r"expected 2, got 1"):
        sample_motion(tiny_model, audio, ref, noise=[torch.randn(1, TINY.clip_frames, TINY.motion_dim)])
    with pytest.raises(ValueError, match=r"\(B, T, audio_dim\).*got \(60, 16\)"):
        sample_motion(tiny_model, audio[0], ref)
