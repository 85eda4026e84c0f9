"""Datasets over a folder made by `imtalker prepare` (layout in `imtalker.training.prepare`)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..constants import SAMPLES_PER_FRAME
from ..errors import InputError
from ..data.dataset import CLIPS, load_manifest
from ..preprocess.conventions import read_tracks

logger = logging.getLogger(__name__)

TRACK_NAMES = ("pose", "gaze", "cam")


def clip_folders(folder: str | os.PathLike, split: str | None) -> list[Path]:
    """Clip folders of a prepared dataset in one split ("train", "val") or all (None).

    Raises:
        InputError: not a prepared dataset, or the split has no clips.
    """
    manifest = load_manifest(folder)
    if manifest["config"].get("shard_mb"):
        raise InputError(f"{folder} is sharded (prepare --shard-mb): its clips are read as a stream, not as folders")
    clips = [Path(folder) / CLIPS / c["id"] for c in manifest["clips"] if split is None or c["split"] == split]
    if not clips:
        raise InputError(f"{folder} has no {split or ''} clips".replace("  ", " "))
    return clips


def synthetic_truth(clip: Path, names) -> dict[str, np.ndarray]:
    """Per-frame ground truth `names` (e.g. "mouth", "pose") of a prepared clip, from the synthetic corpus's `.npz`
    beside its source video.

    Raises:
        InputError: the clip does not come from an `imtalker synth-data` corpus (no ground truth beside its video).
    """
    source = Path(json.loads((Path(clip) / "info.json").read_text())["source"])
    truth_file = source.with_suffix(".npz")
    if not truth_file.is_file():
        raise InputError(f"{Path(clip).name}: no synthetic ground truth at {truth_file} (only `imtalker synth-data` "
                         "corpora have one)")
    with np.load(truth_file) as truth:
        return {name: np.asarray(truth[name], np.float32) for name in names}


def _to_image_tensor(frame: np.ndarray, size: int) -> torch.Tensor:
    """(S', S', 3) uint8 -> (3, size, size) float in [0, 1], resized with antialiasing when sizes differ."""
    image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().div_(255)
    if image.shape[-1] != size:
        image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        image = image.clamp_(0, 1)
    return image


class RendererPairDataset(Dataset):
    """Training items of the renderer recipe: a source and a driving frame of one clip, a frame of another clip.

    Item `i` draws its clip, frames and other clip from a generator seeded with (seed, i), so an index always gives
    the same sample. Frames are memory-mapped, so the dataset costs no RAM up front.

    Returns per item: `source`, `driving`, `other` (3, S, S) float in [0, 1] and `mask` (1, S, S) float, 1 on the
    driving frame's eyes and mouth.

    Args:
        folder: prepared dataset folder.
        split: "train" or "val".
        image_size: the renderer's resolution (frames are resized if the dataset was prepared at another size).
        samples_per_epoch: dataset length (default: 100 per clip).
        seed: base seed of the per-index draws.
        with_landmarks: also return `source_landmarks` and `driving_landmarks` (478, 2), face-mesh pixels (x, y) at
            `image_size`, NaN without a face (for the renderer's motion_landmarks and flow_landmarks terms).
    """

    def __init__(self, folder: str | os.PathLike, split: str, image_size: int, samples_per_epoch: int | None = None,
                 seed: int = 0, with_landmarks: bool = False):
        self.clips = clip_folders(folder, split)
        self.image_size = image_size
        self.samples_per_epoch = samples_per_epoch or 100 * len(self.clips)
        self.seed = seed
        self.with_landmarks = with_landmarks
        self._mapped: dict[int, MappedClip] = {}

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _clip(self, index: int) -> MappedClip:
        if index not in self._mapped:  # opened lazily, so each data-loader worker maps its own
            self._mapped[index] = MappedClip(self.clips[index])
        return self._mapped[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        rng = np.random.default_rng((self.seed, index))
        clip = int(rng.integers(len(self.clips)))
        others = [c for c in range(len(self.clips)) if c != clip] or [clip]  # one clip only: its own frames
        return pair_item(self._clip(clip), lambda: self._clip(others[int(rng.integers(len(others)))]), rng,
                         self.image_size, self.with_landmarks)


class MappedClip(Mapping):
    """The arrays of a clip folder by name ("frames", "masks", "landmarks"), memory-mapped on first access."""

    def __init__(self, folder: Path):
        self.folder, self._arrays = folder, {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    def __iter__(self):
        return (p.stem for p in self.folder.glob("*.npy"))

    def __len__(self) -> int:
        return len(list(self.folder.glob("*.npy")))


def pair_item(clip: Mapping[str, np.ndarray], pick_other: Callable[[], Mapping[str, np.ndarray]],
              rng: np.random.Generator, size: int, with_landmarks: bool = False) -> dict[str, torch.Tensor]:
    """One renderer training item: a source and a driving frame of `clip` and a frame of another clip (which
    `pick_other` draws, after the two frames), drawn with `rng`.

    Returns:
        `source`, `driving`, `other` (3, S, S) float in [0, 1], `mask` (1, S, S) float (1 on the driving frame's eyes
        and mouth) and with `with_landmarks` `source_landmarks`, `driving_landmarks` (478, 2) pixels at `size`.
    """
    frames, masks = clip["frames"], clip["masks"]
    source, driving = (int(i) for i in rng.integers(len(frames), size=2))
    other = pick_other()
    other_index = int(rng.integers(len(other["frames"])))
    mask = torch.from_numpy((np.asarray(masks[driving]) > 0).astype(np.float32))[None, None]
    if mask.shape[-1] != size:
        mask = F.interpolate(mask, size=(size, size), mode="nearest")
    item = {"source": _to_image_tensor(frames[source], size), "driving": _to_image_tensor(frames[driving], size),
            "other": _to_image_tensor(other["frames"][other_index], size), "mask": mask[0]}
    if with_landmarks:
        scale = size / frames.shape[1]
        for name, index in (("source_landmarks", source), ("driving_landmarks", driving)):
            item[name] = torch.from_numpy(np.asarray(clip["landmarks"][index], np.float32) * scale)
    return item


def renderer_dataset(folder: str | os.PathLike, split: str, image_size: int, samples_per_epoch: int | None = None,
                     seed: int = 0, with_landmarks: bool = False) -> Dataset:
    """The renderer's training items from a prepared dataset (arguments as `RendererPairDataset`): random access to
    a folder of clips, a stream (`ShardedRendererPairs`) from a sharded one."""
    if is_sharded(folder):
        from .shards import ShardedRendererPairs

        clips = sum(c["split"] == split for c in load_manifest(folder)["clips"])
        return ShardedRendererPairs(folder, split, image_size, samples_per_epoch or 100 * clips, seed=seed,
                                    with_landmarks=with_landmarks)
    return RendererPairDataset(folder, split, image_size, samples_per_epoch, seed=seed, with_landmarks=with_landmarks)


def is_sharded(folder: str | os.PathLike) -> bool:
    """Whether `imtalker prepare --shard-mb` packed the dataset's clips into shards."""
    return bool(load_manifest(folder)["config"].get("shard_mb"))


def clip_arrays(folder: str | os.PathLike, split: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(id, arrays) of every clip of a split, from clip folders or read shard by shard: "frames", "audio",
    "tracks" ({pose, gaze, cam}), "audio_features" when prepared with an audio encoder."""
    if not is_sharded(folder):
        for clip in clip_folders(folder, split):
            arrays = dict(MappedClip(clip))
            with np.load(clip / "tracks.npz") as stored:
                arrays["tracks"] = {k: stored[k] for k in stored.files}
            yield clip.name, arrays
        return
    from .shards import SHARDS, load_index, read_shard

    keep = {c["id"] for c in load_manifest(folder)["clips"] if c["split"] == split}
    for shard in load_index(folder):
        yield from read_shard(Path(folder) / SHARDS / shard["name"], keep)


@torch.inference_mode()
def motion_latents(frames: np.ndarray, cache: Path, renderer, batch_size: int = 16) -> np.ndarray:
    """Motion latents (N, motion_dim) of a clip's frames (N, S, S, 3), cached in the file `cache`."""
    if cache.is_file():
        return np.load(cache)
    size = renderer.config.image_size
    latents = []
    for start in range(0, len(frames), batch_size):
        batch = torch.stack([_to_image_tensor(f, size) for f in frames[start:start + batch_size]])
        latents.append(renderer.encode_motion(batch.to(next(renderer.parameters()).device)).float().cpu())
    result = torch.cat(latents).numpy()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.tmp.npy")
    np.save(tmp, result)
    os.replace(tmp, cache)
    return result


def motion_videos(folder: str | os.PathLike, split: str, renderer, renderer_tag: str, *,
                  audio: str = "waveform", tracks: bool = True) -> list[dict[str, torch.Tensor]]:
    """Per-clip tracks for `MotionClipDataset`: motion latents from `renderer` (extracted once, cached), audio and
    head tracks.

    The latents are cached per renderer in `<folder>/motion-<renderer_tag>/<clip id>.npy`, inside the dataset they
    were made from, and clip ids carry a digest of the video's content: no cache is shared across corpora.

    Args:
        folder: prepared dataset folder (clip folders or shards).
        split: "train" or "val".
        renderer: a trained `IMTRenderer` (its motion encoder makes the latents).
        renderer_tag: names the latent cache (`imtalker.weights.weights_digest` of the renderer).
        audio: "waveform" gives `waveform` (N * 640,) for a front end trained with the generator; "features" gives
            the stored `audio_features` (N, A) of a frozen encoder.
        tracks: include pose, gaze and cam, in the published conventions (`imtalker.preprocess.conventions`).

    Raises:
        InputError: `audio="features"` but the dataset was prepared without an audio encoder.
    """
    cache_folder = Path(folder) / f"motion-{renderer_tag}"
    ids = [c["id"] for c in load_manifest(folder)["clips"] if c["split"] == split]
    todo = sum(not (cache_folder / f"{clip}.npy").is_file() for clip in ids)
    if todo:
        logger.info("extracting the motion latents of %d %s clips with renderer %s (once; cached in %s)",
                    todo, split, renderer_tag, cache_folder)
    done, started, reported = 0, time.monotonic(), time.monotonic()
    videos = []
    for clip, arrays in clip_arrays(folder, split):
        cache = cache_folder / f"{clip}.npy"
        cached = cache.is_file()
        video = {"motion": torch.from_numpy(motion_latents(arrays["frames"], cache, renderer))}
        done += not cached
        if todo and not cached and (time.monotonic() - reported > 10 or done == todo):  # a line every 10 s at most
            reported = time.monotonic()
            logger.info("motion latents: %d/%d %s clips, %.0f s", done, todo, split, reported - started)
        if audio == "features":
            if "audio_features" not in arrays:
                raise InputError(f"clip {clip} has no audio features: prepare the dataset with --audio-encoder, or "
                                 "train with the log-mel front end")
            video["audio"] = torch.from_numpy(np.asarray(arrays["audio_features"]))
        else:
            video["waveform"] = torch.from_numpy(np.asarray(arrays["audio"]))
        if tracks:
            # in the published conventions: files prepared before they were recorded are converted here
            published = read_tracks(arrays["tracks"])
            video.update({name: torch.from_numpy(published[name]) for name in TRACK_NAMES})
        videos.append(video)
    return videos


def waveform_frames(waveform: torch.Tensor) -> int:
    """Video frames covered by a waveform track."""
    return waveform.shape[0] // SAMPLES_PER_FRAME
