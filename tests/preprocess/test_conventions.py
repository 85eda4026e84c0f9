"""The conversions between our tracks and the published generator's (FLAME axis-angle, SMIRK cam, L2CS gaze), on
synthetic heads with known rotations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imtalker.errors import InputError
from imtalker.preprocess.conventions import (
    LEGACY,
    PUBLISHED,
    axis_angle_to_matrix,
    cam_to_smirk,
    euler_to_flame,
    flame_to_euler,
    gaze_to_l2cs,
    l2cs_to_direction,
    l2cs_to_gaze,
    legacy_to_published,
    matrix_to_axis_angle,
    published_to_legacy,
    read_tracks,
    smirk_to_cam,
    write_tracks,
)
from imtalker.preprocess.tracks import rotation_matrix

NOSE = np.array([0.0, 0.0, 1.0])  # FLAME frame: the nose points at the viewer (z) in the rest pose
FLIP = np.diag([1.0, -1.0, -1.0])  # FLAME axes <-> OpenCV camera axes


def _random_poses(count=200, limit_deg=40.0, seed=0):
    return np.radians(np.random.default_rng(seed).uniform(-limit_deg, limit_deg, (count, 3)))


def test_axis_angle_round_trip_including_large_angles():
    rng = np.random.default_rng(1)
    axes = rng.normal(size=(100, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    vectors = axes * rng.uniform(0, math.pi - 1e-3, (100, 1))
    vectors[0] = 0.0
    np.testing.assert_allclose(matrix_to_axis_angle(axis_angle_to_matrix(vectors)), vectors, atol=1e-6)
    half_turn = matrix_to_axis_angle(axis_angle_to_matrix(np.array([[0.0, math.pi, 0.0]])))
    np.testing.assert_allclose(np.abs(half_turn), [[0.0, math.pi, 0.0]], atol=1e-6)


def test_flame_pose_is_the_same_rotation_as_ours():
    poses = _random_poses()
    flame = euler_to_flame(poses)
    ours = np.stack([FLIP @ rotation_matrix(p) for p in poses])  # back from OpenCV to FLAME axes
    np.testing.assert_allclose(axis_angle_to_matrix(flame), ours, atol=1e-9)
    np.testing.assert_allclose(flame_to_euler(flame), poses, atol=1e-9)


@pytest.mark.parametrize("which, angle, expected_axis, sign", [
    (0, 20.0, 1, -1),  # our yaw > 0: turned towards the image's left (its right) -> FLAME y-rotation < 0
    (1, 20.0, 0, -1),  # our pitch > 0: looks up -> FLAME x-rotation < 0 (a positive x-rotation tips the nose down)
    (2, 20.0, 2, -1),  # our roll > 0: clockwise in the image -> FLAME z-rotation < 0
])
def test_single_axis_signs(which, angle, expected_axis, sign):
    pose = np.zeros((1, 3))
    pose[0, which] = math.radians(angle)
    flame = euler_to_flame(pose)[0]
    assert abs(flame[expected_axis]) == pytest.approx(math.radians(angle))
    assert np.sign(flame[expected_axis]) == sign
    assert np.abs(np.delete(flame, expected_axis)).max() < 1e-12


def test_head_turned_to_its_left_points_the_nose_to_the_image_right():
    # FLAME: x to the image's right, y up, z to the viewer; a positive y-rotation turns the nose towards +x.
    nose = axis_angle_to_matrix(np.array([0.0, math.radians(30), 0.0])) @ NOSE
    assert nose[0] > 0.4
    # our convention says the same head has yaw < 0 (yaw > 0 turns towards the image's left)
    assert flame_to_euler(np.array([[0.0, math.radians(30), 0.0]]))[0, 0] == pytest.approx(-math.radians(30))
    # and a head tilted back (looking up) has the nose moving up (+y)
    up = axis_angle_to_matrix(euler_to_flame(np.array([[0.0, math.radians(20), 0.0]])))[0] @ NOSE
    assert up[1] > 0.3


def test_cam_round_trip_and_meaning():
    cam = np.array([[0.0, 0.0, 1.0], [0.1, -0.05, 1.25], [-0.2, 0.08, 0.7]])
    smirk = cam_to_smirk(cam)
    np.testing.assert_allclose(smirk_to_cam(smirk), cam, atol=1e-12)
    # a face spanning half the image (z = Z_REF) has s ~ 6.2, near SMIRK's initial scale of 7
    assert 5.5 < smirk[0, 0] < 7.0
    # u = s tx, v = -s ty land where our cam says (u = 2 x / z, v = 2 y / z in the [-1, 1] frame)
    np.testing.assert_allclose(smirk[:, 0] * smirk[:, 1], 2 * cam[:, 0])
    np.testing.assert_allclose(-smirk[:, 0] * smirk[:, 2], 2 * cam[:, 1])
    # nearer faces are bigger
    assert smirk[2, 0] > smirk[1, 0]
    with pytest.raises(InputError, match="depth"):
        cam_to_smirk(np.array([[0.0, 0.0, -1.0]]))


def test_gaze_at_the_camera_is_zero_and_signs_follow_l2cs():
    frontal = np.zeros((1, 3))
    np.testing.assert_allclose(gaze_to_l2cs(np.zeros((1, 2)), frontal), 0.0, atol=1e-12)
    # L2CS: g0 > 0 points the gaze to the image's left (x < 0 in the camera frame), g1 > 0 up (y < 0)
    left = gaze_to_l2cs(np.array([[0.0, 0.3]]), frontal)  # our yaw > 0: looks towards the image's left
    up = gaze_to_l2cs(np.array([[0.2, 0.0]]), frontal)  # our pitch > 0: looks up
    assert left[0, 0] == pytest.approx(0.3) and abs(left[0, 1]) < 1e-12
    assert up[0, 1] == pytest.approx(0.2) and abs(up[0, 0]) < 1e-12
    assert l2cs_to_direction(left)[0, 0] < 0 and l2cs_to_direction(up)[0, 1] < 0


def test_l2cs_gaze_includes_the_head_turn():
    turned = euler_to_flame(np.array([[math.radians(25), 0.0, 0.0]]))  # head towards the image's left
    eyes_ahead = gaze_to_l2cs(np.zeros((1, 2)), turned)
    assert eyes_ahead[0, 0] == pytest.approx(math.radians(25))
    # eyes counter-rotated by the same angle look back into the lens
    back = gaze_to_l2cs(np.array([[0.0, -math.radians(25)]]), turned)
    np.testing.assert_allclose(back, 0.0, atol=1e-12)


def test_gaze_round_trip_with_random_heads():
    rng = np.random.default_rng(2)
    flame = euler_to_flame(_random_poses(seed=3))
    gaze = rng.uniform(-0.5, 0.5, (len(flame), 2))
    np.testing.assert_allclose(l2cs_to_gaze(gaze_to_l2cs(gaze, flame), flame), gaze, atol=1e-9)


def test_whole_tracks_round_trip_and_files(tmp_path):
    rng = np.random.default_rng(4)
    legacy = {"pose": _random_poses(50, 20, 5), "gaze": rng.uniform(-0.3, 0.3, (50, 2)),
              "cam": np.column_stack([rng.uniform(-0.1, 0.1, (50, 2)), rng.uniform(0.8, 1.4, 50)])}
    published = legacy_to_published(legacy)
    back = published_to_legacy(published)
    for key in legacy:
        np.testing.assert_allclose(back[key], legacy[key], atol=1e-5)

    old_file = tmp_path / "old.npz"  # written before conventions were recorded: no field
    np.savez(old_file, **{k: v.astype(np.float32) for k, v in legacy.items()})
    for key, value in read_tracks(old_file).items():
        np.testing.assert_allclose(value, published[key], atol=1e-5)
    new_file = tmp_path / "new.npz"
    write_tracks(new_file, published)
    with np.load(new_file) as stored:
        assert str(stored["convention"]) == PUBLISHED
    for key, value in read_tracks(new_file).items():
        np.testing.assert_allclose(value, published[key])

    with pytest.raises(InputError, match="unknown tracks convention"):
        read_tracks({"convention": np.asarray("mine"), **legacy})
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="not readable"):
        read_tracks(broken)
    with pytest.raises(InputError, match="lack gaze"):
        read_tracks({"convention": np.asarray(LEGACY), "pose": legacy["pose"], "cam": legacy["cam"]})
