"""`imtalker demo` and the demo-model folder: the command's data flow with tiny weights standing in for the bundled
model, its errors, the model card, and the training script's stages on a tiny budget."""

from __future__ import annotations

import math
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

import imtalker.weights
from imtalker.io.audio import load_audio
from imtalker.apps.cli import main
from imtalker.apps.demo import WEIGHT_FILES, write_model_card
from imtalker.data.synthetic import demo_asset, synthesize_speech
from helpers.tiny_models import save_tiny_weights


@pytest.fixture(scope="module")
def tiny_demo_model(tmp_path_factory) -> Path:
    return save_tiny_weights(tmp_path_factory.mktemp("demo_model"), front_end="mel")


@pytest.fixture
def installed(tiny_demo_model, monkeypatch) -> Path:
    """Tiny weights in the place of the bundled demo model."""
    monkeypatch.setattr(imtalker.weights, "bundled_demo_model", lambda: tiny_demo_model)
    return tiny_demo_model


def test_demo_makes_a_video_of_the_bundled_inputs(installed, tmp_path):
    out = tmp_path / "demo.mp4"
    assert main(["demo", "--out", str(out), "--frames-dir", str(tmp_path / "frames"), "-q"]) == 0
    seconds = len(load_audio(demo_asset("demo_speech.wav"))) / 16000
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert container.streams.audio, "the speech is muxed in"
        assert (video.codec_context.name, video.width, video.height) == ("h264", 128, 128)
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == math.ceil(seconds * 25) == len(list((tmp_path / "frames").glob("*.png")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.mp4", "frames"]  # nothing half-written left


def test_demo_animates_the_users_own_files(installed, tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    speech = tmp_path / "speech.wav"
    with wave.open(str(speech), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((np.clip(synthesize_speech(2.0, seed=3).audio, -1, 1) * 32767).astype("<i2").tobytes())
    out = tmp_path / "mine.mp4"
    assert main(["demo", "--source", str(photo), "--audio", str(speech), "--out", str(out), "--paste-back",
                 "-q"]) == 0
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height) == (512, 512)  # pasted back into the whole photo
        assert sum(1 for _ in container.decode(video=0)) == 50


def test_demo_bad_input_exits_2_without_output(installed, tmp_path, capsys):
    out = tmp_path / "never.mp4"
    assert main(["demo", "--source", str(tmp_path / "missing.png"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("imtalker: error:") and not out.exists()


def test_demo_without_a_bundled_model_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(imtalker.weights, "bundled_demo_model", lambda: None)
    assert imtalker.weights.bundled_demo_model() is None
    assert main(["demo", "--out", str(tmp_path / "demo.mp4")]) == 2
    assert "no bundled demo model" in capsys.readouterr().err
    assert not (tmp_path / "demo.mp4").exists()


def test_demo_runs_offline_in_a_fresh_interpreter(tiny_demo_model, tmp_path):
    """The whole command with every network connection refused."""
    code = ("import socket, sys\n"
            "from pathlib import Path\n"
            "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
            "socket.socket.connect = refuse\n"
            "import imtalker.weights\n"
            f"imtalker.weights.bundled_demo_model = lambda: Path({str(tiny_demo_model)!r})\n"
            "from imtalker.apps.cli import main\n"
            f"sys.exit(main(['demo', '--out', {str(tmp_path / 'demo.mp4')!r}, '-q']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "demo.mp4").stat().st_size > 1000


def test_model_card_reports_the_evaluation(tiny_demo_model, tmp_path):
    for name in WEIGHT_FILES:
        (tmp_path / name).write_bytes((tiny_demo_model / name).read_bytes())
    region = {"lipsync_region": 0.65, "lipsync_region_ceiling": 0.9, "lipsync_region_chance": 0.05}
    clip = {"clip": "c0", "frames": 200, "psnr": 29.5, "psnr_copy": 21.0, "ssim": 0.91, "lipsync": 0.71,
            "lipsync_ceiling": 0.97, "lipsync_chance": None, "detected": 1.0, "ground_truth": "synthetic", **region}
    evaluation = {"summary": {"clips": 1, "frames": 200, "psnr": 29.5, "psnr_copy": 21.0, "ssim": 0.91,
                              "lipsync": 0.71, "lipsync_ceiling": 0.97, "lipsync_chance": None, "detected": 1.0,
                              **region},
                  "clips": [clip], "settings": {"seed": 0, "cfg_scale": 3.0, "nfe": 10}}
    training = {"renderer_recipe": "lr 0.002", "generator_recipe": "lr 0.0005", "renderer_steps": 3800,
                "generator_steps": 3000, "training_clips": 400, "clip_seconds": 4.0, "heldout_clips": 6,
                "renderer_minutes": 50, "generator_minutes": 12, "minutes": {"total": 80}, "machine": "test",
                "date": "2026-11-29", "command": "python scripts/train_demo_model.py"}
    card = write_model_card(tmp_path, training, evaluation).read_text()
    assert "**PSNR 29.50 dB**" in card and "**r = 0.710**" in card
    assert "**r = 0.650**" in card
    # undefined correlations read n/a
    assert "| c0 | 29.50 | 21.00 | 0.910 | 0.710 | 0.970 | n/a | 0.650 | 0.900 | 0.050 |" in card
    assert "3,800 steps" in card and "400 clips of 4 s" in card
