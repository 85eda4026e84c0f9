"""Lightning training of the motion generator (docs/architecture.md §4, §7).

Recipe: rectified flow on motion latents, x_t = t x1 + (1 - t) noise with t ~ U(0, 1) and target velocity
x1 - noise; loss = L1(v, target) + L1 of their frame-to-frame differences; Adam lr 1e-4, betas (0.5, 0.999); EMA 0.9999;
batch 16 per GPU; gradient norm clipped at 1 (set on the `Trainer`, see `imtalker.training.trainer.fit`). The network only sees
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning
import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import GeneratorConfig, config_from_dict, config_to_dict
from ..constants import SAMPLES_PER_FRAME
from ..models.mel import MelAudioEncoder, MelConfig
from ..sampling import SamplingOptions, sample_motion
from ..weights import CHECKPOINT_INFO
from ..models.generator import MotionGenerator
from .ema import ema_decay_at, move_ema_in, move_ema_out, update_ema
from .losses import flow_matching_loss, rectified_flow_pair
from .settings import check_betas, check_int, check_number

logger = logging.getLogger(__name__)

# where the EMA copies live inside the LightningModule -> the names they are written under in `ema_state_dict`
EMA_PREFIXES = {"ema.": "model.", "ema_audio_encoder.": "audio_encoder."}
OPTIONAL_TRACKS = ("pose", "gaze", "cam")


@dataclass(frozen=True)
class GeneratorTrainingConfig:
    """Optimisation knobs of the generator recipe (docs/architecture.md §7); defaults are the published ones."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + step) / (10 + step)): short runs get a usable EMA too
    cond_dropout: float = 0.1  # per sample and per condition (audio, pose, gaze, cam)
    context_dropout: float = 0.5  # per sample, all context tensors together
    batch_size: int = 16  # per device

    def __post_init__(self):
        check_number("training.lr", self.lr, 0.0, low_open=True)
        check_betas("training.betas", self.betas)
        check_number("training.ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        check_number("training.cond_dropout", self.cond_dropout, 0.0, 1.0)
        check_number("training.context_dropout", self.context_dropout, 0.0, 1.0)
        check_int("training.batch_size", self.batch_size, 1)
        if not isinstance(self.ema_warmup, bool):
            raise ValueError(f"training.ema_warmup must be true or false, got {self.ema_warmup!r}")


def _per_sample_keep(batch: int, p: float, like: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1) mask that is 0 with probability `p` and 1 otherwise."""
    return (torch.rand(batch, 1, 1, device=like.device) >= p).to(like.dtype)


class GeneratorModule(lightning.LightningModule):
    """Wraps a `MotionGenerator` (`self.model`) with the rectified-flow loss and an EMA copy (`self.ema`).

    With `mel_config`, a log-mel front end (`self.audio_encoder`, a `MelAudioEncoder`) is trained with the generator
    from `waveform` batches, and has an EMA copy too (`self.ema_audio_encoder`).

    Args:
        config: architecture (a `GeneratorConfig` or its dict form, as stored in the checkpoint's hyper-parameters).
        training: optimisation settings (a `GeneratorTrainingConfig` or its dict form).
        mel_config: a `MelConfig` (or its dict form) to train the weight-free audio front end; None when batches
            carry features of a frozen encoder.
        renderer_digest: `imtalker.weights.weights_digest` of the renderer whose motion latents the generator
            learns; recorded in checkpoints and exported files, so a generator is not paired with another renderer
            silently.
    """

    best_metric = ("val/motion_l1", "min")  # what the best-by-validation checkpoints are chosen by

    def __init__(
        self,
        config: GeneratorConfig | Mapping[str, Any] | None = None,
        training: GeneratorTrainingConfig | Mapping[str, Any] | None = None,
        mel_config: MelConfig | Mapping[str, Any] | None = None,
        renderer_digest: str | None = None,
    ):
        super().__init__()
        if isinstance(config, Mapping):
            config = config_from_dict(GeneratorConfig, dict(config))
        if isinstance(training, Mapping):
            training = config_from_dict(GeneratorTrainingConfig, dict(training))
        if isinstance(mel_config, Mapping):
            mel_config = config_from_dict(MelConfig, dict(mel_config))
        self.config = config = config or GeneratorConfig()
        self.training_config = training = training or GeneratorTrainingConfig()
        if mel_config is not None and mel_config.feature_dim != config.audio_dim:
            raise ValueError(f"the log-mel front end gives {mel_config.feature_dim}-d features but the generator "
                             f"expects audio_dim={config.audio_dim}")
        # Plain dicts only, so the checkpoint loads with `torch.load(weights_only=True)`.
        self.save_hyperparameters({"config": config_to_dict(config), "training": dataclasses.asdict(training),
                                   "mel_config": config_to_dict(mel_config) if mel_config is not None else None,
                                   "renderer_digest": renderer_digest})
        self.model = MotionGenerator(config)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)  # no dropout: train/eval mode is moot
        self.audio_encoder = MelAudioEncoder(mel_config) if mel_config is not None else None
        self.ema_audio_encoder = (copy.deepcopy(self.audio_encoder).requires_grad_(False)
                                  if self.audio_encoder is not None else None)

    def _audio_features(self, batch: Mapping[str, torch.Tensor], encoder: nn.Module | None) -> torch.Tensor:
        """(B, W, audio_dim): the batch's stored features, or the front end's features of its waveform."""
        if "audio" in batch:
            return batch["audio"]
        if encoder is None:
            raise ValueError("the batch holds a waveform but the module has no audio front end (mel_config)")
        waveform = batch["waveform"]
        return encoder(waveform, waveform.shape[1] // SAMPLES_PER_FRAME)

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

        features = self._audio_features(batch, self.audio_encoder)
        conditions = model.project(features, batch.get("pose"), batch.get("gaze"), batch.get("cam"))  # (B, N, cond)
        prev_x = motion[:, :p]  # (B, P, motion_dim)
        prev = conditions.map(lambda c: c[:, :p])  # (B, P, cond_dim) each
        clip = conditions.map(lambda c: c[:, p:])  # (B, L, cond_dim) each

        if dropout:
            tc = self.training_config
            # Each condition is dropped on the clip frames only: the guided sampler's unconditional pass zeroes the
            # clip audio and keeps the context audio.
            clip = clip.map(lambda c: c * _per_sample_keep(b, tc.cond_dropout, c))
            keep = _per_sample_keep(b, tc.context_dropout, motion)  # one mask for all context tensors
            prev_x = prev_x * keep
            prev = prev.map(lambda c: c * keep)

        x1 = motion[:, p:]  # (B, L, motion_dim)
        t = torch.rand(b, device=motion.device, dtype=motion.dtype)  # (B,)
        x_t, target = rectified_flow_pair(x1, torch.randn_like(x1), t)
        velocity = model.fmt(t, x_t, prev_x, ref, clip, prev)[:, p:]  # (B, L, motion_dim)
        return flow_matching_loss(velocity, target)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Loss with condition/context dropout, logged as `train/loss`."""
        loss = self._flow_loss(batch, dropout=True)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["motion"].shape[0])
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Loss without dropout (`val/loss`), and `val/motion_l1`: the mean absolute error of motion the EMA model
        samples for the clip frames (10 steps, no guidance, no context) against the ground-truth latents."""
        b = batch["motion"].shape[0]
        loss = self._flow_loss(batch, dropout=False)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=b)
        p = self.config.prev_frames
        with torch.no_grad():
            audio = self._audio_features(batch, self.ema_audio_encoder)[:, p:]
            tracks = {name: batch[name][:, p:] for name in OPTIONAL_TRACKS if name in batch}
            motion = sample_motion(self.ema, audio, batch["ref"], options=SamplingOptions(cfg_scale=1.0, seed=batch_idx),
                                   **tracks)
        self.log("val/motion_l1", (motion - batch["motion"][:, p:]).abs().mean(), sync_dist=True, batch_size=b)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over the generator's (and front end's) parameters. Gradient clipping (norm 1) is a `Trainer`
        argument."""
        tc = self.training_config
        params = list(self.model.parameters())
        if self.audio_encoder is not None:
            params += list(self.audio_encoder.parameters())
        return torch.optim.Adam(params, lr=tc.lr, betas=tuple(tc.betas))

    # -- EMA ----------------------------------------------------------------------------------------------------

    def _ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = [(self.ema, self.model)]
        if self.audio_encoder is not None:
            pairs.append((self.ema_audio_encoder, self.audio_encoder))
        return pairs

    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
        tc = self.training_config
        update_ema(self._ema_pairs(), ema_decay_at(self.global_step, tc.ema_decay, tc.ema_warmup))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Update the EMA after each optimiser step."""
        self.update_ema()

    def on_train_start(self) -> None:
        """The optimiser takes this run's rate and betas: a resumed checkpoint restores the ones it was saved with."""
        tc = self.training_config
        for group in self.optimizers().optimizer.param_groups:
            group.update(lr=tc.lr, initial_lr=tc.lr, betas=tuple(tc.betas))

    def resume_refusal(self, saved_training: Mapping[str, Any]) -> str | None:
        """Why a run saved with `saved_training` cannot continue with this module's (None: every setting of the
        generator recipe can change on resume)."""
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Move the EMA weights out of `state_dict` into `ema_state_dict` (`ema.*` -> `model.*`,
        `ema_audio_encoder.*` -> `audio_encoder.*`), and record what the file holds for `imtalker.weights`."""
        move_ema_out(checkpoint, EMA_PREFIXES)
        checkpoint[CHECKPOINT_INFO] = {"kind": "generator", "config": config_to_dict(self.config),
                                       "mel_config": self.hparams["mel_config"],
                                       "renderer_digest": self.hparams.get("renderer_digest")}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put `ema_state_dict` back under the EMA prefixes (or start the EMA from the weights when it is absent)."""
        move_ema_in(checkpoint, EMA_PREFIXES)


# -- data -------------------------------------------------------------------------------------------------------


class MotionClipDataset(Dataset):
    """Random windows of `prev_frames + clip_frames` frames from per-video tracks.

    Item `i` comes from video `i % len(videos)`; its window start and its reference frame (any frame of the same
    video) are drawn from a generator seeded with (seed, i), so an index always gives the same sample.

    Args:
        videos: one dict per video: `motion` (N, motion_dim), `audio` (N, audio_dim) features of a frozen encoder or
            `waveform` (N * 640,) 16 kHz samples for a front end trained with the generator, and optionally `pose`
            (N, 3), `gaze` (N, 2), `cam` (N, 3); every video has the same set of tracks and N >= window.
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
            audio = "audio" if "audio" in video else "waveform"
            if "motion" not in video or audio not in video:
                raise ValueError(f"video {index} needs 'motion' and 'audio' (or 'waveform') tracks, got {sorted(video)}")
            names = {"motion", audio} | {k for k in OPTIONAL_TRACKS if k in video}
            if keys is not None and names != keys:
                raise ValueError(f"video {index} has tracks {sorted(names)}, the first video {sorted(keys)}")
            keys = names
            lengths = {name: video[name].shape[0] // (SAMPLES_PER_FRAME if name == "waveform" else 1)
                       for name in names}
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
        """Returns `motion` (W, motion_dim), `audio` (W, audio_dim) or `waveform` (W * 640,), `ref` (motion_dim)
        and optional tracks (W, d)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        video = self.videos[index % len(self.videos)]
        frames = video["motion"].shape[0]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        start = int(torch.randint(frames - self.window + 1, (1,), generator=gen))
        ref_index = int(torch.randint(frames, (1,), generator=gen))
        item = {}
        for name, track in video.items():
            step = SAMPLES_PER_FRAME if name == "waveform" else 1  # the waveform is indexed in samples
            item[name] = track[start * step:(start + self.window) * step].float()
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
