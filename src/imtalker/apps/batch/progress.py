"""Two progress bars on stderr for a batch run: jobs finished, and frames rendered over the jobs begun so far."""

from __future__ import annotations

import sys

from .results import FAILED


class BatchProgress:
    """Bars that follow `run_batch`'s callbacks; failures are printed above them as they happen."""

    def __init__(self):
        self.jobs = self.frames = None
        self.done: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.finished: set[str] = set()

    def start(self, count: int) -> None:
        from tqdm import tqdm

        self.jobs = tqdm(total=count, unit="job", desc="jobs", file=sys.stderr, dynamic_ncols=True, position=0)
        self.frames = tqdm(total=0, unit="frame", desc="frames", file=sys.stderr, dynamic_ncols=True, position=1)

    def on_frames(self, job: str, done: int, total: int) -> None:
        if job in self.finished or self.frames is None:
            return  # a late report of a job already recorded
        self.done[job], self.totals[job] = done, max(total, done)
        self._refresh()

    def on_record(self, record: dict) -> None:
        job = record["job"]
        self.finished.add(job)
        self.done[job] = self.totals[job] = record.get("frames", 0)
        if self.jobs is not None:
            self.jobs.update(1)
            if record["status"] == FAILED:
                self.jobs.write(f"failed {job}: {record.get('reason')}", file=sys.stderr)
            self._refresh()

    def _refresh(self) -> None:
        self.frames.total = sum(self.totals.values())
        self.frames.update(sum(self.done.values()) - self.frames.n)

    def close(self) -> None:
        for bar in (self.frames, self.jobs):
            if bar is not None:
                bar.close()
