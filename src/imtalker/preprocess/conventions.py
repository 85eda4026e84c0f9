"""Head pose, camera and gaze in the published generator's conventions, and the conversions from ours.

The published motion generator was trained on SMIRK's FLAME head pose and orthographic camera and on L2CS-Net's
gaze; docs/conditions.md states each convention with the source lines it comes from. In short, per frame:

* ``pose`` (3,): FLAME's global head rotation as an axis-angle vector in radians (SMIRK ``pose_params``), in the
  FLAME frame: x to the image's right, y up, z towards the viewer. A head turned to its own left (towards the
  image's right) has ``pose[1] > 0``, a head tilted back (face looking up) ``pose[0] < 0``, a head tilted
  clockwise as seen in the image ``pose[2] < 0``.
* ``cam`` (3,): SMIRK's orthographic camera ``(s, tx, ty)``: a FLAME point ``X`` (metres) lands at
  ``u = s (X_x + tx)``, ``v = -s (X_y + ty)`` in the crop's normalised coordinates (``[-1, 1]``, x right, y down).
  We take the point between the inner eye corners as FLAME's origin (see :data:`EYE_POINT_NOTE`).
* ``gaze`` (2,): L2CS-Net's ``(pitch, yaw)`` in radians, which despite the names are the horizontal and the
  vertical angle of the gaze direction in the camera frame (head turn included):
  ``d = (-cos g1 sin g0, -sin g1, -cos g1 cos g0)`` (x right, y down, z away from the camera); looking into the
  lens is ``(0, 0)``, ``g0 > 0`` looks towards the image's left, ``g1 > 0`` looks up.

Our own (legacy) conventions are those of :mod:`imtalker.preprocess.tracks` and of the synthetic corpus's ground
truth: ``pose = (yaw, pitch, roll)`` Euler angles, ``gaze = (pitch, yaw)`` of the eyes relative to the head, and
``cam = (x / z, y / z, z / Z_REF)``. Track files carry a ``convention`` field (:data:`PUBLISHED` or
:data:`LEGACY`); a file without one is a legacy file and is converted when read (:func:`read_tracks`).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = [
    "CONVENTIONS",
    "LEGACY",
    "PUBLISHED",
    "Z_REF_METRES",
    "axis_angle_to_matrix",
    "cam_to_smirk",
    "euler_to_flame",
    "flame_to_euler",
    "gaze_to_l2cs",
    "l2cs_to_direction",
    "l2cs_to_gaze",
    "legacy_to_published",
    "matrix_to_axis_angle",
    "published_to_legacy",
    "read_tracks",
    "smirk_to_cam",
    "write_tracks",
]

PUBLISHED = "smirk-flame/l2cs"  # the published generator's inputs
LEGACY = "imtalker-euler"  # this package's tracks before conventions were recorded (no field in the file)
CONVENTIONS = (PUBLISHED, LEGACY)

# Our Z_REF (preprocess.tracks: the depth at which a 162 mm forehead-to-chin face spans half the image width under a
# focal length of one image width) in FLAME's unit, metres. FLAME's mean head has about our face model's
# proportions (inner eye corners 36 mm apart, outer 89 mm, mouth corners 53 mm, in the template SMIRK ships).
Z_REF_METRES = 0.324
EYE_POINT_NOTE = ("FLAME's origin is taken to be the point between the inner eye corners; the FLAME model files are "
                  "licence-gated, so tx, ty may differ from SMIRK's by a constant offset of a few centimetres")


def _rows(array, width: int, name: str) -> np.ndarray:
    values = np.asarray(array, np.float64)
    if values.ndim not in (1, 2) or values.shape[-1] != width:
        raise InputError(f"{name} must have shape (frames, {width}), got {values.shape}")
    return values


# --------------------------------------------------------------------------------------------------------------
# Rotations (vectorised over frames)
# --------------------------------------------------------------------------------------------------------------


def _axis_rotations(angle: np.ndarray, axis: int) -> np.ndarray:
    """(..., 3, 3) right-handed rotations by ``angle`` (...,) radians about coordinate axis 0, 1 or 2."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.zeros(angle.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    rot[..., axis, axis] = 1.0
    rot[..., i, i], rot[..., i, j], rot[..., j, i], rot[..., j, j] = c, -s, s, c
    return rot


def axis_angle_to_matrix(vectors: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: (..., 3) axis-angle vectors -> (..., 3, 3) rotation matrices."""
    vectors = np.asarray(vectors, np.float64)
    angle = np.linalg.norm(vectors, axis=-1, keepdims=True)  # (..., 1)
    axis = vectors / np.maximum(angle, 1e-12)
    x, y, z = np.moveaxis(axis, -1, 0)
    zero = np.zeros_like(x)
    cross = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    sin, cos = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + sin * cross + (1 - cos) * (cross @ cross)


def matrix_to_axis_angle(rotations: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle vectors, angle in [0, pi]."""
    rot = np.asarray(rotations, np.float64)
    cos = np.clip((np.trace(rot, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    skew = np.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0],
                     rot[..., 1, 0] - rot[..., 0, 1]], -1)  # 2 sin(angle) axis
    sin = np.sin(angle)
    small = sin < 1e-6
    result = skew * (angle / np.where(small, 1.0, 2 * sin))[..., None]
    result = np.where(small[..., None] & (angle[..., None] < 1.0), skew / 2, result)  # near identity: sin ~ angle
    near_pi = small & (angle >= 1.0)
    if near_pi.any():  # angle ~ pi: the axis is the column of R + I with the largest norm
        plus = rot[near_pi] + np.eye(3)
        column = np.take_along_axis(plus, np.argmax(np.linalg.norm(plus, axis=-2), -1)[:, None, None]
                                    .repeat(3, axis=1), axis=-1)[..., 0]
        result[near_pi] = column / np.linalg.norm(column, axis=-1, keepdims=True) * np.pi
    return result


def euler_to_flame(pose) -> np.ndarray:
    """Our ``(yaw, pitch, roll)`` -> FLAME axis-angle (both ``(T, 3)`` radians).

    Our head rotation, in a frame with x to the image's right, y up and z towards the camera (FLAME's frame), is
    ``Ry(-yaw) Rx(-pitch) Rz(-roll)`` (:func:`imtalker.preprocess.tracks.rotation_matrix` before its flip to
    OpenCV axes); FLAME's global pose is that matrix as an axis-angle vector.
    """
    yaw, pitch, roll = np.moveaxis(_rows(pose, 3, "pose"), -1, 0)
    rotation = _axis_rotations(-yaw, 1) @ _axis_rotations(-pitch, 0) @ _axis_rotations(-roll, 2)
    return matrix_to_axis_angle(rotation)


def flame_to_euler(flame_pose) -> np.ndarray:
    """FLAME axis-angle -> our ``(yaw, pitch, roll)``; inverts :func:`euler_to_flame` for |pitch| < 90 degrees."""
    rot = axis_angle_to_matrix(_rows(flame_pose, 3, "pose"))
    # R = Ry(a) Rx(b) Rz(c) has R[1, 2] = -sin b, R[0, 2] / R[2, 2] = tan a, R[1, 0] / R[1, 1] = tan c.
    b = np.arcsin(np.clip(-rot[..., 1, 2], -1.0, 1.0))
    a = np.arctan2(rot[..., 0, 2], rot[..., 2, 2])
    c = np.arctan2(rot[..., 1, 0], rot[..., 1, 1])
    return -np.stack([a, b, c], -1)


# --------------------------------------------------------------------------------------------------------------
# Camera
# --------------------------------------------------------------------------------------------------------------


def cam_to_smirk(cam) -> np.ndarray:
    """Our ``(x / z, y / z, z / Z_REF)`` -> SMIRK's ``(s, tx, ty)`` for a square frame.

    The normalised crop coordinate of the eye point is ``u = 2 x / z`` (the focal length is one image width, the
    frame spans 2), and weak perspective at depth ``z`` metres is ``s = 2 / z``; then ``u = s tx`` and
    ``v = -s ty`` with the eye point as FLAME's origin (:data:`EYE_POINT_NOTE`).
    """
    x, y, depth = np.moveaxis(_rows(cam, 3, "cam"), -1, 0)
    if not (depth > 0).all():
        raise InputError("cam depth (its third column) must be positive")
    scale = 2.0 / (depth * Z_REF_METRES)
    return np.stack([scale, 2.0 * x / scale, -2.0 * y / scale], -1)


def smirk_to_cam(smirk_cam) -> np.ndarray:
    """SMIRK's ``(s, tx, ty)`` -> our ``(x / z, y / z, z / Z_REF)``; inverts :func:`cam_to_smirk`."""
    scale, tx, ty = np.moveaxis(_rows(smirk_cam, 3, "cam"), -1, 0)
    if not (scale > 0).all():
        raise InputError("SMIRK cam scale (its first column) must be positive")
    return np.stack([scale * tx / 2.0, -scale * ty / 2.0, 2.0 / (scale * Z_REF_METRES)], -1)


# --------------------------------------------------------------------------------------------------------------
# Gaze
# --------------------------------------------------------------------------------------------------------------


def l2cs_to_direction(gaze) -> np.ndarray:
    """L2CS ``(pitch, yaw)`` -> unit gaze vectors ``(T, 3)`` in the camera frame (x right, y down, z away)."""
    g0, g1 = np.moveaxis(_rows(gaze, 2, "gaze"), -1, 0)
    return np.stack([-np.cos(g1) * np.sin(g0), -np.sin(g1), -np.cos(g1) * np.cos(g0)], -1)


def gaze_to_l2cs(gaze, flame_pose) -> np.ndarray:
    """Our eye gaze relative to the head ``(pitch, yaw)`` -> L2CS's camera-frame ``(pitch, yaw)``.

    Args:
        gaze: ``(T, 2)`` our pitch (> 0 up), yaw (> 0 towards the image's left), relative to the head.
        flame_pose: ``(T, 3)`` the head's FLAME axis-angle (the gaze turns with the head).
    """
    pitch, yaw = np.moveaxis(_rows(gaze, 2, "gaze"), -1, 0)
    in_head = np.stack([-np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)], -1)  # FLAME axes
    seen = (axis_angle_to_matrix(_rows(flame_pose, 3, "pose")) @ in_head[..., None])[..., 0]
    g1 = np.arcsin(np.clip(seen[..., 1], -1.0, 1.0))  # camera y = -FLAME y
    g0 = np.arctan2(-seen[..., 0], seen[..., 2])  # camera (x, z) = FLAME (x, -z)
    return np.stack([g0, g1], -1)


def l2cs_to_gaze(l2cs_gaze, flame_pose) -> np.ndarray:
    """L2CS's camera-frame ``(pitch, yaw)`` -> our ``(pitch, yaw)`` relative to the head; inverts :func:`gaze_to_l2cs`."""
    seen = l2cs_to_direction(l2cs_gaze) * np.array([1.0, -1.0, -1.0])  # camera -> FLAME axes
    in_head = (np.swapaxes(axis_angle_to_matrix(_rows(flame_pose, 3, "pose")), -1, -2) @ seen[..., None])[..., 0]
    pitch = np.arcsin(np.clip(in_head[..., 1], -1.0, 1.0))
    yaw = np.arctan2(-in_head[..., 0], in_head[..., 2])
    return np.stack([pitch, yaw], -1)


# --------------------------------------------------------------------------------------------------------------
# Whole tracks and track files
# --------------------------------------------------------------------------------------------------------------


def legacy_to_published(tracks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{"pose", "gaze", "cam"}`` in our legacy conventions -> the published ones (float32; other keys kept)."""
    flame = euler_to_flame(tracks["pose"])
    converted = dict(tracks, pose=flame, gaze=gaze_to_l2cs(tracks["gaze"], flame), cam=cam_to_smirk(tracks["cam"]))
    return {key: np.asarray(value, np.float32) if key in ("pose", "gaze", "cam") else value
            for key, value in converted.items()}


def published_to_legacy(tracks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverts :func:`legacy_to_published`."""
    converted = dict(tracks, pose=flame_to_euler(tracks["pose"]), gaze=l2cs_to_gaze(tracks["gaze"], tracks["pose"]),
                     cam=smirk_to_cam(tracks["cam"]))
    return {key: np.asarray(value, np.float32) if key in ("pose", "gaze", "cam") else value
            for key, value in converted.items()}


def write_tracks(path: str | os.PathLike[str], tracks: dict[str, np.ndarray]) -> None:
    """Writes ``{"pose", "gaze", "cam"}`` in the published conventions to an ``.npz`` with its ``convention``,
    atomically (a temporary file moved into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, convention=np.asarray(PUBLISHED), **{k: np.asarray(tracks[k], np.float32)
                                                         for k in ("pose", "gaze", "cam")})
    os.replace(tmp, path)


def read_tracks(source) -> dict[str, np.ndarray]:
    """Reads a track file (or the dict of an open ``.npz``) and returns its tracks in the published conventions.

    A file without a ``convention`` field was written before conventions were recorded, in the legacy
    conventions, and is converted.

    Raises:
        InputError: an unknown convention, or pose / gaze / cam missing.
    """
    if isinstance(source, (str, os.PathLike)):
        try:
            with np.load(source, allow_pickle=False) as stored:
                arrays = {key: stored[key] for key in stored.files}
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise InputError(f"tracks file {source} is not readable: {err}") from None
        return read_tracks(arrays)
    convention = str(source["convention"]) if "convention" in source else LEGACY
    if convention not in CONVENTIONS:
        raise InputError(f"unknown tracks convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    missing = [key for key in ("pose", "gaze", "cam") if key not in source]
    if missing:
        raise InputError(f"tracks lack {', '.join(missing)}")
    tracks = {key: np.asarray(source[key], np.float32) for key in ("pose", "gaze", "cam")}
    return legacy_to_published(tracks) if convention == LEGACY else tracks
