"""The benchmark scripts run end to end (tiny models, short runs): they must not rot between full runs.

The quick runs of the longest scripts (15-50 s each) are marked slow: `python -m pytest -m slow
tests/test_benchmarks.py` runs them, and so does running those benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.tiny_models import save_tiny_weights

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script, args, expect", [
    pytest.param("bench_renderer.py", ["--repeats", "1"],
                 ["| audio-driven | fp32 | 8 |", "| video-driven | bf16 | 8 |", "| video-driven | bf16-weights | 8 |",
                  "| demo model (128 px), audio-driven | fp32 | 5 |", "bf16 frames vs fp32 frames",
                  "- bf16-weights: max abs"], marks=pytest.mark.slow),
    pytest.param("bench_generator.py", ["--repeats", "1"],
                 ["| motion generator | nfe 10, cfg 3 |", "| wav2vec2-base audio encoder |"], marks=pytest.mark.slow),
    pytest.param("bench_pipeline.py", [], ["| small | 2 s (50 frames) |", "| small | 8 s (200 frames) |"],
                 marks=pytest.mark.slow),
    pytest.param("bench_streaming.py", [], ["| wav2vec2 | 50 (2 s) | 5 (0.2 s) |", "| mel | 0 (0 s) | 0 (0 s) |",
                                            "| mel | whole file, audio shifted 10 ms"], marks=pytest.mark.slow),
    pytest.param("bench_server.py", [], ["| small | unpaced | 8 | 3 s (75 frames) |", "| small | paced | 8 |",
                                         "| 50 | 2 | 4 |"], marks=pytest.mark.slow),
    pytest.param("bench_gpu.py", ["--device", "cpu"],  # the GPU script must not rot where no GPU is
                 ["| renderer, audio-driven | fp16 | compiled | 2 |", "| generator, cfg 3, nfe 10 | bf16 | eager |",
                  "| live, demo model, hop 5 | 1 |"], marks=pytest.mark.slow),
    pytest.param("bench_tracks.py", [], ["| yaw (deg) |", "| gaze direction, L2CS (deg) |",
                                         "| demo model asked for a nod (pitch)"], marks=pytest.mark.slow),
])
def test_benchmark_quick_run(script, args, expect, tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", "--no-write", *args],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for text in expect:
        assert text in result.stdout


def test_side_by_side_benchmark_names_a_folder_that_is_not_the_published_code(tmp_path):
    """bench_published.py imports the authors' renderer from a checkout it is given (none ships with us)."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / "bench_published.py"), "--published-code", str(tmp_path),
                             "--no-write"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode != 0
    assert f"{tmp_path} is not a checkout of the published IMTalker code (no renderer/models.py)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_benchmark_quick_run(tmp_path):
    weights = save_tiny_weights(tmp_path / "weights", front_end="mel")
    result = subprocess.run([sys.executable, str(BENCHMARKS / "bench_demo.py"), "--quick", "--no-write", "--weights",
                             str(weights)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for text in ("| self-reenactment PSNR (dB) |", "`imtalker demo` (fresh interpreter", "100 frames"):
        assert text in result.stdout


def test_renderer_motion_probe_runs_on_prepared_synthetic_clips(synthetic_heldout, tmp_path):
    weights = save_tiny_weights(tmp_path / "weights")
    data = str(synthetic_heldout / "data")
    result = subprocess.run([sys.executable, str(BENCHMARKS / "probe_renderer_motion.py"),
                             str(weights / "renderer.safetensors"), "--data", data, "--heldout", data,
                             "--samples", str(tmp_path / "probe.png")],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "held-out reenactment (2 clips, source = frame 0): PSNR" in result.stdout
    assert "mouth-contrast r" in result.stdout
    assert "probe R^2 (held-out, within-clip deviations): mouth" in result.stdout
    assert (tmp_path / "probe.png").stat().st_size > 0


@pytest.mark.slow
def test_warp_ceiling_runs_and_its_optimised_flow_beats_copying(synthetic_heldout, tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "warp_ceiling.py"), str(synthetic_heldout / "data"),
                             "--every", "15", "--grids", "8"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    copy = float(result.stdout.split("copy ")[1].split(",")[0])
    optimised = float(result.stdout.split("on a 8 x 8 grid: ")[1].split(" dB")[0])
    assert optimised > copy + 3.0, result.stdout
