"""Face detection, square face crops, crop-box smoothing and paste-back.

The renderer animates a square crop of the source portrait, framed the way talking-head training videos are
framed (the whole head with hair and chin, plus a margin). This module finds the face (mediapipe), chooses that
square (:func:`crop_box_for`), cuts it out (:func:`crop`), keeps a driving video's crops steady
(:func:`smooth_boxes`, :class:`BoxSmoother`) and puts rendered crops back into the full photo without a visible
seam (:func:`paste_back`).

Conventions, used everywhere here:
    * Images are RGB ``uint8`` arrays of shape ``(H, W, 3)``.
    * Points and boxes are in continuous pixel coordinates: the image spans ``[0, W] x [0, H]`` and pixel
      column ``i`` covers ``[i, i + 1)``, so a pixel's centre is at ``i + 0.5``. This is how mediapipe's normalised
      coordinates scale to pixels (``x * W``).
    * Matrices from :meth:`CropBox.affine` are for ``cv2.warpAffine``, which puts pixel centres at integers; they
      include the half-pixel shift between the two conventions.

Only numpy and OpenCV are imported at module import; mediapipe is imported when a :class:`FaceDetector` is made.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError, NoFaceError

logger = logging.getLogger(__name__)

__all__ = [
    "CROP_SCALE",
    "CROP_SHIFT_Y",
    "BoxSmoother",
    "CropBox",
    "Face",
    "FaceDetector",
    "crop",
    "crop_box_for",
    "paste_back",
    "select_face",
    "smooth_boxes",
]

MEDIAPIPE_INSTALL = "pip install --no-deps mediapipe==0.10.21"
NUM_LANDMARKS = 478  # face mesh with refine_landmarks=True: 468 mesh points + 2 x 5 iris points

# Face-mesh indices (subject's right eye is on the image's left).
RIGHT_EYE_CORNERS = (33, 133)  # outer, inner
LEFT_EYE_CORNERS = (362, 263)  # inner, outer
EYE_CORNERS = RIGHT_EYE_CORNERS + LEFT_EYE_CORNERS
IRIS_CENTERS = (468, 473)  # right, left; present only with refine_landmarks=True
FOREHEAD_TOP, CHIN = 10, 152

# Crop framing. "Face size" is the larger side of the face-mesh extent (forehead top to chin, cheek to cheek), or
# of mediapipe's detection box when there are no landmarks; on a frontal portrait the two agree within a few
# percent (astronaut: 106 px vs 104 px), so one pair of constants serves both.
# The official IMTalker demo crops a square of 1.6x the face_alignment (S3FD) box around that box's centre, and
# HDTF/VoxCeleb-style training crops show the whole head with the face taking about half of the frame. S3FD
# boxes reach further up the forehead than mediapipe's, so 1.6x of theirs is about 2x of ours: a side of 2x the
# face size keeps hair, ears and chin inside with a margin, and the shoulders start at the bottom edge.
CROP_SCALE = 2.0
# The face's centre (around the nose) sits below the centre of the head because the hair adds height above the
# forehead and nothing comparable is below the chin; moving the square up by 6% of its side centres the head and
# leaves about 0.05x side of background above the hair on a typical portrait instead of cutting the hair off.
CROP_SHIFT_Y = 0.06

# What mediapipe's native code writes to file descriptor 2: absl/glog lines ("W0000 00:00:..." with a severity
# letter), TFLite's "INFO: ..." lines and a protobuf 5+ API-drift message printed by pybind11. Info and warnings
# are expected and harmless, so they go to the logger at DEBUG; errors at WARNING.
_NATIVE_INFO = re.compile(r"^([IW]\d{4} |INFO: |WARNING: All log messages before absl|.*'GetPrototype')")
_NATIVE_ERROR = re.compile(r"^[EF]\d{4} ")
# fd 2 is shared by the whole process, so only one redirection may be active at a time.
_STDERR_LOCK = threading.RLock()


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Returns ``image`` as a C-contiguous RGB uint8 array, or raises InputError saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name} must be RGB with shape (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"{name} must be uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{name} is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"crop size must be a positive integer, got {size!r}")
    return int(size)


# --------------------------------------------------------------------------------------------------------------
# Faces and detection
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes:
        box: ``(x0, y0, x1, y1)`` of mediapipe's detection box, in pixels. It may reach past the image border.
        score: Detection confidence in ``[0, 1]``.
        landmarks: ``(478, 2)`` float32 face-mesh points in pixels (``RIGHT_EYE_CORNERS``, ``IRIS_CENTERS`` etc.
            index it), or None when the mesh could not fit this face.
        keypoints: ``(6, 2)`` float32 detector keypoints in pixels: right eye, left eye, nose tip, mouth centre,
            right ear tragion, left ear tragion (subject's sides).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None
    keypoints: np.ndarray | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> tuple[float, float]:
        """Centre ``(x, y)`` of the detection box."""
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    @property
    def size(self) -> float:
        """Larger side of the detection box, in pixels."""
        return max(self.width, self.height)

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


class FaceDetector:
    """Finds faces with mediapipe: the full-range face detector plus the 478-point face mesh.

    Build it once and reuse it: the constructor loads the models (about 0.4 s) and later calls take about 10-40 ms
    per face on a CPU core. One detector serves one thread at a time (mediapipe graphs are stateful). Use
    :meth:`detect` for independent images (static-image mode: every call starts from scratch) and :meth:`track`
    for consecutive frames of one video (tracking mode: the mesh follows the face from the previous frame, which
    is faster and steadier). Close it, or use it as a context manager, to free the graphs.

    Args:
        min_score: Minimum detection confidence.
        max_faces: Most faces returned per image (the largest ones).
        quiet: Route mediapipe's native log lines (written straight to file descriptor 2, which Python cannot
            intercept otherwise) to this module's logger (DEBUG; errors at WARNING), so the terminal stays clean.
            Other output written to fd 2 during a call is passed on unchanged when the call ends.

    Raises:
        ImportError: mediapipe is not installed.
    """

    # The mesh runs on a square around each detected face, enlarged this much: its own (short-range) detector
    # then sees a big, centred face even when the face is small in a large photo.
    _MESH_CONTEXT = 2.0
    _MESH_CROP_SIZE = 384  # the mesh model works at 192 px; twice that keeps its detector comfortable

    def __init__(self, *, min_score: float = 0.5, max_faces: int = 4, quiet: bool = True):
        if not 0.0 <= min_score <= 1.0:
            raise InputError(f"min_score must be in [0, 1], got {min_score}")
        if max_faces < 1:
            raise InputError(f"max_faces must be at least 1, got {max_faces}")
        self.min_score = float(min_score)
        self.max_faces = int(max_faces)
        self.quiet = quiet
        with self._native_output():
            try:
                from mediapipe.python.solutions import face_detection, face_mesh
            except ImportError as err:
                raise ImportError(
                    f"imtalker.preprocess.face needs mediapipe 0.10.21 (the last release that ships its face models): "
                    f"{MEDIAPIPE_INSTALL}"
                ) from err
            except Exception as err:  # e.g. protobuf 7 breaks mediapipe's generated code with an AttributeError
                raise ImportError(
                    f"mediapipe is installed but fails to import ({type(err).__name__}: {err}); it needs "
                    f"protobuf>=4.25.3,<7 and a clean install: {MEDIAPIPE_INSTALL}"
                ) from err
            self._face_mesh_module = face_mesh
            self._detection = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)
            self._image_mesh = face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=2, refine_landmarks=True, min_detection_confidence=0.5
            )
            # mediapipe opens a graph's calculators (and loads their models, which logs) on worker threads after
            # the constructor returns; one run on a blank image waits for that while the output is still captured.
            blank = np.zeros((64, 64, 3), np.uint8)
            self._detection.process(blank)
            self._image_mesh.process(blank)
        self._video_mesh = None  # built by the first track() call
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Frees the mediapipe graphs. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        with self._native_output():
            for graph in (self._detection, self._image_mesh, self._video_mesh):
                if graph is not None:
                    graph.close()
        self._video_mesh = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def reset_tracking(self) -> None:
        """Forgets the tracked face, e.g. before the first frame of another video."""
        if self._video_mesh is not None:
            with self._native_output():
                self._video_mesh.close()
            self._video_mesh = None

    # -- detection ----------------------------------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> list[Face]:
        """Finds the faces in one image.

        Args:
            image: ``(H, W, 3)`` RGB uint8.

        Returns:
            Faces, largest first (at most ``max_faces``); empty when there is none. ``landmarks`` comes from a
            mesh fitted to a square around each face.
        """
        image = _check_image(image)
        faces = self._detect_boxes(image)
        return [
            Face(face.box, face.score, self._mesh_around(image, face), face.keypoints) for face in faces
        ]

    def track(self, frame: np.ndarray) -> list[Face]:
        """Finds the faces in the next frame of a video, with the face mesh in tracking mode.

        Call it on consecutive frames of one video, and :meth:`reset_tracking` between videos. Boxes come from
        the detector on every frame; landmarks come from a mesh run on the whole frame that follows the face
        from frame to frame, so faces smaller than about a fifth of the frame may get ``landmarks=None``.

        Args:
            frame: ``(H, W, 3)`` RGB uint8.

        Returns:
            Faces, largest first (at most ``max_faces``).
        """
        frame = _check_image(frame, "frame")
        faces = self._detect_boxes(frame)
        with self._native_output():  # one window for creation and first run (see __init__)
            if self._video_mesh is None:
                self._video_mesh = self._face_mesh_module.FaceMesh(
                    static_image_mode=False,
                    max_num_faces=self.max_faces,
                    refine_landmarks=True,
                    min_detection_confidence=0.5,
                    min_tracking_confidence=0.5,
                )
            meshes = self._run_mesh(self._video_mesh, frame)
        height, width = frame.shape[:2]
        meshes = [points * np.array([width, height], np.float32) for points in meshes]
        matched = []
        for face in faces:
            best = _closest_inside(meshes, face.box, face.center)
            matched.append(Face(face.box, face.score, best, face.keypoints))
        return matched

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("this FaceDetector is closed; make a new one")

    def _detect_boxes(self, image: np.ndarray) -> list[Face]:
        self._ensure_open()
        with self._native_output():
            result = self._detection.process(image)
        height, width = image.shape[:2]
        faces = []
        for detection in result.detections or []:
            rel = detection.location_data.relative_bounding_box
            box = (rel.xmin * width, rel.ymin * height, (rel.xmin + rel.width) * width,
                   (rel.ymin + rel.height) * height)
            keypoints = np.array(
                [(k.x * width, k.y * height) for k in detection.location_data.relative_keypoints], np.float32
            ).reshape(-1, 2)
            faces.append(Face(tuple(float(v) for v in box), float(detection.score[0]), None, keypoints))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces[: self.max_faces]

    def _run_mesh(self, graph, image: np.ndarray) -> list[np.ndarray]:
        """Runs a face-mesh graph; returns each face's (478, 2) points in normalised [0, 1] coordinates."""
        with self._native_output():
            result = graph.process(image)
        meshes = []
        for landmarks in result.multi_face_landmarks or []:
            points = np.array([(p.x, p.y) for p in landmarks.landmark], np.float32)
            if points.shape == (NUM_LANDMARKS, 2):
                meshes.append(points)
        return meshes

    def _mesh_around(self, image: np.ndarray, face: Face) -> np.ndarray | None:
        """Fits the mesh on a square around ``face`` and returns its landmarks in image pixels (None if it fails)."""
        if not face.size > 1.0:
            return None
        box = CropBox(*face.center, self._MESH_CONTEXT * face.size)
        size = self._MESH_CROP_SIZE
        patch = crop(image, box, size)
        meshes = [box.points_from_crop(points * size, size) for points in self._run_mesh(self._image_mesh, patch)]
        return _closest_inside(meshes, face.box, face.center)

    @contextlib.contextmanager
    def _native_output(self) -> Iterator[None]:
        if not self.quiet:
            yield
            return
        with _capture_native_stderr(), warnings.catch_warnings():
            # mediapipe 0.10.21 calls protobuf's deprecated FieldDescriptor.label when it builds a graph
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mediapipe(\.|$)")
            yield


def _closest_inside(
    meshes: Sequence[np.ndarray], box: tuple[float, float, float, float], center: tuple[float, float]
) -> np.ndarray | None:
    """The mesh whose centroid lies inside ``box`` and closest to ``center`` (the same face), or None."""
    best, best_dist = None, math.inf
    for points in meshes:
        cx, cy = points.mean(axis=0)
        if not (box[0] <= cx <= box[2] and box[1] <= cy <= box[3]):
            continue
        dist = math.hypot(cx - center[0], cy - center[1])
        if dist < best_dist:
            best, best_dist = points.astype(np.float32), dist
    return best


@contextlib.contextmanager
def _capture_native_stderr() -> Iterator[None]:
    """Sends mediapipe's native log lines to the logger instead of the terminal.

    mediapipe's C++ side (absl logging, TFLite, a pybind11 error print) writes straight to fd 2: neither
    ``contextlib.redirect_stderr`` nor ``GLOG_minloglevel`` silences it in mediapipe 0.10.21 (checked), so the
    descriptor itself is pointed at a temporary file for the duration. Afterwards mediapipe's lines are logged
    and any other line is written to the real stderr unchanged.
    """
    with _STDERR_LOCK:
        try:
            saved_fd = os.dup(2)
        except OSError:  # no usable fd 2 (e.g. closed by an embedding host): nothing to protect
            yield
            return
        with tempfile.TemporaryFile(mode="w+b") as sink:
            with contextlib.suppress(Exception):  # flush Python-level buffers so they go to the real stderr
                sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # what Python wrote meanwhile joins the captured text
                    sys.stderr.flush()
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
                sink.seek(0)
                text = sink.read().decode("utf-8", errors="replace")
        passthrough = []
        for line in text.splitlines(keepends=True):
            if _NATIVE_INFO.match(line):
                logger.debug("mediapipe: %s", line.rstrip())
            elif _NATIVE_ERROR.match(line):
                logger.warning("mediapipe: %s", line.rstrip())
            elif line.strip():
                passthrough.append(line)
        if passthrough:  # not mediapipe's: e.g. another thread's or a logging handler's output, shown as it was
            with contextlib.suppress(OSError):
                os.write(2, "".join(passthrough).encode("utf-8", errors="replace"))


def select_face(faces: Sequence[Face], index: int | None = None, *, source: str = "the image") -> Face:
    """Picks the face to animate.

    Args:
        faces: Faces from :meth:`FaceDetector.detect`, largest first.
        index: Which face (0 = largest); None picks the largest.
        source: How to name the image in error messages (e.g. a file name).

    Returns:
        The chosen face.

    Raises:
        NoFaceError: ``faces`` is empty.
        InputError: ``index`` is out of range.
    """
    if not faces:
        raise NoFaceError(
            f"no face found in {source}: use a photo with a clearly visible face, at least about 40 pixels tall"
        )
    if index is None:
        return max(faces, key=lambda f: f.area)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(faces):
        raise InputError(
            f"face index {index!r} is out of range: {len(faces)} face(s) found in {source} "
            f"(0 = largest, up to {len(faces) - 1})"
        )
    return faces[int(index)]


# --------------------------------------------------------------------------------------------------------------
# Crop boxes
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropBox:
    """A square in the original image, in pixels. It may reach past the image border.

    Attributes:
        cx: Centre x.
        cy: Centre y.
        side: Side length (> 0).
    """

    cx: float
    cy: float
    side: float

    def __post_init__(self):
        if not (math.isfinite(self.cx) and math.isfinite(self.cy) and math.isfinite(self.side)) or self.side <= 0:
            raise InputError(f"invalid crop box: centre ({self.cx}, {self.cy}), side {self.side}")

    @property
    def x0(self) -> float:
        return self.cx - self.side / 2

    @property
    def y0(self) -> float:
        return self.cy - self.side / 2

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``."""
        half = self.side / 2
        return self.cx - half, self.cy - half, self.cx + half, self.cy + half

    def affine(self, size: int) -> np.ndarray:
        """The ``(2, 3)`` float64 matrix for ``cv2.warpAffine`` that maps this box onto a ``size`` x ``size`` crop."""
        s = _check_size(size) / self.side
        # Continuous map q = s * (p - x0); in cv2's pixel-centre convention (p = i + 0.5, q = j + 0.5):
        # j = s * i + s * (0.5 - x0) - 0.5.
        return np.array(
            [[s, 0.0, s * (0.5 - self.x0) - 0.5], [0.0, s, s * (0.5 - self.y0) - 0.5]], dtype=np.float64
        )

    def inverse_affine(self, size: int) -> np.ndarray:
        """The ``(2, 3)`` matrix for ``cv2.warpAffine`` that maps a ``size`` crop back onto the original image."""
        return cv2.invertAffineTransform(self.affine(size))

    def points_to_crop(self, points: np.ndarray, size: int) -> np.ndarray:
        """Maps ``(N, 2)`` image points (pixels) to crop pixels."""
        s = _check_size(size) / self.side
        return (np.asarray(points, np.float64) - (self.x0, self.y0)) * s

    def points_from_crop(self, points: np.ndarray, size: int) -> np.ndarray:
        """Maps ``(N, 2)`` crop points (pixels of a ``size`` crop) back to image pixels."""
        s = _check_size(size) / self.side
        return np.asarray(points, np.float64) / s + (self.x0, self.y0)


def crop_box_for(face: Face, scale: float = CROP_SCALE, shift_y: float = CROP_SHIFT_Y) -> CropBox:
    """The square that frames ``face`` like a talking-head training crop (head, hair, chin and a margin).

    The face size is the larger side of the landmark extent when landmarks exist (tighter and steadier than the
    detection box), else of the detection box. See ``CROP_SCALE`` and ``CROP_SHIFT_Y`` for the framing.

    Args:
        face: The face to frame.
        scale: Side of the square over the face size.
        shift_y: How far to move the square up, as a fraction of its side.

    Returns:
        The crop box; it may reach past the image border (:func:`crop` fills that by replicating the border).
    """
    if not scale > 0:
        raise InputError(f"crop scale must be positive, got {scale}")
    if face.landmarks is not None:
        lo, hi = face.landmarks.min(axis=0), face.landmarks.max(axis=0)
        cx, cy = (lo + hi) / 2
        size = float(max(hi - lo))
    else:
        (cx, cy), size = face.center, face.size
    side = scale * size
    return CropBox(float(cx), float(cy - shift_y * side), float(side))


def _warp(
    src: np.ndarray,
    matrix: np.ndarray,
    dsize: tuple[int, int],
    *,
    border_mode: int,
    border_value: float = 0.0,
    interpolation: int = cv2.INTER_LANCZOS4,
) -> np.ndarray:
    """``cv2.warpAffine`` for the axis-aligned scale + shift maps used here, with anti-aliasing when shrinking.

    warpAffine has no area filter, so shrinking by more than 2x would alias (jagged hair, moire): the source is
    first shrunk with ``cv2.resize(INTER_AREA)`` (exact area averaging) to about the target scale, and the warp
    then only has a sub-pixel shift and a scale near 1 left. Lanczos keeps the crop -> paste round trip close to
    lossless (mean error about 0.3 levels on the astronaut, against 1.8 with bilinear).
    """
    matrix = matrix.astype(np.float64).copy()
    sx, sy = matrix[0, 0], matrix[1, 1]
    if min(sx, sy) <= 0.5:
        height, width = src.shape[:2]
        new_w, new_h = max(1, round(width * sx)), max(1, round(height * sy))
        fx, fy = new_w / width, new_h / height
        src = cv2.resize(src, (new_w, new_h), interpolation=cv2.INTER_AREA)
        # resize maps pixel centres as out = (in + 0.5) * f - 0.5, i.e. in = (out + 0.5) / f - 0.5.
        matrix[0, 2] += sx * (0.5 / fx - 0.5)
        matrix[1, 2] += sy * (0.5 / fy - 0.5)
        matrix[0, 0] /= fx
        matrix[1, 1] /= fy
    return cv2.warpAffine(src, matrix, dsize, flags=interpolation, borderMode=border_mode, borderValue=border_value)


def _roi(box: CropBox, width: int, height: int, margin: int) -> tuple[int, int, int, int]:
    """Integer bounds of ``box`` plus ``margin``, clipped to the image and never empty."""
    x0, y0, x1, y1 = box.xyxy
    ix0 = min(max(math.floor(x0) - margin, 0), width - 1)
    iy0 = min(max(math.floor(y0) - margin, 0), height - 1)
    ix1 = max(min(math.ceil(x1) + margin, width), ix0 + 1)
    iy1 = max(min(math.ceil(y1) + margin, height), iy0 + 1)
    return ix0, iy0, ix1, iy1


def crop(image: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Cuts ``box`` out of ``image`` and resizes it to ``size`` x ``size``.

    Parts of the box outside the image repeat the nearest border pixel (as in talking-head dataset crops),
    rather than black bars the renderer never saw in training.

    Args:
        image: ``(H, W, 3)`` RGB uint8.
        box: The square to cut out.
        size: Output side in pixels.

    Returns:
        ``(size, size, 3)`` RGB uint8.
    """
    image = _check_image(image)
    size = _check_size(size)
    height, width = image.shape[:2]
    # Only the box's neighbourhood is read, so big photos cost no more than small ones; the margin covers the
    # filters' support (Lanczos: 4 pixels at the output scale).
    shrink = max(box.side / size, 1.0)
    ix0, iy0, ix1, iy1 = _roi(box, width, height, margin=int(5 * shrink) + 2)
    matrix = box.affine(size)
    matrix[:, 2] += matrix[:, :2] @ np.array([ix0, iy0], np.float64)  # the ROI's pixel (0, 0) is (ix0, iy0)
    return _warp(image[iy0:iy1, ix0:ix1], matrix, (size, size), border_mode=cv2.BORDER_REPLICATE)


# --------------------------------------------------------------------------------------------------------------
# Smoothing crop boxes over time
# --------------------------------------------------------------------------------------------------------------


def _as_array(boxes: Sequence[CropBox | None]) -> np.ndarray:
    """``(T, 3)`` array of ``(cx, cy, side)``; None becomes NaN."""
    return np.array([(b.cx, b.cy, b.side) if b is not None else (np.nan,) * 3 for b in boxes], np.float64)


def _pad_ends(x: np.ndarray, radius: int) -> np.ndarray:
    """Pads a 1-D series by ``radius`` at each end with its point reflection about a line fitted to that end.

    Reflecting about the raw end sample would pin the filtered end to that (noisy) sample; reflecting about a
    least-squares line through the last ``radius + 1`` samples keeps a steady motion exact and smooths the end
    as well as the middle.
    """
    n = len(x)
    m = min(n, radius + 1)
    k = np.arange(m, dtype=np.float64)
    start_pivot = np.polyval(np.polyfit(k, x[:m], 1), 0.0)
    end_pivot = np.polyval(np.polyfit(k, x[n - m :], 1), m - 1.0)
    head = 2 * start_pivot - x[1 : radius + 1][::-1]
    tail = 2 * end_pivot - x[n - 1 - radius : n - 1][::-1]
    if len(head) < radius:  # series shorter than the filter: extend the fitted line's reflection by edge values
        head = np.concatenate([np.full(radius - len(head), head[0] if len(head) else start_pivot), head])
        tail = np.concatenate([tail, np.full(radius - len(tail), tail[-1] if len(tail) else end_pivot)])
    return np.concatenate([head, x, tail])


def smooth_boxes(
    boxes: Sequence[CropBox | None],
    *,
    sigma: float = 3.0,
    outlier_window: int = 5,
    outlier_threshold: float = 0.25,
) -> list[CropBox]:
    """Smooths a whole video's crop boxes so the crops do not jitter (offline, zero lag).

    Three steps, on centre x, centre y and side:

    1. Frames without a box (None) are filled by linear interpolation (the nearest box at the ends).
    2. Outliers (a box that jumps away from its neighbours, e.g. a detection on another face for one frame)
       are replaced by the running median: a box is an outlier when its centre is more than
       ``outlier_threshold`` x side from the median of ``outlier_window`` frames around it, or its side differs
       from the median side by more than that fraction.
    3. A centred Gaussian filter of ``sigma`` frames. The ends are padded by point reflection about a line fitted
       to the end (see :func:`_pad_ends`), which keeps a steady motion on track up to the last frame, unlike
       edge repetition.

    Args:
        boxes: One box per frame; None where no face was found.
        sigma: Gaussian width in frames (0 disables the filter). At 25 fps, 3 frames removes detector jitter while
            following head motion faster than about 2 Hz.
        outlier_window: Frames in the running median (odd; 1 disables outlier rejection).
        outlier_threshold: Outlier distance, as a fraction of the side.

    Returns:
        The smoothed boxes, one per frame.

    Raises:
        NoFaceError: No frame has a box.
    """
    values = _as_array(boxes)
    if len(values) == 0:
        return []
    valid = ~np.isnan(values[:, 0])
    if not valid.any():
        raise NoFaceError("no face found in any frame of the video")
    frames = np.arange(len(values))
    for k in range(3):
        values[:, k] = np.interp(frames, frames[valid], values[valid, k])

    if outlier_window > 1 and len(values) > 2:
        half = outlier_window // 2
        padded = np.pad(values, ((half, half), (0, 0)), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1, axis=0)  # (T, 3, window)
        median = np.median(windows, axis=-1)
        scale = median[:, 2]
        off_center = np.hypot(values[:, 0] - median[:, 0], values[:, 1] - median[:, 1]) / scale
        off_side = np.abs(values[:, 2] - median[:, 2]) / scale
        outliers = (off_center > outlier_threshold) | (off_side > outlier_threshold)
        values[outliers] = median[outliers]

    if sigma > 0 and len(values) > 2:
        radius = max(1, int(math.ceil(3 * sigma)))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        taps /= taps.sum()
        values = np.stack([np.convolve(_pad_ends(values[:, k], radius), taps, mode="valid") for k in range(3)], axis=1)
    values[:, 2] = np.maximum(values[:, 2], 1e-3)  # the end reflection can overshoot on a shrinking face
    return [CropBox(float(cx), float(cy), float(side)) for cx, cy, side in values]


class BoxSmoother:
    """Streaming crop-box smoothing (one-euro filter) for live video, one frame at a time.

    The one-euro filter (Casiez et al., CHI 2012) is a low-pass whose cutoff rises with speed: heavy smoothing
    while the head is still (no jitter), little lag while it moves. Speeds are measured in box sides per second
    so the same settings work for small and large faces. A box that jumps more than ``outlier_threshold`` x side
    is ignored (the previous estimate is held) unless ``max_outliers`` jumps in a row say the face really moved
    (e.g. a cut), and then the filter restarts there.

    Args:
        fps: Frame rate of the video.
        min_cutoff: Cutoff frequency in Hz when still; lower means steadier.
        beta: How fast the cutoff grows with speed (Hz per side/second); higher means less lag. The defaults
            (0.5 Hz, 4) cut 3 px detector jitter on a 120 px box to about 1.3 px and trail a head moving
            0.3 sides per second by about 2 px (synthetic track at 25 fps).
        d_cutoff: Cutoff frequency in Hz for the speed estimate.
        outlier_threshold: Jump, as a fraction of the side, treated as an outlier.
        max_outliers: Consecutive outliers after which the filter restarts at the new box.
    """

    def __init__(
        self,
        *,
        fps: float = 25.0,
        min_cutoff: float = 0.5,
        beta: float = 4.0,
        d_cutoff: float = 1.0,
        outlier_threshold: float = 0.5,
        max_outliers: int = 3,
    ):
        if fps <= 0:
            raise InputError(f"fps must be positive, got {fps}")
        self.period = 1.0 / fps
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.outlier_threshold = outlier_threshold
        self.max_outliers = max_outliers
        self.reset()

    def reset(self) -> None:
        """Forgets the past, e.g. before another video."""
        self._value: np.ndarray | None = None  # (3,) smoothed cx, cy, side
        self._speed = np.zeros(3)  # smoothed derivative, in sides per second
        self._outliers = 0

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / self.period)

    def update(self, box: CropBox | None) -> CropBox | None:
        """Adds the next frame's box and returns the smoothed box.

        Args:
            box: This frame's box, or None when no face was found (the last estimate is held).

        Returns:
            The smoothed box, or None if no box has been seen yet.
        """
        if box is None:
            return None if self._value is None else CropBox(*map(float, self._value))
        x = np.array([box.cx, box.cy, box.side], np.float64)
        if self._value is None:
            self._value = x
            return box
        side = self._value[2]
        jump = max(math.hypot(*(x[:2] - self._value[:2])), abs(x[2] - side)) / side
        if jump > self.outlier_threshold:
            self._outliers += 1
            if self._outliers < self.max_outliers:
                return CropBox(*map(float, self._value))
            self.reset()
            self._value = x
            return box
        self._outliers = 0
        speed = (x - self._value) / self.period / side  # sides per second
        self._speed = self._speed + self._alpha(self.d_cutoff) * (speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        self._value = self._value + self._alpha(cutoff) * (x - self._value)
        return CropBox(*map(float, self._value))


# --------------------------------------------------------------------------------------------------------------
# Paste-back
# --------------------------------------------------------------------------------------------------------------


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _seam_mask(box: CropBox, size: int, width: int, height: int, feather: float) -> np.ndarray:
    """``(size, size)`` float32 blend weight in crop space: 1 inside, easing to 0 at the box edges that lie
    inside the image. Edges beyond the image border have no seam, so they get no feathering (which would
    otherwise let the original show through where the rendered head may have moved)."""
    ramp = max(feather * size, 1e-6)
    pos = np.arange(size, dtype=np.float32) + 0.5  # crop pixel centres
    x0, y0, x1, y1 = box.xyxy
    one = np.ones(size, np.float32)
    left = _smoothstep(pos / ramp) if x0 > 0 else one
    right = _smoothstep((size - pos) / ramp) if x1 < width else one
    top = _smoothstep(pos / ramp) if y0 > 0 else one
    bottom = _smoothstep((size - pos) / ramp) if y1 < height else one
    return np.minimum(np.minimum(top, bottom)[:, None], np.minimum(left, right)[None, :]).astype(np.float32)


def _inside_image(box: CropBox, size: int, width: int, height: int) -> np.ndarray:
    """``(size, size)`` bool: crop pixels whose source lies inside the image (not border replication)."""
    pos = (np.arange(size) + 0.5) * (box.side / size)
    xs, ys = box.x0 + pos, box.y0 + pos
    return ((ys >= 0) & (ys < height))[:, None] & ((xs >= 0) & (xs < width))[None, :]


def _match_colors(rendered: np.ndarray, original: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Matches the rendered crop's low-frequency colour to the original in the seam band.

    Two stages, both identity when ``rendered`` equals ``original``:

    1. Per channel gain and offset so that the band's mean and standard deviation match (the gain is limited to
       [0.8, 1.25] so that a band with motion in it cannot blow up the contrast).
    2. A smooth offset field for what is left (e.g. one side darker): the band's residual, down-weighted where it
       is large (pixels where the head really moved), spread over the crop by normalised Gaussian convolution at
       low resolution. It makes the colours agree all along the seam, which a single offset cannot.

    Args:
        rendered: ``(S, S, 3)`` float32 in [0, 255].
        original: ``(S, S, 3)`` float32, the original image resampled into crop space.
        band: ``(S, S)`` bool, where to compare.

    Returns:
        ``(S, S, 3)`` float32, the corrected crop (not clipped).
    """
    weights = band.astype(np.float32)
    if weights.sum() < 0.01 * band.size:
        return rendered
    total = weights.sum()
    out = np.empty_like(rendered)
    for c in range(3):
        r, o = rendered[..., c], original[..., c]
        mean_r, mean_o = (weights * r).sum() / total, (weights * o).sum() / total
        std_r = math.sqrt((weights * (r - mean_r) ** 2).sum() / total)
        std_o = math.sqrt((weights * (o - mean_o) ** 2).sum() / total)
        gain = float(np.clip(std_o / std_r, 0.8, 1.25)) if std_r > 1.0 else 1.0
        out[..., c] = gain * (r - mean_r) + mean_o

    residual = original - out  # (S, S, 3)
    tau = 12.0  # intensity levels: residuals well above this are motion, not colour drift
    robust = weights / (1.0 + (np.abs(residual).mean(axis=2) / tau) ** 2)
    size = rendered.shape[0]
    low = min(64, size)
    num = cv2.resize(residual * robust[..., None], (low, low), interpolation=cv2.INTER_AREA)
    den = cv2.resize(robust, (low, low), interpolation=cv2.INTER_AREA)
    sigma = low / 8
    num = cv2.GaussianBlur(num, (0, 0), sigma)
    den = cv2.GaussianBlur(den, (0, 0), sigma)
    field = num / np.maximum(den, 1e-3)[..., None]
    field *= np.clip(den / 1e-3, 0, 1)[..., None]  # no extrapolation where the band has no support at all
    field = cv2.resize(field, (size, size), interpolation=cv2.INTER_LINEAR)
    return out + field


def paste_back(
    full_image: np.ndarray,
    rendered_crop: np.ndarray,
    box: CropBox,
    *,
    feather: float = 0.08,
    match_colors: bool = True,
) -> np.ndarray:
    """Puts a rendered square back into the full-resolution photo it was cropped from, without a visible seam.

    The crop is warped back with :meth:`CropBox.inverse_affine` and blended with a mask that eases from 1 to 0
    over the outer ``feather`` of the crop (only along edges that lie inside the photo). With ``match_colors``
    the crop's colours are first matched to the photo in the seam band (see :func:`_match_colors`), so a
    renderer's small colour or brightness drift does not show as a frame around the face.

    Args:
        full_image: ``(H, W, 3)`` RGB uint8, the photo the crop came from.
        rendered_crop: ``(S, S, 3)`` RGB uint8, any ``S`` (it need not be the crop size used for rendering).
        box: The crop box the rendered square stands for.
        feather: Width of the soft edge as a fraction of the crop side (0 gives a hard edge).
        match_colors: Match colour and brightness to the photo near the seam.

    Returns:
        ``(H, W, 3)`` RGB uint8: a new image; pixels outside the box are exactly those of ``full_image``.
    """
    full_image = _check_image(full_image, "full_image")
    rendered_crop = _check_image(rendered_crop, "rendered_crop")
    if rendered_crop.shape[0] != rendered_crop.shape[1]:
        raise InputError(f"rendered_crop must be square, got shape {rendered_crop.shape}")
    if not 0.0 <= feather <= 0.5:
        raise InputError(f"feather must be in [0, 0.5], got {feather}")
    height, width = full_image.shape[:2]
    size = rendered_crop.shape[0]
    out = full_image.copy()
    x0, y0, x1, y1 = box.xyxy
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return out  # the box does not touch the photo

    rendered = rendered_crop.astype(np.float32)
    mask = _seam_mask(box, size, width, height, feather)
    if match_colors:
        original = crop(full_image, box, size).astype(np.float32)
        inside = _inside_image(box, size, width, height)
        # Compare where the blend happens (the feather ramp) and a little further in, so that there are enough
        # pixels even with a narrow feather.
        band = inside & (_seam_mask(box, size, width, height, max(feather, 0.08)) < 1.0)
        rendered = _match_colors(rendered, original, band)

    ix0, iy0, ix1, iy1 = _roi(box, width, height, margin=1)
    matrix = box.inverse_affine(size)
    matrix[:, 2] -= np.array([ix0, iy0], np.float64)  # into the ROI's pixel grid
    dsize = (ix1 - ix0, iy1 - iy0)
    warped = _warp(rendered, matrix, dsize, border_mode=cv2.BORDER_REPLICATE)
    # Bilinear for the mask: it is smooth already, and Lanczos would ring below 0 / above 1 at a hard edge.
    alpha = _warp(mask, matrix, dsize, border_mode=cv2.BORDER_CONSTANT, border_value=0.0,
                  interpolation=cv2.INTER_LINEAR)[..., None]
    region = out[iy0:iy1, ix0:ix1].astype(np.float32)
    blended = region + alpha * (warped - region)
    out[iy0:iy1, ix0:ix1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
