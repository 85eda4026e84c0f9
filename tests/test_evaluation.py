"""`imtalker eval`: the self-reenactment and audio-driven protocols on prepared clips, tables, cache, metric files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from imtalker.apps.cli import main
from imtalker.errors import InputError
from imtalker.evaluation import Evaluator, MetricPaths, evaluate, mouth_box, mouth_contrast
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


@pytest.mark.slow  # ~35 s; test_cli_writes_the_result... runs the same evaluation path by default
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
                 "--max-clips", "1", "--nfe", "2", "-q", "--no-landmarks"]) == 0
    saved = json.loads(out.read_text())
    assert saved["summary"]["clips"] == 1 and json.loads(capsys.readouterr().out) == saved["summary"]
    assert main(["eval", str(tmp_path / "nothing"), "--weights", str(tiny_weights)]) == 2
    assert capsys.readouterr().err.startswith("imtalker: error:")


def short_clips(heldout: Path, folder: Path, frames: int) -> Path:
    """A copy of the held-out prepared folder with every clip cut to its first `frames` frames."""
    manifest = json.loads((heldout / "data" / "manifest.json").read_text())
    for entry in manifest["clips"]:
        source, target = heldout / "data" / "clips" / entry["id"], folder / "clips" / entry["id"]
        target.mkdir(parents=True)
        np.save(target / "frames.npy", np.load(source / "frames.npy")[:frames])
        np.save(target / "audio.npy", np.load(source / "audio.npy")[:frames * 640])
        entry["frames"] = frames
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_cache_resumes_without_recomputing_and_tables_mark_unmeasured_metrics(tiny_weights, synthetic_heldout,
                                                                               tmp_path, monkeypatch):
    data = short_clips(synthetic_heldout, tmp_path / "data", frames=12)
    options = dict(nfe=2, progress=False, landmarks=False, cache=tmp_path / "cache", name="tiny")
    first = evaluate(tiny_weights, data, **options)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        f"{c['clip']}.npz" for c in first["clips"])

    def no_work(*_, **__):
        raise AssertionError("a cached clip was recomputed")

    tables = first["tables"]
    monkeypatch.setattr(Evaluator, "clip", no_work)
    again = evaluate(tiny_weights, data / "manifest.json", **options)  # the same clips named by their manifest
    assert again["summary"] == first["summary"] and again["clips"] == first["clips"] and again["tables"] == tables
    with pytest.raises(AssertionError, match="recomputed"):  # other settings: the cache does not apply
        evaluate(tiny_weights, data, **{**options, "nfe": 3})
    assert "| method | PSNR ↑ | SSIM ↑ | LPIPS ↓ | CSIM ↑ | LMD ↓ | FID ↓ | FVD ↓ |" in tables
    assert "| method | FID ↓ | FVD ↓ | CSIM ↑ | Sync-C ↑ | Sync-D ↓ | LMD ↓ |" in tables
    assert f"| tiny | {first['summary']['psnr']:.2f} | {first['summary']['ssim']:.3f} | n/a |" in tables
    assert first["metrics"] == [] and first["summary"]["fid"] is None


def test_a_required_metric_without_its_file_is_a_one_line_error(tiny_weights, synthetic_heldout, tmp_path, capsys):
    with pytest.raises(InputError, match=r"FID needs .*metrics/pt_inception-2015-12-05-6726825d.pth.*pytorch-fid"):
        evaluate(tiny_weights, synthetic_heldout / "data", require=("fid",), progress=False)
    assert main(["eval", str(synthetic_heldout / "data"), "--weights", str(tiny_weights), "--syncnet",
                 str(tmp_path / "syncnet_v2.model")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("imtalker: error:") and "syncnet_v2.model" in error and len(error.splitlines()) == 1


@pytest.mark.slow
def test_every_metric_with_seeded_stand_in_weights(tiny_weights, synthetic_heldout, tmp_path):
    """All five weight-file metrics through `imtalker eval`, with seeded random networks saved under the published
    names (slow: Inception at 299 px and I3D at 224 px on every frame)."""
    import torch
    from safetensors.torch import save_file

    from imtalker.metrics.arcface import DEPTHS, IResNet
    from imtalker.metrics.i3d import InceptionI3d
    from imtalker.metrics.inception import FIDInceptionV3
    from imtalker.metrics.lpips import LPIPS
    from imtalker.metrics.syncnet import SyncNet
    from test_metrics import seeded

    folder = tmp_path / "metric-weights"
    folder.mkdir()
    lpips = seeded(LPIPS("alex"))
    torch.save({k: v for k, v in lpips.state_dict().items() if k.startswith("features.")},
               folder / "alexnet-owt-7be5be79.pth")
    torch.save({k: v.abs() for k, v in lpips.state_dict().items() if k.startswith("lin")}, folder / "alex.pth")
    save_file(seeded(FIDInceptionV3()).state_dict(), str(folder / "pt_inception-2015-12-05-6726825d.safetensors"))
    torch.save(seeded(InceptionI3d()).state_dict(), folder / "rgb_imagenet.pt")
    torch.save(seeded(IResNet(DEPTHS[18])).state_dict(), folder / "arcface_r100.pth")
    torch.save(seeded(SyncNet()).state_dict(), folder / "syncnet_v2.model")
    data = short_clips(synthetic_heldout, tmp_path / "data", frames=17)  # one I3D clip each
    out, table = tmp_path / "eval.json", tmp_path / "tables.md"
    assert main(["eval", str(data), "--weights", str(tiny_weights), "--metric-weights", str(folder), "--require",
                 "lpips,fid,fvd,csim,sync", "--nfe", "2", "--out", str(out), "--table", str(table), "-q"]) == 0
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert result["metrics"] == ["csim", "fid", "fvd", "lpips", "sync"]
    # (LMD needs faces in the generated frames, which random renderers do not draw)
    for key in ("psnr", "ssim", "lpips", "csim", "fid", "fvd", "talk_fid", "talk_fvd", "talk_csim", "sync_c",
                "sync_d", "sync_c_real", "sync_d_real"):
        assert summary[key] is not None and math.isfinite(summary[key]), key
    assert summary["lpips"] > 0 and summary["fid"] > 0 and summary["fvd"] > 0 and -1 <= summary["csim"] <= 1
    assert summary["sync_c"] >= 0 and summary["sync_d"] > 0
    assert "| real clips | n/a | n/a | n/a | " in table.read_text()
