"""Face detection, crop framing, crop-box smoothing and paste-back (imtalker.preprocess.face), on a real portrait."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from imtalker.errors import InputError, NoFaceError
from imtalker.preprocess.face import (
    EYE_CORNERS,
    IRIS_CENTERS,
    NUM_LANDMARKS,
    BoxSmoother,
    CropBox,
    Face,
    FaceDetector,
    crop,
    crop_box_for,
    paste_back,
    select_face,
    smooth_boxes,
)

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("mediapipe")

CROP_SIZE = 256


def _astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # (512, 512, 3) uint8 RGB portrait


def _large() -> np.ndarray:
    """2x upscaled astronaut, 1024 x 1024."""
    return cv2.resize(_astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)


def _wide() -> np.ndarray:
    """1024 wide x 768 high, the portrait upscaled 1.5x on the right of a grey canvas: the face is off-centre."""
    canvas = np.full((768, 1024, 3), 128, np.uint8)
    canvas[:, 256:] = cv2.resize(_astronaut(), (768, 768), interpolation=cv2.INTER_CUBIC)
    return canvas


IMAGES = {"astronaut": _astronaut, "large": _large, "wide": _wide}


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as det:
        yield det


@pytest.fixture(scope="module", params=sorted(IMAGES))
def portrait(request, detector):
    """(image, faces, box) for each test image."""
    image = IMAGES[request.param]()
    faces = detector.detect(image)
    return image, faces, crop_box_for(select_face(faces))


def _box_slices(box: CropBox, image: np.ndarray, inset: float = 0.0):
    x0, y0, x1, y1 = box.xyxy
    pad = inset * box.side
    height, width = image.shape[:2]
    ys = slice(max(0, round(y0 + pad)), min(height, round(y1 - pad)))
    xs = slice(max(0, round(x0 + pad)), min(width, round(x1 - pad)))
    return ys, xs


def test_mediapipe_wheel_ships_face_models():
    """mediapipe releases after 0.10.21 dropped the bundled .tflite files; fail loudly if a bump loses them."""
    spec = importlib.util.find_spec("mediapipe")
    assert spec is not None and spec.origin is not None
    modules = Path(spec.origin).parent / "modules"
    for name in (
        "face_detection/face_detection_full_range_sparse.tflite",  # model_selection=1
        "face_detection/face_detection_short_range.tflite",  # used inside the face mesh graph
        "face_landmark/face_landmark_with_attention.tflite",  # refine_landmarks=True (478 points)
    ):
        path = modules / name
        assert path.is_file() and path.stat().st_size > 100_000, path


def test_one_face_with_landmarks(portrait):
    image, faces, _ = portrait
    assert len(faces) == 1
    face = faces[0]
    assert 0.5 <= face.score <= 1.0
    assert face.landmarks is not None and face.landmarks.shape == (NUM_LANDMARKS, 2)
    assert face.keypoints is not None and face.keypoints.shape == (6, 2)
    x0, y0, x1, y1 = face.box
    eyes = face.landmarks[list(EYE_CORNERS + IRIS_CENTERS)]
    assert ((eyes >= (x0, y0)) & (eyes <= (x1, y1))).all(), "eye landmarks outside the detection box"
    # both eyes in the upper half of the face, the right eye (subject's) on the image's left
    assert (eyes[:, 1] < face.center[1]).all()
    assert face.landmarks[33, 0] < face.landmarks[263, 0]


def test_crop_frames_the_head(portrait):
    image, faces, box = portrait
    face = faces[0]
    out = crop(image, box, CROP_SIZE)
    assert out.shape == (CROP_SIZE, CROP_SIZE, 3) and out.dtype == np.uint8
    eyes = box.points_to_crop(face.landmarks[list(EYE_CORNERS)], CROP_SIZE)
    assert ((eyes > 0) & (eyes < CROP_SIZE)).all()
    # eyes in the upper-middle of the crop, chin above the bottom, forehead below the top: whole-head framing
    assert 0.3 * CROP_SIZE < eyes[:, 1].mean() < 0.55 * CROP_SIZE
    assert abs(eyes[:, 0].mean() - CROP_SIZE / 2) < 0.1 * CROP_SIZE
    chin, forehead = box.points_to_crop(face.landmarks[[152, 10]], CROP_SIZE)
    assert chin[1] < 0.9 * CROP_SIZE and forehead[1] > 0.1 * CROP_SIZE
    assert 1.8 * face.size < box.side < 2.3 * face.size


def test_crop_box_without_landmarks_uses_detection_box():
    face = Face(box=(100.0, 50.0, 200.0, 170.0), score=0.9)
    assert face.center == (150.0, 110.0) and face.size == 120.0
    box = crop_box_for(face, scale=2.0, shift_y=0.1)
    assert box == CropBox(150.0, 110.0 - 0.1 * 240.0, 240.0)
    # points survive a crop-space round trip
    points = np.array([[120.0, 80.0], [180.0, 150.0]])
    np.testing.assert_allclose(box.points_from_crop(box.points_to_crop(points, 256), 256), points)
    # the cv2 matrix and the point map agree on pixel centres
    matrix = box.affine(256)
    centre = np.array([120.5, 80.5])
    index_in_crop = matrix[:, :2] @ (centre - 0.5) + matrix[:, 2]
    np.testing.assert_allclose(index_in_crop + 0.5, box.points_to_crop(centre[None], 256)[0])
    np.testing.assert_allclose(cv2.invertAffineTransform(box.inverse_affine(256)), matrix)


def test_crops_agree_across_resolutions(detector):
    """The same head is framed the same way whatever the photo's size and where the face is in it."""
    crops = []
    for make in IMAGES.values():
        image = make()
        crops.append(crop(image, crop_box_for(select_face(detector.detect(image))), CROP_SIZE).astype(np.float32))
    for other in crops[1:]:
        assert np.abs(other - crops[0]).mean() < 12


def test_paste_back_of_unchanged_crop_reproduces_photo(portrait):
    image, _, box = portrait
    out = paste_back(image, crop(image, box, CROP_SIZE), box)
    assert out.shape == image.shape and out.dtype == image.dtype
    ys, xs = _box_slices(box, image)
    assert np.abs(out[ys, xs].astype(np.float32) - image[ys, xs]).mean() < 2.0
    far = np.ones(image.shape[:2], bool)
    ys_pad, xs_pad = _box_slices(CropBox(box.cx, box.cy, box.side + 4), image)
    far[ys_pad, xs_pad] = False
    assert np.array_equal(out[far], image[far])


def _seam_band_error(out: np.ndarray, image: np.ndarray, box: CropBox, feather: float) -> float:
    """Mean |out - image| over the feather ring inside the box edge (where the two images are blended)."""
    ring = np.zeros(image.shape[:2], bool)
    ys, xs = _box_slices(box, image)
    ring[ys, xs] = True
    ys_in, xs_in = _box_slices(box, image, inset=feather)
    ring[ys_in, xs_in] = False
    return float(np.abs(out[ring].astype(np.float32) - image[ring]).mean())


def test_paste_back_hides_colour_shift(portrait, tmp_path):
    image, _, box = portrait
    shifted = np.clip(crop(image, box, CROP_SIZE).astype(np.int16) + 30, 0, 255).astype(np.uint8)
    feather = 0.08
    matched = paste_back(image, shifted, box, feather=feather)
    raw = paste_back(image, shifted, box, feather=feather, match_colors=False)
    assert matched.shape == image.shape
    assert _seam_band_error(raw, image, box, feather) > 10  # the shift is visible without colour matching
    assert _seam_band_error(matched, image, box, feather) < 3
    ys, xs = _box_slices(box, image, inset=feather)
    assert np.abs(matched[ys, xs].astype(np.float32) - image[ys, xs]).mean() < 4  # brightness restored inside too


def test_paste_back_with_box_past_the_border(detector):
    """A box reaching past the image: crop replicates the border, paste-back keeps the size and the far pixels."""
    image = _astronaut()
    box = CropBox(60.0, 50.0, 200.0)  # reaches 40 px past the left and 50 px past the top
    out = crop(image, box, 128)
    assert out.shape == (128, 128, 3)
    # the part left of the image repeats column 0
    left = round(40 / 200 * 128)
    np.testing.assert_allclose(out[40:100, : left - 2].astype(float).std(axis=1).mean(), 0, atol=1.5)
    pasted = paste_back(image, out, box)
    assert pasted.shape == image.shape
    assert np.array_equal(pasted[:, 170:], image[:, 170:])
    ys, xs = _box_slices(box, image)
    assert np.abs(pasted[ys, xs].astype(np.float32) - image[ys, xs]).mean() < 3
    # a box entirely outside the photo changes nothing
    assert np.array_equal(paste_back(image, out, CropBox(-500.0, -500.0, 100.0)), image)


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face(detector, kind):
    rng = np.random.default_rng(0)
    image = (
        np.full((480, 640, 3), 200, np.uint8)
        if kind == "blank"
        else rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    )
    faces = detector.detect(image)
    assert faces == []
    with pytest.raises(NoFaceError, match="no face"):
        select_face(faces)


def test_two_faces_largest_first_and_index(detector):
    image = _astronaut()
    canvas = np.full((512, 768, 3), 128, np.uint8)
    canvas[:, :512] = image
    canvas[128:384, 512:] = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)
    faces = detector.detect(canvas)
    assert len(faces) == 2
    big, small = faces
    assert big.size > 1.6 * small.size
    assert big.center[0] < 512 < small.center[0]
    assert select_face(faces) is big
    assert select_face(faces, index=1) is small
    assert small.landmarks is not None  # the mesh runs on a square around each face, so small faces get one too
    with pytest.raises(InputError, match="out of range"):
        select_face(faces, index=2)


def test_track_video_frames(detector):
    image = _astronaut()
    detector.reset_tracking()
    boxes = []
    for dx in range(0, 40, 8):  # the portrait slides right, as in a video
        frame = np.roll(image, dx, axis=1)
        faces = detector.track(frame)
        assert len(faces) == 1 and faces[0].landmarks is not None
        boxes.append(crop_box_for(faces[0]))
    moves = np.diff([b.cx for b in boxes])
    np.testing.assert_allclose(moves, 8, atol=2)
    detector.reset_tracking()


def test_bad_inputs(detector):
    with pytest.raises(InputError, match="uint8"):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(InputError, match="RGB"):
        crop(np.zeros((64, 64), np.uint8), CropBox(32, 32, 32), 16)
    with pytest.raises(InputError, match="square"):
        paste_back(np.zeros((64, 64, 3), np.uint8), np.zeros((16, 8, 3), np.uint8), CropBox(32, 32, 32))
    with pytest.raises(InputError):
        CropBox(0, 0, 0)


def test_closed_detector_refuses_work():
    det = FaceDetector()
    det.close()
    det.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        det.detect(_astronaut())


def test_missing_mediapipe_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe...` raise ImportError
    monkeypatch.setitem(sys.modules, "mediapipe.python", None)
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps mediapipe==0\.10\.21"):
        FaceDetector()


def test_native_log_capture_keeps_other_output(capfd, caplog):
    from imtalker.preprocess.face import _capture_native_stderr

    with caplog.at_level("DEBUG", logger="imtalker.preprocess.face"), _capture_native_stderr():
        os.write(2, b"W0000 00:00:1.0 1 calc.cc:1] harmless\nE0000 00:00:1.0 1 calc.cc:2] broken\nfor the user\n")
    assert capfd.readouterr().err == "for the user\n"
    levels = {record.getMessage().split("] ")[-1]: record.levelname for record in caplog.records}
    assert levels == {"harmless": "DEBUG", "broken": "WARNING"}


def test_import_is_light_and_detection_is_quiet():
    """`import imtalker.preprocess.face` does not load mediapipe, and mediapipe's native log noise stays off the terminal."""
    code = (
        "import sys\n"
        "import imtalker.preprocess.face as f\n"
        "assert 'mediapipe' not in sys.modules\n"
        "from skimage.data import astronaut\n"
        "with f.FaceDetector() as d:\n"
        "    assert len(d.detect(astronaut())) == 1\n"
        "    assert len(d.track(astronaut())) == 1\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


# ---------------------------------------------------------------------------------------------------------------
# smoothing
# ---------------------------------------------------------------------------------------------------------------


def _noisy_track(frames: int = 200, noise: float = 3.0, seed: int = 0):
    """A face moving steadily right (1.5 px/frame) with detector jitter; returns (truth, noisy) (T, 3) arrays."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float64)
    truth = np.stack([200 + 1.5 * t, 150 + 0 * t, 120 + 0 * t], axis=1)
    noisy = truth + rng.normal(0, noise, truth.shape) * (1, 1, 0.5)
    return truth, noisy


def _to_boxes(values):
    return [CropBox(*map(float, v)) for v in values]


def _to_array(boxes):
    return np.array([(b.cx, b.cy, b.side) for b in boxes])


def test_smooth_boxes_removes_jitter_and_follows_motion():
    truth, noisy = _noisy_track()
    smooth = _to_array(smooth_boxes(_to_boxes(noisy)))
    raw_error = (noisy - truth)[:, :2].std()
    error = smooth - truth
    assert error[:, :2].std() < 0.35 * raw_error
    assert np.abs(error[:, 0].mean()) < 0.3  # no lag on a steady motion, ends included
    assert np.abs(error[-3:, 0]).max() < 3


def test_smooth_boxes_rejects_outliers_and_fills_gaps():
    truth, noisy = _noisy_track(noise=1.0)
    boxes: list[CropBox | None] = _to_boxes(noisy)
    for k in (50, 51, 120):
        boxes[k] = CropBox(boxes[k].cx + 150, boxes[k].cy - 80, boxes[k].side)  # e.g. a face in the background
    for k in range(80, 90):
        boxes[k] = None  # detection dropped out
    boxes[0] = None
    smooth = _to_array(smooth_boxes(boxes))
    assert len(smooth) == len(truth)
    assert np.abs(smooth - truth).max() < 4
    with pytest.raises(NoFaceError):
        smooth_boxes([None, None])
    assert smooth_boxes([]) == []


def test_box_smoother_streaming():
    truth, noisy = _noisy_track()
    smoother = BoxSmoother(fps=25)
    assert smoother.update(None) is None
    out = _to_array([smoother.update(b) for b in _to_boxes(noisy)])
    error = (out - truth)[20:]  # after warm-up
    raw = (noisy - truth)[20:]
    assert error[:, 1].std() < 0.5 * raw[:, 1].std()  # y is still: jitter removed
    assert error[:, 0].std() < 0.6 * raw[:, 0].std()
    assert abs(error[:, 0].mean()) < 3  # small lag behind a 1.5 px/frame motion
    # a one-frame jump is ignored, a lasting one (a cut) is followed after a few frames
    last = smoother.update(CropBox(900.0, 150.0, 120.0))
    assert abs(last.cx - out[-1, 0]) < 5
    for _ in range(3):
        last = smoother.update(CropBox(900.0, 150.0, 120.0))
    assert last.cx == pytest.approx(900.0)
    assert smoother.update(None).cx == pytest.approx(last.cx)
