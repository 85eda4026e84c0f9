"""Training on two CPU processes (Lightning DDP over gloo), started as a user starts it: `imtalker train ...
--accelerator cpu --devices 2`.

The renderer on two processes with one item each must match one process that accumulates the same two items per
step (BatchNorm normalises each device's batch on its own, so that, not one batch of two, is the same computation).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import lightning
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

import imtalker
from imtalker.config import DiscriminatorConfig, config_from_dict, renderer_config_from_dict
from imtalker.training.data import RendererPairDataset
from imtalker.training.renderer_module import RendererModule, training_config_from
from imtalker.training.trainer import checkpoint_step, fit
from helpers.configs import shipped_config

STEPS = 3
ITEMS = 2 * STEPS  # one epoch: each of the two devices takes one item a step


def train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "imtalker", "train", *args, "--accelerator", "cpu", "--devices", "2",
            "--threads", "1"]


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def renderer_config(tmp_path_factory) -> Path:
    """The tiny renderer recipe (with its discriminator) at one item per device, no validation before the end."""
    return shipped_config("renderer-128-tiny.yaml", tmp_path_factory.mktemp("ddp") / "renderer.yaml",
                          training=dict(batch_size=1),
                          trainer=dict(samples_per_epoch=ITEMS, val_samples=2, val_check_interval=100,
                                       loggers=["csv"], log_every_n_steps=1, keep_best_checkpoints=0))


@pytest.fixture(scope="module")
def ddp_renderer_run(prepared, renderer_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "renderer"
    run(train_command("renderer", "--data", str(prepared.folder), "--out", str(out), "--config", str(renderer_config),
                      "--max-steps", str(STEPS)))
    return out


def logged_losses(run_dir: Path) -> list[float]:
    (metrics,) = (run_dir / "logs" / "csv").glob("version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    assert {"lr-Adam/pg1", "lr-Adam/pg2"} <= set(rows[0])  # the rates of renderer and discriminator are logged
    return [float(row["train/loss"]) for row in rows if row.get("train/loss")]


class MicroBatchLosses(lightning.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))


def test_the_renderer_on_two_processes_matches_one_process_on_the_same_global_batch(
        prepared, renderer_config, ddp_renderer_run, tmp_path):
    last = ddp_renderer_run / "checkpoints" / "last.ckpt"
    assert checkpoint_step(last) == STEPS
    ddp_losses = logged_losses(ddp_renderer_run)  # averaged over the two devices
    assert len(ddp_losses) == STEPS

    # one process, the same seed and recipe, the two devices' items of each step in one accumulated step:
    # Lightning's DistributedSampler (seed 0) gives device r the items perm[r::2]
    config = yaml.safe_load(renderer_config.read_text())
    lightning.seed_everything(0, workers=True, verbose=False)
    module = RendererModule(renderer_config_from_dict(config["model"]), training_config_from(config["training"]),
                            config_from_dict(DiscriminatorConfig, {"image_size": 128, **config["discriminator"]}))
    initial = {name: value.clone() for name, value in module.state_dict().items()}
    order = torch.randperm(ITEMS, generator=torch.Generator().manual_seed(0)).tolist()
    items = RendererPairDataset(prepared.folder, "train", 128, ITEMS, seed=0)
    losses = MicroBatchLosses()
    # one thread, as each device had: a 2-thread run sums in another order, and Adam's first steps turn such
    # last-bit differences in near-zero gradients into visible ones
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(module, DataLoader(items, batch_size=1, sampler=order), default_root_dir=tmp_path, max_steps=STEPS,
            accumulate_grad_batches=2, accelerator="cpu", devices=1, loggers=(), callbacks=[losses],
            enable_progress_bar=False, enable_model_summary=False)
    finally:
        torch.set_num_threads(threads)
    single = [sum(losses.losses[2 * k:2 * k + 2]) / 2 for k in range(STEPS)]
    torch.testing.assert_close(torch.tensor(ddp_losses), torch.tensor(single), rtol=1e-4, atol=1e-5)

    ddp_state = torch.load(last, weights_only=True)["state_dict"]
    trained = [name for name, parameter in module.named_parameters() if parameter.requires_grad]
    for name in trained:
        torch.testing.assert_close(ddp_state[name], module.state_dict()[name], rtol=1e-4, atol=2e-5, msg=name)
    assert max(float((ddp_state[n] - initial[n]).abs().max()) for n in trained) > 1e-3  # and they did train


@pytest.mark.slow  # ~22 s; the renderer's two-process test covers the distributed path by default
def test_the_generator_trains_on_two_processes_and_records_its_renderer(prepared, ddp_renderer_run, tmp_path):
    path = shipped_config("generator-tiny-mel.yaml", tmp_path / "generator.yaml", training=dict(batch_size=2),
                          trainer=dict(samples_per_epoch=8, val_samples=2, loggers=["csv"], keep_best_checkpoints=0))
    out = tmp_path / "generator"
    run(train_command("generator", "--data", str(prepared.folder), "--renderer", str(ddp_renderer_run),
                      "--out", str(out), "--config", str(path), "--max-steps", "2"))
    assert checkpoint_step(out / "checkpoints" / "last.ckpt") == 2
    weights = tmp_path / "weights"
    imtalker.weights.save_model(imtalker.load_renderer(ddp_renderer_run / "checkpoints" / "last.ckpt"),
                                weights / "renderer.safetensors")
    from imtalker.training.run import export_run
    from imtalker.weights import recorded_renderer_digest, weights_digest

    result = export_run(out, weights)
    assert result.step == 2
    assert recorded_renderer_digest(weights / "generator.safetensors") == weights_digest(
        imtalker.load_renderer(weights / "renderer.safetensors"))
