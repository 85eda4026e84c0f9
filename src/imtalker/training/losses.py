"""Training losses (docs/architecture.md §7), as pure tensor / `nn.Module` code.

The published renderer recipe is L1 + multi-scale VGG19 perceptual loss + the same loss restricted to eye/mouth masks +
identity consistency of the adapted motion + a non-saturating GAN loss; the motion generator's is a rectified-flow
velocity loss that also matches frame-to-frame differences. The renderer's terms form a registry
(`RENDERER_LOSS_TERMS`) that a recipe weights by name, which also holds the demo model's terms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from ..models.renderer import IMTRenderer, Reconstruction

# torchvision's `vgg19().features` layout ("configuration E"): numbers are conv widths, "M" a 2x2 max-pool.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# Indices in `features` of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
VGG19_FEATURE_LAYERS = (1, 6, 11, 20, 29)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# relu5_1 sits behind four 2x2 max-pools, so smaller inputs would pool an empty map.
MIN_VGG_SIZE = 16
PERCEPTUAL_SCALES = (1.0, 0.5, 0.25, 0.125)


class VGG19Features(nn.Module):
    """Frozen VGG19 trunk returning relu1_1 .. relu5_1.

    `features` has torchvision's exact module indices, so a torchvision state dict (`features.N.weight/bias`) loads
    strictly. Layers after relu5_1 are kept only for that reason; `forward` stops at relu5_1.
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in VGG19_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = item
        self.features = nn.Sequential(*layers)
        # Non-persistent, so the state dict holds exactly torchvision's keys.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGG19Features":
        """Stay in eval mode: the network is a fixed feature extractor even inside a module being trained."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Extract features.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1], H and W >= 16.

        Returns:
            [relu1_1 (B, 64, H, W), relu2_1 (B, 128, H/2, W/2), relu3_1 (B, 256, H/4, W/4),
            relu4_1 (B, 512, H/8, W/8), relu5_1 (B, 512, H/16, W/16)].

        Raises:
            ValueError: if `images` is not (B, 3, H, W) with H, W >= 16.
        """
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[-2:]) < MIN_VGG_SIZE:
            raise ValueError(
                f"images must have shape (B, 3, H, W) with H, W >= {MIN_VGG_SIZE}, got {tuple(images.shape)}"
            )
        x = (images - self.mean) / self.std
        outputs = []
        for index, layer in enumerate(self.features[: VGG19_FEATURE_LAYERS[-1] + 1]):
            x = layer(x)
            if index in VGG19_FEATURE_LAYERS:
                # Safe to keep despite the in-place ReLUs: the next layer (conv or pool) writes a new tensor.
                outputs.append(x)
        return outputs


def load_vgg19(path: str | Path) -> VGG19Features:
    """Build a `VGG19Features` from a torchvision-format VGG19 checkpoint.

    Args:
        path: `.pth`/`.pt` (read with `torch.load(weights_only=True)`) or `.safetensors`. Keys are `features.N.weight`
            / `features.N.bias`, or the same without the `features.` prefix; `classifier.*` keys of a full vgg19 state
            dict are ignored.

    Returns:
        The frozen network in eval mode.

    Raises:
        ValueError: on an unknown file type, a file that holds no state dict, or missing/unexpected keys.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    elif suffix in (".pth", ".pt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"VGG19 weights must be a .pth, .pt or .safetensors file, got {path.name}")
    if not isinstance(state, Mapping):
        raise ValueError(f"{path.name} does not hold a state dict (got {type(state).__name__})")
    converted = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            continue  # the ImageNet head is not part of the feature trunk
        converted[key if key.startswith("features.") else f"features.{key}"] = value
    model = VGG19Features()
    expected = set(model.state_dict())
    missing = sorted(expected - converted.keys())
    unexpected = sorted(converted.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"VGG19 weights in {path.name} do not match: missing keys {missing}, unexpected keys {unexpected}"
        )
    model.load_state_dict(converted, strict=True)
    return model


def _downsample(x: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1:
        return x
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def perceptual_loss(
    vgg: VGG19Features,
    fake: torch.Tensor,
    real: torch.Tensor,
    scales: Sequence[float] = PERCEPTUAL_SCALES,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-scale VGG19 L1 loss, optionally restricted to a region.

    Each pyramid level (bilinear downsampling of the input by `scale`) contributes the L1 distance of the five relu
    features; all levels and features have equal weight and the result is their mean.

    With `mask`, both images are multiplied by the mask before the network, so pixels outside it cannot reach the loss
    through the receptive field, and each feature L1 is weighted by the mask area-resized to that feature map and
    divided by the mask's area there, so a small region (an eye) weighs as much per pixel as a large one.

    Args:
        vgg: the feature network.
        fake: (B, 3, H, W) generated images in [0, 1]; gradients flow through it.
        real: (B, 3, H, W) target images in [0, 1]; treated as constant.
        scales: pyramid factors; min(H, W) * min(scales) must be >= 16.
        mask: optional (B, 1, H, W) region mask in {0, 1}.

    Returns:
        Scalar loss; 0 when the mask is empty.

    Raises:
        ValueError: on mismatched shapes or a pyramid level smaller than 16 pixels.
    """
    if fake.shape != real.shape or fake.ndim != 4:
        raise ValueError(
            f"fake and real must have the same (B, 3, H, W) shape, got {tuple(fake.shape)} and {tuple(real.shape)}"
        )
    if not scales or min(fake.shape[-2:]) * min(scales) < MIN_VGG_SIZE:
        raise ValueError(
            f"every pyramid level must be >= {MIN_VGG_SIZE} pixels: "
            f"image {tuple(fake.shape[-2:])}, scales {tuple(scales)}"
        )
    if mask is not None:
        if mask.shape != (fake.shape[0], 1, *fake.shape[-2:]):
            expected = (fake.shape[0], 1, *fake.shape[-2:])
            raise ValueError(f"mask must have shape (B, 1, H, W) = {expected}, got {tuple(mask.shape)}")
        mask = mask.to(fake.dtype)
        fake, real = fake * mask, real * mask
    total = fake.new_zeros(())
    count = 0
    for scale in scales:
        fake_feats = vgg(_downsample(fake, scale))
        with torch.no_grad():
            real_feats = vgg(_downsample(real, scale))
        for f, r in zip(fake_feats, real_feats):
            diff = (f - r).abs()  # (B, C, h, w)
            if mask is None:
                total = total + diff.mean()
            else:
                # "area" gives each cell the fraction of it the region covers, so small regions never vanish.
                weight = F.interpolate(mask, size=diff.shape[-2:], mode="area")  # (B, 1, h, w)
                area = weight.sum() * diff.shape[1]
                total = total + (diff * weight).sum() / area.clamp_min(torch.finfo(diff.dtype).tiny)
            count += 1
    return total / count


def identity_consistency_loss(
    adapt: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    motion: torch.Tensor,
    identity_own: torch.Tensor,
    identity_other: torch.Tensor,
) -> torch.Tensor:
    """|‖t − adapt(t, i_own)‖ − ‖t − adapt(t, i_other)‖|, averaged over the batch.

    Adapting a motion latent to another identity should move it as far as adapting it to its own, so the module changes
    identity-specific style only.

    Args:
        adapt: the identity-adaptive module (`IMTRenderer.adapt`), (N, D_m), (N, D_i) -> (N, D_m).
        motion: (N, D_m) motion latents t.
        identity_own: (N, D_i) identity of the frame the motion came from.
        identity_other: (N, D_i) identity of another video.

    Returns:
        Scalar loss.
    """
    own = torch.linalg.vector_norm((motion - adapt(motion, identity_own)).flatten(1), dim=1)  # (N,)
    other = torch.linalg.vector_norm((motion - adapt(motion, identity_other)).flatten(1), dim=1)  # (N,)
    return (own - other).abs().mean()


def _check_logits(logits_list: Sequence[torch.Tensor], name: str) -> None:
    if len(logits_list) == 0:
        raise ValueError(f"{name} must hold the logits of at least one discriminator scale")


def generator_adversarial_loss(fake_logits_list: Sequence[torch.Tensor]) -> torch.Tensor:
    """Non-saturating generator loss: mean over scales of mean softplus(−D(fake)).

    Args:
        fake_logits_list: per-scale logits (B, 1) of generated images.

    Returns:
        Scalar loss.
    """
    _check_logits(fake_logits_list, "fake_logits_list")
    return torch.stack([F.softplus(-logits).mean() for logits in fake_logits_list]).mean()


def discriminator_loss(
    real_logits_list: Sequence[torch.Tensor], fake_logits_list: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Logistic discriminator loss: mean over scales of mean softplus(−D(real)) + mean softplus(D(fake)).

    Args:
        real_logits_list: per-scale logits (B, 1) of real images.
        fake_logits_list: per-scale logits (B, 1) of generated images (detached by the caller).

    Returns:
        Scalar loss.
    """
    _check_logits(real_logits_list, "real_logits_list")
    if len(real_logits_list) != len(fake_logits_list):
        raise ValueError(f"got {len(real_logits_list)} real and {len(fake_logits_list)} fake logit scales")
    terms = [F.softplus(-r).mean() + F.softplus(f).mean() for r, f in zip(real_logits_list, fake_logits_list)]
    return torch.stack(terms).mean()


def flow_matching_loss(velocity: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1(v, target) + L1 of their frame-to-frame differences.

    The difference term penalises temporal jitter that a per-frame L1 barely sees.

    Args:
        velocity: (B, T, D) predicted velocity, T >= 2.
        target: (B, T, D) target velocity x1 − noise.

    Returns:
        Scalar loss.
    """
    if velocity.shape != target.shape or velocity.ndim < 2 or velocity.shape[1] < 2:
        raise ValueError(
            "velocity and target must share a (B, T, ...) shape with T >= 2, "
            f"got {tuple(velocity.shape)} and {tuple(target.shape)}"
        )
    l1 = F.l1_loss(velocity, target)
    l1_diff = F.l1_loss(velocity.diff(dim=1), target.diff(dim=1))  # (B, T-1, D)
    return l1 + l1_diff


def rectified_flow_pair(x1: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Point on the straight path from noise to data and its constant velocity.

    Args:
        x1: (B, ...) data.
        noise: (B, ...) Gaussian noise, same shape.
        t: (B,) times in [0, 1], broadcast per sample.

    Returns:
        (x_t = t x1 + (1 − t) noise, target = x1 − noise), both shaped like x1.
    """
    if x1.shape != noise.shape:
        raise ValueError(f"x1 and noise must have the same shape, got {tuple(x1.shape)} and {tuple(noise.shape)}")
    if t.numel() != x1.shape[0]:
        raise ValueError(f"t must hold one time per sample ({x1.shape[0]}), got shape {tuple(t.shape)}")
    t = t.reshape(-1, *([1] * (x1.ndim - 1))).to(x1.dtype)  # (B, 1, ..., 1)
    return t * x1 + (1 - t) * noise, x1 - noise


WARP_SCALES = (1, 2, 4, 8)


def warp_loss(warped: torch.Tensor, real: torch.Tensor, scales: Sequence[int] = WARP_SCALES) -> torch.Tensor:
    """Mean over `scales` of the L1 between the images (B, 3, H, W) average-pooled by that factor."""
    return sum(F.l1_loss(F.avg_pool2d(warped, k), F.avg_pool2d(real, k)) if k > 1 else F.l1_loss(warped, real)
               for k in scales) / len(scales)


def flow_landmark_loss(flow: torch.Tensor, source_points: torch.Tensor, driving_points: torch.Tensor,
                       image_size: int) -> torch.Tensor:
    """Mean L1 (half images) of driving landmark + flow there against the source landmark.

    Args:
        flow: (B, 2, g, g) backward flow in normalised coordinates (x, y), bilinear between cell centres.
        source_points, driving_points: (B, P, 2) landmark pixels (x, y); NaN where a frame has no face.
        image_size: the frames' size in pixels.
    """
    to_unit = lambda points: points * (2 / image_size) - 1  # face-mesh pixels (edge at 0) -> grid_sample's
    known = (torch.isfinite(source_points).all(-1) & torch.isfinite(driving_points).all(-1))  # (B, P)
    if not known.any():
        return flow.sum() * 0.0
    driving = to_unit(torch.nan_to_num(driving_points))
    sampled = F.grid_sample(flow, driving[:, :, None, :], mode="bilinear", padding_mode="border",
                            align_corners=False)[..., 0].transpose(1, 2)  # (B, P, 2)
    error = (driving + sampled - to_unit(torch.nan_to_num(source_points))).abs()  # (B, P, 2)
    return error[known].mean()


def landmark_shift_loss(predicted: torch.Tensor, source_points: torch.Tensor, driving_points: torch.Tensor,
                        image_size: int) -> torch.Tensor:
    """Mean L1 of predicted landmark shifts (B, P, 2) against the face-mesh points' move from source to driving
    frame (B, P, 2 pixels each), in units of half the image; landmarks missing in either frame (NaN) count nothing."""
    target = (driving_points - source_points) * (2 / image_size)
    known = torch.isfinite(target).all(-1, keepdim=True).expand_as(target)
    if not known.any():
        return predicted.sum() * 0.0
    return (predicted - torch.nan_to_num(target)).abs()[known].mean()


def masked_l1_loss(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the pixels where `mask` (B, 1, H, W) is 1; 0 when the mask is empty."""
    weighted = ((fake - real).abs() * mask).sum()
    return weighted / (mask.sum() * fake.shape[1]).clamp(min=1.0)


# -- the renderer's generator loss: a registry of named terms, weighted by the recipe --------------------------


@dataclass
class RendererLossInputs:
    """What one renderer training step hands its loss terms; each term reads what it needs."""

    result: Reconstruction  # the renderer's outputs for the batch (`IMTRenderer.reconstruct`)
    # "driving" (the target frames), "other" (frames of other videos); with some terms "mask" (eyes and mouth),
    # "source_landmarks" and "driving_landmarks" (face-mesh points in pixels, NaN where a frame has no face)
    batch: Mapping[str, torch.Tensor]
    renderer: IMTRenderer  # the identity-consistency term runs its identity encoder and adaptive MLP
    vgg: VGG19Features | None = None  # None skips the perceptual terms (no VGG19 weights at hand)
    discriminator: nn.Module | None = None
    landmark_probe: nn.Module | None = None  # latent departure -> landmark shifts, training only
    scales: Sequence[float] = PERCEPTUAL_SCALES

    @property
    def fake(self) -> torch.Tensor:
        return self.result.frame

    @property
    def real(self) -> torch.Tensor:
        return self.batch["driving"]

    def landmarks(self, term: str) -> tuple[torch.Tensor, torch.Tensor]:
        if "driving_landmarks" not in self.batch:
            raise ValueError(f"the {term} loss term needs batches with landmarks "
                             "(RendererPairDataset(..., with_landmarks=True))")
        return self.batch["source_landmarks"], self.batch["driving_landmarks"]

    def warp(self, term: str) -> Reconstruction:
        if not hasattr(self.result, "flow"):
            raise ValueError(f"the {term} loss term needs a renderer with a source warp (the demo renderer)")
        return self.result


def l1_term(inputs: RendererLossInputs) -> torch.Tensor:
    return F.l1_loss(inputs.fake, inputs.real)


def perceptual_term(inputs: RendererLossInputs) -> torch.Tensor | None:
    return None if inputs.vgg is None else perceptual_loss(inputs.vgg, inputs.fake, inputs.real, inputs.scales)


def region_term(inputs: RendererLossInputs) -> torch.Tensor | None:
    """The perceptual loss inside the eye and mouth masks."""
    mask = inputs.batch.get("mask")
    if inputs.vgg is None or mask is None:
        return None
    return perceptual_loss(inputs.vgg, inputs.fake, inputs.real, inputs.scales, mask=mask)


def region_l1_term(inputs: RendererLossInputs) -> torch.Tensor | None:
    """L1 per pixel of the eye and mouth masks: the region term's stand-in when no VGG19 is at hand."""
    mask = inputs.batch.get("mask")
    return None if mask is None else masked_l1_loss(inputs.fake, inputs.real, mask)


def consistency_term(inputs: RendererLossInputs) -> torch.Tensor:
    """`identity_consistency_loss` of the driving latents between the driving frame's identity and another video's
    (two more identity-encoder passes)."""
    encoder = inputs.renderer.dense_feature_encoder
    _, identity_own = encoder(inputs.batch["driving"])
    _, identity_other = encoder(inputs.batch["other"])
    return identity_consistency_loss(inputs.renderer.adapt, inputs.result.motion, identity_own, identity_other)


def adversarial_term(inputs: RendererLossInputs) -> torch.Tensor:
    if inputs.discriminator is None:
        raise ValueError("the adversarial loss term needs a discriminator")
    return generator_adversarial_loss(inputs.discriminator(inputs.fake))


def motion_landmarks_term(inputs: RendererLossInputs) -> torch.Tensor:
    """`landmark_shift_loss` of the landmark probe's reading of the latent departure: it asks the motion encoder for
    mouth, eyelids, gaze and head pose from the first step."""
    source_points, driving_points = inputs.landmarks("motion_landmarks")
    motion = inputs.result.motion
    shift = inputs.landmark_probe(motion - inputs.result.source.motion).view(motion.shape[0], -1, 2)
    return landmark_shift_loss(shift, source_points, driving_points, inputs.fake.shape[-1])


def warp_term(inputs: RendererLossInputs) -> torch.Tensor:
    """`warp_loss` of the warped source (the base image the frame corrects) against the driving frame."""
    return warp_loss(inputs.warp("warp").base, inputs.real)


def flow_landmarks_term(inputs: RendererLossInputs) -> torch.Tensor:
    """`flow_landmark_loss` of the source warp's flow at the driving frame's landmarks."""
    flow = inputs.warp("flow_landmarks").flow
    source_points, driving_points = inputs.landmarks("flow_landmarks")
    return flow_landmark_loss(flow, source_points, driving_points, inputs.fake.shape[-1])


@dataclass(frozen=True)
class RendererLossTerm:
    """A term of the renderer's generator loss and what a training step must provide for it."""

    compute: Callable[[RendererLossInputs], torch.Tensor | None]  # None: skipped, an optional input is missing
    needs_landmarks: bool = False  # batches with face-mesh landmarks
    needs_warp: bool = False  # a renderer with a source warp (the demo renderer)


# Every term a recipe may weight, in the order they are computed (which sets the order autograd sums the gradients
# of a tensor several terms read, so training runs stay reproducible to the bit). The published recipe uses l1,
# perceptual, region, consistency and adversarial; the others are the demo model's (docs/demo-model.md).
RENDERER_LOSS_TERMS: dict[str, RendererLossTerm] = {
    "l1": RendererLossTerm(l1_term),
    "perceptual": RendererLossTerm(perceptual_term),
    "region": RendererLossTerm(region_term),
    "region_l1": RendererLossTerm(region_l1_term),
    "motion_landmarks": RendererLossTerm(motion_landmarks_term, needs_landmarks=True),
    "consistency": RendererLossTerm(consistency_term),
    "adversarial": RendererLossTerm(adversarial_term),
    "warp": RendererLossTerm(warp_term, needs_warp=True),
    "flow_landmarks": RendererLossTerm(flow_landmarks_term, needs_landmarks=True, needs_warp=True),
}
PUBLISHED_RENDERER_LOSS_WEIGHTS = {"l1": 1.0, "perceptual": 10.0, "region": 100.0, "consistency": 1.0,
                                   "adversarial": 1.0}


def renderer_loss_weights(weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """A recipe's loss weights by term name, checked against `RENDERER_LOSS_TERMS`; None gives the published ones.

    A recipe names the terms it uses: a term it leaves out (or weights 0) is not computed."""
    if weights is None:
        return dict(PUBLISHED_RENDERER_LOSS_WEIGHTS)
    unknown = sorted(set(weights) - set(RENDERER_LOSS_TERMS))
    if unknown:
        raise ValueError(f"unknown renderer loss terms {unknown}; known: {', '.join(RENDERER_LOSS_TERMS)}")
    return {name: float(weight) for name, weight in weights.items()}


def renderer_generator_loss(inputs: RendererLossInputs,
                            weights: Mapping[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the renderer's generator loss terms with a non-zero weight.

    Returns:
        (total loss, {term name: detached unweighted value, plus "total"}). Terms whose optional input is missing
        (the perceptual ones without a VGG19, the region ones without masks) are skipped and absent.
    """
    terms = {}
    for name, term in RENDERER_LOSS_TERMS.items():
        if weights.get(name):
            value = term.compute(inputs)
            if value is not None:
                terms[name] = value
    if not terms:
        raise ValueError(f"no renderer loss term to train on: weights {dict(weights)}")
    total = sum(weights[name] * value for name, value in terms.items())
    logged = {name: value.detach() for name, value in terms.items()}
    logged["total"] = total.detach()
    return total, logged
