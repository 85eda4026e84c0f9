"""What a worker does for a video job, and how a streamed frame is packed for the WebSocket.

Everything here runs on worker threads and reuses the pipeline unchanged: `AudioDrivenPipeline.frames` /
`to_file` for jobs (the portrait comes from the source cache), `FragmentedMp4Writer` for videos watched while
they are made.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...constants import FPS, SAMPLE_RATE
from ...pipelines import AudioDrivenPipeline
from .inputs import GenerationOptions
from .jobs import Job
from .metrics import Metrics
from .sources import Portrait, SourceCache

VIDEO_NAME = "video.mp4"  # inside the job's server-made folder
IMAGE_FORMATS = {"jpeg": "JPEG", "png": "PNG"}


@dataclass
class VideoRequest:
    """A checked POST /v1/videos: everything a worker needs, nothing the client named."""

    portrait: Portrait
    waveform: np.ndarray  # (N,) float32 at 16 kHz
    options: GenerationOptions
    stream: bool  # fragmented MP4 readable while it is written, instead of a faststart file at the end
    batch_size: int = 8

    @property
    def num_frames(self) -> int:
        return -(-len(self.waveform) * FPS // SAMPLE_RATE)


def run_video_job(job: Job, request: VideoRequest, pipeline: AudioDrivenPipeline, sources: SourceCache,
                  metrics: Metrics) -> Path:
    """Render a video job into `job.folder / VIDEO_NAME`; returns that path. Raises JobCancelled when cancelled."""
    from ...io.video import FragmentedMp4Writer

    job.frames_total = request.num_frames
    source = request.portrait.prepare(sources)
    job.check()

    def progress(done: int, total: int) -> None:
        job.frames_done, job.frames_total = done, total
        metrics.add_frames(1)
        job.check()  # raising here stops the pipeline's generator; the writers clean up behind them

    options = dict(request.options.sampler_options(), **request.options.head_motion(), source=source,
                   paste_back=request.options.paste_back,
                   batch_size=request.batch_size, progress=progress, max_seconds=None)
    audio = (request.waveform, SAMPLE_RATE)
    path = job.folder / VIDEO_NAME
    if not request.stream:
        return pipeline.to_file(path, None, audio, **options)
    with open(path, "wb") as sink, FragmentedMp4Writer(sink, audio=request.waveform) as writer:
        for frame in pipeline.frames(None, audio, **options):
            writer.write(frame)
    return path


def encode_image(image: np.ndarray, image_format: str = "jpeg", quality: int = 85) -> bytes:
    """(H, W, 3) uint8 -> JPEG or PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    if image_format == "jpeg":
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    else:
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def pack_frame(header: dict, image: bytes) -> bytes:
    """One binary WebSocket message: 4-byte big-endian header length, the UTF-8 JSON header, the image bytes."""
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(encoded)) + encoded + image


def unpack_frame(message: bytes) -> tuple[dict, bytes]:
    """The inverse of `pack_frame`, for clients written in Python (and the tests)."""
    (length,) = struct.unpack(">I", message[:4])
    return json.loads(message[4:4 + length]), message[4 + length:]
