"""Measuring a video's mouth opening with the face mesh (:func:`measure_mouth_opening`): the lip-sync metric's
measuring tool."""

from __future__ import annotations

import numpy as np

_INNER_LIP_UPPER, _INNER_LIP_LOWER = 13, 14  # face-mesh points at the middle of the inner lips


def measure_mouth_opening(frames, detector=None) -> np.ndarray:
    """Measures how open the mouth is in each frame, with the face mesh.

    The opening is the distance between the inner-lip points (mesh 13 and 14) over the face height (mesh 10,
    the top of the forehead, to 152, the chin), so it does not depend on the image size or the face's distance.
    The mesh runs in tracking mode over the frames, which are taken to be consecutive frames of one video.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB frames, or an iterable of ``(H, W, 3)`` frames.
        detector: A :class:`imtalker.preprocess.face.FaceDetector` to use (its tracking is reset first); None makes one.

    Returns:
        ``(N,)`` float32: the opening per frame (about 0 closed to 0.1-0.15 wide open), NaN where no face mesh
        was found.
    """
    from ...preprocess.face import CHIN, FOREHEAD_TOP, FaceDetector

    own = detector is None
    if own:
        detector = FaceDetector(max_faces=1)
    values = []
    try:
        detector.reset_tracking()
        for frame in frames:
            faces = [f for f in detector.track(np.asarray(frame)) if f.landmarks is not None]
            if not faces:
                values.append(np.nan)
                continue
            points = max(faces, key=lambda f: f.area).landmarks
            gap = np.linalg.norm(points[_INNER_LIP_LOWER] - points[_INNER_LIP_UPPER])
            height = np.linalg.norm(points[CHIN] - points[FOREHEAD_TOP])
            values.append(gap / height if height > 0 else np.nan)
        detector.reset_tracking()
    finally:
        if own:
            detector.close()
    return np.asarray(values, np.float32)
