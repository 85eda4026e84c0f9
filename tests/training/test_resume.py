"""Resumes that cannot go wrong: the newest checkpoint by step, changed settings applied or refused, preemption."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning
import pytest
import torch
import yaml

from imtalker.apps.cli import TRAIN_EXAMPLES, main
from imtalker.errors import InputError, TrainingInterrupted
from imtalker.training.run import read_config, train_renderer
from imtalker.training.trainer import checkpoint_step, latest_checkpoint

REPO = Path(__file__).resolve().parents[2]
QUIET = dict(enable_progress_bar=False, enable_model_summary=False)


@pytest.fixture(scope="module")
def tiny_config() -> dict:
    """The tiny renderer recipe, a checkpoint every step, one item per batch, validation only at the end."""
    config = read_config(REPO / "configs" / "renderer-128-tiny.yaml")
    config["training"]["batch_size"] = 1
    config["trainer"].update(checkpoint_every_n_steps=1, val_check_interval=1000, val_samples=1, loggers=["csv"],
                             samples_per_epoch=1000, keep_best_checkpoints=0)
    return config


def fake_checkpoint(path: Path, step: int) -> Path:
    torch.save({"global_step": step}, path)
    return path


def test_the_latest_checkpoint_is_the_highest_step_whatever_its_name(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert latest_checkpoint(tmp_path) is None
    fake_checkpoint(folder / "last.ckpt", 10)
    fake_checkpoint(folder / "last-v1.ckpt", 30)  # what a moved run folder used to write next to a stale last.ckpt
    fake_checkpoint(folder / "step-0000020.ckpt", 20)
    (folder / "notes.ckpt").write_text("not a checkpoint")
    assert latest_checkpoint(tmp_path) == folder / "last-v1.ckpt"
    fake_checkpoint(folder / "step-0000030.ckpt", 30)
    fake_checkpoint(folder / "last.ckpt", 30)
    assert latest_checkpoint(tmp_path).name == "last.ckpt"  # a tie goes to last.ckpt


def test_a_copied_run_resumes_and_exports_its_newest_step(prepared, tiny_config, tmp_path, capsys):
    first = tmp_path / "first"
    train_renderer(prepared.folder, first, tiny_config, overrides={"max_steps": 2}, **QUIET)
    copied = tmp_path / "elsewhere" / "copied"
    shutil.copytree(first, copied)
    trainer = train_renderer(prepared.folder, copied, tiny_config, overrides={"max_steps": 3}, **QUIET)
    assert trainer.global_step == 3
    names = sorted(p.name for p in (copied / "checkpoints").glob("*.ckpt"))
    assert names == ["last.ckpt", "step-0000001.ckpt", "step-0000002.ckpt", "step-0000003.ckpt"]  # no last-v1
    assert checkpoint_step(copied / "checkpoints" / "last.ckpt") == 3
    assert json.loads((copied / "config.json").read_text())["resumes"][-1]["step"] == 2
    assert main(["export", str(copied), str(tmp_path / "weights")]) == 0
    assert f"exported step 3 from {copied / 'checkpoints' / 'last.ckpt'}" in capsys.readouterr().out


def test_changed_settings_are_applied_and_recorded_or_refused_before_anything_is_written(prepared, tiny_config,
                                                                                         tmp_path):
    run = tmp_path / "run"
    train_renderer(prepared.folder, run, tiny_config, overrides={"max_steps": 1}, **QUIET)
    config = json.loads(json.dumps(tiny_config))
    config["training"]["lr"] = 2.5e-4
    train_renderer(prepared.folder, run, config, overrides={"max_steps": 2}, **QUIET)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert {group["lr"] for group in state["optimizer_states"][0]["param_groups"]} == {2.5e-4}
    assert json.loads((run / "config.json").read_text())["resumes"][-1]["changed"] == {
        "training.lr": [tiny_config["training"]["lr"], 2.5e-4]}

    written = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    wider = json.loads(json.dumps(config))
    wider["model"]["feature_channels"] = [16, 8, 16, 16, 32, 32]
    with pytest.raises(InputError, match=r"another config \(feature_channels: \[8, .*\]\); use --restart"):
        train_renderer(prepared.folder, run, wider, overrides={"max_steps": 3}, **QUIET)
    no_gan = json.loads(json.dumps(config))
    no_gan["training"]["weights"] = {"l1": 1.0}
    with pytest.raises(InputError, match="add or remove the discriminator"):
        train_renderer(prepared.folder, run, no_gan, overrides={"max_steps": 3}, **QUIET)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == written  # nothing touched

    trainer = train_renderer(prepared.folder, run, wider, resume=False, overrides={"max_steps": 1}, **QUIET)
    assert trainer.global_step == 1  # --restart: afresh, the old checkpoints set aside, not picked up again
    assert checkpoint_step(latest_checkpoint(run)) == 1
    assert checkpoint_step(run / "checkpoints.before-restart-1" / "last.ckpt") == 2


class InterruptAt(lightning.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_ctrl_c_saves_the_current_step(prepared, tiny_config, tmp_path):
    with pytest.raises(TrainingInterrupted, match="SIGINT at step 2") as caught:
        train_renderer(prepared.folder, tmp_path, tiny_config, overrides={"max_steps": 50},
                       callbacks=[InterruptAt(2)], **QUIET)
    assert caught.value.exit_code == 130
    assert checkpoint_step(tmp_path / "checkpoints" / "last.ckpt") == 2


def test_sigterm_saves_exits_143_and_the_run_continues_from_that_step(prepared, tiny_config, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "imtalker", "train", "renderer", "--data", str(prepared.folder), "--out",
               str(run), "--config", str(config), "--max-steps", "1000", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    second = run / "checkpoints" / "step-0000002.ckpt"
    while time.monotonic() < deadline and process.poll() is None and not second.exists():
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # what SLURM and Kubernetes send before they preempt a job
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert "imtalker: interrupted: SIGTERM at step" in err
    step = int(err.split("SIGTERM at step ")[1].split(";")[0])
    assert 2 <= step < 1000 and checkpoint_step(run / "checkpoints" / "last.ckpt") == step
    assert main(["train", "renderer", "--data", str(prepared.folder), "--out", str(run), "--config", str(config),
                 "--max-steps", str(step + 1)]) == 0
    assert json.loads((run / "config.json").read_text())["resumes"] == [
        {"step": step, "checkpoint": str(run / "checkpoints" / "last.ckpt"), "changed": {}}]
    assert checkpoint_step(run / "checkpoints" / "last.ckpt") == step + 1


@pytest.mark.parametrize("section, setting, message", [
    ("training", {"batch_size": 0}, "training.batch_size must be an integer >= 1, got 0"),
    ("training", {"batch_size": "four"}, "training.batch_size must be an integer >= 1, got 'four'"),
    ("training", {"lr": -1e-4}, r"training.lr must be a number in \(0.0, inf\], got -0.0001"),
    ("training", {"weights": {"l1": 1.0, "perceptul": 10.0}}, r"unknown renderer loss terms \['perceptul'\]"),
    ("training", {"weights": {"l1": -1.0}}, "training.weights.l1 must be a number"),
    ("training", {"ema_decay": 1.5}, r"training.ema_decay must be a number in \[0.0, 1.0\)"),
    ("trainer", {"accumulate_grad_batches": 0}, "trainer.accumulate_grad_batches must be an integer >= 1"),
    ("trainer", {"precision": "fp8"}, "trainer.precision must be one of"),
    ("trainer", {"max_time": "two hours"}, "trainer.max_time must be DD:HH:MM:SS"),
    ("trainer", {"devices": 0}, "trainer.devices must be"),
    ("trainer", {"loggers": ["wandb"]}, r"the wandb logger needs the wandb package \(pip install wandb\)"),
    ("trainer", {"strategy": "ddp_not_a_strategy", "max_steps": 1}, "bad trainer settings: .*ddp_not_a_strategy"),
    ("discriminator", {"max_chanels": 32}, r"unknown DiscriminatorConfig fields: \['max_chanels'\]"),
])
def test_every_setting_is_checked_at_start_in_one_line(prepared, tiny_config, tmp_path, capsys, section, setting,
                                                       message):
    if "wandb" in str(setting) and importlib.util.find_spec("wandb"):
        pytest.skip("wandb is installed here")
    config = json.loads(json.dumps(tiny_config))
    config[section] = {**config.get(section, {}), **setting}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["train", "renderer", "--data", str(prepared.folder), "--out", str(run), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (run / "config.json").exists()


def test_help_examples_name_config_files_that_exist():
    named = [word for word in TRAIN_EXAMPLES.split() if word.startswith("configs/")]
    assert named and all((REPO / name).is_file() for name in named), named


def test_the_tiny_renderer_config_is_tiny():
    from imtalker.config import DiscriminatorConfig, config_from_dict, renderer_config_from_dict
    from imtalker.training.renderer_module import RendererModule, training_config_from

    config = read_config(REPO / "configs" / "renderer-128-tiny.yaml")
    module = RendererModule(renderer_config_from_dict(config["model"]), training_config_from(config["training"]),
                            config_from_dict(DiscriminatorConfig, {"image_size": 128, **config["discriminator"]}))
    assert sum(p.numel() for p in module.gen.parameters()) < 1_000_000
    assert sum(p.numel() for p in module.disc.parameters()) < 500_000


def test_the_renderer_digest_is_the_same_in_every_format_and_half_precision(tmp_path):
    from imtalker.models.renderer import IMTRenderer
    from imtalker.weights import load_renderer, save_model, weights_digest
    from helpers.tiny_models import RENDERER

    torch.manual_seed(0)
    renderer = IMTRenderer(RENDERER)
    digest = weights_digest(renderer)
    half = save_model(renderer, tmp_path / "half.safetensors", dtype=torch.float16)
    assert weights_digest(load_renderer(save_model(renderer, tmp_path / "full.safetensors"))) == digest
    assert weights_digest(load_renderer(half)) == digest
    torch.manual_seed(1)
    assert weights_digest(IMTRenderer(RENDERER)) != digest
