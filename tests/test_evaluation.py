"""`imtalker eval`: self-reenactment PSNR/SSIM and lip-sync correlation on prepared clips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from imtalker.apps.cli import main
from imtalker.evaluation import evaluate, mouth_box, mouth_contrast
from imtalker.metrics import pearson, psnr, ssim
from helpers.tiny_models import save_tiny_weights


def test_pearson_ignores_missing_frames_and_is_undefined_for_flat_series():
    t = np.linspace(0, 6, 100)
    a, b = np.sin(t), 2 * np.sin(t) + 1
    b[::7] = np.nan  # frames where the face mesh found nothing
    assert pearson(a, b) == pytest.approx(1.0)
    assert pearson(a, -b) == pytest.approx(-1.0)
    assert pearson(a, a[:50]) == pytest.approx(1.0)  # the shorter length wins
    assert math.isnan(pearson(a, np.ones(100))) and math.isnan(pearson(a[:2], a[:2]))


def test_psnr_and_ssim_of_known_images():
    a = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(a, a), torch.ones(2)) and (psnr(a, a) > 90).all()
    noisy = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    assert 15 < float(psnr(noisy, a).mean()) < 25 and float(ssim(noisy, a).mean()) < 0.95


def test_mouth_contrast_grows_as_a_dark_mouth_opens_inside_the_box():
    landmarks = np.zeros((478, 2))
    landmarks[[78, 308, 13, 14]] = [[40, 60], [60, 60], [50, 58], [50, 62]]  # inner lips 20 px wide at (50, 60)
    top, bottom, left, right = box = mouth_box(landmarks)
    assert top < 58 and bottom > 62 and left < 45 and right > 55 and (bottom - top) < (right - left)
    frames = np.full((5, 100, 100, 3), 200, np.uint8)  # skin
    for i, gap in enumerate(range(0, 10, 2)):  # a dark opening, 0 to 8 px high
        frames[i, 60 - gap // 2:60 + gap // 2, 44:56] = 30
    contrast = mouth_contrast(frames, box)
    assert contrast[0] == 0 and (np.diff(contrast) > 0).all()
    assert np.isnan(mouth_contrast(frames, None)).all()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("weights"), front_end="mel")


def test_evaluation_of_untrained_networks(tiny_weights, synthetic_heldout):
    result = evaluate(tiny_weights, synthetic_heldout / "data", nfe=2, progress=False)
    summary = result["summary"]
    assert summary["clips"] == 2 and summary["frames"] == 2 * 75
    assert [c["ground_truth"] for c in result["clips"]] == ["synthetic", "synthetic"]  # the corpus's .npz found
    assert summary["lipsync_ceiling"] > 0.8  # the face mesh measures the real synthetic mouths well
    assert summary["lipsync_region_ceiling"] > 0.7  # so does the mouth-region contrast
    assert summary["psnr"] < 20  # random networks reconstruct nothing
    assert 0 <= summary["ssim"] <= 1 and 0 <= summary["detected"] <= 1
    json.dumps(result, allow_nan=False)  # strict JSON: undefined correlations are null


def test_cli_writes_the_result_and_refuses_a_bad_folder(tiny_weights, synthetic_heldout, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(synthetic_heldout / "data"), "--weights", str(tiny_weights), "--out", str(out),
                 "--max-clips", "1", "--nfe", "2", "-q"]) == 0
    saved = json.loads(out.read_text())
    assert saved["summary"]["clips"] == 1 and json.loads(capsys.readouterr().out) == saved["summary"]
    assert main(["eval", str(tmp_path / "nothing"), "--weights", str(tiny_weights)]) == 2
    assert capsys.readouterr().err.startswith("imtalker: error:")
