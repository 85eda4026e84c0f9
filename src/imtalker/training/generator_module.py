"""Lightning training of the motion generator (MODEL.md sections 4 and 7).

Recipe: rectified flow on motion latents, x_t = t x1 + (1 - t) noise with t ~ U(0, 1) and target velocity
x1 - noise; loss = L1(v, target) + L1 of their frame-to-frame differences; Adam lr 1e-4, betas (0.5, 0.999); EMA 0.9999;
batch 16 per GPU; gradient norm clipped at 1 (set on the `Trainer`, see `train_generator`). The network only sees
the last `clip_frames` frames as noisy input; the `prev_frames` context frames before them are given clean, as at
sampling time.

Checkpoints are plain Lightning files: `state_dict` holds `model.*` (the `MotionGenerator`) and `ema_state_dict` the
EMA copy under the same `model.*` keys, so `imtalker.load_generator(path)` and `load_generator(path, ema=True)` read
them like the published `generator.ckpt`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from ..config import GeneratorConfig, config_from_dict, config_to_dict
from ..models.generator import MotionGenerator
from .losses import flow_matching_loss, rectified_flow_pair

logger = logging.getLogger(__name__)

EMA_PREFIX = "ema."  # where the EMA copy lives inside the LightningModule; written out as `model.*`
MODEL_PREFIX = "model."
OPTIONAL_TRACKS = ("pose", "gaze", "cam")


@dataclass(frozen=True)
class GeneratorTrainingConfig:
    """Optimisation knobs of the generator recipe (MODEL.md section 7); defaults are the published ones."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    ema_decay: float = 0.9999
    cond_dropout: float = 0.1  # per sample and per condition (audio, pose, gaze, cam)
    context_dropout: float = 0.5  # per sample, all context tensors together
    batch_size: int = 16  # per device


def _per_sample_keep(batch: int, p: float, like: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1) mask that is 0 with probability `p` and 1 otherwise."""
    return (torch.rand(batch, 1, 1, device=like.device) >= p).to(like.dtype)


class GeneratorModule(lightning.LightningModule):
    """Wraps a `MotionGenerator` (`self.model`) with the rectified-flow loss and an EMA copy (`self.ema`).

    Args:
        config: architecture (a `GeneratorConfig` or its dict form, as stored in the checkpoint's hyper-parameters).
        training: optimisation settings (a `GeneratorTrainingConfig` or its dict form).
    """

    def __init__(
        self,
        config: GeneratorConfig | Mapping[str, Any] | None = None,
        training: GeneratorTrainingConfig | Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if isinstance(config, Mapping):
            config = config_from_dict(GeneratorConfig, dict(config))
        if isinstance(training, Mapping):
            values = dict(training)
            if "betas" in values:
                values["betas"] = tuple(values["betas"])
            training = GeneratorTrainingConfig(**values)
        self.config = config = config or GeneratorConfig()
        self.training_config = training = training or GeneratorTrainingConfig()
        # Plain dicts only, so the checkpoint loads with `torch.load(weights_only=True)`.
        self.save_hyperparameters({"config": config_to_dict(config), "training": dataclasses.asdict(training)})
        self.model = MotionGenerator(config)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)  # no dropout: train/eval mode is moot

    # -- loss ---------------------------------------------------------------------------------------------------

    def _flow_loss(self, batch: Mapping[str, torch.Tensor], dropout: bool) -> torch.Tensor:
        """Rectified-flow loss of one batch.

        Args:
            batch: `motion` (B, P + L, motion_dim) ground-truth latents, context frames first; `audio`
                (B, P + L, audio_dim); `ref` (B, motion_dim); optional `pose` (B, P + L, 3), `gaze` (B, P + L, 2),
                `cam` (B, P + L, 3). A missing track is zeros in the projected space, as at sampling time.
            dropout: apply the training-time condition and context dropout.

        Returns:
            Scalar loss.
        """
        cfg, model = self.config, self.model
        p = cfg.prev_frames
        motion, ref = batch["motion"], batch["ref"]
        b, n, _ = motion.shape
        if n <= p + 1:
            raise ValueError(f"motion needs more than prev_frames + 1 = {p + 1} frames, got {n}")

        conds = {"audio": model.audio_projection(batch["audio"])}  # (B, N, cond_dim)
        projections = {"pose": model.pose_projection, "gaze": model.gaze_projection, "cam": model.cam_projection}
        for name, projection in projections.items():
            track = batch.get(name)
            conds[name] = projection(track) if track is not None else motion.new_zeros(b, n, cfg.cond_dim)
        prev_x = motion[:, :p]  # (B, P, motion_dim)
        prev = {name: c[:, :p] for name, c in conds.items()}  # (B, P, cond_dim)
        clip = {name: c[:, p:] for name, c in conds.items()}  # (B, L, cond_dim)

        if dropout:
            tc = self.training_config
            # Each condition is dropped on the clip frames only: the guided sampler's unconditional pass zeroes the
            # clip audio and keeps the context audio.
            clip = {name: c * _per_sample_keep(b, tc.cond_dropout, c) for name, c in clip.items()}
            keep = _per_sample_keep(b, tc.context_dropout, motion)  # one mask for all context tensors
            prev_x = prev_x * keep
            prev = {name: c * keep for name, c in prev.items()}

        x1 = motion[:, p:]  # (B, L, motion_dim)
        t = torch.rand(b, device=motion.device, dtype=motion.dtype)  # (B,)
        x_t, target = rectified_flow_pair(x1, torch.randn_like(x1), t)
        velocity = model.fmt(
            t, x_t, clip["audio"], prev_x, prev["audio"], ref,
            clip["gaze"], prev["gaze"], clip["pose"], prev["pose"], clip["cam"], prev["cam"],
        )[:, p:]  # (B, L, motion_dim)
        return flow_matching_loss(velocity, target)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Loss with condition/context dropout, logged as `train/loss`."""
        loss = self._flow_loss(batch, dropout=True)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["motion"].shape[0])
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Loss without dropout, logged as `val/loss` (epoch mean, synchronised across devices)."""
        loss = self._flow_loss(batch, dropout=False)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["motion"].shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over the generator's parameters. Gradient clipping (norm 1) is a `Trainer` argument."""
        tc = self.training_config
        return torch.optim.Adam(self.model.parameters(), lr=tc.lr, betas=tuple(tc.betas))

    # -- EMA ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
        decay = self.training_config.ema_decay
        for ema_p, p in zip(self.ema.parameters(), self.model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - decay)
        for ema_b, b in zip(self.ema.buffers(), self.model.buffers()):
            ema_b.copy_(b)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Update the EMA after each optimiser step."""
        self.update_ema()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Move the EMA weights out of `state_dict` into `ema_state_dict`, renamed `ema.*` -> `model.*`."""
        state = checkpoint["state_dict"]
        ema_keys = [k for k in state if k.startswith(EMA_PREFIX)]
        checkpoint["ema_state_dict"] = {MODEL_PREFIX + k[len(EMA_PREFIX):]: state.pop(k) for k in ema_keys}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put `ema_state_dict` back as `ema.*` (or start the EMA from the weights when the file has none)."""
        state = checkpoint["state_dict"]
        source = checkpoint.get("ema_state_dict")
        if source is None:
            source = {k: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}
        for key, value in source.items():
            if key.startswith(MODEL_PREFIX):
                state[EMA_PREFIX + key[len(MODEL_PREFIX):]] = value


# -- data -------------------------------------------------------------------------------------------------------


class MotionClipDataset(Dataset):
    """Random windows of `prev_frames + clip_frames` frames from per-video tracks.

    Item `i` comes from video `i % len(videos)`; its window start and its reference frame (any frame of the same
    video) are drawn from a generator seeded with (seed, i), so an index always gives the same sample.

    Args:
        videos: one dict per video: `motion` (N, motion_dim), `audio` (N, audio_dim) and optionally `pose` (N, 3),
            `gaze` (N, 2), `cam` (N, 3); every video has the same set of tracks and N >= window.
        window: frames per sample, P + L.
        samples_per_epoch: dataset length; defaults to the number of videos.
        seed: base seed of the per-index draws.

    Raises:
        ValueError: on an empty list, a missing `motion`/`audio`, tracks of different lengths, differing track sets,
            or a video shorter than `window`.
    """

    def __init__(self, videos: Sequence[Mapping[str, torch.Tensor]], window: int, samples_per_epoch: int | None = None,
                 seed: int = 0):
        if not videos:
            raise ValueError("videos is empty")
        keys = None
        for index, video in enumerate(videos):
            if "motion" not in video or "audio" not in video:
                raise ValueError(f"video {index} needs 'motion' and 'audio' tracks, got {sorted(video)}")
            names = {"motion", "audio"} | {k for k in OPTIONAL_TRACKS if k in video}
            if keys is not None and names != keys:
                raise ValueError(f"video {index} has tracks {sorted(names)}, the first video {sorted(keys)}")
            keys = names
            lengths = {name: video[name].shape[0] for name in names}
            if len(set(lengths.values())) != 1:
                raise ValueError(f"video {index} has tracks of different lengths: {lengths}")
            if lengths["motion"] < window:
                raise ValueError(f"video {index} has {lengths['motion']} frames, fewer than the window {window}")
        self.videos = [{name: video[name] for name in keys} for video in videos]
        self.window = window
        self.samples_per_epoch = samples_per_epoch or len(videos)
        self.seed = seed

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Returns `motion` (W, motion_dim), `audio` (W, audio_dim), `ref` (motion_dim) and optional tracks (W, d)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        video = self.videos[index % len(self.videos)]
        frames = video["motion"].shape[0]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        start = int(torch.randint(frames - self.window + 1, (1,), generator=gen))
        ref_index = int(torch.randint(frames, (1,), generator=gen))
        item = {name: track[start:start + self.window].float() for name, track in video.items()}
        item["ref"] = video["motion"][ref_index].float()
        return item


def synthetic_clips(num_videos: int, frames: int, audio_dim: int, seed: int = 0, motion_dim: int = 32,
                    tracks: bool = False) -> list[dict[str, torch.Tensor]]:
    """Toy videos whose motion is learnable from the audio: motion = tanh(audio @ W) + smooth noise.

    The audio features are sums of slow sinusoids, W one fixed random map shared by all videos, and the noise a
    moving average of Gaussian noise, so every track is temporally smooth like real motion latents.

    Args:
        num_videos: number of videos.
        frames: frames per video.
        audio_dim: audio feature width.
        seed: seed of a private generator (the global RNG is untouched).
        motion_dim: motion latent width.
        tracks: also make `pose` (N, 3), `gaze` (N, 2), `cam` (N, 3).

    Returns:
        One dict of float32 tensors per video.
    """
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(audio_dim, motion_dim, generator=gen) / math.sqrt(audio_dim)  # (A, D)
    time = torch.arange(frames, dtype=torch.float32)[:, None]  # (N, 1)

    def smooth(width: int, scale: float) -> torch.Tensor:
        freq = torch.rand(1, width, generator=gen) * 0.3 + 0.02
        phase = torch.rand(1, width, generator=gen) * 2 * math.pi
        return scale * torch.sin(time * freq + phase)  # (N, width)

    videos = []
    for _ in range(num_videos):
        audio = smooth(audio_dim, 1.0) + smooth(audio_dim, 0.5)  # (N, A)
        noise = torch.randn(frames + 4, motion_dim, generator=gen).unfold(0, 5, 1).mean(-1)  # (N, D)
        video = {"audio": audio, "motion": torch.tanh(audio @ weight) + 0.05 * noise}
        if tracks:
            video.update(pose=smooth(3, 0.2), gaze=smooth(2, 0.1), cam=smooth(3, 0.1))
        videos.append(video)
    return videos


# -- trainer ----------------------------------------------------------------------------------------------------


def _loader(data: Dataset | DataLoader, batch_size: int, shuffle: bool, num_workers: int) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, drop_last=shuffle,
                      persistent_workers=num_workers > 0)


def train_generator(
    module: GeneratorModule,
    train_data: Dataset | DataLoader,
    val_data: Dataset | DataLoader | None = None,
    *,
    max_steps: int,
    default_root_dir: str | os.PathLike,
    devices: int | str | Sequence[int] = "auto",
    num_nodes: int = 1,
    precision: str = "32-true",
    accelerator: str = "auto",
    resume: str | os.PathLike | None = "last",
    log_every_n_steps: int = 50,
    checkpoint_every_n_steps: int = 1000,
    num_workers: int = 0,
    **trainer_kwargs: Any,
) -> lightning.Trainer:
    """Train (or continue training) the generator with the published recipe.

    Checkpoints go to `<default_root_dir>/checkpoints/` (`last.ckpt` always holds the latest step, also written when
    training stops between two `checkpoint_every_n_steps`), CSV logs to `<default_root_dir>/logs/`. Gradients are
    clipped to norm 1. Strategy "auto": one device trains plainly; several devices (or nodes) use DDP, each with its
    own `batch_size` (the recipe's 16 is per GPU).

    Args:
        module: the module to train.
        train_data: a dataset (batched with `module.training_config.batch_size`, shuffled) or a ready `DataLoader`.
        val_data: optional validation dataset or `DataLoader`; `val/loss` is computed every training epoch.
        max_steps: total optimiser steps, counted from step 0 (a resumed run continues up to it).
        default_root_dir: run folder.
        devices, num_nodes, precision, accelerator: as for `lightning.Trainer`.
        resume: "last" continues from `checkpoints/last.ckpt` when present; a path continues from that file; None
            starts afresh.
        log_every_n_steps: logging interval.
        checkpoint_every_n_steps: checkpoint interval.
        num_workers: data loader workers (datasets only).
        **trainer_kwargs: further `lightning.Trainer` arguments (e.g. `enable_progress_bar=False`).

    Returns:
        The trainer after `fit`.

    Raises:
        FileNotFoundError: `resume` is a path that does not exist.
    """
    root = Path(default_root_dir)
    ckpt_dir = root / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=checkpoint_every_n_steps)
    trainer = lightning.Trainer(
        max_steps=max_steps,
        default_root_dir=root,
        devices=devices,
        num_nodes=num_nodes,
        precision=precision,
        accelerator=accelerator,
        strategy="auto",
        gradient_clip_val=1.0,
        gradient_clip_algorithm="norm",
        logger=CSVLogger(save_dir=root, name="logs"),
        callbacks=[checkpoint, *trainer_kwargs.pop("callbacks", [])],
        log_every_n_steps=log_every_n_steps,
        **trainer_kwargs,
    )
    if resume == "last":
        last = ckpt_dir / "last.ckpt"
        ckpt_path = last if last.is_file() else None
    elif resume is None:
        ckpt_path = None
    else:
        ckpt_path = Path(resume)
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"checkpoint to resume from not found: {ckpt_path}")
    if ckpt_path is not None:
        logger.info("resuming generator training from %s", ckpt_path)

    batch_size = module.training_config.batch_size
    train_loader = _loader(train_data, batch_size, shuffle=True, num_workers=num_workers)
    val_loader = _loader(val_data, batch_size, False, num_workers) if val_data is not None else None
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader,
                ckpt_path=str(ckpt_path) if ckpt_path is not None else None)
    # ModelCheckpoint writes only every n steps; make sure last.ckpt holds the final step.
    if trainer.global_step > 0 and checkpoint._last_global_step_saved != trainer.global_step:
        trainer.save_checkpoint(ckpt_dir / "last.ckpt")
    return trainer
