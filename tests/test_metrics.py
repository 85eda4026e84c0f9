"""The metrics against reference implementations and on hand-made cases whose answer is known.

References: torchmetrics (PSNR, SSIM), scipy's matrix square root (the Frechet distance, as pytorch-fid computes
it), python_speech_features (MFCC). `lpips`, `pytorch-fid` and `syncnet-python` cannot be installed with their
dependencies beside a CPU torch (they require torchvision); the README's set-up installs them with `--no-deps`, and
the tests at the end run their own code on our networks' weights (the torchvision network definitions they import
are stood in by ours); where they are missing those tests are skipped.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from imtalker.errors import CheckpointError, InputError
from imtalker.metrics import landmark_distance, psnr, ssim
from imtalker.metrics.arcface import DEPTHS, IResNet, csim, load_arcface
from imtalker.metrics.files import METRICS_FOLDER, find_metric_file
from imtalker.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_of
from imtalker.metrics.i3d import InceptionI3d, load_i3d, video_clips
from imtalker.metrics.inception import FIDInceptionV3, load_inception
from imtalker.metrics.lpips import LPIPS, load_lpips
from imtalker.metrics.syncnet import SyncNet, load_syncnet, mfcc, sync_embeddings, sync_scores


def seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """He-scaled random weights and random BatchNorm statistics, so signals neither die nor explode in deep stacks
    and the normalisation is exercised too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif tensor.dim() > 1:
                tensor.copy_(noise * (2 / tensor[0].numel()) ** 0.5)
            elif name.endswith("weight"):  # BatchNorm scales, PReLU slopes
                tensor.copy_(1 + 0.1 * noise)
            else:
                tensor.copy_(0.05 * noise)
    return module.eval().requires_grad_(False)


# PSNR and SSIM: torchmetrics


def test_psnr_and_ssim_agree_with_torchmetrics():
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    torch.manual_seed(0)
    real = torch.rand(3, 3, 48, 48, dtype=torch.float64)
    fake = (real + 0.1 * torch.randn_like(real)).clamp(0, 1)
    expected = torch.stack([peak_signal_noise_ratio(f[None], r[None], data_range=1.0) for f, r in zip(fake, real)])
    torch.testing.assert_close(psnr(fake, real), expected, rtol=1e-6, atol=0)
    # torchmetrics pads reflectively and averages the map over the whole image; ours (like scikit-image) averages
    # only where the 11x11 window fits inside: the same map, cropped by 5 pixels
    _, full_map = structural_similarity_index_measure(fake, real, data_range=1.0, reduction="none",
                                                      return_full_image=True)
    expected = full_map[..., 5:-5, 5:-5].flatten(1).mean(1)
    torch.testing.assert_close(ssim(fake, real), expected, rtol=1e-6, atol=0)


def test_landmark_distance():
    real = np.zeros((3, 4, 2))
    fake = real.copy()
    fake[..., 0] += 3
    fake[..., 1] += 4  # every point 5 px away
    assert landmark_distance(real, real) == 0 and landmark_distance(fake, real) == pytest.approx(5)
    fake[1] = np.nan  # a frame without a face is left out
    assert landmark_distance(fake, real) == pytest.approx(5) and np.isnan(landmark_distance(fake[1:2], real[1:2]))


# Frechet distance: scipy's matrix square root, as pytorch-fid


def scipy_frechet(mu1, sigma1, mu2, sigma2):
    from scipy import linalg

    root = linalg.sqrtm(sigma1 @ sigma2).real
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


def test_frechet_distance_agrees_with_scipy_sqrtm_and_streams():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16)) + 0.5
    stats_a, stats_b = FeatureStats(16), FeatureStats(16)
    for chunk in np.array_split(a, 7):  # streamed in batches
        stats_a.add(chunk)
    stats_b.add(b)
    np.testing.assert_allclose(stats_a.covariance(), np.cov(a, rowvar=False), rtol=1e-10)
    expected = scipy_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance_of(stats_a, stats_b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance_of(stats_a, stats_a) == pytest.approx(0, abs=1e-8)
    shifted = FeatureStats(16)
    shifted.add(a + 1.0)  # a mean shift of 1 in each of 16 dimensions costs exactly 16
    assert frechet_distance_of(shifted, stats_a) == pytest.approx(16, rel=1e-8)
    assert np.isnan(frechet_distance_of(FeatureStats(16), stats_a))


def test_fid_features_of_a_seeded_inception_tell_noise_from_the_real_set():
    inception = seeded(FIDInceptionV3())
    torch.manual_seed(0)
    real = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        features = inception(torch.cat([real, real, (real + 0.3 * torch.randn_like(real)).clamp(0, 1)]))
    assert features.shape == (6, 2048)
    torch.testing.assert_close(features[:2], features[2:4])  # deterministic, batch-independent
    assert not torch.allclose(features[:2], features[4:], atol=1e-3)


# LPIPS


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_is_zero_for_identical_images_and_grows_with_noise(net):
    model = seeded(LPIPS(net))
    for k in range(5):  # heads are non-negative in the published weights
        getattr(model, f"lin{k}").model[1].weight.abs_()
    torch.manual_seed(0)
    image = torch.rand(1, 3, 64, 64)
    small, large = ((image + s * torch.randn_like(image)).clamp(0, 1) for s in (0.02, 0.3))
    distances = model(torch.cat([image, small, large]), image.expand(3, -1, -1, -1))
    assert distances[0] == 0 and 0 < distances[1] < distances[2]


# I3D (FVD)


def test_i3d_features_of_16_frame_clips():
    model = seeded(InceptionI3d())
    frames = torch.rand(33, 3, 64, 64)
    clips = video_clips(frames)
    assert clips.shape == (2, 3, 16, 224, 224)  # the 33rd frame makes no full clip
    with torch.no_grad():
        features = model(clips[:1])
        again = model(video_clips(frames[:16]))
    assert features.shape == (1, 400) and torch.isfinite(features).all()
    torch.testing.assert_close(features, again)


# CSIM


def test_csim_is_one_for_the_same_face_and_lower_for_another():
    model = seeded(IResNet(DEPTHS[18]))
    torch.manual_seed(0)
    face, other = torch.rand(2, 1, 3, 96, 96)
    scores = csim(model, torch.cat([face, other]), face)
    assert scores[0] == pytest.approx(1, abs=1e-5) and scores[1] < scores[0]


# SyncNet


def test_mfcc_agrees_with_python_speech_features():
    psf = pytest.importorskip("python_speech_features")
    rng = np.random.default_rng(0)
    audio = (rng.normal(size=16000 + 123) * 3000).astype(np.int16)  # int16 scale, as the SyncNet release reads it
    audio[:400] = 0  # a silent frame: the log of zero energy is guarded the same way
    np.testing.assert_allclose(mfcc(audio), psf.mfcc(audio, 16000), rtol=1e-6, atol=1e-6)


def test_sync_scores_find_a_known_shift_of_the_audio():
    # hand-made embeddings: lip window i matches audio window i + 3 exactly, every other pair is far apart
    torch.manual_seed(0)
    audio = torch.randn(60, 32) * 10
    lips = audio[3:53].clone()
    shifted = sync_scores(lips, audio[:50])
    assert shifted.offset == -3 and shifted.distance == pytest.approx(3 / 50 * 10 * np.sqrt(2 * 32), rel=0.3)
    aligned = sync_scores(audio[:50], audio[:50])
    assert aligned.offset == 0 and aligned.distance < 1e-4 and aligned.confidence > shifted.confidence


def test_sync_embeddings_windows_and_batches():
    model = seeded(SyncNet())
    frames = np.random.default_rng(0).integers(0, 256, (12, 48, 48, 3), dtype=np.uint8)
    waveform = np.random.default_rng(0).normal(size=12 * 640) * 0.1
    lips, audio = sync_embeddings(model, frames, waveform, batch_size=3)
    assert lips.shape == audio.shape == (7, 1024)  # 12 frames -> windows starting at 0..6
    lips_one, audio_one = sync_embeddings(model, frames, waveform, batch_size=20)
    # batching changes only the float summation order (values here are in the hundreds)
    torch.testing.assert_close(lips, lips_one, rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(audio, audio_one, rtol=1e-3, atol=1e-2)


# weight files


def test_missing_files_name_the_file_and_where_it_is_published(tmp_path):
    for loader, published in [(load_inception, "pytorch-fid"), (load_i3d, "pytorch-i3d"), (load_arcface, "insightface"),
                              (load_syncnet, "syncnet_python")]:
        with pytest.raises(InputError, match=f"{METRICS_FOLDER}.*does not exist.*{published}"):
            loader(folder=tmp_path / METRICS_FOLDER)
    with pytest.raises(InputError, match="vgg16-397923af.pth"):
        load_lpips("vgg", folder=tmp_path)
    with pytest.raises(InputError, match="nothing.pth"):
        find_metric_file("inception", tmp_path / "nothing.pth")


def test_files_load_strictly_from_the_metrics_folder(tmp_path):
    folder = tmp_path / METRICS_FOLDER
    folder.mkdir()
    model = seeded(SyncNet())
    torch.save(model.state_dict(), folder / "syncnet_v2.model")
    loaded = load_syncnet(folder=folder)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())
    arcface = seeded(IResNet(DEPTHS[18]))
    save_file(arcface.state_dict(), str(folder / "arcface_r100.safetensors"))
    assert [len(getattr(load_arcface(folder=folder), f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    torch.save({"conv.weight": torch.zeros(1)}, folder / "rgb_imagenet.pt")
    with pytest.raises(CheckpointError, match="does not fit InceptionI3d"):
        load_i3d(folder=folder)


# The reference implementations themselves, when installed (see the module docstring)


def stand_in_torchvision(monkeypatch, **models):
    """A `torchvision` module whose `models` build our networks: lpips and pytorch-fid import torchvision for the
    network definitions only, which cannot be installed beside a CPU torch."""
    vision = types.ModuleType("torchvision")
    vision.__version__ = "0.20.0"
    vision.models = types.ModuleType("torchvision.models")
    for name, build in models.items():
        setattr(vision.models, name, build)
    monkeypatch.setitem(sys.modules, "torchvision", vision)
    monkeypatch.setitem(sys.modules, "torchvision.models", vision.models)
    return vision


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_agrees_with_the_lpips_package(monkeypatch, tmp_path, net):
    if importlib.util.find_spec("lpips") is None:
        pytest.skip("lpips not installed (pip install --no-deps lpips==0.1.4)")
    ours = seeded(LPIPS(net))
    backbone = types.SimpleNamespace(features=ours.features)
    stand_in_torchvision(monkeypatch, alexnet=lambda **_: backbone, vgg16=lambda **_: backbone,
                         squeezenet1_1=lambda **_: backbone)
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    import lpips

    reference = lpips.LPIPS(net=net, verbose=False)  # loads the wheel's published heads
    heads = {k: v for k, v in reference.state_dict().items() if k.startswith("lin")}
    ours.load_state_dict(heads, strict=False)
    torch.manual_seed(1)
    a, b = torch.rand(2, 3, 3, 64, 64)
    expected = reference(a, b, normalize=True).flatten()
    torch.testing.assert_close(ours(a, b), expected, rtol=1e-4, atol=1e-7)
    # and the published heads load through our loader from the wheel's own file
    published = importlib.util.find_spec("lpips").submodule_search_locations[0] + f"/weights/v0.1/{net}.pth"
    backbone_file = tmp_path / "backbone.safetensors"
    save_file({f"features.{k}": v for k, v in ours.features.state_dict().items()}, str(backbone_file))
    loaded = load_lpips(net, backbone=backbone_file, heads=published)
    torch.testing.assert_close(loaded(a, b), expected, rtol=1e-4, atol=1e-7)


def test_fid_inception_and_frechet_distance_agree_with_pytorch_fid(monkeypatch):
    if importlib.util.find_spec("pytorch_fid") is None:
        pytest.skip("pytorch-fid not installed (pip install --no-deps pytorch-fid==0.3.0)")
    from imtalker.metrics import inception as ours_module

    ours = seeded(FIDInceptionV3())
    vision = stand_in_torchvision(monkeypatch, inception_v3=lambda **_: FIDInceptionV3())
    vision.models.inception = types.SimpleNamespace(InceptionA=ours_module.InceptionA,
                                                    InceptionC=ours_module.InceptionC,
                                                    InceptionE=ours_module.InceptionE)
    vision.models.utils = types.ModuleType("torchvision.models.utils")
    vision.models.utils.load_state_dict_from_url = lambda *_, **__: ours.state_dict()
    monkeypatch.setitem(sys.modules, "torchvision.models.utils", vision.models.utils)
    monkeypatch.setitem(sys.modules, "torchvision.transforms", types.ModuleType("torchvision.transforms"))
    for name in [m for m in sys.modules if m.startswith("pytorch_fid")]:
        monkeypatch.delitem(sys.modules, name)
    from pytorch_fid.fid_score import calculate_frechet_distance
    from pytorch_fid.inception import InceptionV3

    reference = InceptionV3([3]).eval()  # pytorch-fid's blocks (its patched Mixed_5*, 6b-e, 7b, 7c) on our weights
    torch.manual_seed(2)
    images = torch.rand(2, 3, 80, 80)
    with torch.no_grad():
        expected = reference(images)[0].flatten(1)
        torch.testing.assert_close(ours(images), expected, rtol=1e-4, atol=1e-5)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(100, 8)), rng.normal(size=(80, 8)) * 1.5 + 0.2
    stats = [(x.mean(0), np.cov(x, rowvar=False)) for x in (a, b)]
    assert frechet_distance(*stats[0], *stats[1]) == pytest.approx(calculate_frechet_distance(*stats[0], *stats[1]),
                                                                 rel=1e-6)


def test_syncnet_agrees_with_the_syncnet_release(monkeypatch):
    spec = importlib.util.find_spec("syncnet_python")
    if spec is None:
        pytest.skip("syncnet-python not installed (pip install --no-deps syncnet-python==0.2.3)")
    # its package __init__ pulls in a face-detection pipeline (torchvision): load the two modules that matter alone
    folder = spec.submodule_search_locations[0]
    modules = {}
    for name in ("SyncNetModel", "SyncNetInstance"):
        module_spec = importlib.util.spec_from_file_location(name, f"{folder}/{name}.py")
        modules[name] = importlib.util.module_from_spec(module_spec)
        monkeypatch.setitem(sys.modules, name, modules[name])
        module_spec.loader.exec_module(modules[name])
    ours = seeded(SyncNet())
    reference = modules["SyncNetModel"].S().eval()
    reference.load_state_dict(ours.state_dict())
    frames = np.random.default_rng(3).integers(0, 256, (9, 224, 224, 3), dtype=np.uint8)
    waveform = np.random.default_rng(1).normal(size=9 * 640) * 0.2
    lips, audio = sync_embeddings(ours, frames, waveform)
    # the release: BGR 0..255 frames (as cv2 reads them), MFCCs of the int16-scale audio, 5 frames / 20 MFCC steps
    video = torch.from_numpy(frames[..., ::-1].astype(np.float32)).permute(3, 0, 1, 2)[None]
    import python_speech_features

    cc = torch.from_numpy(python_speech_features.mfcc(waveform * 32768, 16000).T).float()[None, None]
    with torch.no_grad():
        ref_lips = reference.forward_lip(torch.cat([video[:, :, i:i + 5] for i in range(4)]))
        ref_audio = reference.forward_aud(torch.cat([cc[..., i * 4:i * 4 + 20] for i in range(4)]))
    # within 1e-4 of the embeddings' scale: float32 sums in another order (values reach the hundreds here)
    torch.testing.assert_close(lips, ref_lips, rtol=1e-4, atol=1e-4 * float(ref_lips.abs().max()))
    torch.testing.assert_close(audio, ref_audio, rtol=1e-4, atol=1e-4 * float(ref_audio.abs().max()))
    dists = modules["SyncNetInstance"].calc_pdist(lips, audio, vshift=15)
    mean = torch.stack(dists, 1).mean(1)
    scores = sync_scores(lips, audio)
    assert scores.distance == pytest.approx(float(mean.min()), rel=1e-6)
    assert scores.confidence == pytest.approx(float(mean.median() - mean.min()), rel=1e-5)
    assert scores.offset == 15 - int(mean.argmin())
