"""Head-motion descriptions (`yaw=20deg`, `nod`, `turn:-20..20deg`, `look-at-camera`) -> tracks in the published
conventions, and their one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imtalker.errors import InputError
from imtalker.preprocess.conditions import STILL_CAM, parse_description, track_from_description
from imtalker.preprocess.conventions import euler_to_flame, flame_to_euler


def _degrees(pose):
    return np.degrees(flame_to_euler(pose))


def test_constant_yaw_is_a_flame_rotation_about_y():
    track = track_from_description("yaw=20deg", "pose", 4)
    assert track.shape == (4, 3) and track.dtype == np.float32
    np.testing.assert_allclose(track, euler_to_flame(np.tile([math.radians(20), 0, 0], (4, 1))), atol=1e-7)
    assert track[0, 1] == pytest.approx(-math.radians(20))  # turned towards the image's left: FLAME y < 0
    np.testing.assert_allclose(track_from_description("yaw=0.349066rad", "pose", 4), track, atol=1e-6)
    np.testing.assert_allclose(track_from_description("yaw=20", "pose", 4), track)  # degrees by default


def test_ramps_swings_and_sums():
    turn = _degrees(track_from_description("turn:-20..20deg", "pose", 5))
    np.testing.assert_allclose(turn[:, 0], [-20, -10, 0, 10, 20], atol=1e-4)
    np.testing.assert_allclose(_degrees(track_from_description("yaw=-20..20deg", "pose", 5)), turn, atol=1e-4)
    nod = _degrees(track_from_description("nod", "pose", 26))  # 10 deg at 1 Hz: a full swing in 25 frames
    assert nod[:, 1].max() == pytest.approx(10, abs=0.1) and nod[:, 1].min() == pytest.approx(-10, abs=0.1)
    assert nod[0, 1] == pytest.approx(0, abs=1e-6) and nod[25, 1] == pytest.approx(0, abs=1e-4)
    both = _degrees(track_from_description("yaw=10, shake:5deg@1hz", "pose", 26))
    assert both[:, 0].max() == pytest.approx(15, abs=0.1) and both[:, 0].min() == pytest.approx(5, abs=0.1)
    np.testing.assert_allclose(track_from_description("still", "pose", 3), 0.0)


def test_gaze_and_camera():
    np.testing.assert_array_equal(track_from_description("look-at-camera", "gaze", 3), 0.0)
    left_up = track_from_description("yaw=10deg, pitch=5deg", "gaze", 2)  # L2CS order: horizontal, vertical
    np.testing.assert_allclose(left_up, np.radians([[10, 5], [10, 5]]), atol=1e-7)
    np.testing.assert_allclose(track_from_description("still", "cam", 2), [STILL_CAM] * 2, atol=1e-6)
    cam = track_from_description("s=6, tx=0..0.1", "cam", 3)
    np.testing.assert_allclose(cam, [[6, 0, 0], [6, 0.05, 0], [6, 0.1, 0]], atol=1e-6)


def test_live_use_at_frames_and_ramps_need_a_length():
    nod = parse_description("nod", "pose")
    assert not nod.needs_length
    np.testing.assert_allclose(nod.at(np.arange(10, 20)), nod.track(20)[10:])
    turn = parse_description("turn:-20..20", "pose")
    with pytest.raises(InputError, match="known length"):
        turn.at(np.arange(3))


@pytest.mark.parametrize("kind, text, message", [
    ("pose", "yaw=20 degrees", "number with deg or rad"),
    ("pose", "wobble", "cannot read 'wobble'"),
    ("pose", "", "empty description"),
    ("pose", "yaw=120deg", "within"),
    ("pose", "gaze=3", "unknown axis 'gaze'"),
    ("pose", "turn", "needs a range"),
    ("pose", "nod@40hz", "frequency"),
    ("gaze", "nod", "cannot read 'nod'"),
    ("gaze", "roll=3", "unknown axis"),
    ("cam", "s=-2", "positive"),
    ("cam", "tx=3deg", "no unit"),
    ("head", "yaw=3", "unknown condition"),
])
def test_bad_descriptions_are_one_line_input_errors(kind, text, message):
    with pytest.raises(InputError, match=message) as error:
        parse_description(text, kind)
    assert "\n" not in str(error.value)
