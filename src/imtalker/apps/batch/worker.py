"""One batch worker: the networks loaded once, portraits encoded once, jobs rendered one after another.

The same `BatchWorker` runs in the command's own process (`--workers 1`), in each process of the local pool, and in
each Ray actor. A job's failure, whatever its cause, becomes its record; only the death of the process itself is
left to the runner.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import IMTalkerError, InputError
from .manifest import BatchJob
from .results import DONE, FAILED, remove_stale_partials

logger = logging.getLogger(__name__)

FrameCallback = Callable[[str, int, int], None]  # (job name, frames done, frames in the job)


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of a run shares: the weights, where they run, and the defaults of per-job options."""

    weights: str  # a weights folder (see `imtalker.weights.find_weights`); on a cluster, a path every node sees
    device: str = "cpu"
    precision: str | None = None  # None (float32), "bf16" or "fp16"
    batch_size: int = 8  # frames rendered at once
    defaults: dict = field(default_factory=dict)  # per-job options a job does not set (seed, cfg_scale, ...)
    portraits: int = 32  # prepared portraits kept per worker
    threads: int | None = None  # torch threads per worker (None: torch's choice)
    deployment: dict = field(default_factory=dict)  # backend, onnx_dir, compile, as the pipelines take them


class BatchWorker:
    """Renders batch jobs with networks that are loaded on the first job that needs them and then kept."""

    def __init__(self, settings: WorkerSettings):
        from ...pipelines.portraits import PortraitCache

        self.settings = settings
        self.portraits = PortraitCache(settings.portraits)
        self._audio = self._video = None
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        if settings.threads:
            import torch

            torch.set_num_threads(settings.threads)

    def audio_pipeline(self):
        if self._audio is None:
            from ...pipelines import AudioDrivenPipeline
            from ...weights import find_weights, load_audio_encoder, load_generator

            paths = find_weights(self.settings.weights, need=("generator", "audio_encoder"))
            self._audio = AudioDrivenPipeline(self._renderer(), load_generator(paths["generator"]),
                                              load_audio_encoder(paths["audio_encoder"]), device=self.settings.device,
                                              dtype=self._dtype(), **self.settings.deployment)
        return self._audio

    def video_pipeline(self):
        if self._video is None:
            from ...pipelines import VideoDrivenPipeline

            self._video = VideoDrivenPipeline(self._renderer(), device=self.settings.device, dtype=self._dtype(),
                                              **self.settings.deployment)
        return self._video

    def _renderer(self):
        """One renderer for both pipelines, so a portrait prepared for one serves the other (the second pipeline
        keeps it as the first deployed it: converted to onnxruntime or compiled)."""
        loaded = self._audio or self._video
        if loaded is not None:
            return loaded.renderer
        from ...weights import find_weights, load_renderer

        return load_renderer(find_weights(self.settings.weights, need=("renderer",))["renderer"])

    def _dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[self.settings.precision]

    def run(self, job: BatchJob, out_dir: str | os.PathLike, on_frames: FrameCallback | None = None) -> dict:
        """Make one job's video in `out_dir` (written under a temporary name, moved into place when complete).

        Returns:
            The job's record for results.jsonl: status done or failed (with a one-line reason), seconds, frames.
        """
        start = time.perf_counter()
        frames = 0
        record = {"job": job.name, "line": job.line, "fingerprint": job.fingerprint(), "worker": self.name}

        def progress(done: int, total: int) -> None:
            nonlocal frames
            frames = done
            if on_frames is not None:
                on_frames(job.name, done, total)

        try:
            if job.problem is not None:
                raise InputError(job.problem)
            remove_stale_partials(Path(out_dir), job)  # what a killed attempt at this job left behind
            reused = self._render(job, Path(out_dir) / job.name, progress)
            record.update(status=DONE, frames=frames, portrait_reused=reused)
        except Exception as err:  # a bad job fails alone, whatever went wrong
            if not isinstance(err, (IMTalkerError, OSError)):
                logger.warning("job %s failed unexpectedly", job.name, exc_info=True)
            reason = str(err) if isinstance(err, IMTalkerError) else f"{type(err).__name__}: {err}"
            record.update(status=FAILED, reason=" ".join(reason.split()) or type(err).__name__, frames=frames)
        record["seconds"] = round(time.perf_counter() - start, 3)
        return record

    def _render(self, job: BatchJob, target: Path, progress: Callable[[int, int], None]) -> bool:
        """Write the video; True when the portrait came from the cache."""
        from ...pipelines.portraits import file_content_id

        options = {**self.settings.defaults, **job.options}
        if job.kind == "audio":
            pipeline = self.audio_pipeline()
            allowed = ("seed", "cfg_scale", "nfe", "pose", "gaze", "cam", "tracks_from", "paste_back", "max_seconds")
        else:
            pipeline = self.video_pipeline()
            allowed = ("relative", "crop_driving", "paste_back", "max_seconds")
        crop, face_index = options.get("crop", True), options.get("face_index")
        key = (file_content_id(job.portrait) if Path(job.portrait).is_file() else job.portrait, crop, face_index)
        source = self.portraits.get(key)
        reused = source is not None
        if source is None:
            source = self.portraits.put(key, pipeline.prepare_source(job.portrait, crop=crop, face_index=face_index))
        pipeline.to_file(target, None, job.audio or job.driving, source=source, batch_size=self.settings.batch_size,
                         progress=progress, **{name: options[name] for name in allowed if name in options})
        return reused

