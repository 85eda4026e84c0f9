"""Head pose, gaze and camera tracks from face-mesh landmarks, for the motion generator's optional conditions.

The generator can follow a driving video's head pose ``(T, 3)``, gaze ``(T, 2)`` and camera translation
``(T, 3)``. This module measures them from mediapipe face-mesh landmarks (:mod:`imtalker.preprocess.face`):

* head pose: a generic 3-D face model (:data:`FACE_MODEL`) is fitted to a dozen stable landmarks with
  ``cv2.solvePnP`` under a pinhole camera whose focal length is the image width (:func:`estimate_head_pose`);
* gaze: each iris landmark's ray from the camera meets an eyeball placed by that fit; the direction from the
  eyeball's centre to that point is where the eye looks (:func:`estimate_gaze`);
* :func:`estimate_tracks` / :func:`tracks_from_video` run both over a video, fill frames without a face and
  smooth the result lightly.

Tracks over a video (:func:`estimate_tracks`, :func:`tracks_from_faces`, :func:`tracks_from_video`) are returned in
the published generator's conventions (FLAME axis-angle pose, SMIRK camera, L2CS gaze; see
:mod:`imtalker.preprocess.conventions` and docs/conditions.md). The per-frame functions measure in our own conventions,
the "legacy" ones, which are also the synthetic corpus's ground truth (all angles in radians):
    * ``pose = (yaw, pitch, roll)``. ``yaw > 0``: the head turns towards the image's left (the subject's right).
      ``pitch > 0``: the head tilts back, the face looks up. ``roll > 0``: the head tilts clockwise as seen in
      the image. A frontal, upright face is ``(0, 0, 0)``. The rotation is composed as yaw after pitch after
      roll (see :func:`rotation_matrix`), and measured against the line of sight from the camera to the head
      rather than against the optical axis, so a face that looks into the lens reads ``(0, 0, 0)`` anywhere in
      the frame and sliding a picture sideways changes the angles by at most a degree or two (perspective
      stretches faces far off axis); the position is in ``cam``.
    * ``gaze = (pitch, yaw)`` of the eyes *relative to the head*, with the same signs: ``yaw > 0`` looks
      towards the image's left, ``pitch > 0`` looks up.
    * ``cam = (x / z, y / z, z / Z_REF)``: the model origin (between the inner eye corners) in the OpenCV camera
      frame (x right, y down, z away from the camera). The first two are its offset from the image centre in
      units of the focal length, i.e. of the image width, so they do not depend on resolution; the third is
      its depth relative to :data:`Z_REF`, the distance at which the face (forehead to chin) spans half the
      image width, about how talking-head crops are framed. It grows as the face gets smaller in the frame.

These are approximations: the face model is one generic adult head, so a person with a larger face reads as
nearer, and the focal length is a guess (a normal lens: horizontal field of view of about 53 degrees).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..constants import FPS
from ..errors import InputError, NoFaceError
from .conventions import legacy_to_published
from .face import NUM_LANDMARKS, Face, FaceDetector

logger = logging.getLogger(__name__)

__all__ = [
    "EYEBALL_CENTRES",
    "EYEBALL_RADIUS_MM",
    "FACE_MODEL",
    "FRONTAL_TILT_DEGREES",
    "IRIS_AHEAD_MM",
    "IRIS_RAISE_MM",
    "SMOOTH_WINDOW",
    "Z_REF",
    "camera_matrix",
    "estimate_gaze",
    "estimate_head_pose",
    "estimate_tracks",
    "rotation_matrix",
    "rotation_to_pose",
    "tracks_from_video",
]

# Generic face model from anthropometry: mediapipe landmark index -> (x, y, z) in millimetres, upright adult head.
# x points to the image's right (the subject's left), y up, z towards the camera; the origin is midway between
# the inner eye corners. Values are rounded adult averages in the spirit of Farkas-style facial anthropometry
# (inner-canthal width ~32 mm, outer-canthal width ~90 mm, mouth width ~52 mm, bizygomatic width ~135 mm, eye
# line to menton ~112 mm), with depths from typical profile proportions (nose tip ~40 mm in front of the outer
# eye corners). Only points that stay put when a person talks are used: no lips other than their corners, no
# jaw line below the cheeks, so mouth movement barely moves the fit.
_ANTHROPOMETRIC_FACE_MODEL: dict[int, tuple[float, float, float]] = {
    33: (-45.0, 2.0, -12.0),  # right eye, outer corner (image left); canthal tilt puts it ~2 mm above the inner
    133: (-16.0, 0.0, 0.0),  # right eye, inner corner
    362: (16.0, 0.0, 0.0),  # left eye, inner corner
    263: (45.0, 2.0, -12.0),  # left eye, outer corner
    168: (0.0, 4.0, 10.0),  # nasal bridge between the eyes, a little above the eye line
    1: (0.0, -42.0, 30.0),  # nose tip, the most forward point
    61: (-26.0, -66.0, 2.0),  # mouth corner, right
    291: (26.0, -66.0, 2.0),  # mouth corner, left
    152: (0.0, -112.0, 0.0),  # chin, lowest point
    10: (0.0, 50.0, 0.0),  # top of the forehead (top of the face mesh)
    234: (-68.0, -12.0, -45.0),  # right cheek contour in front of the ear (near the zygion)
    454: (68.0, -12.0, -45.0),  # left cheek contour
}

# The depths above are guesses, and with them a face that looks into the lens reads tilted back by about 8 degrees:
# the median over 36 synthetic training clips whose true pose is known is +8.1 (each face between +3 and +13), and
# a real portrait that looks at the camera (scikit-image's astronaut) reads +7.6. The model is turned forward by
# that much about its x axis (the origin stays between the inner eye corners), so such faces read level; the
# held-out clips' errors are in BENCHMARKS.md and docs/conditions.md.
FRONTAL_TILT_DEGREES = 8.0


def _axis_rotation(axis: int, angle: float) -> np.ndarray:
    """Right-handed rotation by ``angle`` radians about coordinate axis 0 (x), 1 (y) or 2 (z)."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


_TILT = _axis_rotation(0, -math.radians(FRONTAL_TILT_DEGREES))  # the forehead goes back, the chin forward

# The face model in the head frame (x to the image's right, y up, z towards the camera; a face looking into the
# lens is upright and faces +z): what the pose fit uses. Landmark index -> (x, y, z) in millimetres.
FACE_MODEL: dict[int, tuple[float, float, float]] = {
    index: tuple(float(v) for v in _TILT @ np.array(point)) for index, point in _ANTHROPOMETRIC_FACE_MODEL.items()
}
_MODEL_INDICES = np.array(list(FACE_MODEL), np.int64)
_MODEL_POINTS = np.array(list(FACE_MODEL.values()), np.float64)  # (N, 3)

# Forehead (10) to chin (152) on the model; Z_REF is where that length spans half the image width when the
# focal length is the image width: W * FACE_HEIGHT / Z_REF = W / 2.
_FACE_HEIGHT_MM = _ANTHROPOMETRIC_FACE_MODEL[10][1] - _ANTHROPOMETRIC_FACE_MODEL[152][1]  # 162 mm
Z_REF = 2.0 * _FACE_HEIGHT_MM  # mm

# The model's head frame (y up, z towards the camera) seen by the OpenCV camera (y down, z away): a frontal face
# is this rotation, by 180 degrees about x.
_FLIP = np.diag([1.0, -1.0, -1.0])

# Eyes: (corner on the image's left, corner on the image's right, upper lid, lower lid, iris centre) for the
# subject's right eye, then the left eye.
_EYES = ((33, 133, 159, 145, 468), (362, 263, 386, 374, 473))
# Gaze model: each eyeball turns about its centre, EYEBALL_RADIUS_MM behind the iris centre; looking straight
# ahead, the iris centre lies IRIS_AHEAD_MM in front of the middle of the eye's corners (the cornea bulges past
# the corners; with less, a head turn reads as the eyes turning too) and IRIS_RAISE_MM above it (the corners sit a
# little below the pupils: without it, eyes looking ahead read as looking up by about 8 degrees on the training
# clips and on the astronaut). The iris landmark's ray from the camera meets that sphere, placed by the head pose
# fit; the direction from the centre to that point is the gaze. Refraction by the cornea is ignored.
EYEBALL_RADIUS_MM = 11.0
IRIS_AHEAD_MM = 8.0
IRIS_RAISE_MM = 0.7


def _eyeball_centre(outer: int, inner: int) -> np.ndarray:
    corners = (np.array(FACE_MODEL[outer]) + np.array(FACE_MODEL[inner])) / 2
    return corners + np.array([0.0, IRIS_RAISE_MM, IRIS_AHEAD_MM - EYEBALL_RADIUS_MM])


# (2, 3) rotation centres of the subject's right eye, then the left one, in the head frame (mm)
EYEBALL_CENTRES = np.stack([_eyeball_centre(33, 133), _eyeball_centre(263, 362)])
# An eye whose lid opening is below this fraction of its width is taken as closed (a blink): the iris landmark
# then sits on the lid line and says nothing about gaze.
_MIN_EYE_OPENING = 0.1

SMOOTH_WINDOW = 5  # frames in the centred moving average (0.2 s at 25 fps: removes mesh jitter, keeps nods)


# --------------------------------------------------------------------------------------------------------------
# Rotations
# --------------------------------------------------------------------------------------------------------------


def rotation_matrix(pose: np.ndarray) -> np.ndarray:
    """The camera-frame rotation of a head with the given pose.

    In the head frame (x to the image's right, y up, z towards the camera) the head is turned by
    ``Ry(-yaw) @ Rx(-pitch) @ Rz(-roll)`` (right-handed rotations about the axes; the minus signs give the
    module's sign conventions). The result is that rotation seen by the OpenCV camera for a head on the optical
    axis, ready for ``cv2.projectPoints`` with :data:`FACE_MODEL` points. For a head elsewhere, first apply
    the rotation that turns the optical axis towards the head (poses are relative to the line of sight).

    Args:
        pose: ``(3,)`` yaw, pitch, roll in radians.

    Returns:
        ``(3, 3)`` float64 rotation matrix.
    """
    yaw, pitch, roll = (float(v) for v in np.asarray(pose, np.float64).reshape(3))
    head = _axis_rotation(1, -yaw) @ _axis_rotation(0, -pitch) @ _axis_rotation(2, -roll)
    return _FLIP @ head


def rotation_to_pose(rotation: np.ndarray) -> np.ndarray:
    """Inverts :func:`rotation_matrix`: yaw, pitch, roll of a camera-frame head rotation.

    Args:
        rotation: ``(3, 3)`` rotation matrix (model to OpenCV camera).

    Returns:
        ``(3,)`` float64 yaw, pitch, roll in radians; pitch in [-pi/2, pi/2].
    """
    head = _FLIP @ np.asarray(rotation, np.float64)  # _FLIP is its own inverse
    # head = Ry(a) Rx(b) Rz(c) with a = -yaw, b = -pitch, c = -roll has
    # head[1, 2] = -sin b, head[0, 2] / head[2, 2] = tan a, head[1, 0] / head[1, 1] = tan c.
    b = math.asin(max(-1.0, min(1.0, -head[1, 2])))
    a = math.atan2(head[0, 2], head[2, 2])
    c = math.atan2(head[1, 0], head[1, 1])
    return np.array([-a, -b, -c], np.float64)


# --------------------------------------------------------------------------------------------------------------
# Per-frame estimates
# --------------------------------------------------------------------------------------------------------------


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, np.float64)
    if points.ndim != 2 or points.shape != (NUM_LANDMARKS, 2):
        raise InputError(f"landmarks must have shape ({NUM_LANDMARKS}, 2), got {points.shape}")
    return points


def camera_matrix(width: int, height: int) -> np.ndarray:
    """The pinhole camera assumed here: focal length = image width, principal point at the image centre.

    Landmarks are in continuous pixel coordinates (the image spans ``[0, W] x [0, H]``), so the centre is
    ``(W / 2, H / 2)``.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        ``(3, 3)`` float64 intrinsic matrix.
    """
    if not (width > 0 and height > 0):
        raise InputError(f"image size must be positive, got {width} x {height}")
    f = float(width)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], np.float64)


def _ray_rotation(position: np.ndarray) -> np.ndarray:
    """The smallest rotation that turns the optical axis (0, 0, 1) towards ``position`` (camera frame)."""
    direction = np.asarray(position, np.float64) / np.linalg.norm(position)
    axis = np.array([-direction[1], direction[0], 0.0])  # (0, 0, 1) x direction
    sin = float(np.linalg.norm(axis))
    if sin < 1e-12:
        return np.eye(3)
    angle = math.atan2(sin, float(direction[2]))
    return cv2.Rodrigues(axis / sin * angle)[0]


@dataclass(frozen=True)
class _HeadFit:
    """The face model fitted to one face: model (head frame) -> OpenCV camera frame, in millimetres."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,) the model origin (between the inner eye corners)
    camera: np.ndarray  # (3, 3) intrinsics (camera_matrix)

    def pose_and_cam(self) -> tuple[np.ndarray, np.ndarray]:
        # Measure the rotation against the line of sight, not the optical axis: a face that looks at the camera
        # from the edge of the frame is turned by the ray's angle in camera coordinates but looks frontal, and the
        # generator cares about how the head looks; where it is goes into ``cam``.
        x, y, z = self.translation
        rotation = _ray_rotation(self.translation).T @ self.rotation
        return rotation_to_pose(rotation), np.array([x / z, y / z, z / Z_REF], np.float64)


def _fit_head(points: np.ndarray, width: int, height: int) -> _HeadFit | None:
    """Fits the face model; None when the fit fails or lands behind the camera."""
    image_points = points[_MODEL_INDICES]  # (N, 2)
    if not np.isfinite(image_points).all():
        return None
    camera = camera_matrix(width, height)
    f = camera[0, 0]
    # Start from a frontal face at the distance its spread implies: solvePnP's own start for non-planar points
    # (a DLT) is poor for a dozen nearly coplanar points and can settle on the mirrored, face-away solution.
    spread_model = np.sqrt(((_MODEL_POINTS[:, :2] - _MODEL_POINTS[:, :2].mean(0)) ** 2).sum(1).mean())
    spread_image = np.sqrt(((image_points - image_points.mean(0)) ** 2).sum(1).mean())
    if not spread_image > 1e-6:
        return None
    z0 = f * spread_model / spread_image
    centre = (image_points.mean(0) - camera[:2, 2]) * z0 / f  # where the points' centroid is, in mm
    model_centre = _FLIP @ _MODEL_POINTS.mean(0)
    tvec = np.array([centre[0] - model_centre[0], centre[1] - model_centre[1], z0], np.float64).reshape(3, 1)
    rvec = np.array([math.pi, 0.0, 0.0], np.float64).reshape(3, 1)  # Rodrigues vector of _FLIP
    ok, rvec, tvec = cv2.solvePnP(
        _MODEL_POINTS, image_points, camera, None, rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE
    )
    if not ok or not (np.isfinite(rvec).all() and np.isfinite(tvec).all()) or tvec[2, 0] <= 0:
        return None
    return _HeadFit(cv2.Rodrigues(rvec)[0], tvec.reshape(3), camera)


def _fit_landmarks(landmarks: np.ndarray, width: int, height: int) -> tuple[np.ndarray, _HeadFit]:
    """The checked landmarks and the face model fitted to them; InputError when they cannot be fitted."""
    points = _check_landmarks(landmarks)
    fit = _fit_head(points, width, height)
    if fit is None:
        raise InputError("the head pose cannot be estimated from these landmarks")
    return points, fit


def estimate_head_pose(landmarks: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Estimates head rotation and position from face-mesh landmarks.

    Fits :data:`FACE_MODEL` with ``cv2.solvePnP`` (iterative, started from a frontal face) under
    :func:`camera_matrix`, then expresses the rotation relative to the line of sight to the head. See the
    module docstring for the conventions.

    Args:
        landmarks: ``(478, 2)`` face-mesh points in pixels (only the :data:`FACE_MODEL` indices are read).
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        ``(rotation, translation)``: ``(3,)`` float64 yaw, pitch, roll in radians, and ``(3,)`` float64
        ``(x / z, y / z, z / Z_REF)`` of the model origin in the OpenCV camera frame.

    Raises:
        InputError: wrong landmark shape or image size, or the model cannot be fitted (e.g. degenerate points).
    """
    return _fit_landmarks(landmarks, width, height)[1].pose_and_cam()


def _eye_is_open(points: np.ndarray, eye: tuple[int, ...]) -> bool:
    """Whether the lids are apart by at least :data:`_MIN_EYE_OPENING` of the eye's width (across its corners)."""
    left, right, upper, lower, _ = eye
    axis = points[right] - points[left]
    width = float(np.hypot(*axis))
    if not width > 1e-6:
        return False
    across = np.array([-axis[1], axis[0]]) / width  # image-down across the eye
    return float((points[lower] - points[upper]) @ across) / width >= _MIN_EYE_OPENING


def _gaze_from_fit(points: np.ndarray, fit: _HeadFit) -> np.ndarray:
    """``(pitch, yaw)`` relative to the head from the iris landmarks and the head fit (NaN: both eyes closed)."""
    directions = []
    to_ray = np.linalg.inv(fit.camera)
    for eye, centre in zip(_EYES, EYEBALL_CENTRES):
        iris = points[eye[4]]
        if not (np.isfinite(iris).all() and _eye_is_open(points, eye)):
            continue
        centre = fit.rotation @ centre + fit.translation  # camera frame, mm
        ray = to_ray @ np.array([iris[0], iris[1], 1.0])
        ray /= np.linalg.norm(ray)
        along = float(ray @ centre)  # the ray's point nearest the centre is at this depth along it
        gap = along * along - float(centre @ centre) + EYEBALL_RADIUS_MM ** 2
        # where the ray meets the eyeball on the camera's side; a ray that misses it (an iris point beyond the
        # eye's edge) takes its point nearest the eyeball
        iris_point = (along - math.sqrt(gap) if gap > 0 else along) * ray
        direction = iris_point - centre
        directions.append(fit.rotation.T @ (direction / np.linalg.norm(direction)))  # head frame
    if not directions:
        return np.full(2, np.nan)
    x, y, z = np.mean(directions, axis=0)
    return np.array([math.atan2(y, math.hypot(x, z)), math.atan2(-x, z)], np.float64)


def estimate_gaze(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Estimates where the eyes look relative to the head, from the iris centres and the head pose.

    The face model is fitted as in :func:`estimate_head_pose`; each open eye is an eyeball of radius
    :data:`EYEBALL_RADIUS_MM` about its centre in :data:`EYEBALL_CENTRES`, and the iris landmark's ray from the
    camera meets it where the eye looks. The open eyes' directions are averaged. Because the eyeball moves with the
    fitted head, turning the head does not read as turning the eyes. Good to a few degrees sideways; up and down,
    mediapipe's iris points move less than the eyes do (see docs/conditions.md).

    Args:
        landmarks: ``(478, 2)`` face-mesh points in pixels, with the iris centres (468, 473).
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        ``(2,)`` float64 ``(pitch, yaw)`` in radians: pitch > 0 looks up, yaw > 0 looks towards the image's left.
        Both are NaN when both eyes are closed (a blink), where the iris points carry no gaze.

    Raises:
        InputError: wrong landmark shape or image size, or the head pose cannot be fitted.
    """
    return _gaze_from_fit(*_fit_landmarks(landmarks, width, height))


# --------------------------------------------------------------------------------------------------------------
# Tracks over a video
# --------------------------------------------------------------------------------------------------------------


def pick_followed_face(faces: list[Face], previous: tuple[float, float] | None) -> Face | None:
    """The face with landmarks nearest the one followed so far (the largest at the start), or None."""
    candidates = [face for face in faces if face.landmarks is not None]
    if not candidates:
        return None
    if previous is None:
        return max(candidates, key=lambda face: face.area)
    return min(candidates, key=lambda face: math.hypot(face.center[0] - previous[0], face.center[1] - previous[1]))


def _fill_gaps(values: np.ndarray, valid: np.ndarray, default: np.ndarray | None = None) -> np.ndarray:
    """Holds the last valid row over invalid ones; leading invalid rows take the first valid row.

    Holding (rather than interpolating) never invents motion the video did not show, and short gaps
    (a blink, a missed detection) are then evened out by the smoothing.
    """
    if not valid.any():
        if default is None:
            raise ValueError("no valid row")
        return np.broadcast_to(default, values.shape).copy()
    index = np.where(valid, np.arange(len(values)), -1)
    index = np.maximum.accumulate(index)
    index[index < 0] = int(np.argmax(valid))
    return values[index]


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0; near the ends it averages the frames that exist (no padding bias)."""
    half = window // 2
    if half < 1 or len(values) < 2:
        return values
    count = len(values)
    sums = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])  # (T + 1, D)
    lo = np.clip(np.arange(count) - half, 0, count)
    hi = np.clip(np.arange(count) + half + 1, 0, count)
    return (sums[hi] - sums[lo]) / (hi - lo)[:, None]


def estimate_tracks(
    frames: Iterable[np.ndarray], detector: FaceDetector | None = None, smooth: bool = True
) -> dict[str, np.ndarray]:
    """Measures head pose, gaze and camera translation in every frame of a video.

    Frames are read one at a time (a generator works, nothing is kept). The face mesh runs in tracking mode
    (:meth:`FaceDetector.track`); when several faces are present, the one nearest the face followed so far is
    used. Frames without a usable face hold the previous frame's values (leading ones take the first face's);
    gaze is held the same way through blinks.

    Args:
        frames: ``(H, W, 3)`` RGB uint8 frames of one video, in order.
        detector: The face detector to use; its tracking is reset first. None makes (and closes) one.
        smooth: Apply a centred moving average of :data:`SMOOTH_WINDOW` frames, which removes the face
            mesh's frame-to-frame jitter.

    Returns:
        ``{"pose": (T, 3), "gaze": (T, 2), "cam": (T, 3)}`` float32 arrays in the published conventions (FLAME
        axis-angle, SMIRK camera, L2CS gaze: :mod:`imtalker.preprocess.conventions`).

    Raises:
        InputError: no frames, or a frame is not an RGB uint8 image.
        NoFaceError: no frame has a face.
    """
    if detector is None:
        with FaceDetector() as own:
            return estimate_tracks(frames, own, smooth)
    detector.reset_tracking()
    faces: list[Face | None] = []
    size = None
    previous = None
    for frame in frames:
        face = pick_followed_face(detector.track(frame), previous)
        if face is not None:
            previous = face.center
        faces.append(face)
        size = (frame.shape[1], frame.shape[0])
    if size is None:
        raise InputError("no frames to track")
    return tracks_from_faces(faces, *size, smooth=smooth)


def tracks_from_faces(
    faces: Sequence[Face | None], width: int, height: int, smooth: bool = True
) -> dict[str, np.ndarray]:
    """Head pose, gaze and camera tracks from the face followed in each frame of a video.

    Frames without a usable face (None, or no landmarks) hold the previous frame's values (leading ones take the
    first face's); gaze is held the same way through blinks.

    Args:
        faces: The followed face of each frame, in order, or None where there is none.
        width, height: Frame size in pixels (the landmarks are in that frame's pixels).
        smooth: Apply a centred moving average of :data:`SMOOTH_WINDOW` frames.

    Returns:
        ``{"pose": (T, 3), "gaze": (T, 2), "cam": (T, 3)}`` float32 arrays in the published conventions,
        measured (and smoothed) in ours and converted by :func:`imtalker.preprocess.conventions.legacy_to_published`.

    Raises:
        InputError: no frames.
        NoFaceError: no frame has a face.
    """
    pose, gaze, cam = [], [], []
    face_found, gaze_found = [], []
    for face in faces:
        fit = None
        if face is not None and face.landmarks is not None:
            points = face.landmarks.astype(np.float64)
            fit = _fit_head(points, width, height)
        if fit is None:
            pose.append(np.zeros(3))
            cam.append(np.zeros(3))
            gaze.append(np.full(2, np.nan))
            face_found.append(False)
        else:
            head_pose, head_cam = fit.pose_and_cam()
            pose.append(head_pose)
            cam.append(head_cam)
            gaze.append(_gaze_from_fit(points, fit))
            face_found.append(True)
        gaze_found.append(bool(np.isfinite(gaze[-1]).all()))

    if not pose:
        raise InputError("no frames to track")
    face_found = np.array(face_found)
    if not face_found.any():
        raise NoFaceError(f"no face found in any of the {len(pose)} frames of the video")
    missing = int((~face_found).sum())
    if missing:
        logger.info("head tracks: %d of %d frames have no face; they hold the nearest earlier values",
                    missing, len(pose))
    tracks = {
        "pose": _fill_gaps(np.array(pose), face_found),
        # eyes closed in every frame: no gaze measured, so look straight ahead
        "gaze": _fill_gaps(np.array(gaze), np.array(gaze_found), default=np.zeros(2)),
        "cam": _fill_gaps(np.array(cam), face_found),
    }
    if smooth:
        tracks = {key: _moving_average(value, SMOOTH_WINDOW) for key, value in tracks.items()}
    return legacy_to_published(tracks)


def tracks_from_video(
    path: str | os.PathLike[str],
    fps: float = FPS,
    max_seconds: float | None = None,
    detector: FaceDetector | None = None,
) -> dict[str, np.ndarray]:
    """Reads a video at ``fps`` and measures its head pose, gaze and camera tracks (:func:`estimate_tracks`).

    Args:
        path: The video file.
        fps: Frame rate to sample at; the tracks have one row per sampled frame.
        max_seconds: Refuse videos longer than this.
        detector: The face detector to use; None makes (and closes) one.

    Returns:
        ``{"pose": (T, 3), "gaze": (T, 2), "cam": (T, 3)}`` float32 arrays in the published conventions.

    Raises:
        InputError: the video cannot be read or is too long.
        NoFaceError: no frame has a face.
    """
    from ..io.video import read_frames  # PyAV is only needed when reading files

    return estimate_tracks(read_frames(path, fps=fps, max_seconds=max_seconds), detector)
