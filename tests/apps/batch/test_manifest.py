"""Reading batch manifests: JSONL and CSV, typed options, and bad lines that become failing jobs, never errors."""

from __future__ import annotations

import pytest

from imtalker.apps.batch import read_manifest
from imtalker.errors import InputError


def test_jsonl_and_csv_give_the_same_jobs(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        '{"portrait": "p.png", "audio": "s.wav", "output": "x/one", "seed": 3, "crop": false}\n\n'
        '{"portrait": "p.png", "driving": "d.mp4", "relative": true}\n')
    (tmp_path / "a.csv").write_text("portrait,audio,driving,output,seed,crop,relative\n"
                                    "p.png,s.wav,,x/one,3,false,\n"
                                    "p.png,,d.mp4,,,,yes\n")
    jsonl, csv = read_manifest(tmp_path / "a.jsonl"), read_manifest(tmp_path / "a.csv")
    assert [(j.name, j.kind, j.options, j.problem) for j in jsonl] == [(j.name, j.kind, j.options, j.problem)
                                                                       for j in csv]
    first, second = jsonl
    assert first.name == "x/one.mp4" and first.options == {"seed": 3, "crop": False}
    assert first.portrait == str(tmp_path / "p.png") and first.audio == str(tmp_path / "s.wav")  # beside the manifest
    assert second.name == "p-d.mp4" and second.kind == "video" and second.options == {"relative": True}
    assert first.fingerprint() != second.fingerprint()


@pytest.mark.parametrize("line, reason", [
    ('{"portrait": "p.png", "audio": "s.wav", "driving": "d.mp4", "output": "a.mp4"}', "exactly one of audio"),
    ('{"audio": "s.wav", "output": "a.mp4"}', "no portrait"),
    ('{"portrait": "p.png", "audio": "s.wav", "output": "a.mp4", "cfg_scale": "lots"}', "cfg_scale must be a number"),
    ('{"portrait": "p.png", "audio": "s.wav", "output": "a.mp4", "relative": true}', "misplaced field relative"),
    ('{"portrait": "p.png", "audio": "s.wav", "output": "../a.mp4"}', "must stay inside"),
    ('{"portrait": "p.png", "audio": "s.wav", "output": "a.gif"}', "must end in"),
    ('{"portrait": "p.png", "audio": "s.wav", "output": "a.mp4", "seed": 1.5}', "seed must be an integer"),
    ('{"portrait": "p.png", "audio": "s.wav"', "not JSON"),
    ('["p.png"]', "not a JSON object"),
    ('{"portrait": "p.png", "audio": "s.wav", "output": "a.mp4", "pose": "wobble"}', "pose: cannot read 'wobble'"),
])
def test_a_bad_line_becomes_a_failing_job_and_the_others_stay(tmp_path, line, reason):
    good = '{"portrait": "p.png", "audio": "s.wav", "output": "good.mp4"}'
    (tmp_path / "m.jsonl").write_text(f"{good}\n{line}\n{good.replace('good', 'next')}\n")
    jobs = read_manifest(tmp_path / "m.jsonl")
    assert [job.problem for job in jobs][::2] == [None, None]
    assert reason in jobs[1].problem and jobs[1].problem.startswith("line 2:")
    assert len({job.name for job in jobs}) == 3  # every job keeps a line of its own in results.jsonl


def test_head_motion_is_a_file_or_a_description(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"portrait": "p.png", "audio": "s.wav", "pose": "turn:-20..20deg", '
                                      '"gaze": "look-at-camera", "cam": "cam.npy"}\n')
    job, = read_manifest(tmp_path / "m.jsonl")
    assert job.problem is None
    assert job.options == {"pose": "turn:-20..20deg", "gaze": "look-at-camera", "cam": str(tmp_path / "cam.npy")}


def test_a_second_job_naming_the_same_output_fails(tmp_path):
    (tmp_path / "m.csv").write_text("portrait,audio,output\np.png,s.wav,a.mp4\nq.png,t.wav,a.mp4\n")
    first, second = read_manifest(tmp_path / "m.csv")
    assert first.problem is None and first.name == "a.mp4"
    assert "already named by line 2" in second.problem and second.name == "line-00003.mp4"


def test_unreadable_manifests_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "none.jsonl")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(InputError, match="must be .jsonl or .csv"):
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="holds no job"):
        read_manifest(tmp_path / "empty.jsonl")
