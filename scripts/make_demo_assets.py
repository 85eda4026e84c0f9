"""Regenerates the bundled demo inputs in src/imtalker/assets/ from imtalker.data.synthetic, byte for byte.

    python scripts/make_demo_assets.py            # writes src/imtalker/assets/demo_portrait.png, demo_speech.wav
    python scripts/make_demo_assets.py --out DIR  # somewhere else

demo_portrait.png: a 512 x 512 synthetic face, frontal, eyes open, mouth closed (checked with the face detector).
demo_speech.wav: about 4 s of synthetic speech, 16 kHz mono 16-bit PCM.
Both are deterministic functions of the seeds below, so rerunning the script reproduces the same files.
"""

from __future__ import annotations

import argparse
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from imtalker.constants import SAMPLE_RATE
from imtalker.data.synthetic import make_portrait, synthesize_speech

PORTRAIT_SEED, PORTRAIT_INDEX = 0, 105  # chosen by eye: short dark hair, clear features, plain background
SPEECH_SEED, SPEECH_SECONDS = 7, 4.0
PORTRAIT_SIZE = 512
FADE_SECONDS = 0.02  # the clip may end inside a syllable; a short fade avoids a click


def write_portrait(path: Path) -> np.ndarray:
    image = make_portrait(PORTRAIT_SEED, PORTRAIT_SIZE, index=PORTRAIT_INDEX)
    Image.fromarray(image).save(path, format="PNG", optimize=True)
    return image


def write_speech(path: Path) -> np.ndarray:
    audio = synthesize_speech(SPEECH_SECONDS, SPEECH_SEED).audio.copy()
    fade = int(FADE_SECONDS * SAMPLE_RATE)
    audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    pcm = np.clip(np.rint(audio * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return audio


def check_face(image: np.ndarray) -> None:
    """Fails unless the face detector finds exactly one face with landmarks: the demo must work as a source."""
    from imtalker.preprocess.face import FaceDetector

    with FaceDetector() as detector:
        faces = detector.detect(image)
    if len(faces) != 1 or faces[0].landmarks is None:
        raise SystemExit(f"the demo portrait is not detected as one face with landmarks ({len(faces)} faces)")
    print(f"portrait: face found, score {faces[0].score:.2f}, box {[round(v) for v in faces[0].box]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[1] / "src" / "imtalker" / "assets"
    parser.add_argument("--out", type=Path, default=default, help="output folder")
    parser.add_argument("--no-check", action="store_true", help="skip the face-detector check (needs mediapipe)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    portrait = write_portrait(args.out / "demo_portrait.png")
    write_speech(args.out / "demo_speech.wav")
    if not args.no_check:
        check_face(portrait)
    for name in ("demo_portrait.png", "demo_speech.wav"):
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
