"""Batch jobs and dataset preparation on a Ray cluster (the optional `ray` extra): one actor per GPU, or per CPU
slot, holding the networks; jobs handed out one at a time to whichever actor is free.

Ray restarts an actor whose process dies (`max_restarts`); the job it was running goes back in the queue and is
tried again, up to `retries` times, on whichever actor is free next. Every path (manifest entries, weights, output
folder) must be readable and writable under the same name on every node: a shared folder such as NFS, or a local
instance on one machine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import InputError
from .manifest import BatchJob
from .results import lost_record
from .worker import BatchWorker, FrameCallback, WorkerSettings

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 1.0  # how often busy actors are asked how far their job is


def import_ray():
    try:
        import ray
    except ModuleNotFoundError as err:
        if err.name != "ray":
            raise
        raise InputError('--ray needs Ray: pip install "imtalker[ray]"') from None
    return ray


class RayCluster:
    """A connection to a Ray cluster for one run and the actors it starts there.

    Args:
        address: None starts a local Ray instance on this machine; "auto" joins the cluster this node belongs to;
            "ray://head:10001" connects through Ray Client.
        workers: actors to start (default: one per GPU when the device is a GPU, else one per `cpus_per_worker`).
        cpus_per_worker: CPUs each actor reserves (its torch threads).
        retries: times a job is tried again after its actor died.
        init_options: more `ray.init` arguments (e.g. num_cpus for a local instance).
    """

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1.0,
                 retries: int = 1, init_options: dict | None = None):
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.retries = retries
        self.init_options = init_options or {}

    def map(self, actor_class: type, actor_args: tuple, items: list, call: Callable[[Any, Any], Any],
            on_result: Callable[[Any, Any, int], None], on_lost: Callable[[Any, int], None], gpu: bool = False,
            poll: Callable[[Any], Any] | None = None, on_poll: Callable[[Any], None] | None = None) -> None:
        """Run `call(actor, item)` for every item on a pool of `actor_class(*actor_args)` actors.

        Args:
            call: submits one item to an actor, returning the ObjectRef of its result.
            on_result: (item, result, attempts) for each item that finished.
            on_lost: (item, attempts) for an item whose actor died more than `retries` times under it.
            gpu: one GPU per actor (else `cpus_per_worker` CPUs).
            poll, on_poll: every PROGRESS_SECONDS, `poll(actor)` for each busy actor; its result goes to `on_poll`.
        """
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=self.address, include_dashboard=False, **self.init_options)
            except ConnectionError as err:
                raise InputError(f"cannot reach the Ray cluster at {self.address}: {err}") from None
        actors = []
        try:
            resources = {"num_gpus": 1} if gpu else {"num_cpus": self.cpus_per_worker}
            count = self.workers or self._slots(ray, gpu)
            remote = ray.remote(actor_class).options(max_restarts=-1, max_task_retries=0,
                                                     max_concurrency=2 if poll else 1, **resources)
            actors = [remote.remote(*actor_args) for _ in range(min(count, len(items)))]
            self._dispatch(ray, actors, items, call, on_result, on_lost, poll, on_poll)
        finally:
            for actor in actors:
                ray.kill(actor)
            if started:
                ray.shutdown()

    def _slots(self, ray, gpu: bool) -> int:
        resources = ray.cluster_resources()
        count = int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 0) // self.cpus_per_worker)
        if count < 1:
            raise InputError(f"the Ray cluster has no {'GPU' if gpu else f'{self.cpus_per_worker} free CPUs'} for "
                             f"a worker ({resources})")
        return count

    def _dispatch(self, ray, actors, items, call, on_result, on_lost, poll, on_poll) -> None:
        from ray.exceptions import RayActorError

        waiting = list(reversed(range(len(items))))  # popped from the end: in order
        attempts = [0] * len(items)
        idle, busy, polls, restarting = list(actors), {}, {}, {}
        next_poll = time.monotonic() + PROGRESS_SECONDS
        while waiting or busy:
            while waiting and idle:
                actor, index = idle.pop(), waiting.pop()
                attempts[index] += 1
                busy[call(actor, items[index])] = (actor, index)
            ready, _ = ray.wait(list(busy) + list(polls) + list(restarting), num_returns=1, timeout=0.25)
            for ref in ready:
                if ref in polls:
                    polls.pop(ref)
                    try:
                        on_poll(ray.get(ref))
                    except RayActorError:
                        pass  # its job reports the death
                elif ref in restarting:  # an actor Ray restarts answers again: it takes jobs again
                    actor = restarting.pop(ref)
                    try:
                        ray.get(ref)
                        idle.append(actor)
                    except RayActorError:
                        restarting[actor.ready.remote()] = actor
                else:
                    actor, index = busy.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayActorError:
                        restarting[actor.ready.remote()] = actor
                        if attempts[index] > self.retries:
                            on_lost(items[index], attempts[index])
                        else:
                            logger.warning("a Ray worker died while running item %d; trying it again", index)
                            waiting.append(index)
                        continue
                    idle.append(actor)
                    on_result(items[index], result, attempts[index])
            if poll is not None and time.monotonic() >= next_poll:
                asked = {actor for actor, _ in polls.values()}
                for actor, _ in busy.values():
                    if actor not in asked:
                        polls[poll(actor)] = (actor, None)
                next_poll = time.monotonic() + PROGRESS_SECONDS


class ActorBase:
    """What the runner asks of every actor besides its work."""

    def ready(self) -> bool:
        """Answers once the actor is up (again, after Ray restarted it)."""
        return True


class RayBatchWorker(ActorBase):
    """A Ray actor around a `BatchWorker`; `progress()` answers from a second thread while a job renders."""

    def __init__(self, settings: WorkerSettings):
        logging.getLogger("imtalker").setLevel(logging.WARNING)
        self.worker = BatchWorker(settings)
        self.current = None

    def run(self, job: BatchJob, out_dir: str) -> dict:
        return self.worker.run(job, out_dir, self._note)

    def _note(self, name: str, done: int, total: int) -> None:
        self.current = (name, done, total)

    def progress(self):
        return self.current


class RayRunner:
    """Runs batch jobs on Ray actors (see `RayCluster` for the arguments)."""

    def __init__(self, cluster: RayCluster):
        self.cluster = cluster

    def __call__(self, jobs: list[BatchJob], out_dir: Path, settings: WorkerSettings, on_frames: FrameCallback,
                 on_record: Callable[[dict], None]) -> None:
        self.cluster.map(RayBatchWorker, (settings,), jobs, lambda actor, job: actor.run.remote(job, str(out_dir)),
                         on_result=lambda job, record, attempts: on_record(dict(record, attempts=attempts)),
                         on_lost=lambda job, attempts: on_record(lost_record(job, attempts, "Ray worker")),
                         gpu=settings.device.startswith("cuda"),
                         poll=lambda actor: actor.progress.remote(),
                         on_poll=lambda current: current is not None and on_frames(*current))


class RayClipWorker(ActorBase):
    """A Ray actor that prepares training clips with its own face detector (and audio encoder)."""

    def __init__(self, config):
        from ...training.prepare import ClipWriter

        logging.getLogger("imtalker").setLevel(logging.WARNING)
        self.writer = ClipWriter(config)

    def prepare(self, video: str, out: str):
        from ...training.prepare import prepare_clip

        return prepare_clip(self.writer, Path(video), Path(out))


def ray_video_runner(cluster: RayCluster):
    """A `run_videos` for `imtalker.training.prepare.prepare_dataset` that prepares the videos on Ray actors."""

    def run_videos(config, tasks: list[tuple[Path, Path]], on_result) -> None:
        def lost(task, attempts: int) -> None:
            on_result(task[0], (None, f"its Ray worker died {attempts} times"))

        cluster.map(RayClipWorker, (config,), tasks, lambda actor, task: actor.prepare.remote(*map(str, task)),
                    on_result=lambda task, result, attempts: on_result(task[0], result), on_lost=lost)

    return run_videos
