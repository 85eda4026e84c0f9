"""`imtalker convert` and `imtalker info` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from imtalker import RendererConfig, load_renderer
from imtalker.apps.cli import main
from imtalker.models.renderer import IMTRenderer


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imtalker", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_commands_and_examples():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "convert" in result.stdout and "info" in result.stdout and "examples:" in result.stdout


def test_help_and_a_bad_input_answer_without_loading_torch(tmp_path):
    """`imtalker --help` and a call that fails on its input answer at once: the package imports torch (and the
    pipelines transformers) only when they are used."""
    check = ("import sys, runpy; sys.argv = ['imtalker', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('imtalker', run_name='__main__')\n"
             "except SystemExit as exit:\n    print('torch' in sys.modules, exit.code)")
    for args in (["--help"], ["generate", "-i", str(tmp_path / "none.png"), "-a", "none.wav", "-o", "o.mp4"]):
        result = subprocess.run([sys.executable, "-c", check, *args], capture_output=True, text=True, timeout=60)
        assert result.stdout.splitlines()[-1] == ("False 0" if args == ["--help"] else "False 2"), result.stderr


def test_convert_then_info_round_trip(tmp_path, capsys):
    config = RendererConfig(image_size=128, feature_channels=(8, 8, 16, 16, 32, 32),
                            motion_channels=(8, 16, 16, 32, 32, 32), adapt_dim=32, num_heads=4)
    model = IMTRenderer(config).eval()
    path = tmp_path / "renderer.safetensors"
    from imtalker import save_model

    save_model(model, path)
    assert main(["convert", "--renderer", str(path), "-o", str(tmp_path / "out")]) == 0
    converted = tmp_path / "out" / "renderer.safetensors"
    assert load_renderer(converted).config == config
    capsys.readouterr()
    assert main(["info", str(converted)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "renderer" and info["config"]["image_size"] == 128
    assert info["parameters"] == sum(p.numel() for p in model.state_dict().values() if p.is_floating_point())


def test_convert_half_stores_float16_and_loads_back_as_float32(tmp_path):
    from safetensors.torch import load_file

    from imtalker import save_model

    torch.manual_seed(0)
    model = IMTRenderer(RendererConfig(image_size=128, feature_channels=(8, 8, 16, 16, 32, 32),
                                       motion_channels=(8, 16, 16, 32, 32, 32), adapt_dim=32, num_heads=4)).eval()
    full = save_model(model, tmp_path / "renderer.safetensors")
    assert main(["convert", "--renderer", str(full), "--half", "-o", str(tmp_path / "half")]) == 0
    half = tmp_path / "half" / "renderer.safetensors"
    stored = load_file(str(half))
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    assert stored["latent_token_decoder.const"].numel() and half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_renderer(half)
    assert next(loaded.parameters()).dtype == torch.float32
    image, motion = torch.rand(1, 3, 128, 128), torch.randn(2, 32)
    torch.testing.assert_close(loaded.render(loaded.encode_source(image), motion),
                               model.render(model.encode_source(image), motion), atol=5e-3, rtol=0)


def test_bad_checkpoint_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "renderer.ckpt"
    bad.write_bytes(os.urandom(1000))
    result = run_cli("convert", "--renderer", str(bad), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith("imtalker: error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "renderer.safetensors").exists()


def test_missing_file_and_nothing_to_convert_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope.ckpt")]) == 2
    assert main(["convert", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "nothing to convert" in err


def test_pickled_payload_exits_2(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"gen.a": torch.zeros(1)}, "x": print}, path)  # a global that is not allowed
    assert main(["info", str(path)]) == 2
    assert "refusing to load" in capsys.readouterr().err


def test_bad_arguments_exit_2():
    with pytest.raises(SystemExit) as exit_info:
        main(["convert"])  # -o is required
    assert exit_info.value.code == 2


@pytest.mark.parametrize("flag, value, message", [
    ("--pose", "yaw=20 degrees", "pose: yaw must be a number with deg or rad"),
    ("--gaze", "nod", "gaze: cannot read 'nod'"),
    ("--cam", "missing.npy", "input file not found: missing.npy"),
])
def test_bad_head_motion_exits_2_before_loading_models(tmp_path, capsys, flag, value, message):
    from imtalker.data.synthetic import demo_asset

    out = tmp_path / "o.mp4"
    code = main(["generate", "-i", str(demo_asset("demo_portrait.png")), "-a", str(demo_asset("demo_speech.wav")),
                 "-o", str(out), "--weights", str(tmp_path / "no-weights-needed-yet"), flag, value])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.strip().count("\n") == 0
    assert not out.exists()
