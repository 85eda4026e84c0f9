"""`imtalker prepare`: videos -> crops, audio, landmarks, masks, tracks, manifest; resumable, parallel, skip report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from imtalker.apps.cli import main
from imtalker.constants import SAMPLES_PER_FRAME
from imtalker.errors import InputError
from imtalker.data.dataset import load_manifest
from imtalker.training.prepare import (EYE_LABEL, MOUTH_LABEL, PrepareConfig, clip_id, prepare_dataset,
                                       region_masks)


def test_clips_hold_crops_audio_landmarks_masks_and_tracks(prepared):
    folder, report = prepared.folder, prepared.report
    manifest = load_manifest(folder)
    assert len(manifest["clips"]) == 3 and len(report.written) == 3
    assert {c["split"] for c in manifest["clips"]} == {"train", "val"}
    for clip in manifest["clips"]:
        path = folder / "clips" / clip["id"]
        frames = np.load(path / "frames.npy")
        assert frames.shape == (prepared.frames, prepared.size, prepared.size, 3) and frames.dtype == np.uint8
        assert clip["frames"] == prepared.frames
        assert frames.std() > 20  # a real picture, not a blank crop
        landmarks = np.load(path / "landmarks.npy")
        assert landmarks.shape == (prepared.frames, 478, 2)
        assert np.isfinite(landmarks).all() and (landmarks > 0).all() and (landmarks < prepared.size).all()
        masks = np.load(path / "masks.npy")
        assert masks.shape == (prepared.frames, prepared.size, prepared.size)
        eyes, mouth = (masks == EYE_LABEL).mean(), (masks == MOUTH_LABEL).mean()
        assert 0.002 < eyes < 0.1 and 0.005 < mouth < 0.15
        # the mouth region lies below the eyes
        rows = np.arange(prepared.size)[None, :, None]
        assert (rows * (masks == MOUTH_LABEL)).sum() / (masks == MOUTH_LABEL).sum() > \
            (rows * (masks == EYE_LABEL)).sum() / (masks == EYE_LABEL).sum()
        with np.load(path / "tracks.npz") as tracks:
            assert tracks["pose"].shape == (prepared.frames, 3) and tracks["gaze"].shape == (prepared.frames, 2)
            assert tracks["cam"].shape == (prepared.frames, 3) and np.isfinite(tracks["pose"]).all()
        audio = np.load(path / "audio.npy")
        assert audio.shape == (prepared.frames * SAMPLES_PER_FRAME,) and 0.05 < np.abs(audio).max() < 1


def test_skipped_videos_are_reported_with_reasons(prepared):
    folder, report = prepared.folder, prepared.report
    reasons = {path.split("/")[-1]: reason for path, reason in report.skipped.items()}
    assert set(reasons) == {"broken.mp4", "wall.mp4"}
    assert "unreadable" in reasons["broken.mp4"] and "no face" in reasons["wall.mp4"]
    skipped = {item["source"].split("/")[-1] for item in load_manifest(folder)["skipped"]}
    assert skipped == {"broken.mp4", "wall.mp4"}
    assert not list((folder / "clips").glob(".*partial"))


def test_a_second_run_skips_finished_work(talking_videos, prepared, capsys):
    folder = prepared.folder
    before = {p: p.stat().st_mtime_ns for p in (folder / "clips").rglob("frames.npy")}
    code = main(["prepare", str(talking_videos), str(folder), "--size", str(prepared.size), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "0 clips written, 3 already there, 2 videos skipped" in out and "broken.mp4" in out
    assert {p: p.stat().st_mtime_ns for p in (folder / "clips").rglob("frames.npy")} == before


def test_parallel_workers_give_the_same_clips(talking_videos, prepared, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("speaker0.mp4", "speaker1.mp4"):
        shutil.copy(talking_videos / name, videos / name)
    report = prepare_dataset(videos, tmp_path / "out", PrepareConfig(size=prepared.size), workers=2)
    assert len(report.written) == 2 and not report.skipped
    reference = {c["source"].split("/")[-1]: c["id"] for c in load_manifest(prepared.folder)["clips"]}
    for clip in load_manifest(tmp_path / "out")["clips"]:
        ours = np.load(tmp_path / "out" / "clips" / clip["id"] / "frames.npy")
        theirs = np.load(prepared.folder / "clips" / reference[clip["source"].split("/")[-1]] / "frames.npy")
        np.testing.assert_array_equal(ours, theirs)


def test_bad_input_exits_2_without_output(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["prepare", str(tmp_path / "empty"), str(tmp_path / "out"), "-q"]) == 2
    assert "no video files" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "missing"), str(tmp_path / "out"), "-q"]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="size"):
        PrepareConfig(size=101)


def test_other_settings_are_refused(talking_videos, prepared):
    with pytest.raises(InputError, match="other settings"):
        prepare_dataset(talking_videos, prepared.folder, PrepareConfig(size=2 * prepared.size))


def test_masks_are_empty_without_landmarks():
    assert not region_masks(np.full((478, 2), np.nan, np.float32), 64).any()
    assert json.dumps(PrepareConfig().__dict__)  # settings are plain data (stored in the manifest)


def test_clip_ids_come_from_the_content_so_two_corpora_never_share_one(talking_videos, tmp_path):
    corpora = {}
    for name, speaker in (("train", 0), ("heldout", 1)):  # the same file name in both corpora, other videos
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(talking_videos / f"speaker{speaker}.mp4", folder / "clip_00000.mp4")
        corpora[name] = clip_id(folder / "clip_00000.mp4", folder)
    assert corpora["train"] != corpora["heldout"]
    assert all(found.startswith("clip_00000-") for found in corpora.values())
    # the same video is the same clip wherever it lies: its cached latents stay valid
    shutil.copy(tmp_path / "train" / "clip_00000.mp4", tmp_path / "clip_00000.mp4")
    assert clip_id(tmp_path / "clip_00000.mp4", tmp_path) == corpora["train"]
