"""`imtalker prepare --shard-mb`: clips packed into tar shards hold the folder format's samples, and training streams
them."""

from __future__ import annotations

import shutil
import tarfile

import numpy as np
import pytest
import torch

from imtalker.apps.cli import main
from imtalker.data.dataset import load_manifest
from imtalker.models.renderer import IMTRenderer
from imtalker.training.data import (MappedClip, clip_arrays, motion_latents, motion_videos, pair_item,
                                    renderer_dataset)
from imtalker.training.run import train_renderer
from imtalker.training.shards import ShardedRendererPairs, read_shard
from helpers.tiny_models import RENDERER


@pytest.fixture(scope="module")
def sharded(talking_videos, tmp_path_factory):
    """Two of the videos prepared as shards of about 1 MB (one clip each)."""
    videos = tmp_path_factory.mktemp("videos")
    for name in ("speaker0.mp4", "speaker1.mp4"):
        shutil.copy(talking_videos / name, videos / name)
    out = tmp_path_factory.mktemp("sharded") / "data"
    assert main(["prepare", str(videos), str(out), "--size", "128", "--shard-mb", "1", "-q"]) == 0
    return out


def test_shards_hold_the_clips_of_the_folder_format(prepared, sharded):
    shards = sorted((sharded / "shards").glob("*.tar"))
    assert len(shards) == 2 and not list((sharded / "clips").iterdir())  # no clip folders left behind
    with tarfile.open(shards[0]) as tar:  # WebDataset naming: <clip id>.<file>
        assert {name.split(".", 1)[1] for name in tar.getnames()} == {
            "audio.npy", "frames.npy", "info.json", "landmarks.npy", "masks.npy", "tracks.npz"}
    folder_ids = {c["id"]: c for c in load_manifest(prepared.folder)["clips"]}
    ours = load_manifest(sharded)["clips"]
    assert len(ours) == 2 and all(c["id"] in folder_ids for c in ours)  # same videos, same content ids
    for split in ("train", "val"):
        for clip, arrays in clip_arrays(sharded, split):
            folder = MappedClip(prepared.folder / "clips" / clip)
            for name in ("frames", "masks", "landmarks", "audio"):
                np.testing.assert_array_equal(arrays[name], folder[name])
            with np.load(prepared.folder / "clips" / clip / "tracks.npz") as tracks:
                for name in ("pose", "gaze", "cam"):
                    np.testing.assert_array_equal(arrays["tracks"][name], tracks[name])


def test_the_stream_draws_the_folder_formats_samples_and_trains(prepared, sharded, tmp_path):
    stream = renderer_dataset(sharded, "train", 128, samples_per_epoch=6, seed=3, with_landmarks=True)
    assert isinstance(stream, ShardedRendererPairs)
    items = list(stream)
    assert len(items) == 6 and items[0]["driving"].shape == (3, 128, 128)
    # the same draw on the same clip gives the same item from either format
    (clip, arrays), = clip_arrays(sharded, "train")
    folder = MappedClip(prepared.folder / "clips" / clip)
    for seed in range(3):
        ours = pair_item(arrays, lambda: arrays, np.random.default_rng(seed), 128, with_landmarks=True)
        theirs = pair_item(folder, lambda: folder, np.random.default_rng(seed), 128, with_landmarks=True)
        for name, value in theirs.items():
            torch.testing.assert_close(ours[name], value, equal_nan=True)

    torch.manual_seed(0)
    renderer = IMTRenderer(RENDERER).eval()
    (streamed,) = motion_videos(sharded, "train", renderer, "tiny")
    np.testing.assert_array_equal(streamed["waveform"].numpy(), folder["audio"])
    expected = motion_latents(folder["frames"], tmp_path / "latents.npy", renderer)
    np.testing.assert_allclose(streamed["motion"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (sharded / "motion-tiny" / f"{clip}.npy").is_file()  # cached inside its own dataset, by content id

    config = {"model": {"image_size": 128, "feature_channels": [8, 8, 16, 16, 32, 32],
                        "motion_channels": [8, 16, 16, 32, 32, 32], "adapt_dim": 32, "const_channels": 8},
              "training": {"batch_size": 2, "weights": {"l1": 1.0}},
              "trainer": {"samples_per_epoch": 8, "val_samples": 2, "loggers": ["csv"], "max_steps": 2}}
    trainer = train_renderer(sharded, tmp_path / "run", config, enable_progress_bar=False,
                             enable_model_summary=False)
    assert trainer.global_step == 2


def test_a_killed_packing_loses_no_clip(prepared, tmp_path):
    from imtalker.training.shards import ShardPacker

    ids = [c["id"] for c in load_manifest(prepared.folder)["clips"]][:2]
    for clip in ids:
        shutil.copytree(prepared.folder / "clips" / clip, tmp_path / "clips" / clip)
    packer = ShardPacker(tmp_path, shard_mb=6)  # a clip is about 5.4 MB: two make a shard
    packer.add(ids[0])
    assert packer.packed() == set() and (tmp_path / "clips" / ids[0]).is_dir()  # open shard: folder kept
    del packer  # killed before the shard was complete
    packer = ShardPacker(tmp_path, shard_mb=6)
    assert not list((tmp_path / "shards").glob(".*")) and packer.packed() == set()
    for clip in ids:
        packer.add(clip)
    assert packer.packed() == set(ids) and not list((tmp_path / "clips").iterdir())
    assert [name for name, _ in read_shard(tmp_path / "shards" / "shard-000000.tar")] == ids
