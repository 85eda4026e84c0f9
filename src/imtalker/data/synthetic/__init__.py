"""Synthetic talking heads: speech-like audio, a mouth that follows it, and procedurally drawn faces.

A corpus of such clips lets the whole training pipeline (``imtalker prepare``, the renderer and the motion
generator) run and be checked offline, with exact ground truth for everything a talking-head model controls:

* :func:`synthesize_speech`: syllables (3-5 a second, in phrases separated by silence), each a vowel voiced by a
  glottal source (f0 100-250 Hz with intonation and jitter) through formant resonances, with consonant noise
  bursts at onsets. The **mouth opening** track is a deterministic function of the same syllables at the same
  time: vowel openness times the syllable's amplitude envelope, zero in silence, so a model fed log-mel
  features of the audio can learn the mouth from the sound with no lag.
* :func:`draw_face`: a face drawn with OpenCV (anti-aliased), identity from :func:`sample_identity` (skin, hair,
  background, face shape, eyes, brows, nose, lips), per frame a :class:`FaceState` (head pose, gaze, blink, mouth,
  camera). Pose is pseudo-3-D: the features are points on an ellipsoidal head, rotated and projected, and the
  skin is Lambert-shaded from the same ellipsoid, so mediapipe's face detector and mesh find the face.
* :func:`make_clip` puts them together; :func:`write_corpus` writes ``clip_00000.mp4`` (H.264 + AAC) and
  ``clip_00000.npz`` (ground truth) files, resumable and in parallel.
* :func:`measure_mouth_opening` measures the inner-lip gap of any video's frames with the face mesh: the lip-sync
  metric's measuring tool.

Conventions (those of :mod:`imtalker.preprocess.tracks`, so ground truth and measured tracks compare directly):
    * ``pose = (yaw, pitch, roll)`` in radians. ``yaw > 0`` turns the head towards the image's left, ``pitch > 0``
      tilts it back (the face looks up), ``roll > 0`` tilts it clockwise as seen in the image.
    * ``gaze = (pitch, yaw)`` of the eyes relative to the head, same signs.
    * ``camera = (x / z, y / z, z / Z_REF)``: the point between the eyes relative to the image centre in image
      widths, and the depth at which the face (forehead to chin) spans half the image width, as
      :data:`imtalker.preprocess.tracks.Z_REF` defines it. About ``(0, -0.03, 1.25)`` for the base framing here.

Face-local geometry (used by the drawing code): one unit is half the face height (forehead top ``y = -1``, chin
``y = +1``), ``x`` points to the image's right, ``y`` down, ``z`` towards the camera.

Everything is deterministic: a clip depends only on ``(seed, index, seconds, size)``, and its identity, speech and
motion only on ``(seed, index)`` (the size only changes the resolution of the drawing).
"""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing
import os
import uuid
import zipfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ...constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ...errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "SYNTH_VERSION",
    "FaceState",
    "Identity",
    "Speech",
    "SyntheticClip",
    "demo_asset",
    "draw_face",
    "make_clip",
    "make_portrait",
    "measure_mouth_opening",
    "sample_identity",
    "synthesize_speech",
    "write_corpus",
]

SYNTH_VERSION = 1  # bump when the output of a (seed, index) changes
MAX_SECONDS = 3600.0
MIN_SIZE, MAX_SIZE = 64, 2048

# --------------------------------------------------------------------------------------------------------------
# Speech
# --------------------------------------------------------------------------------------------------------------

_HOP = 32  # control-rate step in samples (2 ms): envelopes, f0 and formants are computed at this rate
_MAX_HARMONIC_HZ = 7000.0  # harmonics above this are left out (Nyquist is 8 kHz)


@dataclass(frozen=True)
class Vowel:
    """A vowel: formant frequencies of an adult male voice and how it shapes the mouth.

    Attributes:
        name: IPA-ish letter.
        formants: F1, F2, F3 in Hz (Peterson and Barney averages).
        openness: Jaw/lip opening in [0, 1] (a fully open, i nearly closed).
        rounding: Lip rounding in [0, 1] (u, o: narrow and pursed).
    """

    name: str
    formants: tuple[float, float, float]
    openness: float
    rounding: float


VOWELS = (
    Vowel("a", (730.0, 1090.0, 2440.0), 1.0, 0.0),
    Vowel("e", (530.0, 1840.0, 2480.0), 0.6, 0.0),
    Vowel("i", (270.0, 2290.0, 3010.0), 0.3, 0.0),
    Vowel("o", (570.0, 840.0, 2410.0), 0.7, 0.8),
    Vowel("u", (300.0, 870.0, 2240.0), 0.35, 1.0),
)
_VOWEL_PROBS = (0.3, 0.22, 0.18, 0.16, 0.14)
_BANDWIDTHS = (80.0, 100.0, 140.0, 200.0, 250.0)  # Hz, formants 1-5
_HIGH_FORMANTS = (3500.0, 4500.0)  # F4, F5 of the neutral tract, in Hz

# Onset consonants: (noise band low Hz, high Hz, duration range s, RMS level relative to a full-loudness vowel's
# peak: bursts about 10 dB, fricatives 15-25 dB below the vowel's RMS). The noise ends where the vowel starts,
# while the lips/tongue are still closed, so the mouth track is (near) zero during it.
_CONSONANTS = {
    "p": (300.0, 6000.0, (0.012, 0.025), 0.1),
    "t": (2500.0, 7500.0, (0.015, 0.03), 0.1),
    "k": (1200.0, 3500.0, (0.02, 0.035), 0.1),
    "s": (4500.0, 7800.0, (0.06, 0.11), 0.05),
    "sh": (2000.0, 5500.0, (0.06, 0.1), 0.05),
    "f": (1000.0, 7800.0, (0.05, 0.09), 0.02),
}
_CONSONANT_NAMES = (None, "p", "t", "k", "s", "sh", "f")
_CONSONANT_PROBS = (0.3, 0.11, 0.12, 0.1, 0.14, 0.11, 0.12)


@dataclass(frozen=True)
class Voice:
    """A speaker's voice.

    Attributes:
        f0: Mean fundamental frequency in Hz (100-250).
        tract: Formant scale (shorter vocal tracts, higher voices: larger).
        tilt: Spectral slope of the glottal source: harmonic k has amplitude ``k ** -tilt``.
        breathiness: Level of aspiration noise relative to the voicing.
        jitter: Relative f0 perturbation (cycle to cycle roughness).
        gain: Overall level.
    """

    f0: float
    tract: float
    tilt: float
    breathiness: float
    jitter: float
    gain: float


@dataclass(frozen=True)
class Syllable:
    """One syllable: an optional consonant burst then a vowel, placed in time.

    Attributes:
        start: Time the vowel begins (s).
        duration: Length of the vowel (s).
        vowel: Index into :data:`VOWELS`.
        consonant: Onset consonant name (a key of the consonant table) or None.
        loudness: Peak level in [0, 1] (stressed syllables are louder).
        accent: Pitch accent as a fraction of f0.
        attack: Rise time of the envelope (s).
        release: Fall time of the envelope (s).
        phrase: Number of the phrase (run of syllables between pauses) it belongs to.
    """

    start: float
    duration: float
    vowel: int
    consonant: str | None
    loudness: float
    accent: float
    attack: float
    release: float
    phrase: int


@dataclass(frozen=True)
class Speech:
    """Synthesised speech and the mouth movements that go with it.

    Attributes:
        audio: ``(N * 640,)`` float32 waveform in [-1, 1] at 16 kHz.
        mouth: ``(N,)`` float32 mouth opening in [0, 1] per 25 fps frame: 0 is closed (silence, consonant
            closures), 1 a wide open "a". Frame k is the mean over the audio of that frame, samples
            ``[640 k, 640 (k + 1))``.
        rounding: ``(N,)`` float32 lip rounding in [0, 1] (o, u), 0 in silence.
        voicing: ``(N,)`` float32 voicing amplitude envelope in [0, 1] per frame.
        syllables: The syllables, in time order.
        voice: The speaker.
    """

    audio: np.ndarray
    mouth: np.ndarray
    rounding: np.ndarray
    voicing: np.ndarray
    syllables: tuple[Syllable, ...]
    voice: Voice


def sample_voice(rng: np.random.Generator) -> Voice:
    """Draws a speaker: low and high voices, with formants that scale with the pitch as vocal tracts do."""
    f0 = float(100.0 * 2.5 ** rng.random())  # 100-250 Hz, log-uniform
    tract = 1.0 + 0.18 * math.log(f0 / 100.0) / math.log(2.5) + 0.03 * float(rng.standard_normal())
    return Voice(f0=f0, tract=float(tract), tilt=float(rng.uniform(0.9, 1.3)),
                 breathiness=float(rng.uniform(0.005, 0.02)), jitter=float(rng.uniform(0.005, 0.015)),
                 gain=float(rng.uniform(0.5, 0.8)))


def plan_syllables(rng: np.random.Generator, seconds: float) -> tuple[Syllable, ...]:
    """Lays out phrases of 2-8 syllables (about 4 a second) separated by 0.25-0.8 s of silence.

    Args:
        rng: Random source; drawn from sequentially, so a longer plan starts with the shorter one.
        seconds: Length to fill; the last syllable may run past it (it is cut when synthesised).

    Returns:
        The syllables in time order.
    """
    syllables = []
    t = float(rng.uniform(0.15, 0.5))  # leading silence
    phrase = 0
    while t < seconds:
        count = int(rng.integers(2, 9))
        stressed = int(rng.integers(count))
        for j in range(count):
            consonant = _CONSONANT_NAMES[int(rng.choice(len(_CONSONANT_NAMES), p=_CONSONANT_PROBS))]
            if consonant is None:  # vowel after vowel: the envelopes may overlap, the mouth need not close
                gap = float(rng.uniform(-0.04, 0.02)) if j else 0.0
            else:  # closure / frication before the vowel
                low, high = _CONSONANTS[consonant][2]
                gap = float(rng.uniform(low, high)) + 0.01
            duration = float(rng.uniform(0.15, 0.28))
            loudness = (1.0 if j == stressed else float(rng.uniform(0.55, 0.85))) * (1.0 - 0.25 * j / count)
            syllables.append(Syllable(
                start=max(t + gap, 0.0), duration=duration, vowel=int(rng.choice(len(VOWELS), p=_VOWEL_PROBS)),
                consonant=consonant, loudness=loudness,
                accent=float(rng.uniform(0.08, 0.18)) if j == stressed else float(rng.uniform(0.0, 0.05)),
                attack=float(rng.uniform(0.035, 0.06)), release=float(rng.uniform(0.05, 0.09)), phrase=phrase,
            ))
            t = syllables[-1].start + duration
        t += float(rng.uniform(0.25, 0.8))  # pause between phrases
        phrase += 1
    return tuple(syllables)


def _bump(times: np.ndarray, syllable: Syllable) -> np.ndarray:
    """The syllable's amplitude envelope at ``times`` (s): raised-cosine rise and fall, 0 outside it."""
    u = times - syllable.start
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip(u / syllable.attack, 0.0, 1.0))
    fall = 0.5 - 0.5 * np.cos(np.pi * np.clip((syllable.duration - u) / syllable.release, 0.0, 1.0))
    return np.minimum(rise, fall)


def _resonance(freqs: np.ndarray, formant: np.ndarray, bandwidth: float) -> np.ndarray:
    """Magnitude response of a two-pole formant resonator, 1 at 0 Hz (Klatt's cascade form)."""
    half = bandwidth / 2.0
    return (formant**2 + half**2) / np.sqrt(((freqs - formant) ** 2 + half**2) * ((freqs + formant) ** 2 + half**2))


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average over ``width`` samples along the last axis, same length (edges repeated)."""
    if width <= 1:
        return x
    pad = [(0, 0)] * (x.ndim - 1) + [(width // 2, width - 1 - width // 2)]
    padded = np.pad(x, pad, mode="edge")
    cumsum = np.cumsum(padded, axis=-1, dtype=np.float64)
    cumsum = np.concatenate([np.zeros(x.shape[:-1] + (1,)), cumsum], axis=-1)
    return (cumsum[..., width:] - cumsum[..., :-width]) / width


def _control_tracks(syllables: Sequence[Syllable], voice: Voice, times: np.ndarray, rng: np.random.Generator):
    """Everything that varies slowly, at the control steps ``times`` (s, ``(C,)``).

    Returns:
        Voicing amplitude ``(C,)``, mouth opening ``(C,)`` in [0, 1], lip rounding ``(C,)`` in [0, 1],
        f0 ``(C,)`` in Hz and formants F1-F3 ``(3, C)`` in Hz. Amplitude, opening and rounding are sums of the
        same syllable envelopes, so all three are exactly 0 between syllables.
    """
    amplitude = np.zeros_like(times)
    opening = np.zeros_like(times)
    rounding = np.zeros_like(times)
    weight = np.zeros_like(times)
    formants = np.zeros((3,) + times.shape)
    accent = np.zeros_like(times)
    decline = np.zeros_like(times)
    for phrase in sorted({syl.phrase for syl in syllables}):  # f0 falls over each phrase (declination)
        members = [syl for syl in syllables if syl.phrase == phrase]
        begin, end = members[0].start, members[-1].start + members[-1].duration
        inside = (times >= begin) & (times < end)
        decline[inside] = 0.06 - 0.14 * (times[inside] - begin) / max(end - begin, 1e-3)
    for syl in syllables:
        lo = np.searchsorted(times, syl.start)
        hi = np.searchsorted(times, syl.start + syl.duration)
        if lo >= hi:
            continue
        bump = _bump(times[lo:hi], syl)
        vowel = VOWELS[syl.vowel]
        # Open vowels are louder (a wider mouth radiates more), but the mouth opening barely depends on loudness.
        amplitude[lo:hi] += syl.loudness * (0.55 + 0.45 * vowel.openness) * bump
        opening[lo:hi] += vowel.openness * (0.8 + 0.2 * syl.loudness) * bump
        rounding[lo:hi] += vowel.rounding * bump
        weight[lo:hi] += bump
        formants[:, lo:hi] += np.array(vowel.formants)[:, None] * bump
        mid = times[lo:hi] - (syl.start + 0.5 * syl.duration)
        accent[lo:hi] = np.maximum(accent[lo:hi], syl.accent * np.exp(-0.5 * (mid / (0.4 * syl.duration)) ** 2))
    # Formants glide between vowels (coarticulation); in silence (weight 0) they rest at the neutral vowel.
    neutral = np.array([500.0, 1500.0, 2500.0])[:, None]
    formants = (formants + 1e-4 * neutral) / (weight + 1e-4)
    formants = _smooth(formants, 15) * voice.tract  # 30 ms glides

    # Intonation: declination over each phrase, accents on stressed syllables, slow wander and jitter.
    wander = 0.04 * np.sin(2 * np.pi * 0.3 * times + rng.uniform(0, 2 * np.pi))
    jitter = voice.jitter * _smooth(rng.standard_normal(times.shape), 3)
    f0 = voice.f0 * (1.0 + decline + accent + wander + jitter)
    return amplitude, np.minimum(opening, 1.0), np.minimum(rounding, 1.0), f0, formants


def _voiced(amplitude: np.ndarray, f0: np.ndarray, formants: np.ndarray, voice: Voice, num_samples: int):
    """Sums harmonics of the glottal source, each weighted by the vocal tract's response at its frequency.

    All inputs are control-rate ``(C,)`` / ``(3, C)`` arrays; the result is ``(num_samples,)`` float64.
    """
    t_control = np.arange(amplitude.size) * _HOP
    t_sample = np.arange(num_samples)
    f0_s = np.interp(t_sample, t_control, f0)
    phase = 2 * np.pi * np.cumsum(f0_s) / SAMPLE_RATE
    cos_phase = np.cos(phase)
    num_harmonics = int(_MAX_HARMONIC_HZ / f0.min())
    voiced = np.zeros(num_samples)
    if not (amplitude > 0).any():
        return voiced
    # sin(k phase) by the Chebyshev recurrence: one multiply-add per harmonic instead of a sin().
    sin_prev, sin_k = np.zeros(num_samples), np.sin(phase)
    high = np.array(_HIGH_FORMANTS)[:, None] * voice.tract
    for k in range(1, num_harmonics + 1):
        freq = k * f0  # (C,)
        gain = amplitude * k ** (-voice.tilt)
        for i in range(3):
            gain = gain * _resonance(freq, formants[i], _BANDWIDTHS[i])
        for i in range(2):
            gain = gain * _resonance(freq, high[i], _BANDWIDTHS[3 + i])
        gain = np.where(freq < _MAX_HARMONIC_HZ, gain, 0.0)
        voiced += np.interp(t_sample, t_control, gain) * sin_k
        sin_prev, sin_k = sin_k, 2.0 * cos_phase * sin_k - sin_prev
    return voiced


def _harmonic_gains(voice: Voice, f0: float, formants: Sequence[float]) -> np.ndarray:
    """Amplitudes of the harmonics ``(K,)`` of a steady vowel: source slope times the five formant resonances."""
    freqs = np.arange(1, int(_MAX_HARMONIC_HZ / f0) + 1) * f0
    gains = (freqs / f0) ** (-voice.tilt)
    for formant, bandwidth in zip([f * voice.tract for f in formants] + [f * voice.tract for f in _HIGH_FORMANTS],
                                  _BANDWIDTHS):
        gains = gains * _resonance(freqs, np.asarray(formant), bandwidth)
    return gains


def _reference_peak(voice: Voice) -> float:
    """The largest sum of harmonic amplitudes over the vowels at the voice's mean f0: an upper bound, give or take
    intonation, of the voiced signal's peak at full loudness (the harmonics never all peak at once)."""
    return max(float(_harmonic_gains(voice, voice.f0, vowel.formants).sum()) for vowel in VOWELS)


def _band_noise(rng: np.random.Generator, length: int, low: float, high: float) -> np.ndarray:
    """White noise band-limited to ``[low, high]`` Hz with soft edges, unit RMS, ``(length,)``."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, 1.0 / SAMPLE_RATE)
    edge = 200.0
    shape = np.clip((freqs - low) / edge + 0.5, 0, 1) * np.clip((high - freqs) / edge + 0.5, 0, 1)
    noise = np.fft.irfft(spectrum * shape, length)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _consonants(syllables: Sequence[Syllable], rng: np.random.Generator, num_samples: int) -> np.ndarray:
    """Noise bursts (plosives) and frication (s, sh, f) ending where each syllable's vowel starts."""
    out = np.zeros(num_samples)
    for syl in syllables:
        if syl.consonant is None:
            continue
        low, high, (d_lo, d_hi), level = _CONSONANTS[syl.consonant]
        length = int(rng.uniform(d_lo, d_hi) * SAMPLE_RATE)
        end = int(syl.start * SAMPLE_RATE) + int(0.005 * SAMPLE_RATE)
        start = end - length
        if length < 8 or start < 0 or start >= num_samples:
            continue
        noise = _band_noise(rng, length, low, high)
        u = np.linspace(0.0, 1.0, length)
        if syl.consonant in ("p", "t", "k"):  # a sharp release that dies away
            envelope = np.exp(-4.0 * u) * np.clip(u * 20, 0, 1)
        else:  # frication rises and falls
            envelope = np.sin(np.pi * u) ** 0.7
        chunk = level * syl.loudness * envelope * noise
        stop = min(end, num_samples)
        out[start:stop] += chunk[: stop - start]
    return out


def synthesize_speech(seconds: float, seed: int = 0, *, index: int = 0) -> Speech:
    """Synthesises speech-like audio and the matching per-frame mouth opening.

    Args:
        seconds: Length; rounded to whole 25 fps frames (at least one).
        seed: Random seed (a non-negative integer).
        index: Second part of the seed (the clip number in a corpus).

    Returns:
        A :class:`Speech` with ``round(seconds * 25)`` frames and 640 samples per frame.
    """
    _check_seed(seed, index)
    _, speech_seed, _ = _seed_sequences(seed, index)
    plan_rng, voice_rng, noise_rng = (np.random.default_rng(s) for s in speech_seed.spawn(3))
    return _synthesize(_num_frames(seconds), sample_voice(voice_rng), plan_rng, noise_rng)


def _synthesize(num_frames: int, voice: Voice, plan_rng: np.random.Generator,
                noise_rng: np.random.Generator) -> Speech:
    """Plans syllables, renders their audio and averages the mouth track over each frame's samples."""
    num_samples = num_frames * SAMPLES_PER_FRAME
    syllables = plan_syllables(plan_rng, num_frames / FPS)
    num_control = num_samples // _HOP + 1
    times = np.arange(num_control) * (_HOP / SAMPLE_RATE)
    amplitude, opening, rounding, f0, formants = _control_tracks(syllables, voice, times, noise_rng)

    # Normalised by the voice's own loudest possible vowel, not by the clip's peak: the level of a syllable
    # does not depend on what else the clip holds.
    voiced = _voiced(amplitude, f0, formants, voice, num_samples) / _reference_peak(voice)
    amp_s = np.interp(np.arange(num_samples), np.arange(num_control) * _HOP, amplitude)
    aspiration = voice.breathiness * amp_s * np.diff(noise_rng.standard_normal(num_samples + 1))
    audio = voice.gain * (voiced + aspiration + _consonants(syllables, noise_rng, num_samples))
    audio += 3e-4 * noise_rng.standard_normal(num_samples)  # room noise: silence is quiet, not digital zero
    audio = np.tanh(audio / 0.95) * 0.95  # soft limiter, never clips

    per_frame = SAMPLES_PER_FRAME // _HOP  # 20 control steps per frame

    def frames(x: np.ndarray) -> np.ndarray:  # (C,) control steps -> (N,) frame means
        return x[: num_frames * per_frame].reshape(num_frames, per_frame).mean(axis=1).astype(np.float32)

    return Speech(audio=audio.astype(np.float32), mouth=np.clip(frames(opening), 0.0, 1.0),
                  rounding=np.clip(frames(rounding), 0.0, 1.0), voicing=np.clip(frames(amplitude), 0.0, 1.0),
                  syllables=syllables, voice=voice)


# --------------------------------------------------------------------------------------------------------------
# Identity and per-frame state
# --------------------------------------------------------------------------------------------------------------

_SKIN_TONES = ((246, 216, 192), (241, 194, 167), (224, 172, 138), (198, 140, 105), (160, 106, 74), (112, 72, 50))
_HAIR_COLOURS = ((28, 24, 24), (62, 40, 28), (105, 70, 42), (196, 160, 100), (150, 72, 38), (150, 148, 146))
_IRIS_COLOURS = ((85, 55, 35), (60, 40, 25), (70, 110, 160), (80, 120, 85), (105, 110, 115))
HAIR_STYLES = ("short", "long", "bob", "receding", "fringe")


@dataclass(frozen=True)
class Identity:
    """What a synthetic person looks like. Colours are RGB 0-255; lengths are in face units (see module doc).

    Attributes:
        skin, hair, lips, iris, shirt: Colours.
        background_top, background_bottom: Colours of the background's vertical gradient.
        hair_style: Index into :data:`HAIR_STYLES`.
        face_height: Face height (forehead top to chin) as a fraction of the image height.
        face_width: Half-width of the face (half-height = 1).
        chin_taper: How much narrower the face gets towards the chin.
        eye_spacing: Half the distance between the eye centres.
        eye_y: Height of the eye centres.
        eye_size: Half-width of an eye.
        brow_height: Distance of the brows above the eyes.
        brow_thickness: Thickness of the brows at their inner end.
        brow_arch: How far the brow's arch rises.
        nose_length: Height of the nose tip.
        nose_width: Half-width of the nostrils' wings.
        mouth_y: Height of the mouth.
        mouth_width: Half-width of the mouth.
        lip_thickness: Thickness of the lower lip (the upper one is 0.7 of it).
        light: Horizontal direction of the key light, -1 (from the image's left) to 1.
    """

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    lips: tuple[float, float, float]
    iris: tuple[float, float, float]
    shirt: tuple[float, float, float]
    background_top: tuple[float, float, float]
    background_bottom: tuple[float, float, float]
    hair_style: int
    face_height: float
    face_width: float
    chin_taper: float
    eye_spacing: float
    eye_y: float
    eye_size: float
    brow_height: float
    brow_thickness: float
    brow_arch: float
    nose_length: float
    nose_width: float
    mouth_y: float
    mouth_width: float
    lip_thickness: float
    light: float


def _jitter_colour(rng: np.random.Generator, colour: Sequence[float], amount: float) -> tuple[float, float, float]:
    scale = 1.0 + amount * rng.uniform(-1, 1)
    tint = amount * 0.5 * rng.uniform(-1, 1, 3)
    return tuple(float(np.clip(c * (scale + t), 0, 255)) for c, t in zip(colour, tint))


def _luma(colour: Sequence[float]) -> float:
    return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]


def _background(rng: np.random.Generator, skin: Sequence[float]) -> tuple[tuple, tuple]:
    """A muted two-colour gradient whose brightness differs from the skin's, so the face stands out."""
    hue = rng.uniform(0, 180)
    sat = rng.uniform(20, 110)
    skin_luma = _luma(skin)
    value = rng.uniform(40, 110) if skin_luma > 150 else rng.uniform(170, 235)
    colours = []
    for dv in (rng.uniform(-25, 25), rng.uniform(-25, 25)):
        hsv = np.uint8([[[hue, sat, np.clip(value + dv, 0, 255)]]])
        colours.append(tuple(float(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]))
    return colours[0], colours[1]


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draws a person: colours, hair style and the proportions of the face.

    Args:
        rng: Random source.

    Returns:
        The identity. All proportions stay within ranges a face detector accepts.
    """
    skin = _jitter_colour(rng, _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))], 0.06)
    hair = _jitter_colour(rng, _HAIR_COLOURS[int(rng.integers(len(_HAIR_COLOURS)))], 0.1)
    lips = tuple(float(np.clip(c, 0, 255)) for c in
                 np.array(skin) * np.array([0.78, 0.5, 0.52]) * rng.uniform(0.85, 1.05) + np.array([20, 0, 5]))
    iris = _jitter_colour(rng, _IRIS_COLOURS[int(rng.integers(len(_IRIS_COLOURS)))], 0.1)
    shirt_hsv = np.uint8([[[rng.uniform(0, 180), rng.uniform(30, 200), rng.uniform(50, 220)]]])
    shirt = tuple(float(c) for c in cv2.cvtColor(shirt_hsv, cv2.COLOR_HSV2RGB)[0, 0])
    top, bottom = _background(rng, skin)
    return Identity(
        skin=skin, hair=hair, lips=lips, iris=iris, shirt=shirt, background_top=top, background_bottom=bottom,
        hair_style=int(rng.integers(len(HAIR_STYLES))),
        face_height=float(rng.uniform(0.37, 0.43)),
        face_width=float(rng.uniform(0.68, 0.8)),
        chin_taper=float(rng.uniform(0.12, 0.3)),
        eye_spacing=float(rng.uniform(0.28, 0.33)),
        eye_y=float(rng.uniform(-0.2, -0.12)),
        eye_size=float(rng.uniform(0.11, 0.135)),
        brow_height=float(rng.uniform(0.15, 0.2)),
        brow_thickness=float(rng.uniform(0.035, 0.06)),
        brow_arch=float(rng.uniform(0.015, 0.05)),
        nose_length=float(rng.uniform(0.2, 0.28)),
        nose_width=float(rng.uniform(0.09, 0.12)),
        mouth_y=float(rng.uniform(0.5, 0.56)),
        mouth_width=float(rng.uniform(0.19, 0.24)),
        lip_thickness=float(rng.uniform(0.06, 0.085)),
        light=float(rng.uniform(-1, 1)),
    )


@dataclass(frozen=True)
class FaceState:
    """What changes from frame to frame.

    Attributes:
        pose: ``(yaw, pitch, roll)`` in radians (module conventions).
        gaze: ``(pitch, yaw)`` of the eyes relative to the head, radians.
        mouth: Mouth opening in [0, 1].
        rounding: Lip rounding in [0, 1].
        blink: Eye closure in [0, 1] (1 = closed).
        shift: Camera motion: ``(dx, dy)`` image shift of the face as a fraction of the image size.
        zoom: Camera zoom factor (1 = base framing).
    """

    pose: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gaze: tuple[float, float] = (0.0, 0.0)
    mouth: float = 0.0
    rounding: float = 0.0
    blink: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0


# --------------------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------------------

_SUBPIXEL = 4  # cv2 fractional bits: points are drawn with 1/16 pixel precision, so slow motion stays smooth
_FACE_DEPTH = 0.85  # z semi-axis of the head ellipsoid (x: face_width, y: 1.05)
_PIVOT = np.array([0.0, 0.25, -0.6])  # the head turns about a point behind the face, near the top of the neck
_MAX_GAP = 0.26  # inner-lip gap of a fully open mouth, face units (13% of the face height)
_FACE_CENTRE_Y = 0.51  # image height fraction of the face's centre at zoom 1


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The (3, 3) head rotation in this module's axes (x right, y down, z towards the camera), yaw after pitch
    after roll, with the signs of the module conventions."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    r_yaw = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])  # z > 0 (the nose) moves to the image's left
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # the nose moves up (y decreases)
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])  # clockwise on screen (y down)
    return r_yaw @ r_pitch @ r_roll


@dataclass(frozen=True)
class _View:
    """Maps face-local 3-D points to image pixels: rotate about the pivot, drop z, scale and place.

    That is one affine map, ``pixels = points @ matrix.T + offset``, precomputed by :func:`_view`.
    """

    rotation: np.ndarray  # (3, 3)
    origin: np.ndarray  # (2,) pixel position of the face-local origin before rotation
    scale: float  # pixels per face unit
    matrix: np.ndarray  # (2, 3)
    offset: np.ndarray  # (2,)

    def project(self, points: np.ndarray) -> np.ndarray:
        """``(..., 3)`` face-local points -> ``(..., 2)`` pixels."""
        return np.asarray(points, np.float64) @ self.matrix.T + self.offset


def _view(rotation: np.ndarray, origin: np.ndarray, scale: float) -> _View:
    matrix = scale * rotation[:2]
    offset = origin + scale * (_PIVOT - rotation @ _PIVOT)[:2]
    return _View(rotation, origin, scale, matrix, offset)


def _surface_z(identity: Identity, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height of the head ellipsoid's front over the face plane at ``(x, y)``; 0 outside its outline."""
    inside = 1.0 - (x / identity.face_width) ** 2 - (y * (1 / 1.05)) ** 2
    return _FACE_DEPTH * np.sqrt(np.clip(inside, 0.0, 1.0))


def _surface(identity: Identity, xy: np.ndarray, lift: float | np.ndarray = 0.0) -> np.ndarray:
    """Face-plane points ``(..., 2)`` placed on the head ellipsoid's front, raised by ``lift``: ``(..., 3)``."""
    xy = np.asarray(xy, np.float64)
    z = _surface_z(identity, xy[..., 0], xy[..., 1]) + lift
    return np.concatenate([xy, z[..., None]], axis=-1)


def _place(identity: Identity, view: _View, xy: np.ndarray, lift: float = 0.0) -> np.ndarray:
    """Face-plane points ``(n, 2)`` on the head's surface (raised by ``lift``) -> ``(n, 2)`` pixels.

    The same as ``view.project(_surface(identity, xy, lift))``, in fewer steps: it runs ~40 times a frame.
    """
    z = _surface_z(identity, xy[:, 0], xy[:, 1]) + lift
    return xy @ view.matrix[:, :2].T + z[:, None] * view.matrix[:, 2] + view.offset


def _pts(pixels: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> int32 points for cv2 drawing with _SUBPIXEL fractional bits."""
    return np.round(np.asarray(pixels) * (1 << _SUBPIXEL)).astype(np.int32).reshape(-1, 1, 2)


def _colour(rgb: Sequence[float], factor: float = 1.0) -> tuple[float, ...]:
    return tuple(min(max(float(c) * factor, 0.0), 255.0) for c in rgb)  # plain Python: called ~100 times a frame


def _fill(image: np.ndarray, pixels: np.ndarray, colour: Sequence[float]) -> None:
    cv2.fillPoly(image, [_pts(pixels)], _colour(colour), cv2.LINE_AA, _SUBPIXEL)


def _line(image: np.ndarray, pixels: np.ndarray, colour: Sequence[float], thickness: float) -> None:
    cv2.polylines(image, [_pts(pixels)], False, _colour(colour), max(1, int(round(thickness))), cv2.LINE_AA,
                  _SUBPIXEL)


def _ellipse_points(centre: Sequence[float], axes: Sequence[float], count: int = 24,
                    start: float = 0.0, stop: float = 2 * np.pi) -> np.ndarray:
    """``(count, 2)`` points of an axis-aligned ellipse, or of an arc from angle ``start`` to ``stop`` (inclusive)."""
    if start == 0.0 and stop == 2 * np.pi and count in _CIRCLES:
        circle = _CIRCLES[count]
    else:
        t = np.linspace(start, stop, count, endpoint=abs(stop - start) < 2 * np.pi - 1e-9)
        circle = np.stack([np.cos(t), np.sin(t)], axis=-1)
    return circle * (axes[0], axes[1]) + (centre[0], centre[1])


# Unit circles for the point counts used, computed once (constants): ellipses are drawn ~30 times a frame.
_CIRCLES = {n: np.stack([np.cos(t), np.sin(t)], -1) for n in (10, 12, 16, 20, 24, 40, 48, 80)
            for t in [np.linspace(0.0, 2 * np.pi, n, endpoint=False)]}


def _bounds(pixels: np.ndarray, width: int, height: int, margin: int = 2) -> tuple[int, int, int, int] | None:
    """Integer ROI ``(x0, y0, x1, y1)`` around ``pixels``, clipped to the image; None when empty."""
    x0, y0 = np.floor(pixels.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(pixels.max(axis=0)).astype(int) + margin
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _fill_clipped(image: np.ndarray, clip: np.ndarray, shapes: Sequence[tuple[np.ndarray, Sequence[float]]]) -> None:
    """Fills each ``(polygon, colour)`` in ``shapes``, but only inside the polygon ``clip`` (all in pixels)."""
    roi = _bounds(clip, image.shape[1], image.shape[0])
    if roi is None:
        return
    x0, y0, x1, y1 = roi
    offset = np.array([x0, y0], np.float64)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _fill(mask, clip - offset, (255,))
    patch = image[y0:y1, x0:x1].copy()
    for polygon, colour in shapes:
        _fill(patch, polygon - offset, colour)
    alpha = mask[..., None].astype(np.float32) / 255.0
    region = image[y0:y1, x0:x1]
    region[:] = np.rint(region + alpha * (patch.astype(np.float32) - region)).astype(np.uint8)


def _background_image(identity: Identity, size: int) -> np.ndarray:
    """The vertical gradient with a soft vignette, ``(size, size, 3)`` uint8."""
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    top, bottom = np.array(identity.background_top), np.array(identity.background_bottom)
    image = top + (bottom - top) * y  # (size, 1, 3)
    xx = np.linspace(-1.0, 1.0, size)[None, :, None]
    yy = np.linspace(-1.0, 1.0, size)[:, None, None]
    image = image * (1.0 - 0.18 * (xx**2 + yy**2) / 2)
    return np.clip(np.rint(np.broadcast_to(image, (size, size, 3))), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class _Frame:
    """Everything one frame's drawing needs."""

    identity: Identity
    state: FaceState
    view: _View
    image: np.ndarray  # (S, S, 3) uint8, drawn into


def _make_view(identity: Identity, state: FaceState, size: int) -> _View:
    scale = 0.5 * identity.face_height * size * state.zoom
    origin = np.array([0.5 + state.shift[0], _FACE_CENTRE_Y + state.shift[1]]) * size
    return _view(_rotation(*state.pose), origin, scale)


def _silhouette(identity: Identity, gap: float, count: int = 48) -> np.ndarray:
    """The face outline in the face plane, ``(count, 2)``: an egg, narrower at the chin, longer with the jaw open."""
    t = np.linspace(0.0, 2 * np.pi, count, endpoint=False)
    x, y = identity.face_width * np.cos(t), np.sin(t)
    lower = y > 0
    x = np.where(lower, x * (1.0 - identity.chin_taper * y**2), x)
    y = np.where(lower, y * (1.0 + 0.45 * gap), y * 1.02)
    return np.stack([x, y], axis=-1)


def _draw_body(frame: _Frame) -> None:
    """Shoulders, neckline and neck; they follow the camera but not the head's rotation."""
    ident, view, image = frame.identity, frame.view, frame.image
    w = ident.face_width
    flat = _view(np.eye(3), view.origin, view.scale)

    def px(points):
        points = np.asarray(points, np.float64)
        return flat.project(np.concatenate([points, np.zeros(points.shape[:-1] + (1,))], axis=-1))

    shirt = _ellipse_points((0.0, 2.75), (2.3 * w / 0.75, 1.2), 40)
    neck = np.array([[-0.5 * w, 0.2], [0.5 * w, 0.2], [0.56 * w, 1.6], [-0.56 * w, 1.6]])
    _fill(image, px(neck), _colour(ident.skin, 0.8))
    # The jaw's shadow on the neck; the face drawn later covers its upper part.
    _fill(image, px(_ellipse_points((0.0, 0.95), (0.5 * w, 0.35))), _colour(ident.skin, 0.6))
    _fill(image, px(shirt), ident.shirt)
    neckline = np.array([[-0.5 * w, 1.45], [0.5 * w, 1.45], [0.0, 2.0]])  # starts above the shirt: no seam
    _fill(image, px(neckline), _colour(ident.skin, 0.8))


def _hair_cap(ident: Identity) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centre and semi-axes of the hair over the skull (face plane), by style."""
    w = ident.face_width
    style = HAIR_STYLES[ident.hair_style]
    if style == "receding":
        return (0.0, -0.3), (1.04 * w, 0.84)
    if style in ("long", "bob"):
        return (0.0, -0.3), (1.2 * w, 0.95)
    return (0.0, -0.32), (1.12 * w, 0.9)


def _draw_back_hair(frame: _Frame) -> None:
    """Hair behind the head: the skull's cap and, for long styles, hair falling to the shoulders."""
    ident, view, image = frame.identity, frame.view, frame.image
    style = HAIR_STYLES[ident.hair_style]
    colour = _hair_colour(ident)
    centre, axes = _hair_cap(ident)
    cap = _surface(ident, _ellipse_points(centre, axes, 80), 0.03)
    if style in ("long", "bob"):
        bottom = 1.55 if style == "long" else 0.55
        side = _ellipse_points(centre, axes, 24, np.pi, 2 * np.pi)  # the cap's upper half, left to right
        ends = np.array([[1.02 * axes[0], bottom - 0.1], [0.9 * axes[0], bottom], [-0.9 * axes[0], bottom],
                         [-1.02 * axes[0], bottom - 0.1]])
        fall = np.concatenate([side, ends])
        _fill(image, _place(ident, view, fall, 0.03), _colour(colour, 0.85))
    _fill(image, view.project(cap), colour)


def _hair_colour(ident: Identity) -> tuple[float, float, float]:
    if HAIR_STYLES[ident.hair_style] == "receding":  # thin hair: the scalp shows through
        return tuple(0.55 * h + 0.45 * s for h, s in zip(ident.hair, ident.skin))
    return ident.hair


def _draw_ears(frame: _Frame) -> None:
    ident, view, image = frame.identity, frame.view, frame.image
    for side in (-1.0, 1.0):
        centre = (side * 0.97 * ident.face_width, ident.eye_y + 0.2)
        outer = _ellipse_points(centre, (0.12, 0.22), 20)
        inner = _ellipse_points((centre[0] + side * 0.02, centre[1]), (0.06, 0.14), 16)
        z = np.full((20, 1), -0.2)
        _fill(image, view.project(np.concatenate([outer, z], axis=-1)), _colour(ident.skin, 0.88))
        _fill(image, view.project(np.concatenate([inner, z[:16]], axis=-1)), _colour(ident.skin, 0.7))


def _shade(frame: _Frame, roi: tuple[int, int, int, int]) -> np.ndarray:
    """Lambert shading of the head ellipsoid seen through the pixels of ``roi``: ``(h, w)`` float32 in [0.45, 1].

    Each pixel's ray (orthographic, along z) is intersected with the rotated ellipsoid; pixels that miss it get
    the silhouette's (grazing) shade.
    """
    ident, view = frame.identity, frame.view
    x0, y0, x1, y1 = roi
    # Shading is smooth: computed on a grid of half the resolution, at the pixel centres cv2.resize assumes.
    cols, rows = max((x1 - x0 + 1) // 2, 1), max((y1 - y0 + 1) // 2, 1)
    u = (x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols - view.origin[0]) / view.scale  # rotated frame
    v = (y0 + (np.arange(rows) + 0.5) * (y1 - y0) / rows - view.origin[1]) / view.scale
    uu, vv = np.meshgrid(u, v)
    inv = view.rotation.T
    # Ray p(s) = (u, v, s) in the rotated frame; in head coordinates q = inv (p - pivot) + pivot = w0 + s d.
    w0 = (np.stack([uu, vv, np.zeros_like(uu)], axis=-1) - _PIVOT) @ inv.T + _PIVOT  # (rows, cols, 3)
    d = inv[:, 2]
    axes = np.array([ident.face_width, 1.05, _FACE_DEPTH])
    dd, ww = d / axes**2, w0 / axes**2
    a = float(d @ dd)
    b = ww @ d
    c = np.einsum("...i,...i->...", w0, ww) - 1.0
    disc = np.maximum(b * b - a * c, 0.0)
    s = (-b + np.sqrt(disc)) / a  # the root nearer the camera
    q = w0 + s[..., None] * d
    normal = (q / axes**2) @ view.rotation.T  # back to the camera's axes
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
    light = np.array([0.6 * ident.light, -0.45, 1.0])
    light /= np.linalg.norm(light)
    lambert = np.clip(normal @ light, 0.0, 1.0)
    shade = (0.45 + 0.55 * lambert).astype(np.float32)  # 1 where the light falls straight on
    return cv2.resize(shade, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)


def _shading_marks(frame: _Frame, roi: tuple[int, int, int, int]) -> np.ndarray:
    """Soft shadows (positive) and highlights (negative) of the features on the skin, ``(h, w)`` float32."""
    ident, view = frame.identity, frame.view
    x0, y0, x1, y1 = roi
    marks = np.zeros((y1 - y0, x1 - x0), np.float32)
    offset = np.array([x0, y0], np.float64)

    def blob(xy_points, value, lift=0.0):
        cv2.fillPoly(marks, [_pts(_place(ident, view, xy_points, lift) - offset)], float(value),
                     cv2.LINE_8, _SUBPIXEL)

    ex, ey = ident.eye_spacing, ident.eye_y
    for side in (-1.0, 1.0):
        blob(_ellipse_points((side * ex, ey - 0.05), (1.6 * ident.eye_size, 0.11), 20), 0.16)  # eye sockets
        blob(_ellipse_points((side * 0.36 * ident.face_width / 0.75, 0.18), (0.16, 0.1), 16), -0.07)  # cheekbones
    nose = ident.nose_length
    shadow_side = -1.0 if ident.light > 0 else 1.0  # the side of the nose away from the light
    blob(np.array([[0.02 * shadow_side, ey + 0.02], [0.09 * shadow_side, ey + 0.05], [0.12 * shadow_side, nose],
                   [0.03 * shadow_side, nose + 0.02]]), 0.3, 0.1)
    blob(_ellipse_points((0.0, nose + 0.09), (0.1, 0.035), 16), 0.22)  # under the nose
    blob(_ellipse_points((0.0, nose - 0.04), (0.04, 0.05), 12), -0.12, 0.25)  # the tip catches the light
    blob(_ellipse_points((0.0, -0.55), (0.32, 0.2), 16), -0.06)  # forehead highlight
    gap = frame.state.mouth * _MAX_GAP
    blob(_ellipse_points((0.0, ident.mouth_y + 0.7 * gap + ident.lip_thickness + 0.06), (0.13, 0.04), 16), 0.14)
    sigma = max(0.05 * view.scale, 0.8)
    return cv2.GaussianBlur(marks, (0, 0), sigma)


def _draw_skin(frame: _Frame) -> None:
    """The face: a shaded silhouette, blended in with an anti-aliased mask."""
    ident, state, view, image = frame.identity, frame.state, frame.view, frame.image
    gap = state.mouth * _MAX_GAP
    outline = view.project(np.concatenate([_silhouette(ident, gap), np.zeros((48, 1))], axis=-1))
    roi = _bounds(outline, image.shape[1], image.shape[0])
    if roi is None:
        return
    x0, y0, x1, y1 = roi
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _fill(mask, outline - np.array([x0, y0]), (255,))
    shade = _shade(frame, roi) * (1.0 - _shading_marks(frame, roi))
    skin = np.array(ident.skin, np.float32) * shade[..., None]
    alpha = mask[..., None].astype(np.float32) / 255.0
    region = image[y0:y1, x0:x1]
    region[:] = np.clip(np.rint(region + alpha * (skin - region)), 0, 255).astype(np.uint8)


def _draw_brows(frame: _Frame) -> None:
    ident, view, image = frame.identity, frame.view, frame.image
    colour = _colour(_hair_colour(ident), 0.75) if _luma(ident.hair) > 60 else ident.hair
    t = np.linspace(0.0, 1.0, 12)
    for side in (-1.0, 1.0):
        inner = ident.eye_spacing - 1.0 * ident.eye_size
        outer = ident.eye_spacing + 1.35 * ident.eye_size
        x = side * (inner + (outer - inner) * t)
        base = ident.eye_y - ident.brow_height - ident.brow_arch * np.sin(np.pi * np.clip(t / 1.2, 0, 1)) + 0.03 * t
        thick = ident.brow_thickness * (1.0 - 0.6 * t)
        upper = np.stack([x, base - thick / 2], axis=-1)
        lower = np.stack([x, base + thick / 2], axis=-1)[::-1]
        _fill(image, _place(ident, view, np.concatenate([upper, lower]), 0.02), colour)


def _draw_eyes(frame: _Frame) -> None:
    """Eye whites within the lids, iris and pupil (following the gaze), lash line, crease; blinks lower the lid."""
    ident, state, view, image = frame.identity, frame.state, frame.view, frame.image
    t = np.linspace(0.0, 1.0, 13)
    half_w, up, down = ident.eye_size, 0.62 * ident.eye_size, 0.38 * ident.eye_size
    closed = float(np.clip(state.blink, 0.0, 1.0))
    gaze_pitch, gaze_yaw = state.gaze
    lash = (35.0, 25.0, 25.0)
    for side in (-1.0, 1.0):
        cx, cy = side * ident.eye_spacing, ident.eye_y
        x = cx + side * half_w * (2 * t - 1)  # inner corner (t = 0) to outer
        arch = np.sin(np.pi * t) ** 0.8
        # The lids follow the eye up and down (the upper one more), as real lids do; the face mesh reads vertical
        # gaze largely from them.
        lift = 0.14 * math.sin(gaze_pitch)
        lower_y = cy + (down - 0.4 * lift) * arch
        open_upper = cy - (up + 0.8 * lift) * np.sin(np.pi * t**1.1) ** 0.8
        upper_y = open_upper + closed * (cy + 0.7 * down * arch - open_upper)  # the lid comes down to the lower one
        upper = _surface(ident, np.stack([x, upper_y], -1), -0.02)
        lower = _surface(ident, np.stack([x, lower_y], -1), -0.02)
        crease = _surface(ident, np.stack([x, open_upper - 0.035 - 0.01 * arch], -1), 0.0)
        _line(image, view.project(crease[2:-1]), _colour(ident.skin, 0.72), 0.012 * view.scale)
        if closed < 0.97:
            eye = view.project(np.concatenate([upper, lower[::-1]]))
            # The iris turns with an eyeball of radius 0.14 face units (12 mm on an adult face).
            iris_centre = np.array([cx - 0.14 * math.sin(gaze_yaw), cy - 0.14 * math.sin(gaze_pitch)])
            r = 0.52 * ident.eye_size
            iris = _place(ident, view, _ellipse_points(iris_centre, (r, r), 24), 0.01)
            pupil = _place(ident, view, _ellipse_points(iris_centre, (0.42 * r, 0.42 * r), 16), 0.015)
            glint = _place(ident, view, _ellipse_points(iris_centre + (0.3 * r, -0.35 * r), (0.18 * r, 0.18 * r), 10),
                           0.02)
            _fill_clipped(image, eye, [
                (eye, (238.0, 234.0, 228.0)),
                (iris, ident.iris),
                (_place(ident, view, _ellipse_points(iris_centre, (0.7 * r, 0.7 * r), 20), 0.012),
                 _colour(ident.iris, 0.75)),
                (pupil, (12.0, 10.0, 10.0)),
                (glint, (250.0, 250.0, 250.0)),
                (view.project(np.concatenate([upper, upper[::-1] + (0, 0.35 * up, 0)])), (150.0, 140.0, 135.0)),
            ])
        _line(image, view.project(upper), lash, (0.025 - 0.008 * closed) * view.scale)
        _line(image, view.project(lower[1:-1]), _colour(ident.skin, 0.7), 0.008 * view.scale)


def _draw_nose(frame: _Frame) -> None:
    ident, view, image = frame.identity, frame.view, frame.image
    tip, width = ident.nose_length, ident.nose_width
    line = _colour(ident.skin, 0.62)
    for side in (-1.0, 1.0):
        wing = _ellipse_points((side * 0.7 * width, tip + 0.01), (0.45 * width, 0.05), 10,
                               np.pi * (0.5 - 0.6 * side), np.pi * (0.5 + 0.6 * side))
        _line(image, _place(ident, view, wing, 0.12), line, 0.012 * view.scale)
        nostril = _ellipse_points((side * 0.4 * width, tip + 0.045), (0.032, 0.016), 12)
        _fill(image, _place(ident, view, nostril, 0.14), _colour(ident.skin, 0.35))


def _mouth_contours(ident: Identity, state: FaceState, count: int = 15):
    """Outer upper, inner upper, inner lower and outer lower lip contours, each ``(count, 2)``, left to right."""
    gap = float(np.clip(state.mouth, 0.0, 1.0)) * _MAX_GAP
    rounding = float(np.clip(state.rounding, 0.0, 1.0))
    half = ident.mouth_width * (1.0 - 0.3 * rounding)
    x = half * np.linspace(-1.0, 1.0, count)
    profile = np.sqrt(np.clip(1.0 - (x / half) ** 2, 0.0, 1.0))
    centre = ident.mouth_y + 0.15 * gap  # the corners drop a little as the jaw opens
    inner_upper = centre - (0.3 * gap + 0.004) * profile ** 0.7
    inner_lower = centre + (0.7 * gap + 0.004) * profile ** 0.7
    upper_thick = 0.7 * ident.lip_thickness * (1.0 + 0.3 * rounding)
    # Cupid's bow: a dip in the middle of the upper lip between two small peaks.
    bow = 1.0 - 0.3 * np.exp(-((x / (0.18 * half)) ** 2)) + 0.12 * np.exp(-((np.abs(x) / half - 0.3) / 0.2) ** 2)
    outer_upper = inner_upper - upper_thick * profile**0.6 * bow
    outer_lower = inner_lower + ident.lip_thickness * (1.0 + 0.3 * rounding) * profile**0.7
    return tuple(np.stack([x, y], axis=-1) for y in (outer_upper, inner_upper, inner_lower, outer_lower))


def _draw_mouth(frame: _Frame) -> None:
    """Lips (upper a little darker), and when open the dark interior with upper teeth and tongue."""
    ident, state, view, image = frame.identity, frame.state, frame.view, frame.image
    contours = _mouth_contours(ident, state)
    outer_upper, inner_upper, inner_lower, outer_lower = (_place(ident, view, c, 0.05) for c in contours)
    _fill(image, np.concatenate([outer_upper, inner_upper[::-1]]), _colour(ident.lips, 0.88))
    _fill(image, np.concatenate([inner_lower, outer_lower[::-1]]), ident.lips)
    gap = float(np.clip(state.mouth, 0.0, 1.0)) * _MAX_GAP
    if gap > 0.01:
        interior = np.concatenate([inner_upper, inner_lower[::-1]])
        # Upper front teeth: a band hanging from the upper lip, and the tongue resting low; both clipped to the
        # mouth's interior, so only what the lips leave open shows.
        top = contours[1][:, 1].min() - 0.02
        half = 0.75 * contours[1][-1, 0]
        teeth = np.array([[-half, top], [half, top], [half, top + 0.075], [-half, top + 0.075]])
        tongue = _ellipse_points((0.0, contours[2][:, 1].max()), (0.8 * contours[2][-1, 0], 0.07), 20)
        _fill_clipped(image, interior, [
            (interior, (70.0, 22.0, 28.0)),
            (_place(ident, view, tongue, 0.0), (165.0, 78.0, 80.0)),
            (_place(ident, view, teeth, 0.03), (236.0, 232.0, 222.0)),
        ])
    _line(image, (inner_upper + inner_lower) / 2 if gap <= 0.01 else inner_upper, _colour(ident.lips, 0.45),
          0.012 * view.scale)
    highlight = _ellipse_points((0.0, ident.mouth_y + 0.7 * gap + 0.55 * ident.lip_thickness),
                                (0.35 * ident.mouth_width, 0.015), 12)
    _fill(image, _place(ident, view, highlight, 0.06), _colour(ident.lips, 1.18))


def _hairline(ident: Identity) -> np.ndarray:
    """The front hair's lower edge on the forehead, ``(n, 2)`` in the face plane, image left to right."""
    w = ident.face_width
    style = HAIR_STYLES[ident.hair_style]
    x = np.linspace(-1.0, 1.0, 21) * w * 1.02
    u = x / w
    if style == "receding":
        y = -0.86 + 0.12 * np.exp(-((np.abs(u) - 0.55) / 0.2) ** 2) + 0.5 * np.clip(np.abs(u) - 0.85, 0, 1)
    elif style == "fringe":
        y = -0.5 - 0.2 * (u + 1) / 2 + 0.6 * np.clip(np.abs(u) - 0.8, 0, 1)
    elif style == "bob":
        y = -0.56 + 0.02 * np.cos(7 * u) + 1.8 * np.clip(np.abs(u) - 0.85, 0, 1)
    else:  # short, long: a rounded hairline with temples
        y = -0.72 + 0.2 * u**2 + 1.2 * np.clip(np.abs(u) - 0.9, 0, 1)
        if style == "long":  # centre parting
            y -= 0.08 * np.exp(-(u / 0.12) ** 2)
    return np.stack([x, y], axis=-1)


def _draw_front_hair(frame: _Frame) -> None:
    """Hair over the top of the forehead, from the hairline up over the skull's cap."""
    ident, view, image = frame.identity, frame.view, frame.image
    colour = _hair_colour(ident)
    edge = _surface(ident, _hairline(ident), 0.03)
    centre, axes = _hair_cap(ident)
    top = _ellipse_points(centre, axes, 40, 0.0, -np.pi)  # right side, over the top, to the left
    cap = _surface(ident, top, 0.03)  # the same points as the back cap's top, so their outlines agree
    _fill(image, np.concatenate([view.project(edge), view.project(cap)]), colour)


def draw_face(identity: Identity, state: FaceState, size: int, background: np.ndarray | None = None) -> np.ndarray:
    """Draws one frame.

    Args:
        identity: Who.
        state: Pose, gaze, mouth, blink and camera of this frame.
        size: Side of the square image in pixels.
        background: The ``(size, size, 3)`` uint8 background to draw on (copied), e.g. a clip's precomputed one;
            None makes it.

    Returns:
        ``(size, size, 3)`` uint8 RGB image.
    """
    size = _check_size(size)
    base = _background_image(identity, size) if background is None else background
    frame = _Frame(identity, state, _make_view(identity, state, size), base.copy())
    # Painter's order, back to front.
    _draw_back_hair(frame)
    _draw_body(frame)
    _draw_ears(frame)
    _draw_skin(frame)
    _draw_brows(frame)
    _draw_eyes(frame)
    _draw_nose(frame)
    _draw_mouth(frame)
    _draw_front_hair(frame)
    return frame.image


# --------------------------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------------------------


def _wander(rng: np.random.Generator, num_frames: int, amplitude: float, low: float = 0.05,
            high: float = 0.4, components: int = 3) -> np.ndarray:
    """A slow random signal ``(num_frames,)`` within ``±amplitude``: a sum of sinusoids of random frequency (Hz)."""
    t = np.arange(num_frames) / FPS
    freqs = np.exp(rng.uniform(np.log(low), np.log(high), components))
    phases = rng.uniform(0, 2 * np.pi, components)
    weights = rng.uniform(0.3, 1.0, components)
    signal = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(axis=0)
    return amplitude * signal / weights.sum()


def _blinks(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Eye closure per frame ``(num_frames,)``: blinks every 2-5 s, each closing in 70 ms and opening in 130 ms."""
    t = np.arange(num_frames) / FPS
    closure = np.zeros(num_frames)
    start = rng.uniform(0.4, 2.5)
    while start < num_frames / FPS:
        u = t - start
        closing = np.clip(u / 0.07, 0.0, 1.0)
        opening = np.clip(1.0 - (u - 0.07) / 0.13, 0.0, 1.0)
        profile = np.where(u < 0.07, closing, opening) * (u >= 0)
        closure = np.maximum(closure, profile * profile * (3 - 2 * profile))  # smoothstep
        start += rng.uniform(2.0, 5.0)
    return closure


@dataclass(frozen=True)
class _Motion:
    pose: np.ndarray  # (N, 3)
    gaze: np.ndarray  # (N, 2)
    blink: np.ndarray  # (N,)
    shift: np.ndarray  # (N, 2)
    zoom: np.ndarray  # (N,)


def _sample_motion(rng: np.random.Generator, num_frames: int, voicing: np.ndarray) -> _Motion:
    """Head pose, gaze, blinks and camera motion for a clip; the head nods a little with the voice."""
    limit = math.radians(15.0)
    nod = _smooth(voicing.astype(np.float64), 7)
    nod = 0.05 * (nod - nod.mean())
    yaw = _wander(rng, num_frames, math.radians(11.0))
    pitch = _wander(rng, num_frames, math.radians(7.0)) + nod
    roll = _wander(rng, num_frames, math.radians(6.0))
    pose = np.clip(np.stack([yaw, pitch, roll], axis=-1), -limit, limit)
    # The eyes partly counter-rotate the head (people keep looking at the camera) and drift.
    gaze = np.stack([_wander(rng, num_frames, 0.12, 0.1, 0.5) - 0.3 * pitch,
                     _wander(rng, num_frames, 0.25, 0.1, 0.5) - 0.4 * yaw], axis=-1)
    shift = np.stack([_wander(rng, num_frames, 0.025, 0.03, 0.2), _wander(rng, num_frames, 0.02, 0.03, 0.2)], -1)
    zoom = 1.0 + _wander(rng, num_frames, 0.05, 0.03, 0.15)
    return _Motion(pose, gaze, _blinks(rng, num_frames), shift, zoom)


def _camera_track(identity: Identity, motion: _Motion, size: int) -> np.ndarray:
    """``(N, 3)`` camera in the tracks convention: the point between the eyes relative to the image centre in
    image widths, and depth relative to :data:`imtalker.preprocess.tracks.Z_REF` (face spanning half the image width)."""
    cams = np.zeros((motion.pose.shape[0], 3))
    point = _surface(identity, np.array([0.0, identity.eye_y]), -0.05)
    for k in range(cams.shape[0]):
        state = FaceState(pose=tuple(motion.pose[k]), shift=tuple(motion.shift[k]), zoom=float(motion.zoom[k]))
        view = _make_view(identity, state, size)
        px = view.project(point)
        cams[k, :2] = (px - size / 2.0) / size
        cams[k, 2] = size / (4.0 * view.scale)  # face height 2 units: z / Z_REF = (W / 2) / face height
    return cams


# --------------------------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------------------------


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
        camera: ``(N, 3)`` float32 camera track (module conventions).
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


def _seed_sequences(seed: int, index: int) -> list[np.random.SeedSequence]:
    """Independent streams for identity, speech and motion of clip ``index``: each depends on (seed, index) only."""
    return np.random.SeedSequence([int(seed), int(index)]).spawn(3)


def _check_seed(seed: int, index: int) -> None:
    for name, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputError(f"{name} must be a non-negative integer, got {value!r}")


def _check_seconds(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)) \
            or not math.isfinite(seconds) or not 1.0 / FPS <= seconds <= MAX_SECONDS:
        raise InputError(f"seconds must be a number between {1.0 / FPS:g} and {MAX_SECONDS:g}, got {seconds!r}")
    return float(seconds)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE \
            or size % 2:
        raise InputError(f"size must be an even number of pixels between {MIN_SIZE} and {MAX_SIZE}, got {size!r}")
    return int(size)


def _num_frames(seconds: float) -> int:
    return max(1, math.floor(_check_seconds(seconds) * FPS + 0.5))  # halves round up (round() goes to even)


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
    _check_seed(seed, index)
    size = _check_size(size)
    num_frames = _num_frames(seconds)
    identity_seed, speech_seed, motion_seed = _seed_sequences(seed, index)
    identity = sample_identity(np.random.default_rng(identity_seed))
    plan_rng, voice_rng, noise_rng = (np.random.default_rng(s) for s in speech_seed.spawn(3))
    speech = _synthesize(num_frames, sample_voice(voice_rng), plan_rng, noise_rng)
    motion = _sample_motion(np.random.default_rng(motion_seed), num_frames, speech.voicing)

    background = _background_image(identity, size)
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
        blink=motion.blink.astype(f32), camera=_camera_track(identity, motion, size).astype(f32),
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
    _check_seed(seed, index)
    identity_seed, _, _ = _seed_sequences(seed, index)
    return draw_face(sample_identity(np.random.default_rng(identity_seed)), FaceState(), size)


# --------------------------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------------------------

CORPUS_FILE = "corpus.json"


def clip_name(index: int) -> str:
    """File stem of clip ``index``: ``clip_00000``."""
    return f"clip_{index:05d}"


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes an .npz whose bytes depend only on the arrays (fixed zip timestamps), atomically."""
    temp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp.npz")
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(arrays):
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asarray(arrays[name], order="C"), allow_pickle=False)  # keeps 0-d
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, buffer.getvalue())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _write_json(path: Path, data: dict) -> None:
    temp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp.json")
    try:
        temp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _clip_done(out_dir: Path, index: int) -> bool:
    """A clip is complete when both files exist: the .npz is written only after the .mp4 is in place."""
    stem = clip_name(index)
    return (out_dir / f"{stem}.mp4").is_file() and (out_dir / f"{stem}.npz").is_file()


@dataclass(frozen=True)
class _ClipJob:
    out_dir: str
    seed: int
    index: int
    seconds: float
    size: int


def _write_clip(job: _ClipJob) -> int:
    """Makes and writes one clip (mp4, then npz); runs in worker processes."""
    from ...io.video import VideoWriter

    clip = make_clip(job.seed, job.seconds, job.size, index=job.index)
    out_dir = Path(job.out_dir)
    stem = clip_name(job.index)
    # "veryfast": about 4x faster than "medium" on these flat images at the same crf, files ~20% larger.
    with VideoWriter(out_dir / f"{stem}.mp4", fps=clip.fps, audio=clip.audio, sample_rate=clip.sample_rate,
                     crf=18, preset="veryfast") as writer:
        writer.write(clip.frames)
    _save_npz(out_dir / f"{stem}.npz", clip.ground_truth())
    return job.index


def _check_corpus_args(out_dir: Path, clips: int, seed: int, seconds: float, size: int, workers: int) -> None:
    if isinstance(clips, bool) or not isinstance(clips, (int, np.integer)) or clips < 1:
        raise InputError(f"number of clips must be a positive integer, got {clips!r}")
    _check_seed(seed, 0)
    _check_seconds(seconds)
    _check_size(size)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder '{out_dir}' exists and is not a folder")


def _corpus_info(clips: int, seed: int, seconds: float, size: int) -> dict:
    return {"generator": "imtalker.synthetic", "version": SYNTH_VERSION, "seed": int(seed), "clips": int(clips),
            "seconds": float(seconds), "num_frames": _num_frames(seconds), "size": int(size), "fps": FPS,
            "sample_rate": SAMPLE_RATE}


def _check_existing(out_dir: Path, wanted: dict) -> int:
    """Clips recorded in an existing corpus.json (0 if none); refuses a folder made with other settings."""
    path = out_dir / CORPUS_FILE
    if not path.is_file():
        return 0
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"'{path}' exists but cannot be read ({error}); remove it or use another folder") from None
    for key in ("version", "seed", "seconds", "size", "fps", "sample_rate"):
        if existing.get(key) != wanted[key]:
            raise InputError(f"'{out_dir}' holds a corpus made with {key}={existing.get(key)!r}, not "
                             f"{wanted[key]!r}: use another folder to make a different corpus")
    return int(existing.get("clips", 0))


def write_corpus(out_dir: str | os.PathLike, clips: int, seed: int = 0, seconds: float = 8.0, size: int = 256,
                 workers: int = 1, progress: bool = True) -> Path:
    """Writes a synthetic talking-head corpus: ``clip_00000.mp4`` + ``clip_00000.npz`` ... and ``corpus.json``.

    Each ``.mp4`` is H.264 + AAC at 25 fps; each ``.npz`` holds that clip's ground truth
    (:meth:`SyntheticClip.ground_truth`). Clip i depends only on ``(seed, i)``, so asking for more clips later
    grows the corpus. Clips already complete (both files present) are skipped, so an interrupted run resumes
    where it stopped. All files are written under temporary names and renamed into place.

    Args:
        out_dir: Folder (created when missing). If it holds a corpus made with other settings, it is refused.
        clips: Number of clips (indices ``0 .. clips - 1``).
        seed: Corpus seed.
        seconds: Length of each clip.
        size: Side of the square frames in pixels.
        workers: Processes making clips in parallel (spawned; 1 works in this process).
        progress: Show a progress bar on stderr.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        InputError: A bad argument, ``out_dir`` is a file, or it holds a different corpus.
    """
    out_dir = Path(out_dir)
    _check_corpus_args(out_dir, clips, seed, seconds, size, workers)
    info = _corpus_info(clips, seed, seconds, size)
    recorded = _check_existing(out_dir, info)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"output folder '{out_dir}' cannot be created ({error.strerror or error})") from None
    todo = [i for i in range(int(clips)) if not _clip_done(out_dir, i)]
    if len(todo) < clips:
        logger.info("%s: %d of %d clips already complete", out_dir, clips - len(todo), clips)
    jobs = [_ClipJob(str(out_dir), int(seed), i, float(seconds), int(size)) for i in todo]

    from tqdm import tqdm

    with tqdm(total=int(clips), initial=int(clips) - len(todo), unit="clip", desc="synth-data",
              disable=not progress, dynamic_ncols=True) as bar:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                _write_clip(job)
                bar.update(1)
        else:
            context = multiprocessing.get_context("spawn")  # no fork: safe with threads (x264, torch) in the parent
            with ProcessPoolExecutor(max_workers=min(int(workers), len(jobs)), mp_context=context) as pool:
                for future in as_completed([pool.submit(_write_clip, job) for job in jobs]):
                    future.result()
                    bar.update(1)
    info["clips"] = max(int(clips), recorded)
    _write_json(out_dir / CORPUS_FILE, info)
    return out_dir


# --------------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------------

_INNER_LIP_UPPER, _INNER_LIP_LOWER = 13, 14  # face-mesh points at the middle of the inner lips


def measure_mouth_opening(frames, detector=None) -> np.ndarray:
    """Measures how open the mouth is in each frame, with the face mesh.

    The opening is the distance between the inner-lip points (mesh 13 and 14) over the face height (mesh 10,
    the top of the forehead, to 152, the chin), so it does not depend on the image size or the face's distance.
    The mesh runs in tracking mode over the frames, which are taken to be consecutive frames of one video.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB frames, or an iterable of ``(H, W, 3)`` frames.
        detector: A :class:`imtalker.preprocess.face.FaceDetector` to use (its tracking is reset first); None makes one.

    Returns:
        ``(N,)`` float32: the opening per frame (about 0 closed to 0.1-0.15 wide open), NaN where no face mesh
        was found.
    """
    from ...preprocess.face import CHIN, FOREHEAD_TOP, FaceDetector

    own = detector is None
    if own:
        detector = FaceDetector(max_faces=1)
    values = []
    try:
        detector.reset_tracking()
        for frame in frames:
            faces = [f for f in detector.track(np.asarray(frame)) if f.landmarks is not None]
            if not faces:
                values.append(np.nan)
                continue
            points = max(faces, key=lambda f: f.area).landmarks
            gap = np.linalg.norm(points[_INNER_LIP_LOWER] - points[_INNER_LIP_UPPER])
            height = np.linalg.norm(points[CHIN] - points[FOREHEAD_TOP])
            values.append(gap / height if height > 0 else np.nan)
        detector.reset_tracking()
    finally:
        if own:
            detector.close()
    return np.asarray(values, np.float32)


# --------------------------------------------------------------------------------------------------------------
# Bundled demo inputs
# --------------------------------------------------------------------------------------------------------------

DEMO_ASSETS = ("demo_portrait.png", "demo_speech.wav")


def demo_asset(name: str) -> Path:
    """The path of a bundled demo input: ``demo_portrait.png`` (512 x 512 synthetic face) or ``demo_speech.wav``
    (about 4 s of synthetic speech, 16 kHz mono). ``scripts/make_demo_assets.py`` regenerates them.

    Args:
        name: File name, one of :data:`DEMO_ASSETS`.

    Returns:
        Path to the file inside the installed package.

    Raises:
        InputError: Unknown name.
        FileNotFoundError: The package was installed without its assets, or not as plain files.
    """
    from importlib.resources import files

    if name not in DEMO_ASSETS:
        raise InputError(f"unknown demo asset {name!r}; there are: {', '.join(DEMO_ASSETS)}")
    resource = files("imtalker").joinpath("assets", name)
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(f"demo asset {name} is missing from the installed package (looked in {path})")
    return path
