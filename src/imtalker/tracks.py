"""Head pose, camera and gaze tracks in the published generator's conventions: the public API.

    from imtalker import tracks
    found = tracks.tracks_from_video("talking.mp4")    # {"pose": (T, 3), "gaze": (T, 2), "cam": (T, 3)} float32
    tracks.write_tracks("talking-tracks.npz", found)   # with its convention; `imtalker generate --pose` reads it
    turn = tracks.track_from_description("turn:-20..20deg", "pose", num_frames=100)

``pose`` is FLAME's global head rotation as an axis-angle vector (SMIRK ``pose_params``), ``cam`` SMIRK's
orthographic camera ``(s, tx, ty)``, ``gaze`` L2CS-Net's ``(pitch, yaw)``, all in radians where angles; the
conventions, their sources and the accuracy measured on synthetic heads are in docs/conditions.md. The estimates
come from mediapipe's face mesh (a generic 3-D face model fitted with PnP, and the iris landmarks):
:mod:`imtalker.preprocess.tracks`. Conversions from and to this package's earlier (legacy) conventions:
:mod:`imtalker.preprocess.conventions`; descriptions such as ``yaw=20deg``: :mod:`imtalker.preprocess.conditions`.
"""

from __future__ import annotations

from .preprocess.conditions import HeadMotion, parse_description, track_from_description
from .preprocess.conventions import (
    LEGACY,
    PUBLISHED,
    cam_to_smirk,
    euler_to_flame,
    flame_to_euler,
    gaze_to_l2cs,
    l2cs_to_gaze,
    legacy_to_published,
    published_to_legacy,
    read_tracks,
    smirk_to_cam,
    write_tracks,
)
from .preprocess.tracks import estimate_tracks as tracks_from_frames
from .preprocess.tracks import tracks_from_video

__all__ = [
    "LEGACY",
    "PUBLISHED",
    "HeadMotion",
    "cam_to_smirk",
    "euler_to_flame",
    "flame_to_euler",
    "gaze_to_l2cs",
    "l2cs_to_gaze",
    "legacy_to_published",
    "parse_description",
    "published_to_legacy",
    "read_tracks",
    "smirk_to_cam",
    "track_from_description",
    "tracks_from_frames",
    "tracks_from_video",
    "write_tracks",
]
