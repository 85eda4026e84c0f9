"""The Lightning `Trainer` set-up shared by renderer and generator training: checkpoints, resume, preemption, logs,
DDP.

A run folder's checkpoints are `checkpoints/last.ckpt`, the newest `keep_last_checkpoints` periodic ones
(`step-NNNNNNN.ckpt`) and the best `keep_best_checkpoints` by the module's validation metric
(`best-NNNNNNN.ckpt`). The checkpoint a run continues from, and the one `imtalker export` takes, is the one with the
highest step whatever it is called (`latest_checkpoint`), so a copied or renamed run folder cannot go back to an
older step.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..errors import CheckpointError, InputError, TrainingInterrupted
from ..weights import checkpoint_entries
from .settings import TrainerSettings

logger = logging.getLogger(__name__)

LAST = "last.ckpt"


def _loader(data: Dataset | DataLoader, batch_size: int, shuffle: bool, num_workers: int) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    shuffle = shuffle and not isinstance(data, IterableDataset)  # a stream shuffles itself
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, drop_last=True,
                      persistent_workers=num_workers > 0)


def make_loggers(root: Path, settings: TrainerSettings) -> list[Logger]:
    """CSV, TensorBoard and/or W&B loggers writing under `<root>/logs/`."""
    loggers: list[Logger] = []
    for name in settings.loggers:
        if name == "csv":
            loggers.append(CSVLogger(save_dir=root / "logs", name="csv"))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir=root / "logs", name="tensorboard", default_hp_metric=False))
        elif name == "wandb":  # checked at start: the package is there
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(project=settings.wandb_project, name=root.name, save_dir=root / "logs"))
    return loggers


def checkpoint_step(path: str | os.PathLike) -> int:
    """The optimiser step a Lightning checkpoint was written at (its tensors are not read).

    Raises:
        CheckpointError: not a Lightning checkpoint with a step.
    """
    step = checkpoint_entries(path).get("global_step")
    if not isinstance(step, int):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no global_step)")
    return step


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The checkpoint of a run folder (or of a `checkpoints/` folder) with the highest step; on a tie `last.ckpt`,
    then the newest file. None when there is none."""
    folder = Path(root)
    if (folder / "checkpoints").is_dir():
        folder = folder / "checkpoints"
    best, best_key = None, None
    for path in folder.glob("*.ckpt"):
        try:
            step = checkpoint_step(path)
        except Exception as err:  # a foreign or broken file: not a candidate, but say so
            logger.warning("ignoring %s: not a readable training checkpoint (%s)", path, err)
            continue
        key = (step, path.name == LAST, path.stat().st_mtime_ns)
        if best_key is None or key > best_key:
            best, best_key = path, key
    return best


def resume_path(root: Path, resume: str | os.PathLike | None) -> Path | None:
    """The checkpoint to continue from: "last" -> `latest_checkpoint(root)`, a path, or None.

    Raises:
        FileNotFoundError: `resume` is a path that does not exist.
    """
    if resume == "last":
        return latest_checkpoint(root)
    if resume is None:
        return None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint to resume from not found: {path}")
    return path


class SaveOnInterrupt(lightning.Callback):
    """SIGTERM (a scheduler's preemption notice) and SIGINT (Ctrl-C) end training with `last.ckpt` at the current
    step; `fit` then raises `TrainingInterrupted`. Lightning turns SIGTERM into an exception after the current
    batch, so the saved state is that of a finished step."""

    def __init__(self, path: Path):
        self.path = path
        self.signal: signal.Signals | None = None

    def on_exception(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule,
                     exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.signal = signal.SIGTERM
        elif isinstance(exception, KeyboardInterrupt):
            self.signal = signal.SIGINT
        else:
            return
        trainer.save_checkpoint(self.path)


def fit(
    module: lightning.LightningModule,
    train_data: Dataset | DataLoader,
    val_data: Dataset | DataLoader | None = None,
    *,
    default_root_dir: str | os.PathLike,
    resume: str | os.PathLike | None = "last",
    settings: TrainerSettings | None = None,
    before_fit: Callable[[lightning.Trainer], None] | None = None,
    **kwargs: Any,
) -> lightning.Trainer:
    """Train (or continue training) a `RendererModule` or `GeneratorModule`.

    Generator gradients are clipped to norm 1 here; the renderer clips its networks itself (manual optimisation,
    which also does its own gradient accumulation). Several devices or nodes train with the strategy of `settings`
    (DDP by default), each with its own batch of `module.training_config.batch_size`.

    Args:
        module: the module to train.
        train_data: a dataset (batched with `module.training_config.batch_size`, shuffled unless it is a stream) or a
            ready `DataLoader`.
        val_data: optional validation dataset or `DataLoader`.
        default_root_dir: run folder: `checkpoints/`, `logs/`.
        resume: "last" continues from `latest_checkpoint(default_root_dir)` when there is one; a path continues
            from that file; None starts afresh.
        settings: trainer settings (default `TrainerSettings()`).
        before_fit: called with the trainer once Lightning has accepted every setting, before training starts
            (e.g. to write the run's config only when the run can start).
        **kwargs: `TrainerSettings` fields that replace those of `settings` (e.g. `max_steps=10`), then further
            `lightning.Trainer` arguments (e.g. `callbacks=[...]`, `enable_progress_bar=False`).

    Returns:
        The trainer after `fit`.

    Raises:
        TrainingInterrupted: SIGTERM or SIGINT stopped training; `last.ckpt` holds the step it stopped at.
        InputError: Lightning refused the settings (e.g. an unknown strategy).
    """
    names = {f.name for f in dataclasses.fields(TrainerSettings)}
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    try:
        settings = dataclasses.replace(settings or TrainerSettings(), **overrides)
    except ValueError as err:
        raise InputError(str(err)) from None
    root = Path(default_root_dir)
    ckpt_dir = root / "checkpoints"
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)

    # No version counter: a run folder copied elsewhere overwrites its own last.ckpt instead of adding last-v1.ckpt.
    periodic = ModelCheckpoint(dirpath=ckpt_dir, filename="step-{step:07d}", auto_insert_metric_name=False,
                               monitor="step", mode="max", save_top_k=settings.keep_last_checkpoints,
                               every_n_train_steps=settings.checkpoint_every_n_steps, save_last=True,
                               enable_version_counter=False)
    interrupt = SaveOnInterrupt(ckpt_dir / LAST)
    callbacks = [periodic, interrupt]
    metric, mode = getattr(module, "best_metric", (None, "min"))
    if val_data is not None and metric and settings.keep_best_checkpoints:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best-{step:07d}", auto_insert_metric_name=False,
                                         monitor=metric, mode=mode, save_top_k=settings.keep_best_checkpoints,
                                         enable_version_counter=False))
    loggers = make_loggers(root, settings)
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    manual = not module.automatic_optimization
    if manual:  # Lightning accumulates only for automatic optimisation; the renderer does it in its training_step
        module.accumulate_grad_batches = settings.accumulate_grad_batches
    batch_size = module.training_config.batch_size
    train_loader = _loader(train_data, batch_size, shuffle=True, num_workers=settings.num_workers)
    val_loader = _loader(val_data, batch_size, False, settings.num_workers) if val_data is not None else None
    if settings.val_check_interval is not None and val_loader is not None:
        kwargs.update(val_check_interval=settings.val_check_interval, check_val_every_n_epoch=None)
    try:
        trainer = lightning.Trainer(
            max_steps=settings.max_steps,
            max_time=settings.max_time,
            default_root_dir=root,
            devices=settings.devices,
            num_nodes=settings.num_nodes,
            precision=settings.precision,
            accelerator=settings.accelerator,
            strategy=settings.strategy,
            accumulate_grad_batches=1 if manual else settings.accumulate_grad_batches,
            gradient_clip_val=None if manual else 1.0,
            gradient_clip_algorithm=None if manual else "norm",
            logger=loggers,
            callbacks=[*callbacks, *kwargs.pop("callbacks", [])],
            log_every_n_steps=settings.log_every_n_steps,
            **kwargs,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        raise InputError(f"bad trainer settings: {str(err).splitlines()[0]}") from None
    # intervals longer than an epoch of a small dataset would never come round: capped to each device's batches
    if hasattr(train_loader.dataset, "__len__"):
        batches = max(1, len(train_loader) // trainer.world_size)
        trainer.log_every_n_steps = min(trainer.log_every_n_steps, batches)
        if isinstance(trainer.val_check_interval, int):
            trainer.val_check_interval = min(trainer.val_check_interval, batches)
    ckpt_path = resume_path(root, resume)
    if ckpt_path is not None:
        logger.info("resuming training from %s", ckpt_path)
    if before_fit is not None:
        before_fit(trainer)

    try:
        with warnings.catch_warnings():
            # the renderer steps by hand; its checkpoints hold the state after the step, which is what resuming needs
            warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader,
                        ckpt_path=str(ckpt_path) if ckpt_path is not None else None)
    except SystemExit:  # Lightning ends SIGTERM and Ctrl-C with SystemExit (status 0 for SIGTERM)
        if interrupt.signal is None:
            raise
        raise TrainingInterrupted(interrupt.signal, trainer.global_step, interrupt.path) from None
    # ModelCheckpoint writes only every n steps; make sure last.ckpt holds the final step.
    if trainer.global_step > 0 and periodic._last_global_step_saved != trainer.global_step:
        trainer.save_checkpoint(ckpt_dir / LAST)
    return trainer
