"""HopSampler: whole clips committed give sample_motion's motion bit for bit; frames taken back leave no trace."""

from __future__ import annotations

import pytest
import torch

from imtalker.errors import InputError
from imtalker.models.generator import MotionGenerator
from imtalker.sampling import HopSampler, HopSchedule, SamplingOptions, sample_motion
from helpers.tiny_models import GENERATOR

OPTIONS = SamplingOptions(cfg_scale=2.0, nfe=3, seed=11)


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return MotionGenerator(GENERATOR).eval()


def test_whole_clips_are_the_offline_chunk_schedule(generator):
    features, ref = torch.randn(1, 123, GENERATOR.audio_dim), torch.randn(1, GENERATOR.motion_dim)
    offline = sample_motion(generator, features, ref, options=OPTIONS)
    sampler = HopSampler(generator, ref, OPTIONS, padding="repeat")
    hops = [sampler.step(features[:, start:start + 50], min(50, 123 - start)) for start in range(0, 123, 50)]
    assert torch.equal(torch.cat(hops, dim=1), offline)
    assert sampler.committed_frames == 123


@pytest.mark.parametrize("padding", ["zeros", "repeat", "none"])
def test_forgotten_frames_leave_no_trace(generator, padding):
    features, ref = torch.randn(1, 30, GENERATOR.audio_dim), torch.randn(1, GENERATOR.motion_dim)
    window = 7 if padding == "none" else 50
    noise = [torch.randn(1, window, GENERATOR.motion_dim) for _ in range(3)]
    straight = HopSampler(generator, ref, OPTIONS, padding)
    straight.step(features[:, :7], 5, noise=noise[0])
    expected = straight.step(features[:, 5:12], 5, noise=noise[2])
    detour = HopSampler(generator, ref, OPTIONS, padding)
    detour.step(features[:, :7], 5, noise=noise[0])
    detour.step(features[:, 20:27], 5, noise=noise[1])  # committed, never shown
    detour.forget(5)
    assert torch.equal(detour.step(features[:, 5:12], 5, noise=noise[2]), expected)
    with pytest.raises(ValueError, match="cannot take back"):
        detour.forget(61)


def test_appended_frames_become_the_context(generator):
    ref = torch.randn(1, GENERATOR.motion_dim)
    sampler = HopSampler(generator, ref, OPTIONS)
    sampler.append(torch.zeros(1, 12, GENERATOR.motion_dim), torch.zeros(1, 12, GENERATOR.audio_dim))
    assert sampler.committed_frames == 12
    assert torch.equal(sampler.history_x[:, -10:], torch.zeros(1, 10, GENERATOR.motion_dim))


def test_schedule_checks_its_settings():
    assert HopSchedule().hop == 5 and HopSchedule().lookahead == 2
    assert HopSchedule(5, 2).window_frames() == 7 and HopSchedule(50, 5).window_frames() == 50
    for bad in ({"hop": 0}, {"lookahead": -1}, {"hop": 1.0}, {"padding": "reflect"}):
        with pytest.raises(InputError):
            HopSchedule(**bad)
    with pytest.raises(InputError, match="at most"):
        HopSchedule(hop=60).check_fits(50)


def test_a_silent_window_is_the_unconditional_pass(generator):
    """silent=True samples without the clip's audio: guidance's unconditional pass alone (cfg 0), in one pass."""
    features, ref = torch.randn(1, 14, GENERATOR.audio_dim), torch.randn(1, GENERATOR.motion_dim)
    context, noise = torch.randn(1, 5, GENERATOR.motion_dim), torch.randn(1, 50, GENERATOR.motion_dim)

    def two_hops(options, silent):
        sampler = HopSampler(generator, ref, options)
        sampler.append(context, features[:, :5])  # frames said before: the context of the window that follows
        return sampler.step(features[:, 5:12], 5, noise=noise, silent=silent)

    silent = two_hops(OPTIONS, True)
    unconditional = two_hops(SamplingOptions(cfg_scale=0.0, nfe=3, seed=11), False)
    torch.testing.assert_close(silent, unconditional, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(silent, two_hops(OPTIONS, False), atol=1e-3)
