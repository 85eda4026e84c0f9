"""Training losses (docs/architecture.md §7): VGG19 trunk and loading, perceptual/region, consistency, GAN and
flow-matching losses."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from imtalker.training.losses import (
    PUBLISHED_RENDERER_LOSS_WEIGHTS,
    RendererLossInputs,
    VGG19Features,
    discriminator_loss,
    flow_matching_loss,
    generator_adversarial_loss,
    identity_consistency_loss,
    load_vgg19,
    masked_l1_loss,
    perceptual_loss,
    rectified_flow_pair,
    renderer_generator_loss,
)

SMALL_SCALES = (1.0, 0.5)  # 64-pixel images allow levels down to 16 pixels only


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    torch.manual_seed(0)
    return VGG19Features()


def torchvision_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    """Random weights in torchvision vgg19 layout: `features.*` plus the classifier head (kept small)."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=gen) for k, v in VGG19Features().state_dict().items()}
    state["classifier.0.weight"] = torch.randn(8, 16, generator=gen)
    state["classifier.0.bias"] = torch.randn(8, generator=gen)
    return state


def images(seed: int, size: int = 64, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_vgg_feature_shapes_and_frozen(vgg):
    feats = vgg(images(0))
    expected = [(1, 64, 64, 64), (1, 128, 32, 32), (1, 256, 16, 16), (1, 512, 8, 8), (1, 512, 4, 4)]
    assert [tuple(f.shape) for f in feats] == expected
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_vgg19_torchvision_layout(tmp_path, suffix):
    state = torchvision_state_dict()
    path = tmp_path / f"vgg19{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    model = load_vgg19(path)
    assert torch.equal(model.features[34].weight, state["features.34.weight"])
    assert not model.training


def test_load_vgg19_without_prefix(tmp_path):
    state = {k.removeprefix("features."): v for k, v in torchvision_state_dict().items() if k.startswith("features.")}
    torch.save(state, tmp_path / "vgg.pt")
    assert torch.equal(load_vgg19(tmp_path / "vgg.pt").features[0].bias, state["0.bias"])


def test_load_vgg19_renamed_key_raises(tmp_path):
    state = torchvision_state_dict()
    state["features.2.wieght"] = state.pop("features.2.weight")
    torch.save(state, tmp_path / "vgg.pth")
    with pytest.raises(ValueError, match=r"features\.2\.weight") as info:
        load_vgg19(tmp_path / "vgg.pth")
    assert "features.2.wieght" in str(info.value)


def test_perceptual_loss_zero_positive_and_differentiable(vgg):
    real = images(1)
    assert perceptual_loss(vgg, real, real.clone(), SMALL_SCALES).item() == 0.0
    fake = images(2).requires_grad_(True)
    loss = perceptual_loss(vgg, fake, real, SMALL_SCALES)
    assert loss.item() > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_perceptual_loss_default_scales(vgg):
    real = images(1, size=128)
    assert perceptual_loss(vgg, images(2, size=128), real).item() > 0
    with pytest.raises(ValueError, match="pyramid level"):
        perceptual_loss(vgg, images(2), images(1))  # 64 * 0.125 = 8 pixels: too small for relu5_1


def box_mask(lo: int, hi: int, size: int = 64) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., lo:hi, lo:hi] = 1
    return mask


def test_region_loss_ignores_outside_of_mask(vgg):
    real, fake = images(1), images(2)
    mask = box_mask(16, 48)
    base = perceptual_loss(vgg, fake, real, SMALL_SCALES, mask=mask)
    assert base.item() > 0
    changed = torch.where(mask.bool(), fake, images(3))  # same inside the mask, different outside
    assert perceptual_loss(vgg, changed, real, SMALL_SCALES, mask=mask).item() == pytest.approx(base.item(), rel=1e-5)
    assert perceptual_loss(vgg, fake, real, SMALL_SCALES, mask=torch.zeros_like(mask)).item() == 0.0


def test_region_loss_normalised_by_area(vgg):
    real = torch.full((1, 3, 64, 64), 0.5)
    fake = real + 0.1  # the same per-pixel error everywhere
    small = perceptual_loss(vgg, fake, real, SMALL_SCALES, mask=box_mask(24, 40)).item()  # 16x16
    large = perceptual_loss(vgg, fake, real, SMALL_SCALES, mask=box_mask(8, 56)).item()  # 48x48: 9x the area
    # Without normalisation the ratio would be about 9; borders of the box keep it from being exactly 1.
    assert 0.5 < small / large < 2


def test_identity_consistency_loss():
    adapt = nn.Bilinear(4, 3, 4)
    motion, own, other = torch.randn(5, 4), torch.randn(5, 3), torch.randn(5, 3)
    assert identity_consistency_loss(adapt, motion, own, own.clone()).item() == 0.0
    loss = identity_consistency_loss(adapt, motion, own, other)
    expected = ((motion - adapt(motion, own)).norm(dim=1) - (motion - adapt(motion, other)).norm(dim=1)).abs().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_gan_losses_hand_computed():
    fake = [torch.tensor([[0.0], [2.0]]), torch.tensor([[-1.0], [1.0]])]
    real = [torch.tensor([[1.0], [3.0]]), torch.tensor([[0.5], [-0.5]])]
    g = ((softplus(0) + softplus(-2)) / 2 + (softplus(1) + softplus(-1)) / 2) / 2
    assert generator_adversarial_loss(fake).item() == pytest.approx(g, rel=1e-6)
    scale1 = (softplus(-1) + softplus(-3)) / 2 + (softplus(0) + softplus(2)) / 2
    scale2 = (softplus(-0.5) + softplus(0.5)) / 2 + (softplus(-1) + softplus(1)) / 2
    assert discriminator_loss(real, fake).item() == pytest.approx((scale1 + scale2) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        generator_adversarial_loss([])


def test_flow_matching_loss():
    target = torch.randn(2, 6, 3)
    assert flow_matching_loss(target, target.clone()).item() == 0.0
    # A constant offset is the same in every frame: only the plain L1 term sees it.
    assert flow_matching_loss(target + 0.3, target).item() == pytest.approx(0.3, rel=1e-5)
    # Alternating +-0.3 jitter: L1 0.3 plus frame differences of 0.6.
    sign = torch.tensor([1.0, -1.0]).repeat(3).view(1, 6, 1)
    assert flow_matching_loss(target + 0.3 * sign, target).item() == pytest.approx(0.3 + 0.6, rel=1e-5)


def test_rectified_flow_pair():
    x1, noise = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    x_t, target = rectified_flow_pair(x1, noise, torch.tensor([0.0, 1.0]))
    assert torch.equal(x_t[0], noise[0]) and torch.equal(x_t[1], x1[1])
    assert torch.equal(target, x1 - noise)
    x_half, _ = rectified_flow_pair(x1, noise, torch.full((2,), 0.5))
    assert torch.allclose(x_half, (x1 + noise) / 2)


class FakeRenderer(nn.Module):
    """What the consistency term reads of a renderer: an identity encoder (image -> features, identity) and `adapt`."""

    def __init__(self):
        super().__init__()
        self.adapt = nn.Bilinear(4, 3, 4)

    def dense_feature_encoder(self, images: torch.Tensor):
        return None, images.mean(dim=(2, 3))  # (B, 3) identities


def loss_inputs(fake: torch.Tensor, real: torch.Tensor, **kwargs) -> RendererLossInputs:
    motion = torch.randn(fake.shape[0], 4, generator=torch.Generator().manual_seed(0))
    result = SimpleNamespace(frame=fake, motion=motion)
    batch = {"driving": real, "other": images(5, size=fake.shape[-1], batch=fake.shape[0]), **kwargs.pop("batch", {})}
    return RendererLossInputs(result, batch, FakeRenderer(), **kwargs)


def test_renderer_generator_loss_sums_the_weighted_terms_the_recipe_names(vgg):
    torch.manual_seed(0)
    fake, real = images(2, batch=2).requires_grad_(True), images(1, batch=2)
    def discriminator(frames: torch.Tensor) -> list[torch.Tensor]:  # two "scales" of logits
        return [frames.mean(dim=(1, 2, 3))[:, None], frames.std(dim=(1, 2, 3))[:, None]]

    inputs = loss_inputs(fake, real, discriminator=discriminator)

    total, terms = renderer_generator_loss(inputs, PUBLISHED_RENDERER_LOSS_WEIGHTS)
    assert set(terms) == {"l1", "consistency", "adversarial", "total"}  # no VGG19: no perceptual terms
    assert total.item() == pytest.approx((terms["l1"] + terms["consistency"] + terms["adversarial"]).item(), rel=1e-6)
    assert terms["adversarial"].item() == pytest.approx(generator_adversarial_loss(discriminator(fake)).item())
    # a term the recipe leaves out (or weights 0) is not computed
    total, terms = renderer_generator_loss(inputs, {"l1": 2.0, "consistency": 0.0})
    assert set(terms) == {"l1", "total"} and total.item() == pytest.approx(2 * terms["l1"].item())

    mask = box_mask(16, 48).expand(2, -1, -1, -1)
    inputs = loss_inputs(fake, real, discriminator=discriminator, vgg=vgg, scales=SMALL_SCALES, batch={"mask": mask})
    total, terms = renderer_generator_loss(inputs, PUBLISHED_RENDERER_LOSS_WEIGHTS)
    weighted = 10 * terms["perceptual"] + 100 * terms["region"]
    expected = terms["l1"] + weighted + terms["consistency"] + terms["adversarial"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["region"].item() == pytest.approx(
        perceptual_loss(vgg, fake, real, SMALL_SCALES, mask=mask).item(), rel=1e-6)
    assert all(not v.requires_grad for v in terms.values())
    total.backward()
    assert fake.grad.abs().sum() > 0


def test_masked_l1_loss_averages_over_the_masked_pixels_only():
    real = torch.zeros(2, 3, 8, 8)
    fake = real.clone()
    fake[:, :, :4] = 1.0  # wrong in the top half
    top, bottom = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    top[:, :, :2], bottom[:, :, 6:] = 1.0, 1.0
    assert masked_l1_loss(fake, real, top).item() == pytest.approx(1.0)
    assert masked_l1_loss(fake, real, bottom).item() == 0.0
    assert masked_l1_loss(fake, real, torch.zeros(2, 1, 8, 8)).item() == 0.0  # empty mask: no NaN


def test_region_l1_term_joins_the_total_when_weighted():
    torch.manual_seed(0)
    fake, real = torch.rand(2, 3, 64, 64, requires_grad=True), torch.rand(2, 3, 64, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 40:50, 20:44] = 1.0
    inputs = loss_inputs(fake, real, batch={"mask": mask})
    total, terms = renderer_generator_loss(inputs, {"l1": 1.0, "region_l1": 2.0})
    assert terms["region_l1"].item() == pytest.approx(masked_l1_loss(fake, real, mask).item())
    assert total.item() == pytest.approx((terms["l1"] + 2 * terms["region_l1"]).item(), rel=1e-6)
    _, without_mask = renderer_generator_loss(loss_inputs(fake, real), {"l1": 1.0, "region_l1": 2.0})
    assert "region_l1" not in without_mask


def test_demo_terms_say_what_they_need():
    fake = torch.rand(2, 3, 64, 64)
    with pytest.raises(ValueError, match="warp loss term needs a renderer with a source warp"):
        renderer_generator_loss(loss_inputs(fake, fake), {"warp": 1.0})
    with pytest.raises(ValueError, match="motion_landmarks loss term needs batches with landmarks"):
        renderer_generator_loss(loss_inputs(fake, fake), {"motion_landmarks": 1.0})


def test_landmark_shift_loss_is_the_l1_of_the_move_in_unit_coordinates_and_skips_lost_points():
    from imtalker.training.losses import landmark_shift_loss

    source = torch.tensor([[[10.0, 64.0], [100.0, 32.0]]])  # (1, 2, 2) pixels at 128 px
    driving = source + torch.tensor([[[6.4, 0.0], [0.0, -12.8]]])
    exact = torch.tensor([[[0.1, 0.0], [0.0, -0.2]]])  # the moves in units of half the image
    assert landmark_shift_loss(exact, source, driving, 128).item() == pytest.approx(0.0, abs=1e-7)
    assert landmark_shift_loss(exact + 0.25, source, driving, 128).item() == pytest.approx(0.25)
    lost = driving.clone()
    lost[0, 1] = float("nan")
    wrong_on_lost = exact + torch.tensor([[[0.0, 0.0], [9.0, 9.0]]])
    assert landmark_shift_loss(wrong_on_lost, source, lost, 128).item() == pytest.approx(0.0, abs=1e-7)
    none = landmark_shift_loss(exact.requires_grad_(), source, torch.full_like(driving, float("nan")), 128)
    assert none.item() == 0.0 and none.requires_grad


def test_warp_loss_is_the_mean_l1_over_four_scales_and_sees_far_moves_at_coarse_ones():
    from imtalker.training.losses import warp_loss

    real = torch.zeros(1, 3, 64, 64)
    real[..., 20:40, 20:40] = 1.0
    assert warp_loss(real, real).item() == 0.0
    assert warp_loss(real + 0.1, real).item() == pytest.approx(0.1, abs=1e-6)
    # a square 6 pixels off: the full-resolution L1 is flat in the move once the squares no longer overlap at an edge
    # pixel, the coarse scales still tell a nearer square from a farther one
    near, far = torch.roll(real, 6, dims=3), torch.roll(real, 10, dims=3)
    assert warp_loss(near, real) < warp_loss(far, real)


def test_flow_landmark_loss_compares_where_the_flow_samples_with_the_source_landmarks():
    from imtalker.training.losses import flow_landmark_loss

    driving = torch.tensor([[[32.0, 64.0], [96.0, 40.0]]])  # (1, 2, 2) pixels at 128 px
    source = driving + torch.tensor([6.4, -3.2])  # the head moved the same way everywhere
    exact = torch.zeros(1, 2, 8, 8)
    exact[:, 0], exact[:, 1] = 0.1, -0.05  # x, y in half images: where each driving pixel is in the source
    assert flow_landmark_loss(exact, source, driving, 128).item() == pytest.approx(0.0, abs=1e-6)
    assert flow_landmark_loss(torch.zeros_like(exact), source, driving, 128).item() == pytest.approx(0.075)
    lost = source.clone()
    lost[0, 1] = float("nan")
    wrong_on_lost = exact.clone()
    wrong_on_lost[..., :4, 4:] = 5.0  # only near the second (lost) landmark
    assert flow_landmark_loss(wrong_on_lost, lost, driving, 128).item() == pytest.approx(0.0, abs=1e-6)
    none = flow_landmark_loss(exact.requires_grad_(), torch.full_like(source, float("nan")), driving, 128)
    assert none.item() == 0.0 and none.requires_grad
