"""Media in and out: audio files and waveforms, videos, still images; one PyAV layer (`media`) under them."""

from .audio import audio_duration, load_audio
from .image import load_image
from .video import VideoWriter, probe_video, read_frames, save_frames_png

__all__ = ["VideoWriter", "audio_duration", "load_audio", "load_image", "probe_video", "read_frames", "save_frames_png"]
