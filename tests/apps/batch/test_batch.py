"""`imtalker batch` on this machine: good jobs made, a bad one failed alone, reruns that resume, a killed worker."""

from __future__ import annotations

import json

import av
import pytest

from helpers.batch import kill_when_writing, small_jobs, write_manifest
from imtalker.apps.batch import LocalRunner, WorkerSettings, read_manifest, run_batch
from imtalker.apps.cli import main


def records(out) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {record["job"]: record for record in map(json.loads, lines)}


def test_batch_makes_the_good_jobs_fails_the_bad_one_and_a_rerun_resumes(batch_inputs, tmp_path, capsys):
    jobs = small_jobs(batch_inputs, 4) + [{"portrait": str(tmp_path / "absent.png"),
                                           "audio": str(batch_inputs / "s0.wav"), "output": "bad.mp4", "crop": False}]
    manifest = write_manifest(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    command = ["batch", str(manifest), "--out", str(out), "--weights", str(batch_inputs / "weights"), "-q"]

    assert main(command) == 1  # a job failed
    found = records(out)
    assert [found[f"v{i}.mp4"]["status"] for i in range(4)] == ["done"] * 4
    assert found["bad.mp4"]["status"] == "failed" and "absent.png" in found["bad.mp4"]["reason"]
    assert "\n" not in found["bad.mp4"]["reason"]
    assert [found[f"v{i}.mp4"]["portrait_reused"] for i in range(4)] == [False, False, True, True]
    with av.open(str(out / "v0.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == found["v0.mp4"]["frames"] == 10  # 0.4 s at 25 fps
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl"] + [f"v{i}.mp4" for i in range(4)]
    assert "4 done, 1 failed" in capsys.readouterr().out

    stamps = {path.name: path.stat().st_mtime_ns for path in out.glob("*.mp4")}
    assert main(command) == 1  # nothing to do; the failure is still there
    assert "0 done, 0 failed" in capsys.readouterr().out
    assert {path.name: path.stat().st_mtime_ns for path in out.glob("*.mp4")} == stamps

    # A changed line, a deleted output and a killed run's leftover: only the two jobs are made again.
    (out / "v1.mp4").unlink()
    (out / ".v2.0123456789ab.tmp.mp4").write_bytes(b"half a video")
    jobs[2]["seed"] = 99
    write_manifest(manifest, jobs)
    (tmp_path / "absent.png").write_bytes((batch_inputs / "ann.png").read_bytes())
    assert main(command) == 1
    assert "2 done, 0 failed" in capsys.readouterr().out
    assert not (out / ".v2.0123456789ab.tmp.mp4").exists()
    assert main(command + ["--retry-failed"]) == 0  # the portrait is there now
    found = records(out)
    assert all(record["status"] == "done" for record in found.values()) and len(found) == 5
    assert list(found) == [f"v{i}.mp4" for i in range(4)] + ["bad.mp4"]  # one line per job, in manifest order


def test_a_missing_manifest_or_weights_is_a_one_line_error(batch_inputs, tmp_path, capsys):
    assert main(["batch", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("imtalker: error: manifest not found")
    manifest = write_manifest(tmp_path / "jobs.jsonl", small_jobs(batch_inputs, 1))
    assert main(["batch", str(manifest), "--out", str(tmp_path / "out"), "--weights", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("imtalker: error:") and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # 40-80 s here (two pools of spawned processes importing torch); docs/scale.md
def test_the_process_pool_retries_the_job_whose_worker_was_killed(batch_inputs, tmp_path):
    jobs = small_jobs(batch_inputs, 3) + [{"portrait": str(batch_inputs / "ann.png"),
                                           "audio": str(batch_inputs / "long.wav"), "output": "long.mp4",
                                           "crop": False}]
    out = tmp_path / "out"
    killed = kill_when_writing(out, "long")
    summary = run_batch(read_manifest(write_manifest(tmp_path / "jobs.jsonl", jobs)), out,
                        WorkerSettings(weights=str(batch_inputs / "weights"), threads=1), LocalRunner(2, retries=1))
    assert "pid" in killed and summary.done == 4 and not summary.failed
    found = records(out)
    assert found["long.mp4"]["attempts"] == 2
    assert not found["long.mp4"]["worker"].endswith(f":{killed['pid']}")
    assert found["long.mp4"]["frames"] == 200
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_video_driven_jobs_share_the_renderer_and_the_portrait_with_audio_driven_ones(batch_inputs, tmp_path):
    import numpy as np

    from imtalker.io.video import VideoWriter

    with VideoWriter(tmp_path / "driving.mp4") as writer:
        for value in range(0, 250, 25):  # 10 frames of a brightening grey square
            writer.write(np.full((128, 128, 3), value, np.uint8))
    (tmp_path / "jobs.csv").write_text(
        "portrait,audio,driving,output,crop,crop_driving\n"
        f"{batch_inputs / 'ann.png'},{batch_inputs / 's0.wav'},,talk.mp4,false,\n"
        f"{batch_inputs / 'ann.png'},,driving.mp4,nod.mp4,false,false\n")
    summary = run_batch(read_manifest(tmp_path / "jobs.csv"), tmp_path / "out",
                        WorkerSettings(weights=str(batch_inputs / "weights")), LocalRunner())
    assert summary.done == 2 and summary.frames == 20
    assert records(tmp_path / "out")["nod.mp4"]["portrait_reused"]  # encoded once, for the audio-driven job


def test_batch_on_the_onnxruntime_backend_exports_once_and_shares_the_converted_renderer(batch_inputs, tmp_path,
                                                                                         monkeypatch):
    """The graphs are exported by the command before any worker starts; a worker's two pipelines share one
    converted renderer, video-driven first, and the videos match the torch backend's."""
    import numpy as np

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from imtalker.export import runtime
    from imtalker.export.graphs import read_manifest as read_onnx_manifest
    from imtalker.io.video import VideoWriter

    with VideoWriter(tmp_path / "driving.mp4") as writer:
        for value in range(0, 250, 25):
            writer.write(np.full((128, 128, 3), value, np.uint8))
    (tmp_path / "jobs.csv").write_text(
        "portrait,audio,driving,output,crop,crop_driving\n"
        f"{batch_inputs / 'ann.png'},,driving.mp4,nod.mp4,false,false\n"
        f"{batch_inputs / 'ann.png'},{batch_inputs / 's0.wav'},,talk.mp4,false,\n")
    command = ["batch", str(tmp_path / "jobs.csv"), "--weights", str(batch_inputs / "weights"), "-q"]
    assert main(command + ["--out", str(tmp_path / "torch")]) == 0

    converted = []
    original_init = runtime.OnnxRenderer.__init__
    monkeypatch.setattr(runtime.OnnxRenderer, "__init__",
                        lambda self, *args, **kwargs: converted.append(self) or original_init(self, *args, **kwargs))
    onnx_dir = tmp_path / "graphs"
    assert main(command + ["--out", str(tmp_path / "onnx"), "--backend", "onnxruntime",
                           "--onnx-dir", str(onnx_dir)]) == 0
    # all three, before the video-driven job: not re-exported by the audio-driven one
    assert {"renderer", "generator", "audio_encoder"} <= set(read_onnx_manifest(onnx_dir))
    assert len(converted) == 1  # one renderer in onnxruntime for both pipelines
    for name in ("nod.mp4", "talk.mp4"):
        with av.open(str(tmp_path / "torch" / name)) as a, av.open(str(tmp_path / "onnx" / name)) as b:
            frames = [(x.to_ndarray(format="rgb24").astype(int), y.to_ndarray(format="rgb24").astype(int))
                      for x, y in zip(a.decode(video=0), b.decode(video=0))]
        assert len(frames) == 10
        assert max(np.abs(x - y).mean() for x, y in frames) < 1.0, name


def test_batch_backend_errors_are_one_line_before_any_job(batch_inputs, tmp_path, capsys):
    manifest = write_manifest(tmp_path / "jobs.jsonl", small_jobs(batch_inputs, 1))
    command = ["batch", str(manifest), "--out", str(tmp_path / "out"), "--weights", str(batch_inputs / "weights")]
    assert main(command + ["--backend", "onnxruntime", "--bf16"]) == 2
    assert "float32" in capsys.readouterr().err
    assert main(command + ["--backend", "onnxruntime", "--compile"]) == 2
    assert "--compile is for the torch backend" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
