"""`imtalker batch`: many videos from one manifest, resumable, on this machine or on a Ray cluster.

    jobs = read_manifest("jobs.jsonl")
    summary = run_batch(jobs, "out/", WorkerSettings(weights="weights/"), LocalRunner(workers=2))

A run reads `results.jsonl` in the output folder, makes only the jobs that are not finished there (failed ones too
with `retry_failed`), records each job as it finishes, and leaves every video either complete or absent. Modules:
`manifest` (the job file), `results` (the record and what to resume), `worker` (networks loaded once per worker,
portraits encoded once), `local` (this machine's processes), `ray_actors` (Ray actors; the `ray` extra),
`progress` (the bars). See docs/scale.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError
from .local import LocalRunner
from .manifest import BatchJob, read_manifest
from .results import DONE, ResultLog
from .worker import FrameCallback, WorkerSettings

__all__ = ["BatchJob", "BatchSummary", "LocalRunner", "WorkerSettings", "read_manifest", "run_batch"]

Runner = Callable[[list[BatchJob], Path, WorkerSettings, FrameCallback, Callable[[dict], None]], None]


@dataclass
class BatchSummary:
    """What one run did."""

    done: int  # jobs finished in this run
    failed: dict[str, str]  # job -> reason, for jobs that failed in this run
    skipped_done: int  # finished in an earlier run
    skipped_failed: int  # failed in an earlier run and not retried
    frames: int  # frames rendered in this run
    seconds: float  # wall time of the run
    results: Path


def run_batch(jobs: list[BatchJob], out_dir: str | os.PathLike, settings: WorkerSettings, runner: Runner, *,
              retry_failed: bool = False, on_start: Callable[[int], None] | None = None,
              on_frames: FrameCallback | None = None,
              on_record: Callable[[dict], None] | None = None) -> BatchSummary:
    """Make the manifest's unfinished videos in `out_dir` and record every job in `out_dir/results.jsonl`.

    Args:
        jobs: the manifest (`read_manifest`).
        out_dir: output folder, created; outputs go to `out_dir / job.name`.
        settings: weights, device and option defaults of every worker.
        runner: `LocalRunner(...)` or `ray_actors.RayRunner(...)`.
        retry_failed: also make again the jobs that failed in an earlier run.
        on_start, on_frames, on_record: progress: jobs to run; (job, frames done, frames); each finished record.

    Raises:
        InputError: `out_dir` is a file.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    log = ResultLog(out)
    plan = log.plan(jobs, retry_failed=retry_failed)
    if on_start is not None:
        on_start(len(plan.todo))
    start = time.perf_counter()
    done, failed, frames = 0, {}, 0

    def record(result: dict) -> None:
        nonlocal done, frames
        log.append(result)
        frames += result.get("frames", 0) if result["status"] == DONE else 0
        if result["status"] == DONE:
            done += 1
        else:
            failed[result["job"]] = result.get("reason", "")
        if on_record is not None:
            on_record(result)

    try:
        if plan.todo:
            runner(plan.todo, out, settings, on_frames or (lambda *_: None), record)
    finally:
        log.compact(jobs)
    return BatchSummary(done, failed, len(plan.finished), len(plan.failed_before), frames,
                        time.perf_counter() - start, log.path)
