"""Training losses of the published recipes (spec §7), as pure tensor / `nn.Module` code.

The renderer is trained with L1 + multi-scale VGG19 perceptual loss + the same loss restricted to eye/mouth masks +
identity consistency of the adapted motion + a non-saturating GAN loss; the motion generator with a rectified-flow
velocity loss that also matches frame-to-frame differences.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

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


@dataclass(frozen=True)
class RendererLossWeights:
    """Weights of the renderer generator loss; defaults are the published recipe (spec §7)."""

    l1: float = 1.0
    perceptual: float = 10.0
    region: float = 100.0  # perceptual loss inside the eye and mouth masks
    consistency: float = 1.0
    adversarial: float = 1.0
    # not in the published recipe (0 keeps it out): cross-entropy of the finest attention of a source attending to
    # itself against the identity map; speeds up learning the alignment for short runs such as the demo model's
    alignment: float = 0.0
    # not in the published recipe (0 keeps it out): L1 inside the eye and mouth masks, per masked pixel; a stand-in
    # for the region term when no VGG19 is available, so the small regions that carry lip sync are not drowned out
    region_l1: float = 0.0
    # not in the published recipe (0 keeps it out): cross-entropy of the finest attention from driving to source
    # against the correspondences of the face-mesh landmarks (the cell holding a landmark in the driving frame should
    # attend to the cell holding it in the source). The alignment term asks this of a source and itself only; the
    # arg-max that moves the fine levels passes no gradient, so without such a signal a short run never learns to
    # move them.
    correspondence: float = 0.0
    # not in the published recipe (0 keeps it out): L1 of how far the face-mesh landmarks moved from the source to the
    # driving frame (coordinates scaled to [-1, 1]), predicted from the difference of their motion latents by a linear
    # probe that only training has. Without it the latents of a short run hardly change within a clip (0.25% of
    # their norm) and a linear probe finds in them no held-out mouth opening or pose; predicting absolute landmarks
    # instead is met by encoding the face's shape. Differences ask the motion encoder for mouth, eyelids, gaze and
    # head pose from the first step.
    motion_landmarks: float = 0.0
    # not in the published recipe (0 keeps it out): L1 between what a frozen face-state expert
    # (`imtalker.training.expert`, trained on the synthetic corpus's ground truth) reads in the rendered and in the
    # real frame: mouth opening, lip rounding, blink. It pays only for a mouth that looks open, where L1 lets a short
    # run blur an uncertain mouth into skin.
    expert: float = 0.0
    # not in the published recipe (0 keeps it out), with `source_warp`: L1 of the warped source (the base image the
    # frame corrects) against the driving frame, averaged over 1, 1/2, 1/4 and 1/8 scale. The coarse scales reach
    # moves of several pixels, where the full-resolution L1 of a flat-coloured face has no gradient.
    warp: float = 0.0
    # not in the published recipe (0 keeps it out), with `source_warp`: L1 of where the flow samples the source at
    # each face-mesh landmark of the driving frame against where that landmark is in the source (in half images)
    flow_landmarks: float = 0.0


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


def expert_loss(expert: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between a frozen expert's readings (B, K) of the rendered and of the real frames; gradient to `fake` only."""
    with torch.no_grad():
        target = expert(real)
    return F.l1_loss(expert(fake), target)


def landmark_shift_loss(predicted: torch.Tensor, source_points: torch.Tensor, driving_points: torch.Tensor,
                        image_size: int) -> torch.Tensor:
    """Mean L1 of predicted landmark shifts (B, P, 2) against the face-mesh points' move from source to driving
    frame (B, P, 2 pixels each), in units of half the image; landmarks missing in either frame (NaN) count nothing."""
    target = (driving_points - source_points) * (2 / image_size)
    known = torch.isfinite(target).all(-1, keepdim=True).expand_as(target)
    if not known.any():
        return predicted.sum() * 0.0
    return (predicted - torch.nan_to_num(target)).abs()[known].mean()


def attention_alignment_loss(self_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every query's scores (B, heads, N, N) against its own position: the identity alignment."""
    n = self_logits.shape[-1]
    target = torch.arange(n, device=self_logits.device).repeat(self_logits.shape[0] * self_logits.shape[1])
    return F.cross_entropy(self_logits.reshape(-1, n), target)


def landmark_cells(points: torch.Tensor, image_size: int, grid: int) -> torch.Tensor:
    """Row-major cell index (B, P) on a grid x grid map of landmark points (B, P, 2) in pixels (x, y)."""
    cells = (points * (grid / image_size)).floor().long().clamp(0, grid - 1)
    return cells[..., 1] * grid + cells[..., 0]


def correspondence_loss(logits: torch.Tensor, source_points: torch.Tensor, driving_points: torch.Tensor,
                        image_size: int) -> torch.Tensor:
    """Cross-entropy of the attention rows of the driving cells that hold a landmark against the source cell holding
    the same landmark.

    Args:
        logits: (B, heads, N, N) scores, driving cells (rows) against source cells, on a square grid.
        source_points, driving_points: (B, P, 2) landmark pixels (x, y); NaN where a frame has no face.
        image_size: the frames' size in pixels.

    Returns:
        The mean over heads and over landmarks known in both frames; 0 when there are none.
    """
    b, heads, n, _ = logits.shape
    grid = math.isqrt(n)
    known = torch.isfinite(source_points).all(-1) & torch.isfinite(driving_points).all(-1)  # (B, P)
    if not known.any():
        return logits.sum() * 0.0
    rows = landmark_cells(torch.nan_to_num(driving_points), image_size, grid)  # (B, P)
    targets = landmark_cells(torch.nan_to_num(source_points), image_size, grid)
    picked = torch.gather(logits, 2, rows[:, None, :, None].expand(-1, heads, -1, n))  # (B, heads, P, N)
    losses = F.cross_entropy(picked.permute(0, 3, 1, 2), targets[:, None, :].expand(-1, heads, -1),
                             reduction="none")  # (B, heads, P)
    weights = known[:, None, :].float().expand_as(losses)
    return (losses * weights).sum() / weights.sum()


def masked_l1_loss(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the pixels where `mask` (B, 1, H, W) is 1; 0 when the mask is empty."""
    weighted = ((fake - real).abs() * mask).sum()
    return weighted / (mask.sum() * fake.shape[1]).clamp(min=1.0)


def renderer_generator_loss(
    fake: torch.Tensor,
    real: torch.Tensor,
    fake_logits_list: Sequence[torch.Tensor] | None,
    *,
    adapt: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    motion: torch.Tensor,
    identity_own: torch.Tensor | None,
    identity_other: torch.Tensor | None,
    vgg: VGG19Features | None = None,
    region_mask: torch.Tensor | None = None,
    self_logits: torch.Tensor | None = None,
    correspondence: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None = None,
    motion_landmarks: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None = None,
    expert: nn.Module | None = None,
    warped: torch.Tensor | None = None,
    flow_landmarks: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None = None,
    scales: Sequence[float] = PERCEPTUAL_SCALES,
    weights: RendererLossWeights = RendererLossWeights(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the renderer's generator losses.

    Args:
        fake: (B, 3, H, W) rendered driving frames in [0, 1].
        real: (B, 3, H, W) ground-truth driving frames in [0, 1].
        fake_logits_list: discriminator logits of `fake`, one (B, 1) tensor per scale; None skips the GAN term
            (training without a discriminator).
        adapt: the identity-adaptive module.
        motion: (B, D_m) driving motion latents.
        identity_own: (B, D_i) identity of the driving frame; None skips the consistency term.
        identity_other: (B, D_i) identity of a frame from another video (None with `identity_own`).
        vgg: perceptual network; None skips the perceptual and region terms (e.g. no VGG weights available).
        region_mask: (B, 1, H, W) eye and mouth mask in {0, 1}; None skips the region term.
        self_logits: finest-level attention scores of the sources attending to themselves
            (`IMTRenderer.self_attention_logits`); None skips the alignment term.
        correspondence: (logits, source landmarks, driving landmarks, image size) for `correspondence_loss`; None
            skips the correspondence term.
        motion_landmarks: (predicted shifts, source landmarks, driving landmarks, image size) for
            `landmark_shift_loss`; None skips the motion-landmark term.
        expert: a frozen face-state expert for `expert_loss`; None skips the expert term.
        warped: (B, 3, H, W) the `source_warp` base images for `warp_loss`; None skips the warp term.
        flow_landmarks: (flow, source landmarks, driving landmarks, image size) for `flow_landmark_loss`; None skips
            the flow-landmark term.
        scales: perceptual pyramid factors.
        weights: term weights.

    Returns:
        (total loss, {term name: detached unweighted value, plus "total"}). Skipped terms are absent.
    """
    terms = {"l1": F.l1_loss(fake, real)}
    if vgg is not None:
        terms["perceptual"] = perceptual_loss(vgg, fake, real, scales)
        if region_mask is not None:
            terms["region"] = perceptual_loss(vgg, fake, real, scales, mask=region_mask)
    if weights.region_l1 and region_mask is not None:
        terms["region_l1"] = masked_l1_loss(fake, real, region_mask)
    if identity_own is not None:
        terms["consistency"] = identity_consistency_loss(adapt, motion, identity_own, identity_other)
    if fake_logits_list is not None:
        terms["adversarial"] = generator_adversarial_loss(fake_logits_list)
    if self_logits is not None:
        terms["alignment"] = attention_alignment_loss(self_logits)
    if correspondence is not None:
        terms["correspondence"] = correspondence_loss(*correspondence)
    if motion_landmarks is not None:
        terms["motion_landmarks"] = landmark_shift_loss(*motion_landmarks)
    if expert is not None:
        terms["expert"] = expert_loss(expert, fake, real)
    if warped is not None:
        terms["warp"] = warp_loss(warped, real)
    if flow_landmarks is not None:
        terms["flow_landmarks"] = flow_landmark_loss(*flow_landmarks)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    logged = {name: value.detach() for name, value in terms.items()}
    logged["total"] = total.detach()
    return total, logged
