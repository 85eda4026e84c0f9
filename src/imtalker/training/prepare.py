"""`imtalker prepare`: talking-head videos -> a training dataset folder.

For every video: 25 fps face crops at the model's resolution (the pipelines' offline detector and crop), 16 kHz mono
audio, face-mesh landmarks in crop pixels, eye and mouth masks (for the region perceptual loss), head pose, gaze and
camera tracks (`imtalker.preprocess.tracks`), and optionally frame-rate features of a frozen audio encoder, in the
layout `imtalker.data.dataset` describes.

Each clip is written to a hidden folder and renamed when complete, so a killed run leaves no half clip and the next
run skips finished videos (and videos already recorded as skipped).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from ..constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ..data.dataset import CLIPS, MANIFEST, MANIFEST_VERSION
from ..errors import InputError
from .shards import ShardPacker

logger = logging.getLogger(__name__)

SKIPPED_SUFFIX = ".skipped.json"
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")

# Face-mesh contours (mediapipe 478-point topology): each eye's lid outline and the outer lip line.
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)
OUTER_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
EYE_LABEL, MOUTH_LABEL = 1, 2
# Regions are grown about their centre so the loss also sees the lids, brows' base and the skin around the lips.
EYE_GROWTH, MOUTH_GROWTH = 1.6, 1.3


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of a dataset; stored in the manifest, and a re-run must use the same ones."""

    size: int = 512  # crop side in pixels (the renderer's image_size)
    min_seconds: float = 2.4  # shorter videos are skipped (the generator trains on 10 + 50 frame windows)
    max_seconds: float | None = 600.0  # longer videos are skipped
    max_missing_face: float = 0.2  # videos with a larger fraction of frames without a face are skipped
    val_fraction: float = 0.05  # share of videos held out for validation (by a hash of the id; at least one)
    audio_encoder: str | None = None  # a frozen encoder whose features to store (path), or None
    shard_mb: int | None = None  # pack clips into tar shards of about this many megabytes (None: clip folders)

    def __post_init__(self):
        if self.size < 64 or self.size % 2:
            raise InputError(f"size must be an even number of pixels >= 64, got {self.size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.max_missing_face < 1.0:
            raise InputError(f"max_missing_face must be in [0, 1), got {self.max_missing_face}")
        if self.shard_mb is not None and (isinstance(self.shard_mb, bool) or not isinstance(self.shard_mb, int)
                                          or self.shard_mb < 1):
            raise InputError(f"shard_mb must be a whole number of megabytes >= 1, got {self.shard_mb!r}")
        if self.min_seconds < 0 or (self.max_seconds is not None and self.max_seconds <= self.min_seconds):
            raise InputError(f"need 0 <= min_seconds < max_seconds, got {self.min_seconds} and {self.max_seconds}")


class SkipVideo(Exception):
    """A video that cannot become a training clip; the message is the reason reported."""


def find_videos(folder: str | os.PathLike) -> list[Path]:
    """Video files under `folder` (recursively), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"videos folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                  and not p.name.startswith("."))


def clip_id(video: Path, root: Path) -> str:
    """A file-system-safe id: the path relative to `root` for reading, plus a digest of the file's content, so two
    corpora with the same file names (a training and a held-out one) never share an id, and anything cached by id
    cannot be mixed up between them."""
    relative = video.relative_to(root).as_posix()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", relative.rsplit(".", 1)[0]).strip("_")[-60:] or "clip"
    digest = hashlib.sha256()
    with open(video, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{stem}-{digest.hexdigest()[:10]}"


def region_masks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Eye and mouth label mask (S, S) uint8 from crop-pixel landmarks (478, 2); zeros when they are NaN."""
    mask = np.zeros((size, size), np.uint8)
    if not np.isfinite(landmarks).all():
        return mask
    for indices, label, growth in ((RIGHT_EYE, EYE_LABEL, EYE_GROWTH), (LEFT_EYE, EYE_LABEL, EYE_GROWTH),
                                   (OUTER_LIPS, MOUTH_LABEL, MOUTH_GROWTH)):
        points = landmarks[list(indices)]
        centre = points.mean(axis=0)
        grown = centre + growth * (points - centre)
        hull = cv2.convexHull(np.round(grown * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, label, lineType=cv2.LINE_8, shift=4)
    return mask


class ClipWriter:
    """Turns one video into a clip folder; holds the face detector and audio encoder of one worker process."""

    def __init__(self, config: PrepareConfig):
        from ..preprocess.face import FaceDetector

        self.config = config
        self.detector = FaceDetector()
        self.audio_encoder = None
        if config.audio_encoder is not None:
            from ..weights import load_audio_encoder

            self.audio_encoder = load_audio_encoder(config.audio_encoder)

    def close(self) -> None:
        self.detector.close()

    def __call__(self, video: Path, out: Path) -> int:
        """Write the clip of `video` into the folder `out` (created); returns its number of frames.

        Raises:
            SkipVideo: corrupt, too short or too long, no audio, or too few frames with a face.
        """
        from ..preprocess import face as face_lib
        from ..io.audio import load_audio
        from ..preprocess.conventions import write_tracks
        from ..preprocess.tracks import pick_followed_face, tracks_from_faces
        from ..io.video import probe_video, read_frames

        cfg = self.config
        try:
            info = probe_video(video)
        except InputError as err:
            raise SkipVideo(f"unreadable: {err}") from None
        if not info.has_audio:
            raise SkipVideo("no audio track")
        if info.duration and info.duration < cfg.min_seconds:
            raise SkipVideo(f"too short: {info.duration:.2f} s < {cfg.min_seconds} s")

        # Pass 1: follow the face through the video (only landmarks are kept, not frames).
        self.detector.reset_tracking()
        faces, previous = [], None
        try:
            for frame in read_frames(video, fps=FPS, max_seconds=cfg.max_seconds):
                face = pick_followed_face(self.detector.track(frame), previous)
                previous = face.center if face is not None else previous
                faces.append(face)
                height, width = frame.shape[:2]
        except InputError as err:
            raise SkipVideo(f"unreadable or too long: {err}") from None
        num_frames = len(faces)
        if num_frames < cfg.min_seconds * FPS:
            raise SkipVideo(f"too short: {num_frames} frames at {FPS} fps < {cfg.min_seconds} s")
        missing = sum(face is None for face in faces) / num_frames
        if missing > cfg.max_missing_face:
            raise SkipVideo(f"no face in {missing:.0%} of the frames (limit {cfg.max_missing_face:.0%})")
        try:
            waveform = load_audio(video, sample_rate=SAMPLE_RATE, max_seconds=cfg.max_seconds)
        except InputError as err:
            raise SkipVideo(f"audio unreadable: {err}") from None

        tracks = tracks_from_faces(faces, width, height)
        boxes = face_lib.smooth_boxes([face_lib.crop_box_for(f) if f is not None else None for f in faces])

        # Pass 2: crops, landmarks and masks.
        size = cfg.size
        out.mkdir(parents=True)
        frames = np.lib.format.open_memmap(out / "frames.npy", mode="w+", dtype=np.uint8,
                                           shape=(num_frames, size, size, 3))
        masks = np.lib.format.open_memmap(out / "masks.npy", mode="w+", dtype=np.uint8, shape=(num_frames, size, size))
        landmarks = np.full((num_frames, 478, 2), np.nan, np.float32)
        index = -1
        for index, frame in enumerate(read_frames(video, fps=FPS, max_seconds=cfg.max_seconds)):
            if index >= num_frames:
                break
            frames[index] = face_lib.crop(frame, boxes[index], size)
            if faces[index] is not None and faces[index].landmarks is not None:
                landmarks[index] = boxes[index].points_to_crop(faces[index].landmarks, size)
            masks[index] = region_masks(landmarks[index], size)
        if index + 1 < num_frames:
            raise SkipVideo(f"decoded {index + 1} frames on the second pass, {num_frames} on the first")
        frames.flush()
        masks.flush()
        del frames, masks
        np.save(out / "landmarks.npy", landmarks)
        write_tracks(out / "tracks.npz", tracks)

        samples = num_frames * SAMPLES_PER_FRAME
        audio = np.zeros(samples, np.float32)
        audio[:min(samples, len(waveform))] = waveform[:samples]
        np.save(out / "audio.npy", audio)
        if self.audio_encoder is not None:
            import torch

            with torch.inference_mode():
                features = self.audio_encoder(torch.from_numpy(audio)[None], num_frames)[0]
            np.save(out / "audio_features.npy", features.float().numpy())
        (out / "info.json").write_text(json.dumps({"source": str(video), "frames": num_frames,
                                                   "missing_face": missing, "width": width, "height": height}))
        return num_frames


# run_videos(config, [(video, clip folder), ...], record(video, (frames, reason))): prepares clips elsewhere
VideoRunner = Callable[["PrepareConfig", list[tuple[Path, Path]], Callable[[Path, tuple], None]], None]


@dataclass
class PrepareReport:
    """What a run did: clips written now, clips found finished, and skipped videos with reasons."""

    written: list[str]
    existing: list[str]
    skipped: dict[str, str]  # source path -> reason
    manifest: Path


# one ClipWriter per worker process, made by the pool's initializer (models load once per process, not per video)
_worker_writer: ClipWriter | None = None


def _init_worker(config: PrepareConfig) -> None:
    global _worker_writer
    logging.getLogger("imtalker").setLevel(logging.WARNING)
    _worker_writer = ClipWriter(config)


def _run_in_worker(video: Path, out: Path) -> tuple[int | None, str | None]:
    return prepare_clip(_worker_writer, video, out)


def prepare_clip(writer: ClipWriter, video: Path, out: Path) -> tuple[int | None, str | None]:
    """(frames, None) on success, (None, reason) for a skipped video; never leaves a partial folder behind."""
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        frames = writer(video, partial)
    except SkipVideo as reason:
        shutil.rmtree(partial, ignore_errors=True)
        out.with_name(out.name + SKIPPED_SUFFIX).write_text(json.dumps({"source": str(video), "reason": str(reason)}))
        return None, str(reason)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.replace(partial, out)
    return frames, None


def _split(ids: Sequence[str], val_fraction: float) -> dict[str, str]:
    """Stable train/val split by a hash of each id, so adding videos never moves old ones; >= 1 val clip if >= 2."""
    def score(clip: str) -> float:
        return int(hashlib.sha1(clip.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    split = {clip: "val" if score(clip) < val_fraction else "train" for clip in ids}
    if val_fraction > 0 and len(ids) >= 2 and "val" not in split.values():
        split[min(ids, key=score)] = "val"
    return split


def _read_settings(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        settings = manifest["config"]
    except (ValueError, KeyError) as err:
        raise InputError(f"{path} is not a dataset manifest ({err})") from None
    if manifest.get("version") != MANIFEST_VERSION:
        raise InputError(f"{out} was prepared by another imtalker version (manifest version "
                         f"{manifest.get('version')}, clip ids made otherwise); prepare into a new folder")
    return settings


def prepare_dataset(videos_dir: str | os.PathLike, out_dir: str | os.PathLike, config: PrepareConfig = PrepareConfig(),
                    *, workers: int = 1, progress: Callable[[int, int], None] | None = None,
                    run_videos: VideoRunner | None = None) -> PrepareReport:
    """Prepare every video under `videos_dir` into `out_dir` (see the module docstring for the layout).

    Args:
        videos_dir: folder searched recursively for .mp4/.mov/.mkv/.avi/.webm/.m4v files.
        out_dir: dataset folder; an existing one is continued (same settings required).
        config: dataset settings.
        workers: videos processed in parallel (processes; each loads its own face detector).
        progress: callback(done, total) after each video.
        run_videos: where the videos are prepared instead of this machine's processes: called as
            `run_videos(config, [(video, clip folder), ...], record)`, it makes each clip with `prepare_clip` (in a
            `ClipWriter` of its own) and calls `record(video, prepare_clip's result)` as each one finishes, e.g.
            `imtalker.apps.batch.ray_actors.ray_video_runner` on a Ray cluster.

    Returns:
        A `PrepareReport`; the manifest is rewritten at the end of every run.

    Raises:
        InputError: no videos found, or `out_dir` holds a dataset made with other settings.
    """
    root, out = Path(videos_dir), Path(out_dir)
    videos = find_videos(root)
    if not videos:
        raise InputError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) under {root}")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    settings = asdict(config)
    previous = _read_settings(out)
    if previous is not None and previous != settings:
        raise InputError(f"{out} was prepared with other settings ({previous}); use a new folder")
    clips_dir = out / CLIPS
    clips_dir.mkdir(parents=True, exist_ok=True)

    packer = ShardPacker(out, config.shard_mb) if config.shard_mb else None
    ids = {video: clip_id(video, root) for video in videos}
    first_with_id: dict[str, Path] = {}
    duplicates = {}
    for video in videos:  # the same content under the same name twice: one clip
        if ids[video] in first_with_id:
            duplicates[str(video)] = f"duplicate of {first_with_id[ids[video]]}"
        first_with_id.setdefault(ids[video], video)
    videos = [v for v in videos if str(v) not in duplicates]
    packed = packer.packed() if packer else set()
    existing = [ids[v] for v in videos if (clips_dir / ids[v]).is_dir() or ids[v] in packed]
    if packer:  # finished clips not yet in a complete shard (a killed run's open shard) go in first
        for clip in sorted(set(existing) - packed):
            packer.add(clip)
    skipped: dict[str, str] = dict(duplicates)
    for video in videos:
        record = clips_dir / (ids[video] + SKIPPED_SUFFIX)
        if record.is_file():
            skipped[str(video)] = json.loads(record.read_text())["reason"]
    todo = [v for v in videos if ids[v] not in existing and str(v) not in skipped]
    done = len(videos) - len(todo)
    if progress is not None:
        progress(done, len(videos))

    written = []

    def record(video: Path, result: tuple[int | None, str | None]) -> None:
        nonlocal done
        frames, reason = result
        if reason is None:
            written.append(ids[video])
            if packer:
                packer.add(ids[video])
        else:
            skipped[str(video)] = reason
            logger.warning("skipped %s: %s", video, reason)
        done += 1
        if progress is not None:
            progress(done, len(videos))

    if run_videos is not None:
        if todo:
            run_videos(config, [(video, clips_dir / ids[video]) for video in todo], record)
    elif workers <= 1 or len(todo) <= 1:
        if todo:
            writer = ClipWriter(config)
            try:
                for video in todo:
                    record(video, prepare_clip(writer, video, clips_dir / ids[video]))
            finally:
                writer.close()
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(config,)) as pool:
            futures = {pool.submit(_run_in_worker, v, clips_dir / ids[v]): v for v in todo}
            for future, video in futures.items():
                record(video, future.result())

    infos = {}
    if packer:
        packer.close()
        infos = {clip: info for shard in packer.index for clip, info in shard["clips"].items()}
    manifest = write_manifest(out, config, [v for v in videos if (clips_dir / ids[v]).is_dir() or ids[v] in infos],
                              ids, skipped, infos)
    return PrepareReport(written, existing, skipped, manifest)


def write_manifest(out: Path, config: PrepareConfig, videos: Sequence[Path], ids: dict[Path, str],
                   skipped: dict[str, str], packed: dict[str, dict] | None = None) -> Path:
    """Write `manifest.json` atomically: settings, clips with their split, and skipped videos. `packed`: the
    `info.json` of clips already packed into shards, by id."""
    split = _split([ids[v] for v in videos], config.val_fraction)
    clips = []
    for video in videos:
        info = (packed or {}).get(ids[video]) or json.loads((out / CLIPS / ids[video] / "info.json").read_text())
        clips.append({"id": ids[video], "source": str(video), "frames": info["frames"], "split": split[ids[video]]})
    manifest = {"version": MANIFEST_VERSION, "config": asdict(config), "fps": FPS, "sample_rate": SAMPLE_RATE,
                "clips": clips, "skipped": [{"source": s, "reason": r} for s, r in sorted(skipped.items())]}
    path = out / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
    return path
