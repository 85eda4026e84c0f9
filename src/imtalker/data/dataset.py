"""The layout of a prepared dataset folder, which `imtalker prepare` writes and training and evaluation read::

    OUT/manifest.json                 settings, clips (id, source, frames, split) and skipped videos (reason)
    OUT/clips/<id>/frames.npy         (N, S, S, 3) uint8 RGB crops
    OUT/clips/<id>/landmarks.npy      (N, 478, 2) float32, crop pixels (NaN where no face was found)
    OUT/clips/<id>/masks.npy          (N, S, S) uint8: 1 eyes, 2 mouth, 0 elsewhere
    OUT/clips/<id>/tracks.npz         pose (N, 3), gaze (N, 2), cam (N, 3) float32 and their convention
                                      (docs/conditions.md; a file without one is in the legacy conventions)
    OUT/clips/<id>/audio.npy          (N * 640,) float32 at 16 kHz, cut or zero-padded to the frames
    OUT/clips/<id>/audio_features.npy (N, A) float32, only with a frozen audio encoder
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError

MANIFEST = "manifest.json"
CLIPS = "clips"
MANIFEST_VERSION = 2  # 2: clip ids carry a digest of the video's content (1: of its path)


def load_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a prepared dataset folder.

    Raises:
        InputError: the folder has no readable manifest (it was not made by `imtalker prepare`).
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError(f"{folder} is not a prepared dataset (no {MANIFEST}); run `imtalker prepare` first")
    try:
        manifest = json.loads(path.read_text())
        manifest["clips"]
    except (ValueError, KeyError) as err:
        raise InputError(f"{path} is not a dataset manifest ({err})") from None
    return manifest
