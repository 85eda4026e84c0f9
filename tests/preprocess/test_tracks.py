"""Head pose, gaze and camera tracks (imtalker.preprocess.tracks): sign conventions, a synthetic pose round trip and a video."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from imtalker.errors import InputError, NoFaceError
from imtalker.preprocess.conventions import flame_to_euler
from imtalker.preprocess.face import NUM_LANDMARKS, FaceDetector
from imtalker.preprocess.tracks import (
    EYEBALL_CENTRES,
    EYEBALL_RADIUS_MM,
    FACE_MODEL,
    Z_REF,
    camera_matrix,
    estimate_gaze,
    estimate_head_pose,
    estimate_tracks,
    rotation_matrix,
    rotation_to_pose,
    tracks_from_video,
)

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("mediapipe")
av = pytest.importorskip("av")

DEG = math.pi / 180


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as det:
        yield det


@pytest.fixture(scope="module")
def astronaut_face(detector):
    image = skimage_data.astronaut()
    faces = detector.detect(image)
    assert len(faces) == 1 and faces[0].landmarks is not None
    return image, faces[0]


def _measure(detector, image):
    """(pose, cam, gaze) of the only face in ``image``."""
    faces = detector.detect(image)
    assert len(faces) == 1 and faces[0].landmarks is not None
    pose, cam = estimate_head_pose(faces[0].landmarks, image.shape[1], image.shape[0])
    return pose, cam, estimate_gaze(faces[0].landmarks, image.shape[1], image.shape[0])


def _towards(position) -> np.ndarray:
    """Rotation that turns the optical axis towards ``position``, the smallest one (no twist about the ray)."""
    direction = np.asarray(position, np.float64) / np.linalg.norm(position)
    axis = np.cross((0.0, 0.0, 1.0), direction)
    if np.linalg.norm(axis) < 1e-12:
        return np.eye(3)
    angle = math.acos(direction[2])
    return cv2.Rodrigues(axis / np.linalg.norm(axis) * angle)[0]


def _project(pose_deg, tvec, width=640, height=480) -> np.ndarray:
    """The face model at ``tvec`` (mm, camera frame) seen under ``pose_deg`` (yaw, pitch, roll in degrees,
    relative to the line of sight), as a (478, 2) landmark array."""
    rotation = _towards(tvec) @ rotation_matrix(np.radians(pose_deg))
    model = np.array(list(FACE_MODEL.values()), np.float64)
    points, _ = cv2.projectPoints(model, cv2.Rodrigues(rotation)[0], np.asarray(tvec, np.float64),
                                  camera_matrix(width, height), None)
    landmarks = np.zeros((NUM_LANDMARKS, 2), np.float32)
    landmarks[list(FACE_MODEL)] = points.reshape(-1, 2)
    return landmarks


def _project_with_eyes(pose_deg, gaze_deg, tvec, width=640, height=480) -> np.ndarray:
    """`_project`, plus open lids and irises looking ``gaze_deg`` (pitch, yaw relative to the head) on the
    module's eyeball model."""
    landmarks = _project(pose_deg, tvec, width, height)
    rotation = _towards(tvec) @ rotation_matrix(np.radians(pose_deg))
    pitch, yaw = np.radians(gaze_deg)
    looking = np.array([-math.cos(pitch) * math.sin(yaw), math.sin(pitch), math.cos(pitch) * math.cos(yaw)])
    points, indices = [], []
    for centre, (outer, inner, upper, lower, iris) in zip(EYEBALL_CENTRES, ((33, 133, 159, 145, 468),
                                                                            (263, 362, 386, 374, 473))):
        middle = (np.array(FACE_MODEL[outer]) + np.array(FACE_MODEL[inner])) / 2
        points += [centre + EYEBALL_RADIUS_MM * looking, middle + (0, 5, 0), middle - (0, 5, 0)]
        indices += [iris, upper, lower]
    projected, _ = cv2.projectPoints(np.array(points), cv2.Rodrigues(rotation)[0], np.asarray(tvec, np.float64),
                                     camera_matrix(width, height), None)
    landmarks[indices] = projected.reshape(-1, 2)
    return landmarks


# --------------------------------------------------------------------------------------------------------------
# Conventions and the pose fit, on synthetic landmarks
# --------------------------------------------------------------------------------------------------------------


def test_rotation_signs_follow_the_documented_convention():
    front = _project((0, 0, 0), (0, 0, 600))
    yawed = _project((20, 0, 0), (0, 0, 600))
    pitched = _project((0, 20, 0), (0, 0, 600))
    rolled = _project((0, 0, 20), (0, 0, 600))
    nose, right_outer, left_outer = 1, 33, 263
    assert yawed[nose, 0] < front[nose, 0] - 5  # yaw > 0: the nose turns to the image's left
    assert pitched[nose, 1] < front[nose, 1] - 5  # pitch > 0: the face looks up
    # roll > 0: clockwise on screen, so the eye on the image's right goes down
    assert rolled[left_outer, 1] - rolled[right_outer, 1] > 20
    assert front[right_outer, 0] < front[left_outer, 0]  # 33 is the subject's right eye, on the image's left
    for pose in [(20, -10, 5), (-70, 40, -80), (0, 0, 0)]:
        np.testing.assert_allclose(rotation_to_pose(rotation_matrix(np.radians(pose))), np.radians(pose), atol=1e-9)


def test_solve_pnp_recovers_a_known_pose():
    pose_deg, tvec = (20.0, -10.0, 5.0), (30.0, -20.0, 650.0)
    landmarks = _project(pose_deg, tvec)
    pose, cam = estimate_head_pose(landmarks, 640, 480)
    np.testing.assert_allclose(np.degrees(pose), pose_deg, atol=1.0)
    np.testing.assert_allclose(cam, (30 / 650, -20 / 650, 650 / Z_REF), rtol=1e-3, atol=1e-4)


def test_sliding_the_picture_keeps_the_angles():
    """Angles are relative to the line of sight, so the same face anywhere in the frame reads the same."""
    centred = _project((10.0, 5.0, -5.0), (0.0, 0.0, 600.0))
    pose, _ = estimate_head_pose(centred, 640, 480)
    for shift in [(200.0, 0.0), (0.0, -150.0), (-220.0, 160.0)]:
        moved = centred.copy()
        moved[list(FACE_MODEL)] += shift
        pose_moved, cam = estimate_head_pose(moved, 640, 480)
        # a shifted picture is not exactly a turned camera (perspective stretches off-axis faces): ~2 degrees
        # left at 25 degrees off axis, against the 25 degrees an optical-axis-relative pose would change
        np.testing.assert_allclose(np.degrees(pose_moved), np.degrees(pose), atol=2.0)
        np.testing.assert_allclose(cam[:2], np.array(shift) / 640, atol=0.01)  # offset in image widths


@pytest.mark.parametrize("pose_deg", [(0.0, 0.0, 0.0), (30.0, -15.0, 10.0), (-25.0, 20.0, -5.0)])
def test_gaze_is_read_back_relative_to_the_head_whatever_it_turns(pose_deg):
    """The eyeball turns with the fitted head: eyes that look ahead read (0, 0) under any head pose, and a look
    to one side reads its own angles, not those plus a share of the head's turn."""
    for gaze_deg in [(0.0, 0.0), (10.0, -20.0), (-8.0, 15.0)]:
        landmarks = _project_with_eyes(pose_deg, gaze_deg, (40.0, -30.0, 600.0))
        gaze = np.degrees(estimate_gaze(landmarks, 640, 480))
        np.testing.assert_allclose(gaze, gaze_deg, atol=0.5)


def test_bad_landmarks():
    with pytest.raises(InputError, match="shape"):
        estimate_head_pose(np.zeros((68, 2)), 640, 480)
    with pytest.raises(InputError, match="cannot be estimated"):
        estimate_head_pose(np.zeros((NUM_LANDMARKS, 2)), 640, 480)
    with pytest.raises(InputError, match="shape"):
        estimate_gaze(np.zeros((NUM_LANDMARKS, 3)), 640, 480)
    with pytest.raises(InputError, match="cannot be estimated"):
        estimate_gaze(np.zeros((NUM_LANDMARKS, 2)), 640, 480)


# --------------------------------------------------------------------------------------------------------------
# A real portrait
# --------------------------------------------------------------------------------------------------------------


def test_frontal_portrait_is_near_zero(astronaut_face):
    image, face = astronaut_face
    pose, cam = estimate_head_pose(face.landmarks, image.shape[1], image.shape[0])
    yaw, pitch, _ = np.degrees(pose)
    assert abs(yaw) < 4 and abs(pitch) < 4  # she faces the camera (FRONTAL_TILT_DEGREES)
    # the face is left of and above the image centre, and small (forehead to chin ~ a fifth of the width)
    assert -0.2 < cam[0] < 0 and -0.5 < cam[1] < 0 and 1.5 < cam[2] < 4
    gaze = estimate_gaze(face.landmarks, image.shape[1], image.shape[0])
    assert np.all(np.abs(np.degrees(gaze)) < 8)  # and looks into it


def test_in_plane_rotation_changes_roll(detector, astronaut_face):
    image, face = astronaut_face
    pose, _, _ = _measure(detector, image)
    # cv2's positive angle turns the picture counter-clockwise on screen: roll (clockwise > 0) drops by 15
    matrix = cv2.getRotationMatrix2D(face.center, 15.0, 1.0)
    rotated = cv2.warpAffine(image, matrix, image.shape[1::-1], flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
    turned, _, _ = _measure(detector, rotated)
    change = np.degrees(turned - pose)
    assert change[2] == pytest.approx(-15.0, abs=3.0)
    assert abs(change[0]) < 5 and abs(change[1]) < 5


def test_mirror_flips_yaw_and_gaze_yaw(detector, astronaut_face):
    image, _ = astronaut_face
    pose, cam, gaze = _measure(detector, image)
    pose_m, cam_m, gaze_m = _measure(detector, np.ascontiguousarray(image[:, ::-1]))
    pose, pose_m, gaze, gaze_m = (np.degrees(v) for v in (pose, pose_m, gaze, gaze_m))
    assert pose_m[0] == pytest.approx(-pose[0], abs=3.0)  # yaw
    assert pose_m[1] == pytest.approx(pose[1], abs=3.0)  # pitch
    assert pose_m[2] == pytest.approx(-pose[2], abs=3.0)  # roll
    assert gaze_m[1] == pytest.approx(-gaze[1], abs=4.0)  # gaze yaw
    assert gaze_m[0] == pytest.approx(gaze[0], abs=4.0)  # gaze pitch
    assert cam_m[0] == pytest.approx(-cam[0], abs=0.01)


def test_closed_eyes_give_no_gaze(astronaut_face):
    image, face = astronaut_face
    landmarks = face.landmarks.copy()
    for upper, lower, iris in ((159, 145, 468), (386, 374, 473)):
        landmarks[[upper, lower, iris]] = landmarks[[upper, lower]].mean(axis=0)  # lids shut
    assert np.isnan(estimate_gaze(landmarks, image.shape[1], image.shape[0])).all()


# --------------------------------------------------------------------------------------------------------------
# Tracks over a video
# --------------------------------------------------------------------------------------------------------------


def _write_video(path, frames, fps):
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _moving_crops(image, centre, count=20, size=256):
    """``count`` crops of ``size`` around ``centre`` that drift right 2 px and turn 0.5 degrees per frame."""
    frames = []
    for k in range(count):
        matrix = cv2.getRotationMatrix2D(centre, 0.5 * k, 1.0)
        matrix[:, 2] += (size / 2 - centre[0] + 2 * k, size / 2 - centre[1])  # bring the face to the crop
        frames.append(cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE))
    return frames


def test_tracks_from_video(tmp_path, detector, astronaut_face):
    image, face = astronaut_face
    path = tmp_path / "drive.mp4"
    _write_video(path, _moving_crops(image, face.center), fps=30)
    tracks = tracks_from_video(path, fps=25, detector=detector)
    expected = math.ceil(20 / 30 * 25)  # read_frames resamples 20 frames at 30 fps to 17 at 25 fps
    assert set(tracks) == {"pose", "gaze", "cam"}
    assert tracks["pose"].shape == (expected, 3) and tracks["gaze"].shape == (expected, 2)
    assert tracks["cam"].shape == (expected, 3)
    for value in tracks.values():
        assert value.dtype == np.float32 and np.isfinite(value).all()
    # in the published conventions (FLAME axis-angle, SMIRK cam): the picture turns counter-clockwise by ~9
    # degrees over the clip, a positive rotation about FLAME's z (towards the viewer); smoothing trims the ends
    flame_z = np.degrees(tracks["pose"][:, 2])
    assert 4 < flame_z[-1] - flame_z[0] < 12
    assert -12 < np.degrees(flame_to_euler(tracks["pose"])[-1, 2] - flame_to_euler(tracks["pose"])[0, 2]) < -4
    assert tracks["cam"][-1, 1] > tracks["cam"][0, 1]  # the face drifts right: SMIRK tx grows


def test_frames_without_a_face_hold_values(detector, astronaut_face):
    image, _ = astronaut_face
    blank = np.full_like(image, 128)
    tracks = estimate_tracks([blank, image, blank, image], detector=detector, smooth=False)
    for value in tracks.values():
        assert len(value) == 4 and np.isfinite(value).all()
        np.testing.assert_array_equal(value[0], value[1])  # leading miss takes the first face's values
        np.testing.assert_array_equal(value[2], value[1])  # a later miss holds the previous frame's
    smoothed = estimate_tracks([blank, image, blank, image], detector=detector)  # shorter than the window
    for key, value in smoothed.items():
        assert value.shape == tracks[key].shape and np.isfinite(value).all()


def test_blank_video_has_no_face(tmp_path, detector):
    path = tmp_path / "blank.mp4"
    _write_video(path, [np.full((128, 128, 3), 90, np.uint8)] * 8, fps=25)
    with pytest.raises(NoFaceError, match="no face"):
        tracks_from_video(path, detector=detector)
    with pytest.raises(InputError, match="no frames"):
        estimate_tracks([], detector=detector)
