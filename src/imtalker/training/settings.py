"""Where and how long a run trains (`TrainerSettings`), and the checks every training setting goes through.

Every setting is checked when its config is built, before a run folder is touched, so a wrong value is a one-line
error at start instead of a ZeroDivisionError or an optimiser's message steps later.
"""

from __future__ import annotations

import importlib.util
import numbers
from dataclasses import dataclass
from typing import Any

PRECISIONS = ("32-true", "32", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
LOGGERS = ("csv", "tensorboard", "wandb")


def check_int(name: str, value: Any, minimum: int | None = None, optional: bool = False) -> None:
    """Raise ValueError unless `value` is an integer (not a bool) >= `minimum` (or None when `optional`)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, optional: bool = False) -> None:
    """Raise ValueError unless `value` is a real number in the interval (open at a bound when `*_open`)."""
    if optional and value is None:
        return
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and value == value
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        interval = (f"{'(' if low_open else '['}{'-inf' if low is None else low}, "
                    f"{'inf' if high is None else high}{')' if high_open else ']'}")
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def check_betas(name: str, value: Any) -> None:
    """Adam's (beta1, beta2), each in [0, 1)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be two numbers in [0, 1), got {value!r}")
    for beta in value:
        check_number(name, beta, 0.0, 1.0, high_open=True)


@dataclass(frozen=True)
class TrainerSettings:
    """How long and where to train; each field is also a `trainer:` key of a run config, most an `imtalker train`
    flag."""

    max_steps: int = 100_000  # optimiser steps
    max_time: str | None = None  # wall-clock budget "DD:HH:MM:SS"; the run stops (and checkpoints) when it is spent
    precision: str = "32-true"  # "bf16-mixed" for bfloat16 autocast
    accelerator: str = "auto"
    devices: Any = "auto"  # a count, -1 (all), a list of GPU indices, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # Lightning's: "auto" (DDP on several devices), "ddp", "fsdp", "deepspeed", ...
    accumulate_grad_batches: int = 1  # batches whose gradients make one optimiser step
    loggers: tuple[str, ...] = ("csv", "tensorboard")  # any of LOGGERS; "wandb" needs the wandb package
    wandb_project: str = "imtalker"
    log_every_n_steps: int = 50
    checkpoint_every_n_steps: int = 1000
    keep_last_checkpoints: int = 3  # periodic checkpoints kept (the newest); `last.ckpt` is kept besides them
    keep_best_checkpoints: int = 1  # checkpoints kept by their validation metric (0: none)
    val_check_interval: int | None = 1000  # batches between validations (capped to the batches per epoch)
    val_samples: int = 16  # validation items per validation
    samples_per_epoch: int | None = None  # training items per epoch (default: the dataset's own)
    num_workers: int = 0
    threads: int | None = None  # torch CPU threads per process (None: torch's default)
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.loggers, str):
            object.__setattr__(self, "loggers", (self.loggers,))
        object.__setattr__(self, "loggers", tuple(self.loggers))
        check_int("trainer.max_steps", self.max_steps, 1)
        check_int("trainer.num_nodes", self.num_nodes, 1)
        check_int("trainer.accumulate_grad_batches", self.accumulate_grad_batches, 1)
        check_int("trainer.log_every_n_steps", self.log_every_n_steps, 1)
        check_int("trainer.checkpoint_every_n_steps", self.checkpoint_every_n_steps, 1)
        check_int("trainer.keep_last_checkpoints", self.keep_last_checkpoints, 1)
        check_int("trainer.keep_best_checkpoints", self.keep_best_checkpoints, 0)
        check_int("trainer.val_check_interval", self.val_check_interval, 1, optional=True)
        check_int("trainer.val_samples", self.val_samples, 1)
        check_int("trainer.samples_per_epoch", self.samples_per_epoch, 1, optional=True)
        check_int("trainer.num_workers", self.num_workers, 0)
        check_int("trainer.threads", self.threads, 1, optional=True)
        check_int("trainer.seed", self.seed, 0)
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("accelerator", "strategy", "wandb_project"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"trainer.{name} must be a name, got {getattr(self, name)!r}")
        if self.max_time is not None and not _is_duration(self.max_time):
            raise ValueError(f"trainer.max_time must be DD:HH:MM:SS, got {self.max_time!r}")
        devices = self.devices
        if not (devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool)
                                      and (devices >= 1 or devices == -1))
                or (isinstance(devices, (list, tuple)) and devices
                    and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices))):
            raise ValueError(f"trainer.devices must be 'auto', a count >= 1, -1 (all) or a list of device indices, "
                             f"got {devices!r}")
        unknown = [name for name in self.loggers if name not in LOGGERS]
        if unknown:
            raise ValueError(f"unknown logger {unknown[0]!r}; choose from {', '.join(LOGGERS)}")
        if "wandb" in self.loggers and importlib.util.find_spec("wandb") is None:
            raise ValueError("the wandb logger needs the wandb package (pip install wandb), which is not installed")


def _is_duration(value: Any) -> bool:
    parts = value.split(":") if isinstance(value, str) else []
    return len(parts) == 4 and all(part.isdigit() for part in parts)
