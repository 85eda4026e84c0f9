"""Frames rendered by several single-threaded workers at once, for sessions that must keep up with a clock.

Why: a live session renders a few frames at a time (a hop of 5), and on a few CPU cores such small batches do not
keep two intra-op threads busy. The demo renderer at batch 5 took 40-48 ms a frame on 2 threads and 60 ms on one
(2-core AMD EPYC), so two single-threaded workers, each with part of the frames, make about 1.4 times as many frames a
second (docs/streaming.md, "Keeping up"). The pool belongs to the pipeline and is shared by every session rendering
with it, which bounds the threads whatever the number of sessions.

    pool = pipeline.render_pool(2)
    parts = pool.submit(source, latents)            # (latents, future of their frames) per worker, in order
    frames = [image for _, future in parts for image in future.result()]
"""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the pipeline owns its pool; the pool only calls it back
    from . import AudioDrivenPipeline, PreparedSource, VideoDrivenPipeline


def default_render_workers(device: torch.device) -> int:
    """Workers a live session renders with by default: two on a CPU with at least two cores, else one (a GPU batch
    is one kernel launch whatever its size; a one-core CPU has nothing to share)."""
    return 2 if device.type == "cpu" and (os.cpu_count() or 1) >= 2 else 1


def _single_threaded_worker() -> None:
    # torch sets a thread's OpenMP team size lazily on its first parallel call; trigger that first, then limit this
    # thread alone (torch.set_num_threads would also change the default of every thread started later)
    from threadpoolctl import threadpool_limits

    torch.get_num_threads()
    threadpool_limits(1, user_api="openmp")


class RenderPool:
    """`workers` threads that render parts of a batch of motion latents with a pipeline's `render_frames`.

    With one worker, the thread keeps torch's thread count (it only moves rendering off the caller's thread, so the
    caller can sample the next hop meanwhile); with more, each worker computes on one thread.
    """

    def __init__(self, pipeline: AudioDrivenPipeline | VideoDrivenPipeline, workers: int):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.pipeline, self.workers = pipeline, workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="imtalker-render",
                                            initializer=_single_threaded_worker if workers > 1 else None)
        self._controller = None  # threadpoolctl's, made on first use of `beside_workers`

    def beside_workers(self) -> contextlib.AbstractContextManager:
        """A context in which the calling thread computes on one OpenMP thread while the workers (more than one)
        render: the session samples its next hop there, and a second team of threads on the workers' cores would
        spin against them (demo model, 2 cores: 76% of a live stream's frames drawn with two, 86-100% with one).
        With one worker, nothing changes."""
        if self.workers == 1:
            return contextlib.nullcontext()
        if self._controller is None:
            from threadpoolctl import ThreadpoolController

            torch.get_num_threads()  # torch's OpenMP team is set up lazily; first, so the limit below holds
            self._controller = ThreadpoolController()
        return self._controller.limit(limits=1, user_api="openmp")

    def submit(self, source: PreparedSource, motion: torch.Tensor, paste_back: bool = False,
               part_frames: int | None = None) -> list[tuple[torch.Tensor, Future[list]]]:
        """Start rendering latents (N, motion_dim) in parts of `part_frames` (None: one part per worker, the first
        ones a frame longer), handed to the workers in order: (part's latents, future of its list of (H, W, 3)
        uint8 frames) per part, in order. Smaller parts show a first frame sooner; each is one renderer batch."""
        size = part_frames or math.ceil(len(motion) / self.workers)
        return [(part, self._executor.submit(self._render, source, part, paste_back)) for part in motion.split(size)]

    def _render(self, source: PreparedSource, motion: torch.Tensor, paste_back: bool) -> list:
        return list(self.pipeline.render_frames(source, motion, len(motion), paste_back))

    def close(self) -> None:
        """Stop the workers once the parts submitted are done."""
        self._executor.shutdown(wait=True, cancel_futures=True)
