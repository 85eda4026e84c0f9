"""Lightning training of the renderer with its discriminator (docs/architecture.md §3, §6, §7).

Recipe: a source and a driving frame of one video plus a frame of another video. The renderer reconstructs the
driving frame from the source; generator loss = 1 L1 + 10 multi-scale VGG19 perceptual + 100 eye/mouth region
perceptual + 1 identity consistency + 1 non-saturating GAN; the discriminator has the logistic loss. Adam lr 1e-4,
betas (0.5, 0.999), gradient norm clipped at 1 for each network; batch 4 per GPU.

The loss is a weighted sum of named terms (`training.losses.RENDERER_LOSS_TERMS`); a recipe without the
`adversarial` term builds no discriminator and trains on its reconstruction terms alone, about eight times faster on a
CPU at 128 px (the demo model's recipe). The renderer is the class its config names (`variant`: the published network
or the demo one).

Both networks step together on every batch from one Adam with two parameter groups, so `trainer.global_step` counts
batches (two Lightning optimisers would count every batch twice).

Checkpoints are Lightning files whose `state_dict` holds `gen.*` (the renderer) and `disc.*` (the discriminator), as
the published `renderer.ckpt`, so `imtalker.load_renderer(path)` reads them; they also carry the configs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
import torch.nn.functional as F

from ..config import (DiscriminatorConfig, RendererConfig, config_from_dict, config_to_dict, renderer_config_from_dict,
                      renderer_config_to_dict)
from ..metrics import psnr, ssim
from ..metrics.lpips import load_lpips
from ..models.demo_renderer import DemoRenderer
from ..preprocess.face import NUM_LANDMARKS
from ..models.discriminator import MultiScaleDiscriminator
from ..models.variants import build_renderer
from ..weights import CHECKPOINT_INFO
from .ema import ema_decay_at, move_ema_in, move_ema_out, update_ema
from .settings import check_betas, check_int, check_number
from .losses import (PUBLISHED_RENDERER_LOSS_WEIGHTS, RENDERER_LOSS_TERMS, RendererLossInputs, discriminator_loss,
                     load_vgg19, renderer_generator_loss, renderer_loss_weights)

logger = logging.getLogger(__name__)

GRAD_CLIP_NORM = 1.0
FROZEN_PREFIXES = ("vgg.", "lpips.")  # fixed networks loaded from their own files, kept out of checkpoints
EMA_PREFIXES = {"gen_ema.": "gen."}  # the EMA copy inside the module -> its names in `ema_state_dict`


@dataclass(frozen=True)
class RendererTrainingConfig:
    """Optimisation knobs of the renderer recipe (docs/architecture.md §7); defaults are the published ones."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 4  # per device
    # loss weights by term name (`training.losses.RENDERER_LOSS_TERMS`); the terms a recipe leaves out are not used
    weights: dict[str, float] = field(default_factory=lambda: dict(PUBLISHED_RENDERER_LOSS_WEIGHTS))
    vgg_path: str | None = None  # torchvision-format VGG19 state dict; None trains without the perceptual terms
    # a folder with the metric networks' files (docs/evaluation.md); validation logs `val/lpips` when LPIPS's are there
    metric_weights: str | None = None
    sample_frames: int = 4  # validation frames saved as an image grid
    # None: the published constant rate. N: a linear warm-up over `warmup_steps`, then a cosine decay to
    # `lr * final_lr_fraction` at step N (short runs, e.g. the demo model's, end much sharper with it)
    cosine_steps: int | None = None
    warmup_steps: int = 0
    final_lr_fraction: float = 0.05
    # not in the published recipe (1 keeps it): learning-rate multiplier for the motion path (motion encoder,
    # identity-adaptive MLP, motion decoder), whose equalised layers a short run at one rate leaves unmoved
    motion_lr_scale: float = 1.0
    # not in the published recipe (None keeps it): an EMA of the renderer's weights with this decay, kept in
    # checkpoints as `ema_state_dict` and exported instead of the raw weights
    ema_decay: float | None = None
    ema_warmup: bool = True  # decay min(ema_decay, (1 + step) / (10 + step)), as the generator's

    def __post_init__(self):
        if not isinstance(self.weights, Mapping):
            raise ValueError(f"training.weights must map loss term names to weights, got {self.weights!r}")
        object.__setattr__(self, "weights", renderer_loss_weights(self.weights))
        check_number("training.lr", self.lr, 0.0, low_open=True)
        check_betas("training.betas", self.betas)
        check_int("training.batch_size", self.batch_size, 1)
        check_int("training.sample_frames", self.sample_frames, 0)
        check_int("training.cosine_steps", self.cosine_steps, 1, optional=True)
        check_int("training.warmup_steps", self.warmup_steps, 0)
        if self.cosine_steps is not None and self.warmup_steps >= self.cosine_steps:
            raise ValueError(f"training.warmup_steps ({self.warmup_steps}) must be below cosine_steps "
                             f"({self.cosine_steps})")
        check_number("training.final_lr_fraction", self.final_lr_fraction, 0.0, 1.0)
        check_number("training.motion_lr_scale", self.motion_lr_scale, 0.0, low_open=True)
        check_number("training.ema_decay", self.ema_decay, 0.0, 1.0, high_open=True, optional=True)
        if self.vgg_path is not None and not isinstance(self.vgg_path, str):
            raise ValueError(f"training.vgg_path must be a file path, got {self.vgg_path!r}")
        for name, weight in self.weights.items():
            check_number(f"training.weights.{name}", weight, 0.0)

    def uses(self, term: str) -> bool:
        """Whether the recipe weights this loss term."""
        return bool(self.weights.get(term))

    @property
    def needs_landmarks(self) -> bool:
        """Whether a term of the recipe reads face-mesh landmarks from the batches."""
        return any(RENDERER_LOSS_TERMS[name].needs_landmarks for name in self.weights if self.uses(name))


def training_config_from(data: Mapping[str, Any] | RendererTrainingConfig | None) -> RendererTrainingConfig:
    """A `RendererTrainingConfig` from its dict form (as stored in checkpoints and YAML files)."""
    if data is None or isinstance(data, RendererTrainingConfig):
        return data or RendererTrainingConfig()
    values = dict(data)
    unknown = set(values) - {f.name for f in dataclasses.fields(RendererTrainingConfig)}
    if unknown:
        raise ValueError(f"unknown renderer training settings: {sorted(unknown)}")
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    if values.get("weights") is not None:
        values["weights"] = dict(values["weights"])
    return RendererTrainingConfig(**values)


def lr_factor(step: int, config: RendererTrainingConfig) -> float:
    """Learning-rate multiplier at `step` for the warm-up + cosine schedule of `config`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.cosine_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.final_lr_fraction
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class RendererModule(lightning.LightningModule):
    """The renderer (`self.gen`) and its multi-scale discriminator (`self.disc`) with the published losses.

    Args:
        config: renderer architecture (or its dict form, whose `variant` picks the class).
        training: optimisation settings (or their dict form).
        discriminator: discriminator architecture (or its dict form); its image size follows the renderer's.
    """

    best_metric = ("val/psnr", "max")  # what the best-by-validation checkpoints are chosen by
    accumulate_grad_batches = 1  # batches per optimiser step; `training.trainer.fit` sets it from the settings

    def __init__(self, config: RendererConfig | Mapping[str, Any] | None = None,
                 training: RendererTrainingConfig | Mapping[str, Any] | None = None,
                 discriminator: DiscriminatorConfig | Mapping[str, Any] | None = None):
        super().__init__()
        if isinstance(config, Mapping):
            config = renderer_config_from_dict(config)
        if isinstance(discriminator, Mapping):
            discriminator = config_from_dict(DiscriminatorConfig, dict(discriminator))
        self.config = config = config or RendererConfig()
        self.training_config = training = training_config_from(training)
        disc_config = discriminator or DiscriminatorConfig(image_size=config.image_size)
        if disc_config.image_size != config.image_size:
            raise ValueError(f"discriminator image_size {disc_config.image_size} differs from the renderer's "
                             f"{config.image_size}")
        # Plain dicts only, so the checkpoint loads with `torch.load(weights_only=True)`.
        self.save_hyperparameters({"config": renderer_config_to_dict(config),
                                   "training": dataclasses.asdict(training),
                                   "discriminator": config_to_dict(disc_config)})
        self.automatic_optimization = False
        self.gen = build_renderer(config)
        self.gen_ema = copy.deepcopy(self.gen).requires_grad_(False) if training.ema_decay is not None else None
        self.micro_batches = 0  # batches since the last optimiser step (gradient accumulation)
        warped = [name for name in training.weights if training.uses(name) and RENDERER_LOSS_TERMS[name].needs_warp]
        if warped and not isinstance(self.gen, DemoRenderer):
            raise ValueError(f"the loss terms {warped} need a renderer with a source warp (variant: demo)")
        # The discriminator costs more than a small renderer; without a GAN term it is not built at all.
        self.disc = MultiScaleDiscriminator(disc_config) if training.uses("adversarial") else None
        # training only (not in the exported renderer): a change of motion latent -> the face-mesh landmarks' shift
        self.landmark_probe = (torch.nn.Linear(config.motion_dim, NUM_LANDMARKS * 2, bias=False)
                               if training.uses("motion_landmarks") else None)
        self.vgg = load_vgg19(training.vgg_path) if training.vgg_path else None
        if self.vgg is None:
            logger.warning("no VGG19 weights given: training without the perceptual and eye/mouth region losses")
        self.lpips = load_lpips(folder=training.metric_weights) if training.metric_weights else None

    def state_dict(self, *args, **kwargs):
        """Renderer and discriminator only: the fixed VGG19 comes from its own file, not from our checkpoints."""
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if k.startswith(FROZEN_PREFIXES)]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        for prefix in FROZEN_PREFIXES:
            frozen = getattr(self, prefix.rstrip("."))
            if frozen is not None:
                state_dict = {**state_dict, **{f"{prefix}{k}": v for k, v in frozen.state_dict().items()}}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- one step ----------------------------------------------------------------------------------------------

    def generator_loss(self, batch: Mapping[str, torch.Tensor]):
        """(rendered driving frames, weighted loss, logged terms) of one batch."""
        result = self.gen.reconstruct(batch["driving"], batch["source"])
        inputs = RendererLossInputs(result, batch, self.gen, self.vgg, self.disc, self.landmark_probe)
        loss, terms = renderer_generator_loss(inputs, self.training_config.weights)
        # spread of the driving latents over the batch: near 0 means the motion encoder has collapsed and the
        # renderer copies its source
        if result.motion.shape[0] > 1:
            terms["motion_std"] = result.motion.detach().std(dim=0).mean()
        return result.frame, loss, terms

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One generator and one discriminator update (after `accumulate_grad_batches` batches); logs
        `train/<term>`, `train/disc`.

        One backward pass of (generator loss + discriminator loss): the discriminator is frozen while the generator
        loss is computed and sees only detached fakes in its own loss, so each network gets exactly its own
        gradients, and every trained parameter receives one gradient per step (what DDP expects).
        """
        optimizer = self.optimizers()
        accumulate = self.accumulate_grad_batches
        if self.micro_batches == 0:
            optimizer.zero_grad(set_to_none=True)
        self.micro_batches += 1
        stepping = self.micro_batches == accumulate
        b = batch["driving"].shape[0]

        # gradients of the accumulating batches stay local; DDP averages them over devices with the last one
        sync = contextlib.nullcontext() if stepping else self._no_backward_sync()
        with sync:
            if self.disc is None:
                fake, loss, terms = self.generator_loss(batch)
                self.manual_backward(loss / accumulate)
            else:
                self.disc.requires_grad_(False)
                fake, loss, terms = self.generator_loss(batch)
                self.disc.requires_grad_(True)
                disc_loss = discriminator_loss(self.disc(batch["driving"]), self.disc(fake.detach()))
                self.manual_backward((loss + disc_loss) / accumulate)
                self.log("train/disc", disc_loss.detach(), prog_bar=True, batch_size=b)

        if stepping:
            self.micro_batches = 0
            for group in optimizer.param_groups:  # each network clipped on its own, as published
                torch.nn.utils.clip_grad_norm_(group["params"], GRAD_CLIP_NORM)
            optimizer.step()
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.step()
            if self.gen_ema is not None:
                tc = self.training_config
                update_ema([(self.gen_ema, self.gen)], ema_decay_at(self.global_step, tc.ema_decay, tc.ema_warmup))

        self.log_dict({f"train/{name}": value for name, value in terms.items()}, batch_size=b)
        # averaged over devices: the loss of the global batch (one scalar all-reduce a batch)
        self.log("train/loss", terms["total"], prog_bar=True, batch_size=b, sync_dist=True)
        return loss.detach()

    def _no_backward_sync(self):
        strategy = self.trainer.strategy
        return strategy.block_backward_sync() if hasattr(strategy, "block_backward_sync") else contextlib.nullcontext()

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        """Reconstruction of held-out driving frames: `val/l1`, `val/psnr`, `val/ssim` (and `val/lpips` with its
        files); saves a sample grid."""
        renderer = self.gen_ema if self.gen_ema is not None else self.gen  # the weights that will be exported
        fake, _ = renderer(batch["driving"], batch["source"])
        fake = fake.clamp(0, 1)
        real = batch["driving"]
        b = real.shape[0]
        self.log("val/l1", F.l1_loss(fake, real), sync_dist=True, batch_size=b)
        self.log("val/psnr", psnr(fake, real).mean(), prog_bar=True, sync_dist=True, batch_size=b)
        self.log("val/ssim", ssim(fake, real).mean(), sync_dist=True, batch_size=b)
        if self.lpips is not None:
            self.log("val/lpips", self.lpips(fake, real).mean(), sync_dist=True, batch_size=b)
        if batch_idx == 0 and self.trainer.is_global_zero:
            self._save_samples(batch["source"], real, fake)

    def _save_samples(self, source: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> None:
        """Rows of source | driving | rendered, as `samples/step_XXXXXXX.png` in the run folder (and TensorBoard)."""
        from PIL import Image

        n = min(self.training_config.sample_frames, real.shape[0])
        rows = torch.cat([torch.cat([source[i], real[i], fake[i]], dim=2) for i in range(n)], dim=1)  # (3, nS, 3S)
        grid = (rows.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        folder = Path(self.trainer.default_root_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(grid)).save(folder / f"step_{self.global_step:07d}.png")
        for log in self.loggers:
            experiment = getattr(log, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("val/samples", rows.float().clamp(0, 1).cpu(), self.global_step)

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """The optimiser's groups with their base rates: renderer (its motion path apart when `motion_lr_scale` is
        not 1), discriminator."""
        tc = self.training_config
        probe = list(self.landmark_probe.parameters()) if self.landmark_probe is not None else []
        if tc.motion_lr_scale == 1.0:
            groups = [{"params": list(self.gen.parameters()) + probe, "lr": tc.lr}]
        else:  # the motion path in a group of its own: its own rate and its own gradient clipping
            motion = [p for module in (self.gen.latent_token_encoder, self.gen.adapt, self.gen.latent_token_decoder)
                      for p in module.parameters()] + probe
            moving = {id(p) for p in motion}
            groups = [{"params": [p for p in self.gen.parameters() if id(p) not in moving], "lr": tc.lr},
                      {"params": motion, "lr": tc.lr * tc.motion_lr_scale}]
        if self.disc is not None:
            groups.append({"params": list(self.disc.parameters()), "lr": tc.lr})
        return groups

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One Adam, a parameter group per network (renderer, discriminator), the recipe's lr and betas for both."""
        tc = self.training_config
        optimizer = torch.optim.Adam(self._parameter_groups(), lr=tc.lr, betas=tuple(tc.betas))
        if tc.cosine_steps is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, config=tc))}

    def on_train_start(self) -> None:
        """The optimiser takes this run's rates and betas: a resumed checkpoint restores the ones it was saved
        with (and the schedule's base rates)."""
        tc = self.training_config
        bases = [group["lr"] for group in self._parameter_groups()]
        factor = lr_factor(self.global_step, tc) if tc.cosine_steps is not None else 1.0
        for group, base in zip(self.optimizers().optimizer.param_groups, bases):
            group.update(lr=base * factor, initial_lr=base, betas=tuple(tc.betas))
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.base_lrs = bases

    def resume_refusal(self, saved_training: Mapping[str, Any]) -> str | None:
        """Why a run saved with `saved_training` cannot continue with this module's settings, or None.

        Rates, betas, loss weights, batch size and the schedule's lengths can change; what changes the networks or
        the optimiser's groups (a discriminator, the landmark probe, an EMA, the motion path's own group, having a
        schedule at all) cannot.
        """
        saved = training_config_from(saved_training)
        ours = self.training_config
        structure = {
            "the discriminator (adversarial weight 0 <-> non-zero)":
                (saved.uses("adversarial"), ours.uses("adversarial")),
            "the landmark probe (motion_landmarks weight 0 <-> non-zero)":
                (saved.uses("motion_landmarks"), ours.uses("motion_landmarks")),
            "the renderer EMA (ema_decay none <-> a value)": (saved.ema_decay is None, ours.ema_decay is None),
            "the motion path's own rate (motion_lr_scale 1 <-> another value)":
                (saved.motion_lr_scale == 1.0, ours.motion_lr_scale == 1.0),
            "the learning-rate schedule (cosine_steps none <-> a value)":
                (saved.cosine_steps is None, ours.cosine_steps is None),
        }
        changed = [what for what, (before, after) in structure.items() if before != after]
        return f"the new training settings add or remove {changed[0]}" if changed else None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record what the file holds, so `imtalker.load_renderer` builds the right network from it; the EMA copy
        (if any) goes to `ema_state_dict` under the renderer's `gen.*` names."""
        if self.gen_ema is not None:
            move_ema_out(checkpoint, EMA_PREFIXES)
        checkpoint[CHECKPOINT_INFO] = {"kind": "renderer", "config": renderer_config_to_dict(self.config),
                                       "discriminator": self.hparams["discriminator"],
                                       "ema": self.gen_ema is not None}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.gen_ema is not None:
            move_ema_in(checkpoint, EMA_PREFIXES)
