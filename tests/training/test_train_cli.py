"""`imtalker train renderer|generator` and `imtalker export` end to end: kill and resume, load, render, generate."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import imtalker
from imtalker.apps.cli import main
from imtalker.models.renderer import IMTRenderer
from imtalker.pipelines import AudioDrivenPipeline
from imtalker.training.run import read_config, train_generator
from imtalker.training.trainer import checkpoint_step
from imtalker.weights import weights_digest
from helpers.configs import shipped_config
from helpers.tiny_models import RENDERER

REPO = Path(__file__).resolve().parents[2]
GENERATOR_CONFIG = REPO / "configs" / "generator-tiny-mel.yaml"


@pytest.fixture(scope="module")
def renderer_config(tmp_path_factory) -> Path:
    """The tiny renderer config with a checkpoint every step and a short validation."""
    return shipped_config("renderer-128-tiny.yaml", tmp_path_factory.mktemp("config") / "renderer.yaml",
                          training=dict(batch_size=2),
                          trainer=dict(checkpoint_every_n_steps=1, val_check_interval=4, val_samples=2,
                                       loggers=["csv"]))


@pytest.fixture(scope="module")
def renderer_run(prepared, renderer_config, tmp_path_factory) -> Path:
    """A renderer run killed mid-training (SIGKILL) and resumed: (run folder)."""
    run = tmp_path_factory.mktemp("runs") / "renderer"
    command = [sys.executable, "-m", "imtalker", "train", "renderer", "--data", str(prepared.folder),
               "--out", str(run), "--config", str(renderer_config), "--max-steps", "1000"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if last.is_file() and checkpoint_step(last) >= 2:
                break
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # as a crash or a preempted job would end it
        _, err = process.communicate()
    assert last.is_file(), err.decode()[-2000:]
    killed_at = checkpoint_step(last)
    assert 2 <= killed_at < 1000
    code = main(["train", "renderer", "--data", str(prepared.folder), "--out", str(run), "--config",
                 str(renderer_config), "--max-steps", str(killed_at + 2)])
    assert code == 0
    assert checkpoint_step(last) == killed_at + 2  # continued from the killed run, did not start again
    return run


def test_a_killed_renderer_run_resumes_where_it_stopped(renderer_run):
    logs = sorted((renderer_run / "logs" / "csv").glob("version_*"))
    assert len(logs) == 2  # the killed run and the resumed one
    assert (renderer_run / "config.json").is_file()


def test_train_generator_then_export_then_generate(prepared, renderer_run, tmp_path, capsys, caplog):
    assert main(["train", "generator", "--data", str(prepared.folder), "--renderer", str(renderer_run), "--out",
                 str(tmp_path / "generator"), "--config", str(GENERATOR_CONFIG), "--max-steps", "3",
                 "--logger", "csv", "--logger", "tensorboard"]) == 0
    assert list((tmp_path / "generator" / "logs" / "tensorboard").rglob("events.out.tfevents.*"))
    digest = weights_digest(imtalker.load_renderer(renderer_run / "checkpoints" / "last.ckpt"))
    assert len(list((prepared.folder / f"motion-{digest}").glob("*.npy"))) == 3  # extracted once, cached in the data
    generator = imtalker.load_generator(tmp_path / "generator" / "checkpoints" / "last.ckpt", ema=True)
    tiny = yaml.safe_load(GENERATOR_CONFIG.read_text())["model"]
    assert generator.config.hidden_dim == tiny["hidden_dim"] and generator.config.clip_frames == 50

    weights = tmp_path / "weights"
    assert main(["export", str(renderer_run), str(weights)]) == 0
    assert main(["export", str(tmp_path / "generator"), str(weights)]) == 0
    assert sorted(p.name for p in weights.iterdir()) == [
        "audio_encoder.safetensors", "generator.safetensors", "renderer.safetensors"]
    pipe = AudioDrivenPipeline.from_pretrained(weights)
    audio = np.load(next(prepared.folder.glob("clips/*/audio.npy")))[:16000]
    frames = list(pipe.frames(np.full((128, 128, 3), 128, np.uint8), (audio, 16000),
                              crop=False, nfe=2, seed=0))
    assert len(frames) == 25 and frames[0].shape == (128, 128, 3)

    # a fine-tune starts from a weights folder's generator and front end (a learning rate of ~0 keeps them)
    config = read_config(GENERATOR_CONFIG)
    config["training"]["lr"] = 1e-12
    train_generator(prepared.folder, renderer_run / "checkpoints" / "last.ckpt", tmp_path / "finetune", config,
                    overrides={"max_steps": 1}, init=weights, enable_progress_bar=False)
    started = imtalker.load_generator(tmp_path / "finetune" / "checkpoints" / "last.ckpt")
    for key, value in imtalker.load_generator(weights / "generator.safetensors").state_dict().items():
        torch.testing.assert_close(started.state_dict()[key], value, atol=1e-6, rtol=0)

    # another renderer: continuing the generator on its latents is refused; pairing them in a folder warns
    torch.manual_seed(1)
    other = imtalker.save_model(IMTRenderer(RENDERER), tmp_path / "other" / "renderer.safetensors")
    capsys.readouterr()
    assert main(["train", "generator", "--data", str(prepared.folder), "--renderer", str(other), "--out",
                 str(tmp_path / "generator"), "--config", str(GENERATOR_CONFIG), "--max-steps", "4"]) == 2
    assert "was trained on the motion latents of another renderer" in capsys.readouterr().err
    shutil.copy(other, weights / "renderer.safetensors")
    with caplog.at_level(logging.WARNING, logger="imtalker.weights"):
        AudioDrivenPipeline.from_pretrained(weights)
    assert "was trained on the renderer with weights digest" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imtalker.weights"):  # exporting next to the wrong renderer
        assert main(["export", str(tmp_path / "generator"), str(weights)]) == 0
    assert "was trained on the renderer with weights digest" in caplog.text


def test_bad_training_input_exits_2(prepared, tmp_path, capsys):
    assert main(["train", "renderer", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {image_size: 100}\n")
    assert main(["train", "renderer", "--data", str(prepared.folder), "--out", str(tmp_path / "run"),
                 "--config", str(bad)]) == 2
    assert "multiple of 128" in capsys.readouterr().err
    assert main(["train", "generator", "--data", str(prepared.folder), "--out", str(tmp_path / "g")]) == 2
    assert "--renderer" in capsys.readouterr().err
    assert main(["export", str(tmp_path), str(tmp_path / "w")]) == 2
    assert "no training checkpoint" in capsys.readouterr().err
