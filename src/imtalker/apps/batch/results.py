"""`results.jsonl` in the output folder: one line per job, and what lets a run resume.

While a run goes, each finished job is appended as one line and flushed, so a killed run loses at most the jobs it
was rendering. At the end of a run the file is rewritten (atomically) with one line per job of the manifest, in its
order. A record:

    {"job": "a/b.mp4", "status": "done", "seconds": 3.1, "frames": 100, "line": 4, "fingerprint": "...", "attempts": 1,
     "worker": "host:pid", "portrait_reused": true}
    {"job": "c.mp4", "status": "failed", "reason": "image file 'x.jpg' not found", ...}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .manifest import BatchJob

RESULTS = "results.jsonl"
DONE, FAILED = "done", "failed"


@dataclass
class Plan:
    """Which jobs of a manifest this run makes, and which it leaves as they are."""

    todo: list[BatchJob]
    finished: list[BatchJob]  # done earlier with the same line, output present
    failed_before: list[BatchJob]  # failed earlier; made again only with retry_failed


class ResultLog:
    """The records of an output folder: read at the start, appended per job, compacted at the end."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            for raw in self.path.read_text().splitlines():
                try:
                    record = json.loads(raw)
                except ValueError:  # the torn last line of a killed run
                    continue
                if isinstance(record, dict) and isinstance(record.get("job"), str):
                    self.records[record["job"]] = record
        self._file = None

    def plan(self, jobs: list[BatchJob], retry_failed: bool = False) -> Plan:
        """Jobs to run: new ones, changed ones, finished ones whose output is gone, and failed ones on request."""
        plan = Plan([], [], [])
        for job in jobs:
            record = self.records.get(job.name)
            same = record is not None and record.get("fingerprint") == job.fingerprint()
            if same and record["status"] == DONE and (self.out_dir / job.name).is_file():
                plan.finished.append(job)
            elif same and record["status"] == FAILED and not retry_failed:
                plan.failed_before.append(job)
            else:
                plan.todo.append(job)
        return plan

    def append(self, record: dict) -> None:
        """Keep one finished job's record, on disk at once."""
        if self._file is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a")
        self.records[record["job"]] = record
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def compact(self, jobs: list[BatchJob]) -> None:
        """Rewrite the file with one line per job of the manifest that has a record, in manifest order."""
        self.close()
        lines = [json.dumps(self.records[job.name]) for job in jobs if job.name in self.records]
        temp = self.path.with_name(f".{RESULTS}.tmp")
        temp.write_text("".join(line + "\n" for line in lines))
        os.replace(temp, self.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def lost_record(job: BatchJob, attempts: int, worker: str) -> dict:
    """The record of a job given up on because the worker running it died on each of its `attempts`."""
    return {"job": job.name, "line": job.line, "fingerprint": job.fingerprint(), "status": FAILED,
            "attempts": attempts, "frames": 0, "seconds": 0.0, "reason": f"its {worker} died {attempts} times"}


def remove_stale_partials(out_dir: Path, job: BatchJob) -> None:
    """Delete the temporary files a killed attempt left for this job's output (the video writer's
    `.<stem>.<random>.tmp<suffix>` beside it)."""
    target = out_dir / job.name
    if not target.parent.is_dir():
        return
    prefix, suffix = f".{target.stem}.", f".tmp{target.suffix}"
    for entry in target.parent.iterdir():
        if entry.name.startswith(prefix) and entry.name.endswith(suffix) and entry.is_file():
            entry.unlink(missing_ok=True)
