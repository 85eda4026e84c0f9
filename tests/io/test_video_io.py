"""imtalker.io.video: probing, reading at 25 fps by presentation time, writing H.264 + AAC, PNG frames, images.

Test videos are made here with PyAV. Each source frame carries its index as a binary code of eight vertical
stripes (black = 0, white = 1), which survives lossy encoding, so the frame shown at every output time can be
checked exactly.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from imtalker.errors import InputError
from imtalker.io.image import load_image
from imtalker.io.video import VideoInfo, VideoWriter, probe_video, read_frames, save_frames_png
from helpers.io_checks import check_input_error, need

SIZE = 64
STRIPES = 8


def counter_frame(index: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """RGB frame whose stripes spell `index` in binary (most significant bit on the left)."""
    frame = np.zeros((height, width, 3), np.uint8)
    stripe = width // STRIPES
    for bit in range(STRIPES):
        if index >> (STRIPES - 1 - bit) & 1:
            frame[:, bit * stripe:(bit + 1) * stripe] = 255
    return frame


def read_counter(frame: np.ndarray) -> int:
    stripe = frame.shape[1] // STRIPES
    value = 0
    for bit in range(STRIPES):
        value = value * 2 + int(frame[:, bit * stripe + 2:(bit + 1) * stripe - 2].mean() > 127)
    return value


def make_video(path, fps: int = 25, num_frames: int = 50, codec: str = "libx264", times_ms: list | None = None,
               audio_seconds: float | None = None, rotation: int | None = None, height: int = SIZE,
               width: int = SIZE) -> None:
    """Writes a counter video. With `times_ms`, frame i is shown at times_ms[i] (variable frame rate)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.codec_context.options = {"crf": "10", "preset": "ultrafast"}
        elif codec.startswith("libvpx"):
            stream.codec_context.options = {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0"}
        time_base = Fraction(1, 1000) if times_ms is not None else Fraction(1, fps)
        stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = None
        if audio_seconds is not None:
            audio = container.add_stream("aac", rate=16000, layout="mono")
        count = len(times_ms) if times_ms is not None else num_frames
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(counter_frame(i, height, width), format="rgb24")
            frame.pts = times_ms[i] if times_ms is not None else i
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if audio is not None:
            samples = np.zeros((1, round(audio_seconds * 16000)), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate = 16000
            frame.pts = 0
            for packet in audio.encode(frame):
                container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------------------------------------- probe_video


def test_probe_video(tmp_path):
    path = tmp_path / "clip.mp4"
    make_video(path, fps=30, num_frames=45, audio_seconds=1.5, height=48, width=80)
    info = probe_video(path)
    assert isinstance(info, VideoInfo)
    assert (info.width, info.height) == (80, 48)
    assert info.fps == pytest.approx(30.0)
    assert info.num_frames == 45
    assert info.duration == pytest.approx(1.5, abs=0.04)
    assert info.has_audio


def test_probe_webm_estimates_frames(tmp_path):
    need("libvpx-vp9")
    path = tmp_path / "clip.webm"
    make_video(path, fps=30, num_frames=30, codec="libvpx-vp9")
    info = probe_video(path)
    assert (info.width, info.height, info.has_audio) == (SIZE, SIZE, False)
    assert abs(info.num_frames - 30) <= 1
    assert info.duration == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("case", ["missing", "directory", "garbage", "audio_only"])
def test_probe_errors(tmp_path, case):
    path = tmp_path / "input.mp4"
    if case == "directory":
        path.mkdir()
    elif case == "garbage":
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    elif case == "audio_only":
        path = tmp_path / "input.wav"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("pcm_s16le", rate=16000, layout="mono")
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
    with pytest.raises(InputError) as excinfo:
        probe_video(path)
    expected = {"missing": "does not exist", "directory": "is a directory", "garbage": "cannot be read",
                "audio_only": "no video stream"}[case]
    check_input_error(excinfo, path.name, expected)


# ---------------------------------------------------------------------------------------------- read_frames


@pytest.mark.parametrize("fps, num_frames", [(24, 48), (25, 50), (30, 60), (60, 120), (30, 47)])
def test_read_frames_resamples_by_time(tmp_path, fps, num_frames):
    path = tmp_path / f"clip{fps}.mp4"
    make_video(path, fps=fps, num_frames=num_frames)
    frames = list(read_frames(path))
    expected_count = math.ceil(Fraction(num_frames, fps) * 25)
    assert abs(len(frames) - expected_count) <= 1
    assert all(f.shape == (SIZE, SIZE, 3) and f.dtype == np.uint8 for f in frames)
    counters = [read_counter(f) for f in frames]
    # output frame k shows the latest source frame j with j / fps <= k / 25
    assert counters == [min(k * fps // 25, num_frames - 1) for k in range(len(frames))]
    assert counters == sorted(counters)


def test_read_frames_other_output_rate(tmp_path):
    path = tmp_path / "clip.mp4"
    make_video(path, fps=25, num_frames=25)
    counters = [read_counter(f) for f in read_frames(path, fps=50)]
    assert counters == [k // 2 for k in range(50)]


def test_read_frames_webm(tmp_path):
    need("libvpx-vp9")
    path = tmp_path / "clip.webm"
    make_video(path, fps=30, num_frames=30, codec="libvpx-vp9")
    counters = [read_counter(f) for f in read_frames(path)]
    assert abs(len(counters) - 25) <= 1
    assert counters[:25] == [k * 30 // 25 for k in range(25)]


def test_read_frames_variable_frame_rate(tmp_path):
    times = [0, 30, 50, 130, 140, 150, 300, 310, 420, 600, 610, 620, 700]  # ms; last frame lasts 10 ms
    path = tmp_path / "vfr.mp4"
    make_video(path, times_ms=times)
    counters = [read_counter(f) for f in read_frames(path)]
    end = 710  # the last frame lasts as long as the gap before it
    assert abs(len(counters) - math.ceil(end / 40)) <= 1
    expected = [max(i for i, t in enumerate(times) if t <= k * 40) for k in range(len(counters))]
    assert counters == expected


def test_read_frames_is_lazy_and_frames_independent(tmp_path):
    path = tmp_path / "clip.mp4"
    make_video(path, fps=10, num_frames=10)  # every source frame is shown 2-3 times
    iterator = read_frames(path)
    first = next(iterator)
    second = next(iterator)
    assert read_counter(first) == read_counter(second) == 0
    first[:] = 255
    assert read_counter(second) == 0  # repeats are copies, not views of one buffer
    iterator.close()


def test_read_frames_applies_rotation(tmp_path):
    path = tmp_path / "portrait.mp4"
    make_video(path, fps=25, num_frames=5, rotation=90, height=64, width=96)
    info = probe_video(path)
    assert (info.width, info.height) == (64, 96)
    frame = next(read_frames(path))
    assert frame.shape == (96, 64, 3)
    np.testing.assert_allclose(frame.astype(int), np.rot90(counter_frame(0, 64, 96)).astype(int), atol=40)


def test_read_frames_too_long(tmp_path):
    path = tmp_path / "long.mp4"
    make_video(path, fps=25, num_frames=75)
    with pytest.raises(InputError) as excinfo:
        read_frames(path, max_seconds=1)  # refused from the header, before decoding
    check_input_error(excinfo, "long.mp4", "3.00 s", "limit of 1 s")
    with pytest.raises(InputError, match="limit of 2.98 s"):
        list(read_frames(path, max_seconds=2.98))  # within the header tolerance: caught while decoding
    assert len(list(read_frames(path, max_seconds=3))) == 75


def test_read_frames_missing_file_fails_at_call(tmp_path):
    with pytest.raises(InputError) as excinfo:
        read_frames(tmp_path / "nope.mp4")
    check_input_error(excinfo, "nope.mp4", "does not exist")


def test_read_frames_corrupt(tmp_path):
    path = tmp_path / "broken.mp4"
    make_video(path, fps=25, num_frames=25)
    data = bytearray(path.read_bytes())
    mdat = data.find(b"mdat")
    end = mdat - 4 + int.from_bytes(data[mdat - 4:mdat], "big")
    data[mdat + 4:end] = bytes(end - mdat - 4)  # the coded video becomes zeros; the index (moov) stays intact
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as excinfo:
        list(read_frames(path))
    check_input_error(excinfo, "broken.mp4", "corrupt")


def test_read_frames_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n" * 100)
    with pytest.raises(InputError) as excinfo:
        read_frames(path)
    check_input_error(excinfo, "notes.mp4", "cannot be read")


def test_read_frames_bad_fps(tmp_path):
    with pytest.raises(InputError, match="fps"):
        read_frames(tmp_path / "x.mp4", fps=0)


# ---------------------------------------------------------------------------------------------- VideoWriter


def read_back(path):
    """(frames, video stream facts, audio stream facts or None, decoded audio samples)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        facts = (video.codec_context.name, video.codec_context.pix_fmt, video.average_rate, video.width,
                 video.height, video.frames)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
        audio_facts = None
        if container.streams.audio:
            audio = container.streams.audio[0]
            audio_facts = (audio.codec_context.name, audio.codec_context.sample_rate, audio.codec_context.channels,
                           float(audio.duration * audio.time_base))
    return frames, facts, audio_facts


@pytest.mark.parametrize("audio_seconds", [1.0, 2.0, 3.0])  # shorter than, equal to and longer than the video
def test_writer_streams_and_durations(tmp_path, audio_seconds):
    path = tmp_path / "out.mp4"
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(round(16000 * audio_seconds)) / 16000)).astype(np.float32)
    with VideoWriter(path, audio=audio, crf=10) as writer:
        writer.write(np.stack([counter_frame(i) for i in range(20)]))  # a batch
        for i in range(20, 50):
            writer.write(counter_frame(i))  # single frames
        assert writer.num_frames == 50
    frames, facts, audio_facts = read_back(path)
    assert facts == ("h264", "yuv420p", 25, SIZE, SIZE, 50)
    assert [read_counter(f) for f in frames] == list(range(50))
    name, rate, channels, duration = audio_facts
    assert (name, rate, channels) == ("aac", 16000, 1)
    # the track's stated duration is exactly num_frames / fps (the AAC priming is hidden by the edit list)
    assert abs(duration - 2.0) <= 1024 / 16000
    with av.open(str(path)) as container:
        decoded = sum(f.samples for f in container.decode(container.streams.audio[0]))
    assert 32000 <= decoded <= 32000 + 1024  # the last AAC frame is padded to 1024 samples
    assert listing(tmp_path) == ["out.mp4"]


def test_writer_audio_content(tmp_path):
    from imtalker.io.audio import load_audio

    path = tmp_path / "tone.mp4"
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    with VideoWriter(path, audio=audio) as writer:
        writer.write(np.zeros((25, SIZE, SIZE, 3), np.uint8))
    y = load_audio(path)
    assert abs(y.size - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    assert abs(np.argmax(spectrum) * 16000 / y.size - 440) < 2
    # starts in sync: no shift from the encoder's priming delay
    lag = np.argmax(np.correlate(y[1000:3000], audio[1000 - 40:3000 + 40], mode="valid")) - 40
    assert abs(lag) <= 2


def test_writer_without_audio(tmp_path):
    path = tmp_path / "silent.mp4"
    with VideoWriter(path) as writer:
        writer.write(np.zeros((3, SIZE, SIZE, 3), np.uint8))
    frames, facts, audio_facts = read_back(path)
    assert len(frames) == 3 and audio_facts is None


@pytest.mark.parametrize("height, width", [(65, 64), (64, 63), (33, 47)])
def test_writer_pads_odd_sizes(tmp_path, height, width):
    path = tmp_path / "odd.mp4"
    image = np.zeros((height, width, 3), np.uint8)
    image[-1, :] = 255  # last row and column white: the padding repeats them
    image[:, -1] = 255
    with VideoWriter(path) as writer:
        writer.write(image)
        writer.write(image)
    frames, facts, _ = read_back(path)
    assert (facts[3], facts[4]) == (width + width % 2, height + height % 2)
    assert len(frames) == 2
    if height % 2:
        assert frames[0][-1, : width // 2].mean() > 200
    if width % 2:
        assert frames[0][: height // 2, -1].mean() > 200


def test_writer_float_and_tensor_frames(tmp_path):
    path = tmp_path / "float.mp4"
    with VideoWriter(path) as writer:
        writer.write(np.full((SIZE, SIZE, 3), 0.5, np.float32))  # float HWC
        writer.write(np.full((2, SIZE, SIZE, 3), 1.0, np.float64))  # float batch
        writer.write(torch.zeros(3, 3, SIZE, SIZE))  # tensor (N, 3, H, W)
        writer.write(torch.ones(3, SIZE, SIZE, dtype=torch.float16))  # tensor (3, H, W)
    frames, _, _ = read_back(path)
    means = [round(float(f.mean())) for f in frames]
    assert len(frames) == 7
    assert abs(means[0] - 128) <= 3 and min(means[1:3]) >= 250 and max(means[3:6]) <= 5 and means[6] >= 250


@pytest.mark.parametrize("suffix", [".mov", ".mkv"])
def test_writer_other_containers(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    with VideoWriter(path, audio=np.zeros(16000, np.float32)) as writer:
        writer.write(np.stack([counter_frame(i) for i in range(10)]))
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10
        assert container.streams.audio[0].codec_context.name == "aac"


def test_writer_failure_leaves_nothing(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous result")
    with pytest.raises(RuntimeError, match="model exploded"):
        with VideoWriter(path, audio=np.zeros(16000, np.float32)) as writer:
            writer.write(np.zeros((5, SIZE, SIZE, 3), np.uint8))
            raise RuntimeError("model exploded")
    assert listing(tmp_path) == ["out.mp4"]  # no temporary file
    assert path.read_bytes() == b"previous result"  # an older output is not replaced by a broken one

    fresh = tmp_path / "sub" / "fresh.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(fresh) as writer:
            writer.write(np.zeros((SIZE, SIZE, 3), np.uint8))
            raise KeyboardInterrupt
    assert listing(tmp_path / "sub") == []


def test_writer_abort(tmp_path):
    path = tmp_path / "out.mp4"
    writer = VideoWriter(path)
    writer.write(np.zeros((60, SIZE, SIZE, 3), np.uint8))  # more than x264 holds back, so the file exists
    names = listing(tmp_path)
    assert len(names) == 1 and names[0] != "out.mp4"  # only the temporary file, while writing
    writer.abort()
    writer.abort()
    assert listing(tmp_path) == []
    with pytest.raises(InputError, match="closed"):
        writer.write(np.zeros((SIZE, SIZE, 3), np.uint8))


def test_writer_no_frames(tmp_path):
    with pytest.raises(InputError, match="no frames"):
        with VideoWriter(tmp_path / "empty.mp4"):
            pass
    assert listing(tmp_path) == []


def test_writer_bad_frames(tmp_path):
    with VideoWriter(tmp_path / "out.mp4") as writer:
        writer.write(np.zeros((SIZE, SIZE, 3), np.uint8))
        with pytest.raises(InputError, match="video is 64x64"):
            writer.write(np.zeros((SIZE, 32, 3), np.uint8))
        with pytest.raises(InputError, match="shape"):
            writer.write(np.zeros((SIZE, SIZE), np.uint8))
        with pytest.raises(InputError, match=r"not in \[0, 1\]"):
            writer.write(np.full((SIZE, SIZE, 3), 255.0, np.float32))
        with pytest.raises(InputError, match="uint8 or float"):
            writer.write(np.zeros((SIZE, SIZE, 3), np.int32))
    assert len(read_back(tmp_path / "out.mp4")[0]) == 1


def test_writer_unwritable_destination(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError) as excinfo:
        VideoWriter(blocker / "out.mp4")  # the "folder" is a file
    check_input_error(excinfo, "file.txt")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(InputError, match="not writable"):
                VideoWriter(locked / "out.mp4")
        finally:
            locked.chmod(0o700)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"path": "out.avi"}, ".mp4"),
    ({"path": "out"}, ".mp4"),
    ({"fps": 0}, "fps"),
    ({"crf": 60}, "crf"),
    ({"sample_rate": 12345, "audio": np.zeros(10, np.float32)}, "AAC"),
    ({"audio": np.array([0.0, np.nan], np.float32)}, "NaN"),
])
def test_writer_bad_arguments(tmp_path, kwargs, fragment):
    kwargs = dict(kwargs)
    path = tmp_path / kwargs.pop("path", "out.mp4")
    with pytest.raises(InputError, match=fragment):
        VideoWriter(path, **kwargs)
    assert listing(tmp_path) == []


def test_writer_output_is_directory(tmp_path):
    (tmp_path / "out.mp4").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        VideoWriter(tmp_path / "out.mp4")


def test_writer_round_trip_with_read_frames(tmp_path):
    path = tmp_path / "round.mp4"
    with VideoWriter(path, audio=np.zeros(12800, np.float32)) as writer:
        for i in range(20):
            writer.write(counter_frame(i))
    info = probe_video(path)
    assert (info.num_frames, info.fps, info.has_audio) == (20, 25.0, True)
    assert [read_counter(f) for f in read_frames(path)] == list(range(20))


# ---------------------------------------------------------------------------------------------- PNG frames


def test_save_frames_png(tmp_path):
    folder = tmp_path / "frames" / "nested"
    batch = np.stack([counter_frame(i) for i in range(3)])
    paths = save_frames_png(batch, folder)
    paths += save_frames_png([counter_frame(3), torch.ones(2, 3, SIZE, SIZE)], folder, start=3)
    assert [p.name for p in paths] == [f"frame_{i:06d}.png" for i in range(6)]
    assert listing(folder) == [f"frame_{i:06d}.png" for i in range(6)]
    for i in range(4):
        np.testing.assert_array_equal(np.asarray(Image.open(folder / f"frame_{i:06d}.png")), counter_frame(i))
    assert np.asarray(Image.open(folder / "frame_000005.png")).min() == 255


def test_save_frames_png_bad_folder(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match="file.txt"):
        save_frames_png(np.zeros((SIZE, SIZE, 3), np.uint8), blocker / "frames")


# ---------------------------------------------------------------------------------------------- load_image


def gradient(height: int = 80, width: int = 120) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 77)], -1).astype(np.uint8)


@pytest.mark.parametrize("suffix", ["png", "jpg", "webp", "bmp", "tiff", "gif"])
def test_load_image_formats(tmp_path, suffix):
    path = tmp_path / f"face.{suffix}"
    Image.fromarray(gradient()).save(path, **({"quality": 95} if suffix in ("jpg", "webp") else {}))
    image = load_image(path)
    assert image.shape == (80, 120, 3) and image.dtype == np.uint8
    tolerance = {"png": 0, "bmp": 0, "tiff": 0}.get(suffix, 40)
    assert np.abs(image.astype(int) - gradient()).max() <= tolerance or suffix == "gif"
    assert np.abs(image.astype(int) - gradient()).mean() < 8


def test_load_image_exif_rotation(tmp_path):
    path = tmp_path / "phone.jpg"
    stored = np.zeros((80, 120, 3), np.uint8)
    stored[:20, :20] = 255  # white square top-left in the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the viewer turns the picture 90 degrees clockwise
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.shape == (120, 80, 3)
    assert image[:20, -20:].mean() > 200  # the square is now top-right
    assert image[:20, :20].mean() < 50


def test_load_image_modes(tmp_path):
    rgba = np.zeros((70, 70, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 35:, 3] = 255  # left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    image = load_image(tmp_path / "alpha.png")
    assert image.shape == (70, 70, 3)
    assert (image[:, :35] == 255).all()  # transparent -> white
    assert (image[:, 35:] == [200, 0, 0]).all()

    Image.fromarray(np.full((70, 70), 90, np.uint8), "L").save(tmp_path / "grey.png")
    assert (load_image(tmp_path / "grey.png") == 90).all()

    Image.fromarray(gradient()).convert("P").save(tmp_path / "palette.png")
    assert load_image(tmp_path / "palette.png").shape == (80, 120, 3)

    Image.fromarray(np.full((70, 70), 40000, np.uint16)).save(tmp_path / "deep.png")
    assert abs(int(load_image(tmp_path / "deep.png")[0, 0, 0]) - 40000 // 257) <= 1


def test_load_image_objects():
    pil = Image.fromarray(gradient())
    np.testing.assert_array_equal(load_image(pil), gradient())
    np.testing.assert_array_equal(load_image(gradient()), gradient())
    np.testing.assert_array_equal(load_image(gradient() / 255.0), gradient())
    np.testing.assert_array_equal(load_image(torch.from_numpy(gradient()).permute(2, 0, 1) / 255.0), gradient())
    assert load_image(np.zeros((64, 64), np.uint8)).shape == (64, 64, 3)


@pytest.mark.parametrize("case, fragment", [
    ("missing", "does not exist"),
    ("directory", "is a directory"),
    ("text", "not an image"),
    ("truncated", "cannot be read"),
    ("tiny", "at least 64"),
])
def test_load_image_file_errors(tmp_path, case, fragment):
    path = tmp_path / "face.png"
    if case == "directory":
        path.mkdir()
    elif case == "text":
        path.write_text("hello")
    elif case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:3000])
    elif case == "tiny":
        Image.fromarray(np.zeros((63, 200, 3), np.uint8)).save(path)
    with pytest.raises(InputError) as excinfo:
        load_image(path)
    check_input_error(excinfo, "face.png", fragment)


@pytest.mark.parametrize("source, fragment", [
    (np.zeros((32, 128, 3), np.uint8), "at least 64"),
    (np.zeros((64, 64, 2), np.uint8), "shape"),
    (np.full((64, 64, 3), 255.0), r"not in \[0, 1\]"),
    (np.full((64, 64, 3), np.nan), "NaN"),
    (np.zeros((64, 64, 3), np.int16), "uint8 or float"),
    (12, "int"),
])
def test_load_image_array_errors(source, fragment):
    with pytest.raises(InputError, match=fragment):
        load_image(source)
