"""Generator training with Lightning on tiny configs and synthetic clips (CPU)."""

from __future__ import annotations

import lightning
import pytest
import torch

import imtalker
from imtalker.sampling import SamplingOptions, sample_motion
from imtalker.config import GeneratorConfig
from imtalker.training.generator_module import (
    GeneratorModule,
    GeneratorTrainingConfig,
    MotionClipDataset,
    synthetic_clips,
)
from imtalker.training.trainer import fit as train_generator

TINY = GeneratorConfig(hidden_dim=32, depth=1, num_heads=2, audio_dim=8, clip_frames=10, prev_frames=2)
WINDOW = TINY.prev_frames + TINY.clip_frames
QUIET = dict(enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


class Recorder(lightning.Callback):
    """Collects the training losses and the step each fit starts from."""

    def __init__(self):
        self.losses: list[float] = []
        self.start_steps: list[int] = []

    def on_train_start(self, trainer, pl_module):
        self.start_steps.append(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def make_dataset(seed: int = 0, tracks: bool = False, samples: int = 64) -> MotionClipDataset:
    videos = synthetic_clips(num_videos=4, frames=40, audio_dim=TINY.audio_dim, seed=seed, tracks=tracks)
    return MotionClipDataset(videos, window=WINDOW, samples_per_epoch=samples, seed=seed)


def test_dataset_is_deterministic_and_shaped():
    data = make_dataset(tracks=True)
    a, b = data[3], data[3]
    assert set(a) == {"motion", "audio", "ref", "pose", "gaze", "cam"}
    assert a["motion"].shape == (WINDOW, 32) and a["audio"].shape == (WINDOW, 8) and a["ref"].shape == (32,)
    assert a["pose"].shape == (WINDOW, 3) and a["gaze"].shape == (WINDOW, 2) and a["cam"].shape == (WINDOW, 3)
    for key in a:
        assert torch.equal(a[key], b[key])
    with pytest.raises(ValueError, match="fewer than the window"):
        MotionClipDataset(synthetic_clips(1, WINDOW - 1, 8), window=WINDOW)


def test_steps_with_all_tracks_and_validation(tmp_path):
    torch.manual_seed(0)
    module = GeneratorModule(TINY, GeneratorTrainingConfig(batch_size=4))
    train, val = make_dataset(tracks=True, samples=8), make_dataset(seed=1, tracks=True, samples=4)
    trainer = train_generator(module, train, val,
                              max_steps=2, default_root_dir=tmp_path, accelerator="cpu", log_every_n_steps=1, **QUIET)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_loss_decreases(tmp_path):
    torch.manual_seed(0)
    module = GeneratorModule(TINY, GeneratorTrainingConfig(lr=2e-3, batch_size=16))
    recorder = Recorder()
    train_generator(module, make_dataset(samples=160), max_steps=60, default_root_dir=tmp_path, accelerator="cpu",
                    log_every_n_steps=5, callbacks=[recorder], **QUIET)
    assert len(recorder.losses) == 60
    first, last = sum(recorder.losses[:10]) / 10, sum(recorder.losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)
    assert (tmp_path / "logs").is_dir()


def test_gradient_accumulation_steps_once_per_group_of_batches(tmp_path):
    module = GeneratorModule(TINY, GeneratorTrainingConfig(batch_size=4))
    recorder = Recorder()
    trainer = train_generator(module, make_dataset(samples=32), max_steps=3, accumulate_grad_batches=2,
                              default_root_dir=tmp_path, accelerator="cpu", loggers=(), callbacks=[recorder], **QUIET)
    assert trainer.global_step == 3 and len(recorder.losses) == 6  # six batches made three optimiser steps


def test_resume_and_load_checkpoint(tmp_path):
    torch.manual_seed(0)
    data = make_dataset(samples=64)
    training = GeneratorTrainingConfig(batch_size=8, ema_decay=0.9)
    first = train_generator(GeneratorModule(TINY, training), data, max_steps=20, default_root_dir=tmp_path,
                            accelerator="cpu", checkpoint_every_n_steps=20, log_every_n_steps=5, **QUIET)
    assert first.global_step == 20
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file()

    recorder = Recorder()
    second = train_generator(GeneratorModule(TINY, training), data, max_steps=30, default_root_dir=tmp_path,
                             accelerator="cpu", checkpoint_every_n_steps=20, log_every_n_steps=5,
                             callbacks=[recorder], **QUIET)
    assert recorder.start_steps == [20]
    assert second.global_step == 30
    assert len(recorder.losses) == 10

    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 30
    assert all(k.startswith("model.") for k in ckpt["state_dict"])
    assert set(ckpt["ema_state_dict"]) == set(ckpt["state_dict"])
    assert any(not torch.equal(ckpt["ema_state_dict"][k], ckpt["state_dict"][k]) for k in ckpt["state_dict"])

    for ema in (False, True):
        model = imtalker.load_generator(last, ema=ema)
        expected = ckpt["ema_state_dict" if ema else "state_dict"]["model.fmt.c_embedder.weight"]
        assert torch.equal(model.fmt.c_embedder.weight, expected)
        out = sample_motion(model, torch.randn(1, 25, 8), torch.randn(1, 32), options=SamplingOptions(nfe=2, seed=0))
        assert out.shape == (1, 25, 32)
        assert torch.isfinite(out).all()

    restored = GeneratorModule.load_from_checkpoint(last)
    assert restored.config == TINY
    assert torch.equal(restored.ema.fmt.c_embedder.weight, ckpt["ema_state_dict"]["model.fmt.c_embedder.weight"])
