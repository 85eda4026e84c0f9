"""Clips: :func:`make_clip` puts a person, their speech and their motion together into frames, audio and ground
truth (:class:`SyntheticClip`); :func:`make_portrait` draws a clip's person facing the camera."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ...constants import FPS, SAMPLE_RATE
from .drawing import background_image, draw_face
from .faces import FaceState, Identity, sample_identity
from .motion import camera_track, sample_head_motion
from .params import SYNTH_VERSION, check_seed, check_size, frame_count, seed_sequences
from .speech import Voice, sample_voice, synthesize_frames

@dataclass(frozen=True)
class SyntheticClip:
    """One synthetic talking-head clip with its ground truth.

    Attributes:
        frames: ``(N, S, S, 3)`` uint8 RGB.
        audio: ``(N * 640,)`` float32 waveform at ``sample_rate``.
        fps: Frames per second (25).
        sample_rate: Audio samples per second (16000).
        pose: ``(N, 3)`` float32 yaw, pitch, roll in radians.
        gaze: ``(N, 2)`` float32 pitch, yaw of the eyes relative to the head, radians.
        mouth: ``(N,)`` float32 mouth opening in [0, 1].
        rounding: ``(N,)`` float32 lip rounding in [0, 1].
        blink: ``(N,)`` float32 eye closure in [0, 1] (1 = closed).
        camera: ``(N, 3)`` float32 camera track (conventions in :mod:`imtalker.data.synthetic`).
        identity: Who is drawn.
        voice: Who speaks.
        seed: The seed the clip was made from.
        index: The clip's number under that seed.
    """

    frames: np.ndarray
    audio: np.ndarray
    fps: int
    sample_rate: int
    pose: np.ndarray
    gaze: np.ndarray
    mouth: np.ndarray
    rounding: np.ndarray
    blink: np.ndarray
    camera: np.ndarray
    identity: Identity
    voice: Voice
    seed: int
    index: int

    def ground_truth(self) -> dict[str, np.ndarray]:
        """The per-frame tracks and the identity/voice parameters as named arrays (what the .npz holds)."""
        arrays = {name: getattr(self, name) for name in ("pose", "gaze", "mouth", "rounding", "blink", "camera")}
        arrays.update({f"identity_{k}": np.asarray(v) for k, v in asdict(self.identity).items()})
        arrays.update({f"voice_{k}": np.asarray(v) for k, v in asdict(self.voice).items()})
        arrays.update(seed=np.asarray(self.seed), index=np.asarray(self.index), fps=np.asarray(self.fps),
                      sample_rate=np.asarray(self.sample_rate), version=np.asarray(SYNTH_VERSION))
        return arrays


def make_clip(seed: int, seconds: float = 8.0, size: int = 256, *, index: int = 0) -> SyntheticClip:
    """Makes one synthetic talking-head clip.

    Args:
        seed: Non-negative integer seed.
        seconds: Length, rounded to whole 25 fps frames.
        size: Side of the square frames in pixels (even, 64-2048).
        index: Clip number under ``seed`` (a corpus's clip i is ``make_clip(seed, ..., index=i)``).

    Returns:
        The clip: frames, audio and ground truth, all ``N = round(seconds * 25)`` frames long.
    """
    check_seed(seed, index)
    size = check_size(size)
    num_frames = frame_count(seconds)
    identity_seed, speech_seed, motion_seed = seed_sequences(seed, index)
    identity = sample_identity(np.random.default_rng(identity_seed))
    plan_rng, voice_rng, noise_rng = (np.random.default_rng(s) for s in speech_seed.spawn(3))
    speech = synthesize_frames(num_frames, sample_voice(voice_rng), plan_rng, noise_rng)
    motion = sample_head_motion(np.random.default_rng(motion_seed), num_frames, speech.voicing)

    background = background_image(identity, size)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for k in range(num_frames):
        state = FaceState(pose=tuple(motion.pose[k]), gaze=tuple(motion.gaze[k]), mouth=float(speech.mouth[k]),
                          rounding=float(speech.rounding[k]), blink=float(motion.blink[k]),
                          shift=tuple(motion.shift[k]), zoom=float(motion.zoom[k]))
        frames[k] = draw_face(identity, state, size, background)
    f32 = np.float32
    return SyntheticClip(
        frames=frames, audio=speech.audio, fps=FPS, sample_rate=SAMPLE_RATE, pose=motion.pose.astype(f32),
        gaze=motion.gaze.astype(f32), mouth=speech.mouth, rounding=speech.rounding,
        blink=motion.blink.astype(f32), camera=camera_track(identity, motion, size).astype(f32),
        identity=identity, voice=speech.voice, seed=int(seed), index=int(index),
    )


def make_portrait(seed: int, size: int = 512, *, index: int = 0) -> np.ndarray:
    """The person of clip ``(seed, index)`` facing the camera: neutral pose and gaze, eyes open, mouth closed.

    Args:
        seed: Non-negative integer seed.
        size: Side of the square image in pixels (even, 64-2048).
        index: Clip number under ``seed``.

    Returns:
        ``(size, size, 3)`` uint8 RGB image, a source portrait for that clip's identity.
    """
    check_seed(seed, index)
    identity_seed, _, _ = seed_sequences(seed, index)
    return draw_face(sample_identity(np.random.default_rng(identity_seed)), FaceState(), size)
