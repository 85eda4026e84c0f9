"""`imtalker batch --ray` on a local Ray instance: two actors, tiny jobs, a bad one, and an actor killed mid-job.

Starting Ray and its two actors is most of this test's time (about 30 s on a quiet 2-core machine)."""

from __future__ import annotations

import json

import pytest

from helpers.batch import kill_when_writing, small_jobs, write_manifest
from imtalker.apps.batch import WorkerSettings, read_manifest, run_batch

ray = pytest.importorskip("ray")


def test_ray_actors_run_the_jobs_fail_the_bad_one_and_retry_the_killed_one(batch_inputs, tmp_path):
    from imtalker.apps.batch.ray_actors import RayCluster, RayRunner

    jobs = small_jobs(batch_inputs, 3) + [
        {"portrait": str(batch_inputs / "ann.png"), "audio": str(batch_inputs / "long.wav"), "output": "long.mp4",
         "crop": False},
        {"portrait": str(batch_inputs / "bob.png"), "audio": str(tmp_path / "absent.wav"), "output": "bad.mp4",
         "crop": False}]
    out = tmp_path / "out"
    killed = kill_when_writing(out, "long")
    cluster = RayCluster(workers=2, retries=1, init_options={
        "num_cpus": 2, "object_store_memory": 80 * 1024 ** 2, "log_to_driver": False,
        "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}}})
    frames = []
    summary = run_batch(read_manifest(write_manifest(tmp_path / "jobs.jsonl", jobs)), out,
                        WorkerSettings(weights=str(batch_inputs / "weights"), threads=1), RayRunner(cluster),
                        on_frames=lambda *report: frames.append(report))
    assert not ray.is_initialized()  # the run's own instance is shut down

    assert "pid" in killed
    assert summary.done == 4 and list(summary.failed) == ["bad.mp4"] and "absent.wav" in summary.failed["bad.mp4"]
    found = {r["job"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert found["long.mp4"]["status"] == "done" and found["long.mp4"]["attempts"] == 2
    assert found["long.mp4"]["frames"] == 200 and not found["long.mp4"]["worker"].endswith(f":{killed['pid']}")
    assert len({r["worker"] for r in found.values()}) >= 2  # both actors worked (the restarted one counts apart)
    assert sorted(p.name for p in out.iterdir()) == sorted(["results.jsonl", "long.mp4", "v0.mp4", "v1.mp4",
                                                            "v2.mp4"])
    assert any(report[0] == "long.mp4" for report in frames)  # progress came from inside the actors


@pytest.mark.slow  # a minute or more here: a Ray instance, two actors with face detectors, and the same run locally
def test_prepare_on_ray_writes_the_clips_a_local_run_writes(tmp_path):
    import numpy as np

    from imtalker.apps.batch.ray_actors import RayCluster, ray_video_runner
    from imtalker.data.synthetic import write_corpus
    from imtalker.training.prepare import PrepareConfig, prepare_dataset

    write_corpus(tmp_path / "corpus", clips=2, seed=3, seconds=2.5, size=128, progress=False)
    config = PrepareConfig(size=128, min_seconds=2.0)
    cluster = RayCluster(workers=2, init_options={"num_cpus": 2, "object_store_memory": 80 * 1024 ** 2,
                                                  "log_to_driver": False})
    on_ray = prepare_dataset(tmp_path / "corpus", tmp_path / "ray", config, run_videos=ray_video_runner(cluster))
    local = prepare_dataset(tmp_path / "corpus", tmp_path / "local", config)
    assert sorted(on_ray.written) == sorted(local.written) and len(local.written) == 2 and not on_ray.skipped
    for clip in local.written:
        for name in ("frames.npy", "audio.npy", "masks.npy"):
            assert np.array_equal(np.load(tmp_path / "ray" / "clips" / clip / name),
                                  np.load(tmp_path / "local" / "clips" / clip / name))
    again = prepare_dataset(tmp_path / "corpus", tmp_path / "ray", config, run_videos=ray_video_runner(cluster))
    assert again.written == [] and sorted(again.existing) == sorted(local.written)
