"""imtalker.io.audio: decoding every common format, resampling, downmixing, and the errors users can hit.

All material is synthesised here (tones written with PyAV's own encoders), so nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from imtalker.io.audio import audio_duration, load_audio, num_video_frames
from imtalker.errors import InputError
from helpers.io_checks import check_input_error, need

SR = 16000


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path, codec: str, container_format: str, channels: np.ndarray, rate: int) -> None:
    """Encodes `channels` (C, T) float32 in [-1, 1] with PyAV; C is 1 or 2."""
    layout = "stereo" if channels.shape[0] == 2 else "mono"
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        if codec == "vorbis":  # FFmpeg's native Vorbis encoder is flagged experimental
            stream.codec_context.options = {"strict": "experimental"}
        sample_format = stream.codec_context.format.name
        step = 4096
        for start in range(0, channels.shape[1], step):
            chunk = channels[:, start:start + step]
            data = chunk if sample_format.endswith("p") else chunk.T.reshape(1, -1)
            if sample_format.startswith("s16"):
                data = np.round(data * 32767).astype(np.int16)
            elif sample_format.startswith("s32"):
                data = np.round(data.astype(np.float64) * 2147483647).astype(np.int32)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=sample_format, layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_wav(path, samples: np.ndarray, rate: int) -> None:
    """16-bit PCM wav with the standard library; `samples` is (T,) or (T, C)."""
    samples = samples.reshape(samples.shape[0], -1) if samples.ndim == 2 else samples[:, None]
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(samples.shape[1])
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def peak_frequency(waveform: np.ndarray, rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(waveform.size)))
    return float(np.argmax(spectrum) * rate / waveform.size)


# (suffix, codec, container format, sample rate, length tolerance in output samples)
FORMATS = [
    ("wav", "pcm_s16le", "wav", 44100, 2),
    ("flac", "flac", "flac", 44100, 2),
    ("mp3", "libmp3lame", "mp3", 44100, 420),
    ("ogg", "vorbis", "ogg", 44100, 420),
    ("opus", "libopus", "ogg", 48000, 420),
    ("m4a", "aac", "ipod", 44100, 420),
]


@pytest.mark.parametrize("suffix, codec, fmt, rate, tolerance", FORMATS, ids=[f[0] for f in FORMATS])
def test_formats_resample_and_keep_pitch(tmp_path, suffix, codec, fmt, rate, tolerance):
    need(codec)
    path = tmp_path / f"tone.{suffix}"
    x = tone(2.0, rate)
    write_audio(path, codec, fmt, np.stack([x, x]), rate)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 2 * SR) <= tolerance
    assert np.abs(y).max() <= 1.0
    assert abs(peak_frequency(y) - 440.0) < 2.0
    # level preserved (identical channels averaged, no -3 dB downmix gain)
    assert 0.4 < np.abs(y[SR // 2:SR]).max() < 0.6
    assert abs(audio_duration(path) - 2.0) < 0.05


def test_wav_length_exact_for_stereo_44k(tmp_path):
    path = tmp_path / "stereo.wav"
    x = tone(2.0, 44100)
    write_wav(path, np.stack([x, x], axis=1), 44100)
    y = load_audio(path)
    assert abs(y.size - 32000) <= 4
    assert abs(peak_frequency(y) - 440.0) < 1.0


def test_other_target_rate(tmp_path):
    path = tmp_path / "mono.wav"
    write_wav(path, tone(1.0, 16000), 16000)
    y = load_audio(path, sample_rate=22050)
    assert abs(y.size - 22050) <= 4
    assert abs(peak_frequency(y, 22050) - 440.0) < 2.0


def test_stereo_is_averaged(tmp_path):
    path = tmp_path / "left_only.wav"
    x = tone(1.0, SR, amplitude=0.8)
    write_wav(path, np.stack([x, np.zeros_like(x)], axis=1), SR)
    y = load_audio(path)
    np.testing.assert_allclose(y, x / 2, atol=2e-3)


def test_full_scale_stereo_stays_in_range(tmp_path):
    path = tmp_path / "loud.wav"
    x = tone(1.0, 44100, amplitude=0.999)
    write_wav(path, np.stack([x, x], axis=1), 44100)
    y = load_audio(path)
    assert np.abs(y).max() <= 1.0
    assert np.abs(y).max() > 0.95


def _video_with_audio(path, video_codec: str, audio_codec: str, audio_rate: int) -> None:
    x = tone(1.0, audio_rate)
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=25)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = container.add_stream(audio_codec, rate=audio_rate, layout="mono")
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 8, np.uint8), format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        frame = av.AudioFrame.from_ndarray(x[None], format="flt", layout="mono")
        frame.sample_rate = audio_rate
        frame.pts = 0
        for packet in audio.encode(frame):
            container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)


@pytest.mark.parametrize("suffix, video_codec, audio_codec, rate", [
    ("mp4", "libx264", "aac", 44100),
    ("mov", "libx264", "aac", 48000),
    ("webm", "libvpx-vp9", "libopus", 48000),
])
def test_audio_track_of_video(tmp_path, suffix, video_codec, audio_codec, rate):
    need(video_codec, audio_codec)
    path = tmp_path / f"clip.{suffix}"
    _video_with_audio(path, video_codec, audio_codec, rate)
    y = load_audio(path)
    assert abs(y.size - SR) <= 420
    assert abs(peak_frequency(y) - 440.0) < 2.0


def test_silence_loads(tmp_path):
    path = tmp_path / "silence.wav"
    write_wav(path, np.zeros(SR), SR)
    y = load_audio(path)
    assert y.shape == (SR,) and not y.any()
    assert not load_audio(np.zeros(100, np.float32)).any()


def test_array_inputs():
    x = tone(1.0, SR)
    np.testing.assert_array_equal(load_audio(x), x)
    np.testing.assert_allclose(load_audio(np.stack([x, x])), x, atol=1e-7)  # channels-first
    np.testing.assert_allclose(load_audio(np.stack([x, x], axis=1)), x, atol=1e-7)  # channels-last
    np.testing.assert_allclose(load_audio(torch.from_numpy(x)[None]), x, atol=1e-7)
    pcm = np.round(x * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm), x, atol=1e-4)
    assert load_audio(x.astype(np.float64)).dtype == np.float32


def test_tuple_input_is_resampled():
    x = tone(2.0, 44100)
    y = load_audio((np.stack([x, x], axis=1), 44100))
    assert abs(y.size - 32000) <= 4
    assert abs(peak_frequency(y) - 440.0) < 1.0
    z = load_audio((torch.from_numpy(x), 44100))
    np.testing.assert_allclose(y, z, atol=1e-6)
    np.testing.assert_array_equal(load_audio((tone(1.0, SR), SR)), tone(1.0, SR))


def test_over_full_scale_array_is_clipped_in_a_copy():
    x = np.array([0.0, 1.5, -2.0, 0.5], np.float32)
    y = load_audio(x)
    np.testing.assert_array_equal(y, [0.0, 1.0, -1.0, 0.5])
    np.testing.assert_array_equal(x, [0.0, 1.5, -2.0, 0.5])  # the caller's array is untouched
    y[0] = 0.25
    assert x[0] == 0.0
    with pytest.raises(InputError, match="peaks at 32767"):
        load_audio(np.full(100, 32767.0, np.float32))  # int16 values stored as float


@pytest.mark.parametrize("rate, seconds", [(44100, 1.0), (22050, 0.37), (48000, 2.5), (8000, 0.1), (11025, 3.3)])
def test_array_resampling_length_is_exact(rate, seconds):
    x = tone(seconds, rate)
    assert load_audio((x, rate)).size == round(x.size * SR / rate)


def test_num_video_frames():
    assert num_video_frames(16000) == 25
    assert num_video_frames(16001) == 26
    assert num_video_frames(640) == 1
    assert num_video_frames(1) == 1
    assert num_video_frames(0) == 0
    assert num_video_frames(44100, sample_rate=44100, fps=30) == 30


def test_audio_duration_of_arrays():
    assert audio_duration((np.zeros(8000), 16000)) == 0.5
    assert audio_duration(np.zeros(32000)) == 2.0


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as excinfo:
        load_audio(tmp_path / "nope.wav")
    check_input_error(excinfo, "nope.wav", "does not exist")


def test_directory(tmp_path):
    with pytest.raises(InputError) as excinfo:
        load_audio(tmp_path)
    check_input_error(excinfo, "is a directory")


@pytest.mark.parametrize("content", [b"", b"this is not audio at all\n" * 40, bytes(range(256)) * 64])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(InputError) as excinfo:
        load_audio(path)
    check_input_error(excinfo, "broken.wav")


def test_truncated_mp3_loads_what_is_there_or_fails_cleanly(tmp_path):
    need("libmp3lame")
    path = tmp_path / "tone.mp3"
    x = tone(2.0, 44100)
    write_audio(path, "libmp3lame", "mp3", np.stack([x, x]), 44100)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    y = load_audio(path)  # like the ffmpeg tool, a cut-off file gives the audio it holds
    assert 0.5 * SR < y.size < 1.5 * SR


def test_garbage_after_id3_header(tmp_path):
    path = tmp_path / "garbage.mp3"
    path.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(np.random.default_rng(0).integers(0, 256, 4000,
                                                                                                    np.uint8)))
    with pytest.raises(InputError) as excinfo:
        load_audio(path)
    check_input_error(excinfo, "garbage.mp3")


def test_no_audio_stream(tmp_path):
    path = tmp_path / "silent_video.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
    with pytest.raises(InputError) as excinfo:
        load_audio(path)
    check_input_error(excinfo, "silent_video.mp4", "no audio stream")


def test_zero_length_wav(tmp_path):
    path = tmp_path / "empty.wav"
    write_wav(path, np.zeros(0), SR)
    with pytest.raises(InputError) as excinfo:
        load_audio(path)
    check_input_error(excinfo, "empty.wav", "0 samples")


@pytest.mark.parametrize("waveform", [np.zeros(0, np.float32), np.zeros((2, 0), np.float32)])
def test_zero_length_array(waveform):
    with pytest.raises(InputError, match="0 samples"):
        load_audio(waveform)


def test_too_long_file(tmp_path):
    path = tmp_path / "long.wav"
    write_wav(path, tone(3.0, SR), SR)
    with pytest.raises(InputError) as excinfo:
        load_audio(path, max_seconds=1)
    check_input_error(excinfo, "long.wav", "3.00 s", "limit of 1 s")
    assert load_audio(path, max_seconds=3).size == 3 * SR


def test_slightly_too_long_file_is_caught_while_decoding(tmp_path):
    # within the header check's tolerance, so the decoder's running count must catch it
    path = tmp_path / "long.wav"
    write_wav(path, tone(3.0, SR), SR)
    with pytest.raises(InputError) as excinfo:
        load_audio(path, max_seconds=2.98)
    check_input_error(excinfo, "long.wav", "limit of 2.98 s")


def test_too_long_array():
    with pytest.raises(InputError, match=r"2\.00 s long.*limit of 1\.5 s"):
        load_audio(np.zeros(32000, np.float32), max_seconds=1.5)
    with pytest.raises(InputError, match="limit"):
        load_audio((np.zeros(88200, np.float32), 44100), max_seconds=1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(bad):
    x = tone(0.1, SR)
    x[10] = bad
    with pytest.raises(InputError, match="NaN or infinite"):
        load_audio(x)
    with pytest.raises(InputError, match="NaN or infinite"):
        load_audio((x, 8000))


def test_non_finite_samples_in_float_wav(tmp_path):
    path = tmp_path / "nan.wav"
    x = tone(0.2, SR)
    x[100] = np.nan
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(x[None], format="flt", layout="mono")
        frame.sample_rate = SR
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(InputError) as excinfo:
        load_audio(path)
    check_input_error(excinfo, "nan.wav", "NaN or infinite")


@pytest.mark.parametrize("rate", [0, -16000, 44.1, 16000.5, "16k", None, True, float("nan"), 10**9])
def test_bad_sample_rate(rate):
    with pytest.raises(InputError, match="sample rate"):
        load_audio((np.zeros(100, np.float32), rate))
    with pytest.raises(InputError, match="sample_rate"):
        load_audio(np.zeros(100, np.float32), sample_rate=rate)


@pytest.mark.parametrize("waveform, fragment", [
    (np.zeros((2, 3, 100), np.float32), "shape"),
    (np.zeros((100, 200), np.float32), "not a waveform"),
    (np.zeros(100, np.int64), "int64"),
    (np.zeros(100, bool), "bool"),
    ({"audio": 1}, "dict"),
])
def test_bad_arrays(waveform, fragment):
    with pytest.raises(InputError, match=fragment):
        load_audio(waveform)


def test_bad_tuple_and_limit():
    with pytest.raises(InputError, match="tuple"):
        load_audio((np.zeros(100), 16000, "extra"))
    with pytest.raises(InputError, match="max_seconds"):
        load_audio(np.zeros(100, np.float32), max_seconds=0)


def test_speech_from_espeak(tmp_path):
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not on PATH (install it, e.g. apt-get install espeak-ng, to test real speech)")
    path = tmp_path / "speech.wav"
    subprocess.run([espeak, "-w", str(path), "The quick brown fox jumps over the lazy dog."], check=True,
                   capture_output=True, timeout=60)
    y = load_audio(path, max_seconds=30)
    assert y.dtype == np.float32 and y.ndim == 1
    assert 1.0 < y.size / SR < 10.0
    assert np.sqrt(np.mean(y**2)) > 0.01  # not silent
    assert np.abs(y).max() <= 1.0
    assert abs(audio_duration(path) - y.size / SR) < 0.05
