"""Batch jobs on this machine: in the command's own process (`--workers 1`) or in a pool of worker processes.

Each pool process loads the networks once (its initializer builds a `BatchWorker`). The runner keeps one job per
process in flight and hands out the next when one finishes, so a process that dies takes only its own job down: the
pool is started again and that job retried, up to `retries` times, then recorded as failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .manifest import BatchJob
from .results import lost_record
from .worker import BatchWorker, FrameCallback, WorkerSettings

logger = logging.getLogger(__name__)

RecordCallback = Callable[[dict], None]


class LocalRunner:
    """Runs jobs with `workers` processes on this machine (1: in this process).

    Args:
        workers: processes rendering at once; each holds its own copy of the networks.
        retries: times a job is tried again after its worker process died.
    """

    def __init__(self, workers: int = 1, retries: int = 1):
        self.workers = workers
        self.retries = retries

    def __call__(self, jobs: list[BatchJob], out_dir: Path, settings: WorkerSettings, on_frames: FrameCallback,
                 on_record: RecordCallback) -> None:
        if self.workers <= 1 or len(jobs) <= 1:
            worker = BatchWorker(settings)
            for job in jobs:
                on_record(dict(worker.run(job, out_dir, on_frames), attempts=1))
            return
        self._run_pool(jobs, out_dir, settings, on_frames, on_record)

    def _run_pool(self, jobs, out_dir, settings, on_frames, on_record) -> None:
        context = multiprocessing.get_context("spawn")  # no forked copies of torch's threads and locks
        frames = context.Queue()
        waiting = list(reversed(jobs))  # popped from the end: manifest order
        attempts: dict[str, int] = {}
        while waiting:
            with ProcessPoolExecutor(max_workers=min(self.workers, len(waiting)), mp_context=context,
                                     initializer=start_worker, initargs=(settings, frames)) as pool:
                running, lost = {}, []
                while (waiting or running) and not lost:
                    while waiting and len(running) < self.workers:
                        job = waiting.pop()
                        attempts[job.name] = attempts.get(job.name, 0) + 1
                        running[pool.submit(run_in_worker, job, out_dir)] = job
                    finished, _ = wait(running, timeout=0.25, return_when=FIRST_COMPLETED)
                    if lost := self._collect(finished, running, attempts, on_record):
                        wait(running)  # a broken pool fails every job still in it at once
                        lost += self._collect(list(running), running, attempts, on_record)
                    _drain(frames, on_frames)
            for job in lost:  # jobs whose process died (or was taken down with the pool by another's death)
                if attempts[job.name] > self.retries:
                    on_record(lost_record(job, attempts[job.name], "worker process"))
                else:
                    logger.warning("a worker process died while rendering %s; trying it again", job.name)
                    waiting.append(job)

    @staticmethod
    def _collect(finished, running: dict, attempts: dict[str, int], on_record: RecordCallback) -> list[BatchJob]:
        """Record the finished futures' jobs; returns the jobs whose worker process died."""
        lost = []
        for future in finished:
            job = running.pop(future)
            if isinstance(future.exception(), BrokenProcessPool):
                lost.append(job)
            else:
                on_record(dict(future.result(), attempts=attempts[job.name]))
        return lost


def _drain(frames: "multiprocessing.Queue", on_frames: FrameCallback) -> None:
    while True:
        try:
            on_frames(*frames.get_nowait())
        except queue.Empty:
            return


# one BatchWorker per pool process, made by the pool's initializer
_process_worker: BatchWorker | None = None
_process_frames = None


def start_worker(settings: WorkerSettings, frames) -> None:
    """Pool initializer: load nothing yet, but make the process's worker (networks load on its first job)."""
    global _process_worker, _process_frames
    logging.getLogger("imtalker").setLevel(logging.WARNING)
    _process_worker, _process_frames = BatchWorker(settings), frames


def run_in_worker(job: BatchJob, out_dir: Path) -> dict:
    last = [0]

    def report(name: str, done: int, total: int) -> None:  # a message per render batch, not per frame
        if done - last[0] >= 8 or done == total:
            last[0] = done
            _process_frames.put((name, done, total))

    return _process_worker.run(job, out_dir, report)
