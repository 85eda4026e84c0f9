"""The synthetic talking-head corpus (imtalker.data.synthetic), its CLI and the bundled demo inputs."""

from __future__ import annotations

import json
import runpy
import wave
from pathlib import Path

import numpy as np
import pytest

from imtalker.io.audio import load_audio
from imtalker.apps.cli import main
from imtalker.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from imtalker.errors import InputError
from imtalker.data.synthetic import (
    VOWELS,
    demo_asset,
    make_clip,
    make_portrait,
    measure_mouth_opening,
    synthesize_speech,
    write_corpus,
)
from imtalker.io.image import load_image
from imtalker.io.video import probe_video

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_demo_assets.py"


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("mediapipe")
    from imtalker.preprocess.face import FaceDetector

    with FaceDetector() as det:
        yield det


def frame_rms(audio: np.ndarray) -> np.ndarray:
    return np.sqrt((audio.reshape(-1, SAMPLES_PER_FRAME).astype(np.float64) ** 2).mean(axis=1))


# -- speech -----------------------------------------------------------------------------------------------------


def test_speech_is_deterministic_and_aligned_with_frames():
    a, b = synthesize_speech(3.0, seed=4), synthesize_speech(3.0, seed=4)
    assert np.array_equal(a.audio, b.audio) and np.array_equal(a.mouth, b.mouth)
    assert not np.array_equal(a.audio, synthesize_speech(3.0, seed=5).audio)
    assert a.audio.dtype == np.float32 and a.audio.shape == (75 * SAMPLES_PER_FRAME,)
    assert a.mouth.shape == a.rounding.shape == a.voicing.shape == (75,)
    assert np.abs(a.audio).max() < 1.0 and 100 <= a.voice.f0 <= 250
    assert 0.0 <= a.mouth.min() and a.mouth.max() <= 1.0


def test_mouth_is_closed_in_silence_and_open_in_vowels():
    speech = synthesize_speech(8.0, seed=2)
    silent = speech.voicing == 0
    assert silent.sum() > 20 and np.all(speech.mouth[silent] == 0)
    # Pauses between phrases (silent with silent neighbours, so no consonant noise either) are quiet.
    pause = np.convolve(silent, np.ones(9), mode="same") == 9
    rms = frame_rms(speech.audio)
    assert pause.sum() > 5 and rms[pause].max() < 0.01 * rms.max()
    # The middle of every "a" is wide open, the middle of every "i" much less so.
    middle = {name: [] for name in "ai"}
    for syllable in speech.syllables:
        frame = int((syllable.start + syllable.duration / 2) * FPS)
        name = VOWELS[syllable.vowel].name
        if name in middle and frame < len(speech.mouth):
            middle[name].append(speech.mouth[frame])
    assert middle["a"] and middle["i"]
    assert min(middle["a"]) > 0.5 and max(middle["i"]) < 0.4


def test_syllable_rate_and_pauses_are_speech_like():
    speech = synthesize_speech(20.0, seed=0)
    rate = len(speech.syllables) / 20.0
    assert 2.5 <= rate <= 5.0
    silent = speech.voicing == 0
    assert 0.1 < silent.mean() < 0.5


def test_audio_energy_follows_the_mouth():
    for seed in range(3):
        speech = synthesize_speech(8.0, seed=seed)
        r = np.corrcoef(frame_rms(speech.audio), speech.mouth)[0, 1]
        assert r > 0.7, (seed, r)


# -- clips ------------------------------------------------------------------------------------------------------


def test_make_clip_is_deterministic_with_shapes_and_ranges():
    a = make_clip(3, seconds=1.0, size=96, index=2)
    b = make_clip(3, seconds=1.0, size=96, index=2)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    for name, value in a.ground_truth().items():
        assert np.array_equal(value, b.ground_truth()[name]), name
    assert not np.array_equal(a.frames, make_clip(3, seconds=1.0, size=96, index=3).frames)
    assert np.array_equal(a.audio, synthesize_speech(1.0, 3, index=2).audio)  # the same speech on its own
    n = 25
    assert a.frames.shape == (n, 96, 96, 3) and a.frames.dtype == np.uint8
    assert a.audio.shape == (n * SAMPLES_PER_FRAME,) and a.fps == FPS and a.sample_rate == SAMPLE_RATE
    assert a.pose.shape == (n, 3) and a.gaze.shape == (n, 2) and a.camera.shape == (n, 3)
    assert a.mouth.shape == a.blink.shape == a.rounding.shape == (n,)
    assert np.abs(a.pose).max() <= np.radians(15) + 1e-6
    assert a.blink.min() >= 0 and a.blink.max() <= 1 and a.mouth.min() >= 0 and a.mouth.max() <= 1
    assert np.all(np.abs(a.camera[:, :2]) < 0.1) and np.all((a.camera[:, 2] > 1.0) & (a.camera[:, 2] < 1.6))


def test_identity_and_motion_do_not_depend_on_size():
    small, large = make_clip(1, seconds=0.4, size=64), make_clip(1, seconds=0.4, size=128)
    assert small.identity == large.identity and np.array_equal(small.pose, large.pose)
    assert np.array_equal(small.mouth, large.mouth)


def test_blinks_happen_every_few_seconds():
    clip = make_clip(0, seconds=6.0, size=64)
    onsets = np.flatnonzero((clip.blink[1:] > 0.5) & (clip.blink[:-1] <= 0.5))
    assert 1 <= len(onsets) <= 3
    assert np.all(np.diff(onsets) >= 2 * FPS - 1)
    assert (clip.blink > 0.5).sum() <= 4 * len(onsets)  # each blink is about 0.2 s


def test_bad_arguments_are_input_errors():
    for kwargs in ({"seconds": -1.0}, {"seconds": float("nan")}, {"size": 63}, {"size": 10}):
        with pytest.raises(InputError):
            make_clip(0, **{"seconds": 0.2, "size": 64, **kwargs})
    with pytest.raises(InputError):
        make_clip(-1, seconds=0.2, size=64)


# -- the face detector sees faces, and the mouth it measures follows the ground truth ---------------------------


def test_face_detector_finds_the_faces(detector):
    from imtalker.preprocess.face import crop_box_for

    found = total = 0
    for index in range(2):
        clip = make_clip(0, seconds=2.0, size=256, index=index)
        for frame in clip.frames[::2]:
            faces = detector.detect(frame)
            total += 1
            if not faces:
                continue
            found += 1
            # Framed like training data: the face about 35-45 % of the frame, the crop mostly inside it.
            height = np.ptp(faces[0].landmarks[:, 1]) if faces[0].landmarks is not None else faces[0].height
            assert 0.28 * 256 < height < 0.5 * 256
            x0, y0, x1, y1 = crop_box_for(faces[0]).xyxy
            inside = (min(x1, 256) - max(x0, 0)) * (min(y1, 256) - max(y0, 0)) / ((x1 - x0) * (y1 - y0))
            assert inside > 0.8
    assert found / total >= 0.95, f"faces found in {found} of {total} frames"


def test_measured_mouth_opening_follows_the_ground_truth(detector):
    clip = make_clip(0, seconds=4.0, size=256, index=7)
    measured = measure_mouth_opening(clip.frames, detector)
    assert measured.shape == (len(clip.frames),) and np.isfinite(measured).mean() >= 0.95
    ok = np.isfinite(measured)
    r = np.corrcoef(measured[ok], clip.mouth[ok])[0, 1]
    assert r >= 0.8, r
    assert np.nanmax(measured) > 0.06 and np.nanmin(measured) < 0.02


def test_measured_mouth_opening_is_nan_without_a_face(detector):
    blank = np.full((3, 128, 128, 3), 90, np.uint8)
    assert np.isnan(measure_mouth_opening(blank, detector)).all()


# -- corpus -----------------------------------------------------------------------------------------------------


def test_write_corpus_files_and_resume(tmp_path):
    out = write_corpus(tmp_path / "corpus", clips=2, seed=3, seconds=0.4, size=64, progress=False)
    info = json.loads((out / "corpus.json").read_text())
    assert info["seed"] == 3 and info["clips"] == 2 and info["size"] == 64 and info["fps"] == FPS
    assert info["seconds"] == 0.4 and "version" in info
    names = sorted(p.name for p in out.iterdir())
    assert names == ["clip_00000.mp4", "clip_00000.npz", "clip_00001.mp4", "clip_00001.npz", "corpus.json"]
    video = probe_video(out / "clip_00001.mp4")
    assert (video.width, video.height, video.num_frames, video.has_audio) == (64, 64, 10, True)
    with np.load(out / "clip_00001.npz") as z:
        clip = make_clip(3, seconds=0.4, size=64, index=1)
        assert np.array_equal(z["mouth"], clip.mouth) and np.array_equal(z["pose"], clip.pose)
        assert z["identity_skin"].shape == (3,) and int(z["index"]) == 1

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix in (".mp4", ".npz")}
    (out / "clip_00001.npz").unlink()  # as if interrupted between the mp4 and the npz
    write_corpus(out, clips=3, seed=3, seconds=0.4, size=64, progress=False)
    assert (out / "clip_00000.mp4").stat().st_mtime_ns == stamps["clip_00000.mp4"]
    assert (out / "clip_00000.npz").stat().st_mtime_ns == stamps["clip_00000.npz"]
    assert (out / "clip_00001.npz").is_file() and (out / "clip_00002.npz").is_file()
    assert json.loads((out / "corpus.json").read_text())["clips"] == 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left

    with pytest.raises(InputError, match="seed"):
        write_corpus(out, clips=1, seed=4, seconds=0.4, size=64, progress=False)


@pytest.mark.slow  # each spawned worker imports imtalker, and with it torch: seconds per process
def test_write_corpus_in_parallel_matches_serial(tmp_path):
    serial = write_corpus(tmp_path / "a", clips=2, seed=1, seconds=0.2, size=64, progress=False)
    parallel = write_corpus(tmp_path / "b", clips=2, seed=1, seconds=0.2, size=64, workers=2, progress=False)
    for name in ("clip_00000.npz", "clip_00001.npz"):
        assert (serial / name).read_bytes() == (parallel / name).read_bytes()  # byte-identical ground truth


# -- CLI --------------------------------------------------------------------------------------------------------


def test_cli_synth_data(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["synth-data", str(out), "--clips", "1", "--seconds", "0.2", "--size", "64", "--quiet"]) == 0
    assert (out / "clip_00000.mp4").is_file() and (out / "clip_00000.npz").is_file()
    assert json.loads((out / "corpus.json").read_text())["clips"] == 1
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args", [["--clips", "0"], ["--clips", "1", "--seconds", "-2"],
                                  ["--clips", "1", "--size", "65"], ["--clips", "1", "--workers", "0"]])
def test_cli_synth_data_bad_input_exits_2_without_output(tmp_path, capsys, args):
    out = tmp_path / "data"
    assert main(["synth-data", str(out), *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imtalker: error:") and err.count("\n") == 1
    assert not out.exists()


def test_cli_synth_data_refuses_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["synth-data", str(target), "--clips", "1", "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "x"


# -- bundled demo inputs ----------------------------------------------------------------------------------------


def test_demo_assets_exist_and_load():
    image = load_image(demo_asset("demo_portrait.png"))
    assert image.shape == (512, 512, 3)
    path = demo_asset("demo_speech.wav")
    assert path.stat().st_size < 200_000
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, SAMPLE_RATE)
    audio = load_audio(path)
    assert 3.5 * SAMPLE_RATE <= audio.size <= 4.5 * SAMPLE_RATE and np.abs(audio).max() > 0.1
    with pytest.raises(InputError):
        demo_asset("nope.png")


def test_demo_assets_match_their_script(tmp_path):
    script = runpy.run_path(str(SCRIPT))
    script["write_portrait"](tmp_path / "p.png")
    script["write_speech"](tmp_path / "s.wav")
    assert np.array_equal(load_image(tmp_path / "p.png"), load_image(demo_asset("demo_portrait.png"))), \
        "the demo portrait is stale: run python scripts/make_demo_assets.py"
    assert (tmp_path / "s.wav").read_bytes() == demo_asset("demo_speech.wav").read_bytes(), \
        "the demo speech is stale: run python scripts/make_demo_assets.py"


def test_demo_portrait_is_a_detectable_neutral_face(detector):
    faces = detector.detect(load_image(demo_asset("demo_portrait.png")))
    assert len(faces) == 1 and faces[0].landmarks is not None and faces[0].score > 0.7
    opening = measure_mouth_opening(make_portrait(0, 256, index=105)[None], detector)
    assert opening[0] < 0.03  # mouth closed
