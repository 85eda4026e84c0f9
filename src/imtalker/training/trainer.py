"""The Lightning `Trainer` set-up shared by renderer and generator training: checkpoints, resume, logs, DDP."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

logger = logging.getLogger(__name__)

LOGGERS = ("csv", "tensorboard")


def _loader(data: Dataset | DataLoader, batch_size: int, shuffle: bool, num_workers: int) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, drop_last=shuffle,
                      persistent_workers=num_workers > 0)


def make_loggers(root: Path, names: Sequence[str]) -> list[Logger]:
    """CSV and/or TensorBoard loggers writing under `<root>/logs/csv/` and `<root>/logs/tensorboard/`.

    Raises:
        ValueError: an unknown logger name.
    """
    loggers: list[Logger] = []
    for name in names:
        if name == "csv":
            loggers.append(CSVLogger(save_dir=root / "logs", name="csv"))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir=root / "logs", name="tensorboard", default_hp_metric=False))
        else:
            raise ValueError(f"unknown logger {name!r}; choose from {', '.join(LOGGERS)}")
    return loggers


def resume_path(root: Path, resume: str | os.PathLike | None) -> Path | None:
    """The checkpoint to continue from: "last" -> `checkpoints/last.ckpt` when present, a path, or None.

    Raises:
        FileNotFoundError: `resume` is a path that does not exist.
    """
    if resume == "last":
        last = root / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    if resume is None:
        return None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint to resume from not found: {path}")
    return path


def fit(
    module: lightning.LightningModule,
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
    loggers: Sequence[str] = ("csv",),
    log_every_n_steps: int = 50,
    checkpoint_every_n_steps: int = 1000,
    val_check_interval: int | None = None,
    num_workers: int = 0,
    **trainer_kwargs: Any,
) -> lightning.Trainer:
    """Train (or continue training) a `RendererModule` or `GeneratorModule`.

    Checkpoints go to `<default_root_dir>/checkpoints/` (`last.ckpt` always holds the latest step, also written when
    training stops between two `checkpoint_every_n_steps`), logs to `<default_root_dir>/logs/`. Generator gradients
    are clipped to norm 1 here; the renderer clips its two networks itself (manual optimisation). Several devices or
    nodes train with DDP (Lightning's), each with its own batch of `module.training_config.batch_size`.

    Args:
        module: the module to train.
        train_data: a dataset (batched with `module.training_config.batch_size`, shuffled) or a ready `DataLoader`.
        val_data: optional validation dataset or `DataLoader`.
        max_steps: total training steps (batches), counted from step 0 (a resumed run continues up to it).
        default_root_dir: run folder.
        devices, num_nodes, precision, accelerator: as for `lightning.Trainer` (e.g. precision "bf16-mixed").
        resume: "last" continues from `checkpoints/last.ckpt` when present; a path continues from that file; None
            starts afresh.
        loggers: any of "csv", "tensorboard".
        log_every_n_steps: logging interval.
        checkpoint_every_n_steps: checkpoint interval.
        val_check_interval: validate every this many steps (default: once per epoch).
        num_workers: data loader workers (datasets only).
        **trainer_kwargs: further `lightning.Trainer` arguments (e.g. `enable_progress_bar=False`).

    Returns:
        The trainer after `fit`.
    """
    root = Path(default_root_dir)
    ckpt_dir = root / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=checkpoint_every_n_steps)
    manual = not module.automatic_optimization
    if val_check_interval is not None:
        trainer_kwargs.update(val_check_interval=val_check_interval, check_val_every_n_epoch=None)
    trainer = lightning.Trainer(
        max_steps=max_steps,
        default_root_dir=root,
        devices=devices,
        num_nodes=num_nodes,
        precision=precision,
        accelerator=accelerator,
        strategy="auto",
        gradient_clip_val=None if manual else 1.0,
        gradient_clip_algorithm=None if manual else "norm",
        logger=make_loggers(root, loggers),
        callbacks=[checkpoint, *trainer_kwargs.pop("callbacks", [])],
        log_every_n_steps=log_every_n_steps,
        **trainer_kwargs,
    )
    ckpt_path = resume_path(root, resume)
    if ckpt_path is not None:
        logger.info("resuming training from %s", ckpt_path)

    batch_size = module.training_config.batch_size
    train_loader = _loader(train_data, batch_size, shuffle=True, num_workers=num_workers)
    val_loader = _loader(val_data, batch_size, False, num_workers) if val_data is not None else None
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader,
                ckpt_path=str(ckpt_path) if ckpt_path is not None else None)
    # ModelCheckpoint writes only every n steps; make sure last.ckpt holds the final step.
    if trainer.global_step > 0 and checkpoint._last_global_step_saved != trainer.global_step:
        trainer.save_checkpoint(ckpt_dir / "last.ckpt")
    return trainer
