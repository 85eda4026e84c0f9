"""Quality of a model on held-out prepared clips, in the two protocols of the paper (`imtalker eval`).

Per clip of a folder made by `imtalker prepare` (or listed in a manifest):

- **Self-reenactment** (video-driven): the clip's first face crop is the source, every frame's motion latent drives
  it, and the rendered frames 1..N-1 are compared with the real ones: PSNR, SSIM, LPIPS, CSIM (identity of each
  generated frame against the source), LMD over all face-mesh landmarks, and Inception / I3D features of both for
  FID and FVD over the whole set. Beside it, the PSNR of frame 0 copied as every frame: the no-motion baseline.
- **Audio-driven**: the clip's audio drives its first frame through the generator: FID and FVD against the real
  frames, CSIM against the source, Sync-C/D of the generated frames with the clip's audio (and of the real frames,
  the ceiling), LMD over the lip landmarks against the real frames. And a lip-sync correlation that needs no
  weights but works only where a ground-truth mouth track exists: the mouth opening measured with the face mesh on
  the generated frames (`imtalker.data.synthetic.measure_mouth_opening`) correlated (Pearson) with the synthetic
  corpus's `mouth` track in the `.npz` beside each source video (for other videos the opening measured on the real
  frames stands in), framed by the same measurement on the real frames (ceiling) and on frames generated from
  *another* clip's audio (chance); and the same with the **mouth-region contrast** (the spread of luminance in a box
  around the source's mouth), which needs no landmarks on the generated frames.

Metrics with weights (LPIPS, FID, FVD, CSIM, Sync-C/D) run when their files are found (`MetricNetworks`); the
others always. Every clip's scores and features are cached (`cache`), so an interrupted run resumes where it
stopped; FID and FVD are computed over the features of all clips at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .constants import DEFAULT_CFG_SCALE, DEFAULT_NFE
from .errors import InputError
from .metrics import landmark_distance, pearson, psnr, ssim
from .metrics.arcface import face_embeddings, load_arcface
from .metrics.files import METRICS_FOLDER
from .metrics.frechet import FeatureStats, frechet_distance_of
from .metrics.i3d import FEATURES as I3D_FEATURES, CLIP_FRAMES, load_i3d, video_clips
from .metrics.inception import FEATURES as INCEPTION_FEATURES, load_inception
from .metrics.lpips import load_lpips
from .metrics.syncnet import load_syncnet, sync_embeddings, sync_scores

logger = logging.getLogger(__name__)

MEASURE_SIZE = 256  # frames are upscaled to this side before the face mesh measures them
INNER_MOUTH_POINTS = (78, 308, 13, 14)  # face mesh: inner-lip corners, middle of the upper and lower inner lip
# face mesh points of the lips (mediapipe's FACEMESH_LIPS): the audio-driven LMD compares only these
LIP_POINTS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269,
              270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)
METRICS = ("lpips", "fid", "fvd", "csim", "sync")  # the ones that need weight files
CACHE_VERSION = 1


@dataclass
class ClipScores:
    """Scores of one held-out clip (NaN: not measured, or undefined)."""

    clip: str
    frames: int
    # self-reenactment, means over frames 1..N-1
    psnr: float
    ssim: float
    psnr_copy: float  # the source frame itself taken as every frame: what a renderer must beat
    lpips: float = math.nan
    csim: float = math.nan
    lmd: float = math.nan  # all face-mesh landmarks, pixels at the model's frame size
    # audio-driven
    talk_csim: float = math.nan
    talk_lmd: float = math.nan  # lip landmarks
    sync_c: float = math.nan
    sync_d: float = math.nan
    sync_offset: float = math.nan
    sync_c_real: float = math.nan  # the real frames with their audio: what SyncNet gives the ground truth
    sync_d_real: float = math.nan
    lipsync: float = math.nan  # correlation of the generated mouth opening with the ground truth
    lipsync_ceiling: float = math.nan  # correlation of the opening measured on the real frames with the ground truth
    lipsync_chance: float = math.nan  # generated from another clip's audio, against this clip's ground truth
    detected: float = math.nan  # share of generated frames where the face mesh found the mouth
    lipsync_region: float = math.nan  # the same three with the mouth-region contrast instead of the face mesh
    lipsync_region_ceiling: float = math.nan
    lipsync_region_chance: float = math.nan
    ground_truth: str = ""  # "synthetic" (the corpus's mouth track) or "measured" (landmarks of the real frames)


@dataclass
class ClipFeatures:
    """Per-clip features the set-level metrics (FID, FVD) need; empty (0, D) arrays when not measured."""

    inception_real: np.ndarray = field(default_factory=lambda: np.zeros((0, INCEPTION_FEATURES), np.float32))
    inception_reenact: np.ndarray = field(default_factory=lambda: np.zeros((0, INCEPTION_FEATURES), np.float32))
    inception_talk: np.ndarray = field(default_factory=lambda: np.zeros((0, INCEPTION_FEATURES), np.float32))
    i3d_real: np.ndarray = field(default_factory=lambda: np.zeros((0, I3D_FEATURES), np.float32))
    i3d_reenact: np.ndarray = field(default_factory=lambda: np.zeros((0, I3D_FEATURES), np.float32))
    i3d_talk: np.ndarray = field(default_factory=lambda: np.zeros((0, I3D_FEATURES), np.float32))


@dataclass
class MetricPaths:
    """Where the metric networks' files are: a folder holding them under their published names (default: the
    `metrics/` folder of the weights folder) and single files that override it (see `metrics.files`)."""

    folder: str | os.PathLike | None = None
    lpips_net: str = "alex"
    lpips_backbone: str | os.PathLike | None = None
    lpips_heads: str | os.PathLike | None = None
    inception: str | os.PathLike | None = None
    i3d: str | os.PathLike | None = None
    arcface: str | os.PathLike | None = None
    syncnet: str | os.PathLike | None = None


class MetricNetworks:
    """The metric networks whose files are available. A metric named in `require` (or given a file explicitly)
    must load, so a missing file is an error naming it; the others are skipped quietly when absent."""

    def __init__(self, paths: MetricPaths, require: tuple[str, ...] = (), device: str = "cpu"):
        self.device = torch.device(device)
        loaders = {
            "lpips": (lambda: load_lpips(paths.lpips_net, paths.lpips_backbone, paths.lpips_heads, paths.folder),
                      paths.lpips_backbone or paths.lpips_heads),
            "fid": (lambda: load_inception(paths.inception, paths.folder), paths.inception),
            "fvd": (lambda: load_i3d(paths.i3d, paths.folder), paths.i3d),
            "csim": (lambda: load_arcface(paths.arcface, paths.folder), paths.arcface),
            "sync": (lambda: load_syncnet(paths.syncnet, paths.folder), paths.syncnet),
        }
        unknown = set(require) - set(loaders)
        if unknown:
            raise InputError(f"unknown metrics {sorted(unknown)}; choose from {list(METRICS)}")
        self.networks = {}
        for name, (load, explicit) in loaders.items():
            if name in require or explicit is not None:
                self.networks[name] = load()
            else:
                try:
                    self.networks[name] = load()
                except InputError:  # not there: this metric is left out
                    continue
        for network in self.networks.values():
            if isinstance(network, torch.nn.Module):
                network.to(self.device)

    def get(self, name: str):
        return self.networks.get(name)

    def names(self) -> list[str]:
        return sorted(self.networks)


def _to_tensor(frames) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(frames))).permute(0, 3, 1, 2).float().div_(255)


def _upscaled(frames, size: int = MEASURE_SIZE) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.fromarray(np.asarray(f)).resize((size, size), Image.Resampling.BICUBIC)) for f in frames]


def mouth_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel bounds around the mouth from face-mesh points (478, 2) in pixels: 0.8 of the
    inner-lip width wide and 0.6 of it high, centred on the inner lips, so an opening mouth stays inside it."""
    points = np.asarray(landmarks, np.float64)[list(INNER_MOUTH_POINTS)]
    (cx, cy), width = points.mean(0), max(np.ptp(points[:, 0]), 1.0)
    return (int(cy - 0.3 * width), int(cy + 0.3 * width) + 1, int(cx - 0.4 * width), int(cx + 0.4 * width) + 1)


def mouth_contrast(frames, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """Standard deviation of the luminance (0-1) inside `box` per frame; NaN for every frame without a box."""
    frames = [np.asarray(f) for f in frames]
    if box is None:
        return np.full(len(frames), np.nan, np.float32)
    top, bottom, left, right = (max(v, 0) for v in box)
    luma = np.array([0.299, 0.587, 0.114], np.float32) / 255
    return np.array([(f[top:bottom, left:right].astype(np.float32) @ luma).std() for f in frames], np.float32)


def _ground_truth_mouth(source_video: str | None, corpus: Path | None) -> np.ndarray | None:
    """The corpus's mouth track for a prepared clip, from the `.npz` beside its source video, when there is one."""
    if not source_video:
        return None
    candidates = [Path(source_video).with_suffix(".npz")]
    if corpus is not None:
        candidates.insert(0, corpus / Path(source_video).with_suffix(".npz").name)
    for path in candidates:
        if path.is_file():
            with np.load(path) as data:
                if "mouth" in data:
                    return np.asarray(data["mouth"], np.float32)
    return None


class FrameMeasures:
    """Streams frames (uint8 (H, W, 3), in batches) through the per-frame measurements of one video against
    its real frames and its source face: PSNR, SSIM, LPIPS, CSIM, landmarks, Inception and I3D features. Only a batch
    of frames and one 16-frame I3D clip are held at a time."""

    def __init__(self, metrics: MetricNetworks, source: torch.Tensor, detector, compare: bool, identity: bool):
        self.metrics, self.detector, self.compare = metrics, detector, compare
        self.device = metrics.device
        self.source = source.to(self.device)
        self.source_identity = None
        if identity and metrics.get("csim") is not None:
            with torch.inference_mode():
                self.source_identity = face_embeddings(metrics.get("csim"), self.source)
        self.rows: list[torch.Tensor] = []  # per frame: psnr, ssim, psnr_copy, lpips, csim
        self.landmarks: list[np.ndarray] = []
        self.inception: list[np.ndarray] = []
        self.i3d: list[np.ndarray] = []
        self.pending: list[torch.Tensor] = []  # frames waiting for a full I3D clip
        if detector is not None:
            detector.reset_tracking()

    def add(self, fake_frames: list[np.ndarray], real_frames: np.ndarray | None = None) -> None:
        fake = _to_tensor(np.stack(fake_frames)).to(self.device)
        nothing = torch.full((len(fake),), math.nan)
        columns = [nothing] * 5
        with torch.inference_mode():
            if self.compare and real_frames is not None:
                real = _to_tensor(real_frames).to(self.device)
                columns[:3] = [psnr(fake, real).cpu(), ssim(fake, real).cpu(),
                               psnr(self.source.expand_as(real), real).cpu()]
                if self.metrics.get("lpips") is not None:
                    columns[3] = self.metrics.get("lpips")(fake, real).cpu()
            if self.source_identity is not None:
                columns[4] = (face_embeddings(self.metrics.get("csim"), fake) * self.source_identity).sum(1).cpu()
            if self.metrics.get("fid") is not None:
                self.inception.append(self.metrics.get("fid")(fake).cpu().numpy())
            if self.metrics.get("fvd") is not None:
                self.pending.extend(fake.cpu())
                while len(self.pending) >= CLIP_FRAMES:
                    clip = torch.stack(self.pending[:CLIP_FRAMES])
                    self.pending = self.pending[CLIP_FRAMES:]
                    self.i3d.append(self.metrics.get("fvd")(video_clips(clip).to(self.device)).cpu().numpy())
        self.rows.append(torch.stack(columns, 1))
        if self.detector is not None:
            scale = fake.shape[-1] / MEASURE_SIZE
            for frame in _upscaled(fake_frames):
                faces = [f for f in self.detector.track(frame) if f.landmarks is not None]
                points = max(faces, key=lambda f: f.area).landmarks * scale if faces else np.full((478, 2), np.nan)
                self.landmarks.append(np.asarray(points, np.float32))

    def means(self) -> list[float]:
        """Means over frames of psnr, ssim, psnr_copy, lpips, csim (NaN where not measured)."""
        rows = torch.cat(self.rows).double()
        return [float(c.mean()) if torch.isfinite(c).all() else math.nan for c in rows.unbind(1)]

    def inception_features(self) -> np.ndarray:
        return np.concatenate(self.inception) if self.inception else np.zeros((0, INCEPTION_FEATURES), np.float32)

    def i3d_features(self) -> np.ndarray:
        return np.concatenate(self.i3d) if self.i3d else np.zeros((0, I3D_FEATURES), np.float32)

    def landmark_array(self) -> np.ndarray:
        return np.stack(self.landmarks) if self.landmarks else np.zeros((0, 478, 2), np.float32)


class Evaluator:
    """Runs both protocols on one clip at a time with one set of pipelines and metric networks.

    Args:
        weights: a weights folder (renderer, generator, audio encoder), as for `AudioDrivenPipeline.from_pretrained`.
        metrics: the metric networks (None: only the metrics without weights).
        seed, cfg_scale, nfe: audio-driven sampling options.
        batch_size: frames rendered and measured at once.
        device: torch device.
        landmarks: measure LMD and the lip-sync correlations with the face mesh.
    """

    def __init__(self, weights: str | os.PathLike, metrics: MetricNetworks | None = None, *, seed: int = 0,
                 cfg_scale: float = DEFAULT_CFG_SCALE, nfe: int = DEFAULT_NFE, batch_size: int = 8,
                 device: str = "cpu", landmarks: bool = True):
        from .pipelines import AudioDrivenPipeline
        from .preprocess.face import FaceDetector

        self.audio = AudioDrivenPipeline.from_pretrained(weights, device=device)
        self.renderer = self.audio.renderer
        self.metrics = metrics or MetricNetworks(MetricPaths(), device=device)
        self.seed, self.cfg_scale, self.nfe, self.batch_size = seed, cfg_scale, nfe, batch_size
        self.detector = FaceDetector(max_faces=1) if landmarks else None

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()

    def _resized(self, frames: np.ndarray) -> np.ndarray:
        """Real frames at the model's frame size (prepared clips may have been made at another size)."""
        size = self.renderer.config.image_size
        if frames.shape[1] == size:
            return frames
        from .pipelines import frames_to_uint8

        real = F.interpolate(_to_tensor(frames), size=(size, size), mode="bilinear", antialias=True)
        return frames_to_uint8(real)

    def measure_real(self, frames: np.ndarray) -> FrameMeasures:
        """Landmarks and Inception/I3D features of the real frames 1..N-1."""
        measures = FrameMeasures(self.metrics, _to_tensor(frames[:1]), self.detector, compare=False, identity=False)
        for start in range(1, len(frames), self.batch_size):
            measures.add(list(frames[start:start + self.batch_size]))
        return measures

    def reenact(self, frames: np.ndarray) -> FrameMeasures:
        """Frames 1..N-1 rendered from frame 0 with their own motion latents, measured against the real ones."""
        source = self.audio.prepare_source(frames[0], crop=False)
        measures = FrameMeasures(self.metrics, _to_tensor(frames[:1]), self.detector, compare=True, identity=True)
        for start in range(1, len(frames), self.batch_size):
            chunk = frames[start:start + self.batch_size]
            with torch.inference_mode():
                motion = self.renderer.encode_motion(_to_tensor(chunk).to(self.audio.device))
            measures.add(list(self.audio.render_frames(source, motion, self.batch_size)), chunk)
        return measures

    def talk(self, source_frame: np.ndarray, waveform: np.ndarray):
        """Frames generated from speech for a face crop, as they are made."""
        return self.audio.frames(source_frame, waveform, crop=False, seed=self.seed, cfg_scale=self.cfg_scale,
                                 nfe=self.nfe, batch_size=self.batch_size, max_seconds=None)

    def measure_talk(self, frames: np.ndarray, waveform: np.ndarray) -> tuple[FrameMeasures, list[np.ndarray]]:
        """Audio-driven frames 1..N-1 measured (CSIM, landmarks, features); the frames are also returned for the
        lip-sync measurements that need the whole video (SyncNet, the mouth opening)."""
        measures = FrameMeasures(self.metrics, _to_tensor(frames[:1]), self.detector, compare=False, identity=True)
        generated, batch = [], []
        for index, frame in enumerate(self.talk(frames[0], waveform)):
            generated.append(frame)
            if index == 0:
                continue
            batch.append(frame)
            if len(batch) == self.batch_size:
                measures.add(batch)
                batch = []
        if batch:
            measures.add(batch)
        return measures, generated

    def sync(self, frames, waveform: np.ndarray):
        syncnet = self.metrics.get("sync")
        if syncnet is None:
            return None
        return sync_scores(*sync_embeddings(syncnet, frames, waveform))

    def mouth(self, frames) -> np.ndarray:
        from .data.synthetic import measure_mouth_opening

        return measure_mouth_opening(_upscaled(frames), detector=self.detector)

    def mouth_box(self, frame: np.ndarray) -> tuple[int, int, int, int] | None:
        """`mouth_box` of a (real) frame, in its own pixels; None when the face mesh finds no face."""
        faces = [f for f in self.detector.detect(_upscaled([frame])[0]) if f.landmarks is not None]
        if not faces:
            return None
        points = max(faces, key=lambda f: f.area).landmarks * (frame.shape[0] / MEASURE_SIZE)
        return mouth_box(points)

    def clip(self, clip_id: str, frames: np.ndarray, waveform: np.ndarray, other_waveform: np.ndarray,
             truth: np.ndarray | None) -> tuple[ClipScores, ClipFeatures]:
        """Both protocols on one clip (frames at any size, its 16 kHz audio, another clip's audio for the chance
        level, and the ground-truth mouth track if there is one)."""
        frames = self._resized(np.asarray(frames))
        real = self.measure_real(frames)
        reenacted = self.reenact(frames)
        psnr_mean, ssim_mean, copy_mean, lpips_mean, csim_mean = reenacted.means()
        talking, generated = self.measure_talk(frames, waveform)
        talk_csim = talking.means()[4]
        scores = ClipScores(clip=clip_id, frames=len(frames), psnr=psnr_mean, ssim=ssim_mean, psnr_copy=copy_mean,
                            lpips=lpips_mean, csim=csim_mean, talk_csim=talk_csim)
        features = ClipFeatures(real.inception_features(), reenacted.inception_features(),
                                talking.inception_features(), real.i3d_features(), reenacted.i3d_features(),
                                talking.i3d_features())
        fake_sync, real_sync = self.sync(generated, waveform), self.sync(frames, waveform)
        if fake_sync is not None:
            scores.sync_c, scores.sync_d = fake_sync.confidence, fake_sync.distance
            scores.sync_offset = fake_sync.offset
            scores.sync_c_real, scores.sync_d_real = real_sync.confidence, real_sync.distance
        if self.detector is not None:
            real_points = real.landmark_array()
            scores.lmd = landmark_distance(reenacted.landmark_array(), real_points)
            lips = list(LIP_POINTS)
            scores.talk_lmd = landmark_distance(talking.landmark_array()[:, lips], real_points[:, lips])
            real_mouth = self.mouth(frames)
            scores.ground_truth = "synthetic" if truth is not None else "measured"
            truth = real_mouth if truth is None else truth
            generated_mouth = self.mouth(generated)
            other = list(self.talk(frames[0], other_waveform))
            box = self.mouth_box(frames[0])
            scores.lipsync, scores.lipsync_ceiling = pearson(generated_mouth, truth), pearson(real_mouth, truth)
            scores.lipsync_chance = pearson(self.mouth(other), truth)
            scores.detected = float(np.isfinite(generated_mouth).mean())
            scores.lipsync_region = pearson(mouth_contrast(generated, box), truth)
            scores.lipsync_region_ceiling = pearson(mouth_contrast(frames, box), truth)
            scores.lipsync_region_chance = pearson(mouth_contrast(other, box), truth)
        return scores, features


# -- the per-clip cache --------------------------------------------------------------------------------------


def _cache_path(cache: Path, clip_id: str) -> Path:
    return cache / f"{clip_id.replace('/', '_')}.npz"


def _load_cached(cache: Path | None, clip_id: str, fingerprint: str) -> tuple[ClipScores, ClipFeatures] | None:
    """A clip's scores and features from an earlier run with the same settings; None when absent or stale."""
    if cache is None or not _cache_path(cache, clip_id).is_file():
        return None
    with np.load(_cache_path(cache, clip_id), allow_pickle=False) as data:
        if str(data["fingerprint"]) != fingerprint:
            return None
        scores = ClipScores(**json.loads(str(data["scores"])))
        features = ClipFeatures(**{f.name: np.asarray(data[f.name]) for f in fields(ClipFeatures)})
    return scores, features


def _save_cached(cache: Path | None, scores: ClipScores, features: ClipFeatures, fingerprint: str) -> None:
    """Written to a temporary file and moved into place, so an interrupted run never leaves half a cache entry."""
    if cache is None:
        return
    cache.mkdir(parents=True, exist_ok=True)
    path = _cache_path(cache, scores.clip)
    temp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(temp, fingerprint=np.array(fingerprint), scores=np.array(json.dumps(asdict(scores))),
             **{name: value.astype(np.float32) for name, value in asdict(features).items()})
    os.replace(temp, path)


# -- the whole set -------------------------------------------------------------------------------------------


def _mean(results: list[ClipScores], name: str, weighted: bool = False) -> float:
    values = np.array([getattr(r, name) for r in results], np.float64)
    weights = np.array([r.frames - 1 for r in results], np.float64) if weighted else np.ones(len(results))
    keep = np.isfinite(values)
    return float(np.average(values[keep], weights=weights[keep])) if keep.any() else math.nan


def _frechet(features: list[ClipFeatures], fake: str, real: str) -> float:
    stats = {}
    for name in (fake, real):
        arrays = [getattr(f, name) for f in features]
        stats[name] = FeatureStats(arrays[0].shape[1])
        for array in arrays:
            if len(array):
                stats[name].add(array)
    return frechet_distance_of(stats[fake], stats[real])


def summarise(results: list[ClipScores], features: list[ClipFeatures]) -> dict:
    """Means over clips (frame-weighted for the per-frame metrics) and FID/FVD over all clips' features."""
    per_frame = ("psnr", "ssim", "psnr_copy", "lpips", "csim", "lmd", "talk_csim", "talk_lmd")
    per_clip = ("sync_c", "sync_d", "sync_c_real", "sync_d_real", "lipsync", "lipsync_ceiling", "lipsync_chance",
                "detected", "lipsync_region", "lipsync_region_ceiling", "lipsync_region_chance")
    summary = {"clips": len(results), "frames": int(sum(r.frames for r in results))}
    summary.update({name: _mean(results, name, weighted=True) for name in per_frame})
    summary.update({name: _mean(results, name) for name in per_clip})
    summary.update({"fid": _frechet(features, "inception_reenact", "inception_real"),
                    "fvd": _frechet(features, "i3d_reenact", "i3d_real"),
                    "talk_fid": _frechet(features, "inception_talk", "inception_real"),
                    "talk_fvd": _frechet(features, "i3d_talk", "i3d_real")})
    return summary


# Columns of the paper's two tables: (summary key, header, decimals); arrows say which way is better.
SELF_REENACTMENT_COLUMNS = (("psnr", "PSNR ↑", 2), ("ssim", "SSIM ↑", 3), ("lpips", "LPIPS ↓", 3),
                            ("csim", "CSIM ↑", 3), ("lmd", "LMD ↓", 2), ("fid", "FID ↓", 2), ("fvd", "FVD ↓", 1))
AUDIO_DRIVEN_COLUMNS = (("talk_fid", "FID ↓", 2), ("talk_fvd", "FVD ↓", 1), ("talk_csim", "CSIM ↑", 3),
                        ("sync_c", "Sync-C ↑", 2), ("sync_d", "Sync-D ↓", 2), ("talk_lmd", "LMD ↓", 2))


def markdown_tables(summary: dict, name: str = "this model") -> str:
    """The two tables in the paper's layout (n/a: not measured, its weights absent); the audio-driven table has a
    row for the real clips where SyncNet measured them."""

    def cell(value, digits: int) -> str:
        missing = value is None or (isinstance(value, float) and not math.isfinite(value))
        return "n/a" if missing else f"{value:.{digits}f}"

    def table(title: str, columns, rows) -> str:
        lines = [f"**{title}** ({summary['clips']} clips, {summary['frames']} frames)", "",
                 "| method | " + " | ".join(header for _, header, _ in columns) + " |",
                 "|---|" + "---|" * len(columns)]
        lines += ["| " + label + " | " + " | ".join(cell(values.get(key), digits) for key, _, digits in columns) + " |"
                  for label, values in rows]
        return "\n".join(lines)

    real = {"sync_c": summary.get("sync_c_real"), "sync_d": summary.get("sync_d_real")}
    talk_rows = [(name, summary)] + ([("real clips", real)] if real["sync_c"] is not None and
                                    math.isfinite(real["sync_c"]) else [])
    return (table("Self-reenactment", SELF_REENACTMENT_COLUMNS, [(name, summary)]) + "\n\n"
            + table("Audio-driven", AUDIO_DRIVEN_COLUMNS, talk_rows) + "\n")


def load_clips(data: str | os.PathLike, max_clips: int | None = None) -> list[tuple[dict, Path]]:
    """(manifest entry, clip folder) of every clip of a prepared folder, or of a manifest file (`.json` in the
    prepared layout) whose clips live beside it."""
    from .data.dataset import CLIPS, load_manifest

    data = Path(data)
    folder = data.parent if data.is_file() else data
    if data.is_file():
        try:
            manifest = json.loads(data.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read the manifest {data}: {error}") from None
    else:
        manifest = load_manifest(data)
    clips = manifest.get("clips", [])[:max_clips] if max_clips else manifest.get("clips", [])
    if not clips:
        raise InputError(f"{data} has no clips to evaluate")
    return [(entry, folder / CLIPS / entry["id"]) for entry in clips]


def evaluate(weights: str | os.PathLike, data: str | os.PathLike, corpus: str | os.PathLike | None = None, *,
             metric_paths: MetricPaths | None = None, require: tuple[str, ...] = (), seed: int = 0,
             cfg_scale: float = DEFAULT_CFG_SCALE, nfe: int = DEFAULT_NFE, max_clips: int | None = None,
             cache: str | os.PathLike | None = None, device: str = "cpu", progress: bool = True,
             landmarks: bool = True, name: str | None = None) -> dict:
    """Evaluate a model on every clip of a prepared folder (all splits: use a folder of held-out videos).

    Args:
        weights: weights folder.
        data: a folder made by `imtalker prepare`, or its manifest file.
        corpus: where the synthetic corpus's `.npz` ground truth lies, if not beside the source videos named in
            the manifest.
        metric_paths: the metric networks' files (default: `weights/metrics/`).
        require: metrics (of `METRICS`) whose files must be there.
        seed, cfg_scale, nfe: audio-driven sampling.
        max_clips: evaluate only the first clips.
        cache: a folder for per-clip scores and features; clips found there (same settings) are not recomputed.
        device: torch device.
        progress: a progress bar on stderr.
        landmarks: measure with the face mesh (LMD, lip-sync correlation).
        name: the model's name in the tables.

    Returns:
        {"summary": {...}, "clips": [ClipScores as dicts], "settings": {...}, "metrics": [...], "tables": str}. The
        summary holds the self-reenactment means (`psnr`, `ssim`, `lpips`, `csim`, `lmd`, `fid`, `fvd`, `psnr_copy`),
        the audio-driven ones (`talk_fid`, `talk_fvd`, `talk_csim`, `sync_c`, `sync_d`, `talk_lmd`, SyncNet on
        the real clips `sync_c_real`, `sync_d_real`) and the lip-sync correlations (`lipsync...`); None where
        not measured.

    Raises:
        InputError: not a prepared folder, no clips, or a required metric's file missing.
    """
    from tqdm import tqdm

    clips = load_clips(data, max_clips)
    corpus = Path(corpus) if corpus is not None else None
    metric_paths = metric_paths or MetricPaths()
    if metric_paths.folder is None:
        metric_paths.folder = Path(weights) / METRICS_FOLDER
    metrics = MetricNetworks(metric_paths, require=require, device=device)
    settings = {"weights": str(weights), "data": str(data), "seed": seed, "cfg_scale": cfg_scale, "nfe": nfe,
                "metrics": metrics.names(), "lpips_net": metric_paths.lpips_net, "landmarks": landmarks}
    # the clips' folder, not how it was named (a folder or its manifest), identifies the clips
    clips_folder = str(clips[0][1].parent.resolve())
    key = json.dumps({**settings, "data": clips_folder, "version": CACHE_VERSION}, sort_keys=True)
    fingerprint = hashlib.sha256(key.encode()).hexdigest()
    cache = Path(cache) if cache is not None else None
    evaluator = None
    results: list[ClipScores] = []
    features: list[ClipFeatures] = []
    bar = tqdm(clips, desc="eval", unit="clip", disable=not progress)
    try:
        for index, (entry, folder) in enumerate(bar):
            cached = _load_cached(cache, entry["id"], fingerprint)
            if cached is None:
                if evaluator is None:
                    evaluator = Evaluator(weights, metrics, seed=seed, cfg_scale=cfg_scale, nfe=nfe, device=device,
                                          landmarks=landmarks)
                frames = np.array(np.load(folder / "frames.npy", mmap_mode="r"))  # a writable copy
                waveform = np.load(folder / "audio.npy")
                other = (np.load(clips[(index + 1) % len(clips)][1] / "audio.npy") if len(clips) > 1
                         else waveform[::-1].copy())
                cached = evaluator.clip(entry["id"], frames, waveform, other,
                                        _ground_truth_mouth(entry.get("source"), corpus))
                _save_cached(cache, *cached, fingerprint)
            results.append(cached[0])
            features.append(cached[1])
            s = cached[0]
            bar.set_postfix_str(f"PSNR {s.psnr:.2f} SSIM {s.ssim:.3f} lip-sync r {s.lipsync:.2f}")
            if progress:
                bar.write(f"{s.clip}: PSNR {s.psnr:.2f} dB (source copied: {s.psnr_copy:.2f}), SSIM {s.ssim:.3f}, "
                          f"LMD {s.lmd:.2f} px, lip LMD {s.talk_lmd:.2f} px, lip sync r {s.lipsync:.3f} (ceiling "
                          f"{s.lipsync_ceiling:.3f}, other audio {s.lipsync_chance:.3f})")
    finally:
        bar.close()
        if evaluator is not None:
            evaluator.close()
    summary = summarise(results, features)
    result = {"summary": summary, "clips": [asdict(r) for r in results], "settings": settings,
              "metrics": metrics.names(), "tables": markdown_tables(summary, name or Path(weights).name)}
    return _json_safe(result)


def _json_safe(value):
    """NaN (an undefined or unmeasured value) -> None, so the result is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
