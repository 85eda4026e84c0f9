"""Two-scale discriminator (docs/architecture.md §6) against the golden features and logits."""

from __future__ import annotations

import pytest
import torch

from imtalker.config import DiscriminatorConfig
from imtalker.models.discriminator import MultiScaleDiscriminator, minibatch_stddev


@pytest.fixture(scope="module")
def discriminator(discriminator_reference) -> MultiScaleDiscriminator:
    model = MultiScaleDiscriminator(DiscriminatorConfig()).eval()
    model.load_state_dict(discriminator_reference.state_dict(), strict=False)  # structural buffers are the model's
    return model


def test_state_dict_matches_manifest(discriminator, discriminator_reference):
    state = discriminator.state_dict()
    assert list(state) == discriminator_reference.keys()
    discriminator_reference.check_structural(state)
    fresh = MultiScaleDiscriminator()
    fresh.load_state_dict(state, strict=True)
    missing, unexpected = fresh.load_state_dict(discriminator_reference.state_dict(), strict=False)
    assert unexpected == []
    assert all(key.endswith(".kernel") for key in missing)  # only the structural blur kernels


def test_features_and_logits_match_golden(discriminator, discriminator_reference):
    images = discriminator_reference.input("disc_images", (2, 3, 512, 512), 0.5, 0.25)
    half = torch.nn.functional.interpolate(images, scale_factor=0.5, mode="bilinear", align_corners=False)
    with torch.no_grad():
        discriminator_reference.check("disc_features_scale1", discriminator.scale1.convs(images))
        discriminator_reference.check("disc_features_scale2", discriminator.scale2.convs(half))
        logits = discriminator(images)
    assert len(logits) == 2
    discriminator_reference.check("disc_logits_scale1", logits[0])
    discriminator_reference.check("disc_logits_scale2", logits[1])


@pytest.fixture(scope="module")
def small_discriminator() -> MultiScaleDiscriminator:
    torch.manual_seed(0)
    return MultiScaleDiscriminator(DiscriminatorConfig(image_size=128, channels={128: 8, 64: 16, 32: 16},
                                                       max_channels=32))


def test_small_config_shapes(small_discriminator):
    assert len(small_discriminator.scale1.convs) == 1 + 5  # 128 -> 4
    assert len(small_discriminator.scale2.convs) == 1 + 4  # 64 -> 4
    with torch.no_grad():
        logits = small_discriminator(torch.rand(3, 3, 128, 128))
    assert [tuple(x.shape) for x in logits] == [(3, 1), (3, 1)]
    assert all(torch.isfinite(x).all() for x in logits)


def test_default_channels_at_128():
    model = MultiScaleDiscriminator(DiscriminatorConfig(image_size=128))
    assert model.scale1.convs[0][0].weight.shape[0] == 128
    assert model.scale2.convs[0][0].weight.shape[0] == 256
    assert model.scale1.final_linear[0].weight.shape == (512, 512 * 16)


def test_backward_reaches_every_parameter(small_discriminator):
    images = torch.rand(4, 3, 128, 128, requires_grad=True)
    small_discriminator.zero_grad()
    logits = small_discriminator(images)
    torch.nn.functional.softplus(-logits[0]).mean().add(torch.nn.functional.softplus(-logits[1]).mean()).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    for name, param in small_discriminator.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    small_discriminator.zero_grad()


def test_minibatch_stddev_groups():
    x = torch.randn(8, 6, 4, 4)
    out = minibatch_stddev(x)
    assert out.shape == (8, 7, 4, 4)
    assert torch.equal(out[:, :6], x)
    # group of 4 over 8 samples: sample i pairs with i + 2, i + 4, i + 6
    expected = torch.sqrt(x[0::2].var(0, unbiased=False) + 1e-8).mean()
    torch.testing.assert_close(out[0, 6], expected.expand(4, 4))
    assert minibatch_stddev(torch.randn(6, 6, 4, 4)).shape == (6, 7, 4, 4)  # 6 is not a multiple of 4


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(1, 3, 64, 64), "shape"),
        (torch.rand(3, 128, 128), "shape"),
        (torch.zeros(1, 3, 128, 128, dtype=torch.uint8), "floating-point"),
        (torch.zeros(0, 3, 128, 128), "at least one image"),
    ],
)
def test_invalid_images_raise(small_discriminator, images, message):
    with pytest.raises(ValueError, match=message):
        small_discriminator(images)


@pytest.mark.parametrize("size", [100, 4])
def test_invalid_image_size_raises(size):
    with pytest.raises(ValueError, match="power of two"):
        MultiScaleDiscriminator(DiscriminatorConfig(image_size=size))
