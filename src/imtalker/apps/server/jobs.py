"""Bounded work: N worker threads, a queue of at most `max_queue` waiting jobs, and the jobs' lifecycle.

Every piece of rendering (a video job or a live stream) is a `Job` run by one worker thread, so the number of
renders at once never exceeds `workers` and a request beyond `workers + max_queue` is refused at once (the caller
answers 429) instead of piling up. The networks are shared by all workers: PyTorch modules in eval mode are safe to
call from several threads, and each job keeps its own sampler state.

Cancelling is cooperative: `Job.cancel()` sets a flag that the job's code checks between frames (`check()` raises
`JobCancelled`), so a worker is free again within one render batch.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError, NoFaceError

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class QueueFull(Exception):
    """Every worker is busy and the queue is full: the caller should answer 429."""


class JobCancelled(Exception):
    """Raised inside a job's code when it has been cancelled (client gone, DELETE, shutdown)."""


@dataclass
class Job:
    """One unit of rendering work and what clients may ask about it."""

    kind: str  # "video" (POST /v1/videos) or "stream" (WS /v1/stream)
    run: Callable[["Job"], Any] | None  # called on a worker thread (may raise JobCancelled, InputError, anything);
    # dropped when the job finishes
    folder: Path | None = None  # server-side scratch folder, removed when the job is forgotten
    streamed: bool = False  # its output can be read while it is being made
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = QUEUED
    frames_done: int = 0
    frames_total: int | None = None
    error: str | None = None
    error_status: int | None = None  # HTTP-like status of the error: 422 bad input, 500 server fault
    result: Any = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise JobCancelled when the job has been cancelled; job code calls this between frames."""
        if self._cancel.is_set():
            raise JobCancelled(self.id)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (done, failed or cancelled); False on timeout."""
        return self._finished.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def describe(self) -> dict[str, Any]:
        """The job as the API shows it."""
        fraction = None
        if self.frames_total:
            fraction = round(min(1.0, self.frames_done / self.frames_total), 4)
        return {"id": self.id, "status": self.status,
                "progress": {"frames_done": self.frames_done, "frames_total": self.frames_total,
                             "fraction": fraction},
                "error": None if self.error is None else {"status": self.error_status, "message": self.error},
                "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at}


class JobManager:
    """Runs jobs on `workers` threads with at most `max_queue` waiting; keeps finished jobs for a while.

    Args:
        workers: jobs run at once.
        max_queue: jobs waiting beyond those; `submit` raises QueueFull past `workers + max_queue` jobs in hand.
        root: folder under which job folders are made (`new_folder`); removed by `shutdown`.
        ttl_seconds, max_kept: finished jobs are forgotten (and their folders removed) after this long, or when
            more than `max_kept` have finished, oldest first.
        when_idle: called on a worker thread when it finishes a job and no other job is running or waiting
            (the server hands freed memory back to the system then, at no cost to any job).
    """

    def __init__(self, workers: int, max_queue: int, root: Path, ttl_seconds: float = 3600.0, max_kept: int = 64,
                 when_idle: Callable[[], None] | None = None):
        self.workers, self.max_queue = workers, max_queue
        self.when_idle = when_idle
        self.root = Path(root)
        self.ttl_seconds, self.max_kept = ttl_seconds, max_kept
        self._lock = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: set[str] = set()
        self._jobs: dict[str, Job] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.completed = {DONE: 0, FAILED: 0, CANCELLED: 0}

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"imtalker-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel everything, wait for the workers to return, and remove every job folder."""
        with self._lock:
            self._stopping = True
            for job in list(self._waiting) + [self._jobs[i] for i in self._running if i in self._jobs]:
                job.cancel()
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            logger.warning("workers still busy at shutdown: %s", ", ".join(alive))
        self._threads.clear()
        with self._lock:
            for job in list(self._waiting):
                self._finish(job, CANCELLED)
            self._waiting.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- jobs ---------------------------------------------------------------------------------------------------

    def new_folder(self) -> Path:
        """A fresh scratch folder with a server-made name (client-given names never become paths)."""
        folder = self.root / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def submit(self, job: Job) -> Job:
        """Queue a job, or raise QueueFull when `workers + max_queue` jobs are already in hand."""
        with self._lock:
            self._prune()
            if self._stopping or len(self._running) + len(self._waiting) >= self.workers + self.max_queue:
                raise QueueFull(f"all {self.workers} workers are busy and {len(self._waiting)} jobs are waiting")
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._lock.notify()
        return job

    def has_room(self) -> bool:
        """Whether `submit` would accept a job now (checked first, so a full server refuses before any decoding)."""
        with self._lock:
            return not self._stopping and len(self._running) + len(self._waiting) < self.workers + self.max_queue

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def forget(self, job_id: str) -> Job | None:
        """Cancel a job if it is still active and drop it; its folder goes when its worker lets go of it."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
            if job is None:
                return None
            job.cancel()
            if job in self._waiting:
                self._waiting.remove(job)
                self._finish(job, CANCELLED)
        if job.finished:
            _remove(job.folder)
        return job

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"queued": len(self._waiting), "running": len(self._running), "workers": self.workers,
                    "max_queue": self.max_queue, "kept": len(self._jobs),
                    "done": self.completed[DONE], "failed": self.completed[FAILED],
                    "cancelled": self.completed[CANCELLED]}

    # -- workers ------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stopping:
                    self._lock.wait()
                if self._stopping and not self._waiting:
                    return
                job = self._waiting.popleft()
                self._running.add(job.id)
                job.status, job.started_at = RUNNING, time.time()
            self._run(job)
            with self._lock:
                self._running.discard(job.id)
                idle = not self._running and not self._waiting
            if idle and self.when_idle is not None:
                self.when_idle()

    def _run(self, job: Job) -> None:
        try:
            job.check()
            job.result = job.run(job)
            status = CANCELLED if job.cancelled else DONE
        except JobCancelled:
            status = CANCELLED
        except NoFaceError as err:
            job.error, job.error_status, status = str(err), 422, FAILED
        except InputError as err:
            job.error, job.error_status, status = str(err), 422, FAILED
        except Exception as err:  # a worker must survive anything a job does
            logger.exception("job %s failed", job.id)
            job.error, job.error_status, status = f"{type(err).__name__}: {err}", 500, FAILED
        with self._lock:
            self._finish(job, status)
            forgotten = job.id not in self._jobs
        if status == CANCELLED or forgotten:
            _remove(job.folder)  # nobody will download a cancelled job's partial video

    def _finish(self, job: Job, status: str) -> None:
        job.run = None  # what the job was given (audio, portrait, a stream's buffers) goes now, not when it expires
        job.status, job.finished_at = status, time.time()
        self.completed[status] += 1
        job._finished.set()

    def _prune(self) -> None:
        """Forget finished jobs past their time-to-live, and the oldest beyond `max_kept` (lock held)."""
        finished = sorted((j for j in self._jobs.values() if j.finished), key=lambda j: j.finished_at or 0)
        now = time.time()
        excess = len(finished) - self.max_kept
        for index, job in enumerate(finished):
            if index < excess or now - (job.finished_at or now) > self.ttl_seconds:
                del self._jobs[job.id]
                _remove(job.folder)


def _remove(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
