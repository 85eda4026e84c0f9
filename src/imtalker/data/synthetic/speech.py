"""Speech: formant-synthesised syllables (:func:`synthesize_speech`) and the per-frame mouth opening and lip
rounding that follow them, from the same syllable envelopes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from .params import check_seed, frame_count, seed_sequences

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


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
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
    formants = moving_average(formants, 15) * voice.tract  # 30 ms glides

    # Intonation: declination over each phrase, accents on stressed syllables, slow wander and jitter.
    wander = 0.04 * np.sin(2 * np.pi * 0.3 * times + rng.uniform(0, 2 * np.pi))
    jitter = voice.jitter * moving_average(rng.standard_normal(times.shape), 3)
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
    check_seed(seed, index)
    _, speech_seed, _ = seed_sequences(seed, index)
    plan_rng, voice_rng, noise_rng = (np.random.default_rng(s) for s in speech_seed.spawn(3))
    return synthesize_frames(frame_count(seconds), sample_voice(voice_rng), plan_rng, noise_rng)


def synthesize_frames(num_frames: int, voice: Voice, plan_rng: np.random.Generator,
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
