"""Audio- and video-driven pipelines and the generate/reenact CLI, with tiny models and real material."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import wave

import av
import numpy as np
import pytest
import torch
from skimage import data as skdata

from imtalker.sampling import SamplingOptions, sample_motion
from imtalker import CheckpointError
from imtalker.apps.cli import main
from imtalker.errors import InputError, NoFaceError
from imtalker.features import iter_audio_features
from imtalker.pipelines import AudioDrivenPipeline, VideoDrivenPipeline
from helpers.tiny_models import save_tiny_weights



@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def pipe(weights) -> AudioDrivenPipeline:
    return AudioDrivenPipeline.from_pretrained(weights)


@pytest.fixture(scope="module")
def portrait(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(path)
    return path


def write_wav(path, samples: np.ndarray, rate: int = 16000):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Real speech from espeak-ng when installed (CI installs it), else a vowel-like synthetic voice."""
    folder = tmp_path_factory.mktemp("audio")
    path = folder / "speech.wav"
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(path), "Hello there. This is a talking face test."], check=True)
        return path
    t = np.arange(int(2.3 * 22050)) / 22050
    voice = np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return write_wav(path, 0.3 * voice, rate=22050)


def duration_of(path) -> float:
    with wave.open(str(path)) as f:
        return f.getnframes() / f.getframerate()


def read_mp4(path):
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        info = dict(codec=video.codec_context.name, pix_fmt=video.codec_context.pix_fmt, fps=float(video.average_rate),
                    width=video.codec_context.width, height=video.codec_context.height,
                    audio=audio.codec_context.name if audio else None)
        info["frames"] = sum(1 for _ in container.decode(video=0))
    return info


# -- audio-driven ---------------------------------------------------------------------------------------------


def test_generate_mp4_from_photo_and_speech(pipe, portrait, speech, tmp_path):
    out = pipe.to_file(tmp_path / "out.mp4", portrait, speech, seed=0, nfe=3)
    info = read_mp4(out)
    assert info["frames"] == math.ceil(duration_of(speech) * 25)
    assert (info["codec"], info["pix_fmt"], info["fps"], info["audio"]) == ("h264", "yuv420p", 25.0, "aac")
    assert (info["width"], info["height"]) == (128, 128)


def test_paste_back_keeps_photo_size(pipe, portrait, speech, tmp_path):
    frames = list(pipe.frames(portrait, speech, seed=0, nfe=2, paste_back=True))
    assert frames[0].shape == skdata.astronaut().shape
    far = (slice(0, 40), slice(0, 40))  # a corner far from the face is untouched
    assert np.abs(frames[0][far].astype(int) - skdata.astronaut()[far].astype(int)).max() <= 2


def test_seed_makes_generation_reproducible(pipe, portrait, speech, monkeypatch):
    """Same seed: the same motion and frames; another seed: other motion (untrained tiny renderers barely show it)."""
    motions = []
    render = pipe.renderer.render
    monkeypatch.setattr(pipe.renderer, "render", lambda state, motion, **kw: motions.append(motion) or render(state, motion, **kw))

    def run(seed):
        motions.clear()
        frames = np.stack(list(pipe.frames(portrait, speech, seed=seed, nfe=2)))
        return frames, torch.cat(motions)

    (frames_a, motion_a), (frames_b, motion_b), (_, motion_c) = run(1), run(1), run(2)
    assert np.array_equal(frames_a, frames_b) and torch.equal(motion_a, motion_b)
    assert (motion_a - motion_c).abs().max() > 0.1


def test_streamed_frames_equal_the_whole_run(pipe, portrait, speech):
    """Chunk-by-chunk streaming gives the frames of one whole sample() + render() call."""
    from imtalker.io.audio import load_audio

    streamed = np.stack(list(pipe.frames(portrait, speech, seed=3, nfe=3, batch_size=3)))
    source = pipe.prepare_source(portrait)
    waveform = torch.from_numpy(load_audio(speech))
    num_frames = math.ceil(len(waveform) * 25 / 16000)
    with torch.inference_mode():
        features = pipe.audio_encoder(waveform[None], num_frames)
        motion = sample_motion(pipe.generator, features, source.state.motion, options=SamplingOptions(nfe=3, seed=3))[0]
        whole = pipe.renderer.render(source.state, motion)
    whole = (whole.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert streamed.shape == whole.shape
    assert np.abs(streamed.astype(int) - whole.astype(int)).max() <= 1


def test_long_audio_is_encoded_in_bounded_windows(pipe):
    calls = []
    encoder = pipe.audio_encoder

    def spy(waveform, num_frames, normalize=True):
        calls.append(num_frames)
        return encoder(waveform, num_frames, normalize=normalize)

    seconds = 50
    waveform = torch.randn(seconds * 16000) * 0.1
    pieces = list(iter_audio_features(spy, waveform, seconds * 25, window=250, context=25))
    assert sum(p.shape[1] for p in pieces) == seconds * 25
    assert len(calls) == 5 and max(calls) <= 250 + 2 * 25  # five windows, none longer than window + context


def test_silent_audio_works(pipe, portrait, tmp_path):
    silent = write_wav(tmp_path / "silence.wav", np.zeros(8000))
    frames = list(pipe.frames(portrait, silent, seed=0, nfe=2))
    assert len(frames) == 13


@pytest.mark.parametrize("case", ["missing_image", "corrupt_image", "tiny_image", "no_face", "empty_audio",
                                  "too_long", "bad_track", "bad_description"])
def test_bad_inputs_raise_input_error(pipe, portrait, speech, tmp_path, case):
    from PIL import Image

    image, audio, options = portrait, speech, {}
    if case == "missing_image":
        image = tmp_path / "nope.png"
    elif case == "corrupt_image":
        image = tmp_path / "corrupt.png"
        image.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif case == "tiny_image":
        image = tmp_path / "tiny.png"
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    elif case == "no_face":
        image = tmp_path / "blank.png"
        Image.fromarray(np.full((256, 256, 3), 127, np.uint8)).save(image)
    elif case == "empty_audio":
        audio = write_wav(tmp_path / "empty.wav", np.zeros(0))
    elif case == "too_long":
        options["max_seconds"] = 0.5
    elif case == "bad_track":
        options["pose"] = np.zeros((10, 2))
    elif case == "bad_description":
        options["pose"] = "yaw=20 degrees"
    error = NoFaceError if case == "no_face" else InputError
    out = tmp_path / "out.mp4"
    with pytest.raises(error):
        pipe.to_file(out, image, audio, seed=0, nfe=2, **options)
    assert not out.exists() and not list(tmp_path.glob("*.mp4*"))


def test_unwritable_output_folder(pipe, portrait, speech, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(InputError):
        pipe.to_file(blocker / "out.mp4", portrait, speech)


def test_weights_folder_errors(tmp_path, weights):
    with pytest.raises(CheckpointError, match="weights folder not found"):
        AudioDrivenPipeline.from_pretrained(tmp_path / "nothing")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(weights / "renderer.safetensors", partial)
    with pytest.raises(CheckpointError, match="has no generator"):
        AudioDrivenPipeline.from_pretrained(partial)
    shutil.copy(weights / "renderer.safetensors", partial / "generator.safetensors")  # wrong kind under that name
    shutil.copy(weights / "audio_encoder.safetensors", partial)
    with pytest.raises(CheckpointError, match="renderer checkpoint, not a generator"):
        AudioDrivenPipeline.from_pretrained(partial)


# -- video-driven ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def driving_video(tmp_path_factory):
    """A 30 fps clip of the astronaut's face moving a little, with a tone as its audio track."""
    path = tmp_path_factory.mktemp("video") / "driving.mp4"
    photo = skdata.astronaut()
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 256, 256, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        for i in range(30):  # 1 s
            shift = int(6 * math.sin(i / 5))
            frame = photo[20 + shift:276 + shift, 120:376]
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        tone = (0.2 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)
        for start in range(0, 16000, 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate = 16000
            for packet in audio.encode(chunk):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def test_reenact_mp4_with_driving_audio(weights, portrait, driving_video, tmp_path):
    pipe = VideoDrivenPipeline.from_pretrained(weights)
    out = pipe.to_file(tmp_path / "reenact.mp4", portrait, driving_video, batch_size=4)
    info = read_mp4(out)
    assert abs(info["frames"] - 25) <= 1
    assert info["audio"] == "aac" and info["fps"] == 25.0


def test_relative_motion_starts_from_the_source(weights, portrait, driving_video, monkeypatch):
    """Relative: the first driving frame maps to the source's own latent; absolute: the driving latents as they are."""
    pipe = VideoDrivenPipeline.from_pretrained(weights)
    motions = []
    render = pipe.renderer.render
    monkeypatch.setattr(pipe.renderer, "render", lambda state, motion, **kw: motions.append(motion) or render(state, motion, **kw))
    source = pipe.prepare_source(portrait)
    relative_frames = list(pipe.frames(portrait, driving_video, relative=True, source=source))
    relative, motions[:] = torch.cat(motions), []
    absolute_frames = list(pipe.frames(portrait, driving_video, relative=False, source=source))
    absolute = torch.cat(motions)
    assert len(relative_frames) == len(absolute_frames) == relative.shape[0]
    torch.testing.assert_close(relative[0], source.state.motion[0])
    torch.testing.assert_close(relative - relative[0], absolute - absolute[0], atol=1e-5, rtol=1e-5)
    assert (absolute[0] - source.state.motion[0]).abs().max() > 1e-3


# -- CLI ------------------------------------------------------------------------------------------------------


def test_cli_generate_and_reenact(weights, portrait, speech, driving_video, tmp_path):
    out = tmp_path / "cli.mp4"
    assert main(["generate", "-i", str(portrait), "-a", str(speech), "-o", str(out), "--weights", str(weights),
                 "--seed", "0", "--nfe", "2", "--quiet"]) == 0
    assert read_mp4(out)["frames"] == math.ceil(duration_of(speech) * 25)
    out_files = tmp_path / "cli_files.mp4"  # each network named on its own instead of a folder
    assert main(["generate", "-i", str(portrait), "-a", str(speech), "-o", str(out_files), "--renderer",
                 str(weights / "renderer.safetensors"), "--generator", str(weights / "generator.safetensors"),
                 "--audio-encoder", str(weights / "audio_encoder.safetensors"), "--nfe", "2", "--quiet"]) == 0
    assert out_files.exists()
    out2 = tmp_path / "cli_reenact.mp4"
    assert main(["reenact", "-i", str(portrait), "-d", str(driving_video), "-o", str(out2), "--weights",
                 str(weights), "--quiet"]) == 0
    assert out2.exists()


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "imtalker", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def test_cli_bad_input_exits_2_with_one_line(weights, portrait, tmp_path):
    result = run_cli("generate", "-i", str(portrait), "-a", str(tmp_path / "missing.wav"), "-o",
                     str(tmp_path / "o.mp4"), "--weights", str(weights))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "missing.wav" in result.stderr


def test_cli_without_weights_says_what_to_do(portrait, speech, tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "IMTALKER_HOME"}
    result = run_cli("generate", "-i", str(portrait), "-a", str(speech), "-o", str(tmp_path / "o.mp4"), env=env)
    assert result.returncode == 2
    assert "--weights" in result.stderr and "IMTALKER_HOME" in result.stderr


def test_tracks_from_a_driving_video_condition_the_motion(pipe, portrait, speech, driving_video, monkeypatch):
    motions = []
    render = pipe.renderer.render
    monkeypatch.setattr(pipe.renderer, "render", lambda state, motion, **kw: motions.append(motion) or render(state, motion, **kw))
    source = pipe.prepare_source(portrait)
    plain = list(pipe.frames(portrait, speech, seed=0, nfe=2, source=source))
    without, motions[:] = torch.cat(motions), []
    tracked = list(pipe.frames(portrait, speech, seed=0, nfe=2, source=source, tracks_from=driving_video))
    with_tracks = torch.cat(motions)
    assert len(plain) == len(tracked)
    assert (with_tracks - without).abs().max() > 1e-4  # the pose/gaze/camera conditions reached the generator


def test_described_head_motion_reaches_the_generator(pipe, portrait, speech, monkeypatch):
    seen = []
    project = pipe.generator.project
    monkeypatch.setattr(pipe.generator, "project", lambda *args: seen.append(args[1]) or project(*args))
    monkeypatch.setattr(pipe, "render_frames", lambda source, motion, *args: iter(motion))  # the motion is enough
    list(pipe.frames(portrait, speech, seed=0, nfe=2, pose="turn:-20..20deg"))
    pose = torch.cat([p[0] for p in seen if p is not None]).numpy()
    yaw = -np.degrees(pose[:, 1])  # FLAME's y-rotation is minus our yaw
    assert yaw[0] == pytest.approx(-20, abs=1e-3) and yaw[-1] == pytest.approx(20, abs=1e-3)
    assert np.all(np.diff(yaw) > 0)
