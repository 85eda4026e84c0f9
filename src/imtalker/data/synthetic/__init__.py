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

The parts, in dependency order: :mod:`.params` (version, argument limits, seed streams), :mod:`.speech`,
:mod:`.faces` (identity and per-frame state), :mod:`.drawing`, :mod:`.motion`, :mod:`.clips`, :mod:`.corpus`,
:mod:`.measure` and :mod:`.demo_inputs`. This package re-exports their public names; import from here.
"""

from __future__ import annotations

from .clips import SyntheticClip, make_clip, make_portrait
from .corpus import CORPUS_FILE, clip_name, write_corpus
from .demo_inputs import DEMO_ASSETS, demo_asset
from .drawing import draw_face
from .faces import HAIR_STYLES, FaceState, Identity, sample_identity
from .measure import measure_mouth_opening
from .params import MAX_SECONDS, MAX_SIZE, MIN_SIZE, SYNTH_VERSION
from .speech import VOWELS, Speech, Syllable, Voice, Vowel, plan_syllables, sample_voice, synthesize_speech

__all__ = [
    "CORPUS_FILE",
    "DEMO_ASSETS",
    "HAIR_STYLES",
    "MAX_SECONDS",
    "MAX_SIZE",
    "MIN_SIZE",
    "SYNTH_VERSION",
    "VOWELS",
    "FaceState",
    "Identity",
    "Speech",
    "Syllable",
    "SyntheticClip",
    "Voice",
    "Vowel",
    "clip_name",
    "demo_asset",
    "draw_face",
    "make_clip",
    "make_portrait",
    "measure_mouth_opening",
    "plan_syllables",
    "sample_identity",
    "sample_voice",
    "synthesize_speech",
    "write_corpus",
]
