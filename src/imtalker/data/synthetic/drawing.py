"""Drawing one frame with OpenCV (:func:`draw_face`): features placed on a rotated ellipsoidal head, projected and
Lambert-shaded, painted back to front over a gradient background."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .faces import HAIR_STYLES, FaceState, Identity, luma
from .params import check_size

_SUBPIXEL = 4  # cv2 fractional bits: points are drawn with 1/16 pixel precision, so slow motion stays smooth
_FACE_DEPTH = 0.85  # z semi-axis of the head ellipsoid (x: face_width, y: 1.05)
_PIVOT = np.array([0.0, 0.25, -0.6])  # the head turns about a point behind the face, near the top of the neck
_MAX_GAP = 0.26  # inner-lip gap of a fully open mouth, face units (13% of the face height)
_FACE_CENTRE_Y = 0.51  # image height fraction of the face's centre at zoom 1


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The (3, 3) head rotation in the face-local axes (x right, y down, z towards the camera), yaw after pitch
    after roll, with the signs of the conventions in :mod:`imtalker.data.synthetic`."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    r_yaw = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])  # z > 0 (the nose) moves to the image's left
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # the nose moves up (y decreases)
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])  # clockwise on screen (y down)
    return r_yaw @ r_pitch @ r_roll


@dataclass(frozen=True)
class _View:
    """Maps face-local 3-D points to image pixels: rotate about the pivot, drop z, scale and place.

    That is one affine map, ``pixels = points @ matrix.T + offset``, precomputed by :func:`_view`.
    """

    rotation: np.ndarray  # (3, 3)
    origin: np.ndarray  # (2,) pixel position of the face-local origin before rotation
    scale: float  # pixels per face unit
    matrix: np.ndarray  # (2, 3)
    offset: np.ndarray  # (2,)

    def project(self, points: np.ndarray) -> np.ndarray:
        """``(..., 3)`` face-local points -> ``(..., 2)`` pixels."""
        return np.asarray(points, np.float64) @ self.matrix.T + self.offset


def _view(rotation: np.ndarray, origin: np.ndarray, scale: float) -> _View:
    matrix = scale * rotation[:2]
    offset = origin + scale * (_PIVOT - rotation @ _PIVOT)[:2]
    return _View(rotation, origin, scale, matrix, offset)


def _surface_z(identity: Identity, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height of the head ellipsoid's front over the face plane at ``(x, y)``; 0 outside its outline."""
    inside = 1.0 - (x / identity.face_width) ** 2 - (y * (1 / 1.05)) ** 2
    return _FACE_DEPTH * np.sqrt(np.clip(inside, 0.0, 1.0))


def surface_points(identity: Identity, xy: np.ndarray, lift: float | np.ndarray = 0.0) -> np.ndarray:
    """Face-plane points ``(..., 2)`` placed on the head ellipsoid's front, raised by ``lift``: ``(..., 3)``."""
    xy = np.asarray(xy, np.float64)
    z = _surface_z(identity, xy[..., 0], xy[..., 1]) + lift
    return np.concatenate([xy, z[..., None]], axis=-1)


def _place(identity: Identity, view: _View, xy: np.ndarray, lift: float = 0.0) -> np.ndarray:
    """Face-plane points ``(n, 2)`` on the head's surface (raised by ``lift``) -> ``(n, 2)`` pixels.

    The same as ``view.project(surface_points(identity, xy, lift))``, in fewer steps: it runs ~40 times a frame.
    """
    z = _surface_z(identity, xy[:, 0], xy[:, 1]) + lift
    return xy @ view.matrix[:, :2].T + z[:, None] * view.matrix[:, 2] + view.offset


def _pts(pixels: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> int32 points for cv2 drawing with _SUBPIXEL fractional bits."""
    return np.round(np.asarray(pixels) * (1 << _SUBPIXEL)).astype(np.int32).reshape(-1, 1, 2)


def _colour(rgb: Sequence[float], factor: float = 1.0) -> tuple[float, ...]:
    return tuple(min(max(float(c) * factor, 0.0), 255.0) for c in rgb)  # plain Python: called ~100 times a frame


def _fill(image: np.ndarray, pixels: np.ndarray, colour: Sequence[float]) -> None:
    cv2.fillPoly(image, [_pts(pixels)], _colour(colour), cv2.LINE_AA, _SUBPIXEL)


def _line(image: np.ndarray, pixels: np.ndarray, colour: Sequence[float], thickness: float) -> None:
    cv2.polylines(image, [_pts(pixels)], False, _colour(colour), max(1, int(round(thickness))), cv2.LINE_AA,
                  _SUBPIXEL)


def _ellipse_points(centre: Sequence[float], axes: Sequence[float], count: int = 24,
                    start: float = 0.0, stop: float = 2 * np.pi) -> np.ndarray:
    """``(count, 2)`` points of an axis-aligned ellipse, or of an arc from angle ``start`` to ``stop`` (inclusive)."""
    if start == 0.0 and stop == 2 * np.pi and count in _CIRCLES:
        circle = _CIRCLES[count]
    else:
        t = np.linspace(start, stop, count, endpoint=abs(stop - start) < 2 * np.pi - 1e-9)
        circle = np.stack([np.cos(t), np.sin(t)], axis=-1)
    return circle * (axes[0], axes[1]) + (centre[0], centre[1])


# Unit circles for the point counts used, computed once (constants): ellipses are drawn ~30 times a frame.
_CIRCLES = {n: np.stack([np.cos(t), np.sin(t)], -1) for n in (10, 12, 16, 20, 24, 40, 48, 80)
            for t in [np.linspace(0.0, 2 * np.pi, n, endpoint=False)]}


def _bounds(pixels: np.ndarray, width: int, height: int, margin: int = 2) -> tuple[int, int, int, int] | None:
    """Integer ROI ``(x0, y0, x1, y1)`` around ``pixels``, clipped to the image; None when empty."""
    x0, y0 = np.floor(pixels.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(pixels.max(axis=0)).astype(int) + margin
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _fill_clipped(image: np.ndarray, clip: np.ndarray, shapes: Sequence[tuple[np.ndarray, Sequence[float]]]) -> None:
    """Fills each ``(polygon, colour)`` in ``shapes``, but only inside the polygon ``clip`` (all in pixels)."""
    roi = _bounds(clip, image.shape[1], image.shape[0])
    if roi is None:
        return
    x0, y0, x1, y1 = roi
    offset = np.array([x0, y0], np.float64)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _fill(mask, clip - offset, (255,))
    patch = image[y0:y1, x0:x1].copy()
    for polygon, colour in shapes:
        _fill(patch, polygon - offset, colour)
    alpha = mask[..., None].astype(np.float32) / 255.0
    region = image[y0:y1, x0:x1]
    region[:] = np.rint(region + alpha * (patch.astype(np.float32) - region)).astype(np.uint8)


def background_image(identity: Identity, size: int) -> np.ndarray:
    """The vertical gradient with a soft vignette, ``(size, size, 3)`` uint8."""
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    top, bottom = np.array(identity.background_top), np.array(identity.background_bottom)
    image = top + (bottom - top) * y  # (size, 1, 3)
    xx = np.linspace(-1.0, 1.0, size)[None, :, None]
    yy = np.linspace(-1.0, 1.0, size)[:, None, None]
    image = image * (1.0 - 0.18 * (xx**2 + yy**2) / 2)
    return np.clip(np.rint(np.broadcast_to(image, (size, size, 3))), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class _Frame:
    """Everything one frame's drawing needs."""

    identity: Identity
    state: FaceState
    view: _View
    image: np.ndarray  # (S, S, 3) uint8, drawn into


def make_view(identity: Identity, state: FaceState, size: int) -> _View:
    scale = 0.5 * identity.face_height * size * state.zoom
    origin = np.array([0.5 + state.shift[0], _FACE_CENTRE_Y + state.shift[1]]) * size
    return _view(_rotation(*state.pose), origin, scale)


def _silhouette(identity: Identity, gap: float, count: int = 48) -> np.ndarray:
    """The face outline in the face plane, ``(count, 2)``: an egg, narrower at the chin, longer with the jaw open."""
    t = np.linspace(0.0, 2 * np.pi, count, endpoint=False)
    x, y = identity.face_width * np.cos(t), np.sin(t)
    lower = y > 0
    x = np.where(lower, x * (1.0 - identity.chin_taper * y**2), x)
    y = np.where(lower, y * (1.0 + 0.45 * gap), y * 1.02)
    return np.stack([x, y], axis=-1)


def _draw_body(frame: _Frame) -> None:
    """Shoulders, neckline and neck; they follow the camera but not the head's rotation."""
    ident, view, image = frame.identity, frame.view, frame.image
    w = ident.face_width
    flat = _view(np.eye(3), view.origin, view.scale)

    def px(points):
        points = np.asarray(points, np.float64)
        return flat.project(np.concatenate([points, np.zeros(points.shape[:-1] + (1,))], axis=-1))

    shirt = _ellipse_points((0.0, 2.75), (2.3 * w / 0.75, 1.2), 40)
    neck = np.array([[-0.5 * w, 0.2], [0.5 * w, 0.2], [0.56 * w, 1.6], [-0.56 * w, 1.6]])
    _fill(image, px(neck), _colour(ident.skin, 0.8))
    # The jaw's shadow on the neck; the face drawn later covers its upper part.
    _fill(image, px(_ellipse_points((0.0, 0.95), (0.5 * w, 0.35))), _colour(ident.skin, 0.6))
    _fill(image, px(shirt), ident.shirt)
    neckline = np.array([[-0.5 * w, 1.45], [0.5 * w, 1.45], [0.0, 2.0]])  # starts above the shirt: no seam
    _fill(image, px(neckline), _colour(ident.skin, 0.8))


def _hair_cap(ident: Identity) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centre and semi-axes of the hair over the skull (face plane), by style."""
    w = ident.face_width
    style = HAIR_STYLES[ident.hair_style]
    if style == "receding":
        return (0.0, -0.3), (1.04 * w, 0.84)
    if style in ("long", "bob"):
        return (0.0, -0.3), (1.2 * w, 0.95)
    return (0.0, -0.32), (1.12 * w, 0.9)


def _draw_back_hair(frame: _Frame) -> None:
    """Hair behind the head: the skull's cap and, for long styles, hair falling to the shoulders."""
    ident, view, image = frame.identity, frame.view, frame.image
    style = HAIR_STYLES[ident.hair_style]
    colour = _hair_colour(ident)
    centre, axes = _hair_cap(ident)
    cap = surface_points(ident, _ellipse_points(centre, axes, 80), 0.03)
    if style in ("long", "bob"):
        bottom = 1.55 if style == "long" else 0.55
        side = _ellipse_points(centre, axes, 24, np.pi, 2 * np.pi)  # the cap's upper half, left to right
        ends = np.array([[1.02 * axes[0], bottom - 0.1], [0.9 * axes[0], bottom], [-0.9 * axes[0], bottom],
                         [-1.02 * axes[0], bottom - 0.1]])
        fall = np.concatenate([side, ends])
        _fill(image, _place(ident, view, fall, 0.03), _colour(colour, 0.85))
    _fill(image, view.project(cap), colour)


def _hair_colour(ident: Identity) -> tuple[float, float, float]:
    if HAIR_STYLES[ident.hair_style] == "receding":  # thin hair: the scalp shows through
        return tuple(0.55 * h + 0.45 * s for h, s in zip(ident.hair, ident.skin))
    return ident.hair


def _draw_ears(frame: _Frame) -> None:
    ident, view, image = frame.identity, frame.view, frame.image
    for side in (-1.0, 1.0):
        centre = (side * 0.97 * ident.face_width, ident.eye_y + 0.2)
        outer = _ellipse_points(centre, (0.12, 0.22), 20)
        inner = _ellipse_points((centre[0] + side * 0.02, centre[1]), (0.06, 0.14), 16)
        z = np.full((20, 1), -0.2)
        _fill(image, view.project(np.concatenate([outer, z], axis=-1)), _colour(ident.skin, 0.88))
        _fill(image, view.project(np.concatenate([inner, z[:16]], axis=-1)), _colour(ident.skin, 0.7))


def _shade(frame: _Frame, roi: tuple[int, int, int, int]) -> np.ndarray:
    """Lambert shading of the head ellipsoid seen through the pixels of ``roi``: ``(h, w)`` float32 in [0.45, 1].

    Each pixel's ray (orthographic, along z) is intersected with the rotated ellipsoid; pixels that miss it get
    the silhouette's (grazing) shade.
    """
    ident, view = frame.identity, frame.view
    x0, y0, x1, y1 = roi
    # Shading is smooth: computed on a grid of half the resolution, at the pixel centres cv2.resize assumes.
    cols, rows = max((x1 - x0 + 1) // 2, 1), max((y1 - y0 + 1) // 2, 1)
    u = (x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols - view.origin[0]) / view.scale  # rotated frame
    v = (y0 + (np.arange(rows) + 0.5) * (y1 - y0) / rows - view.origin[1]) / view.scale
    uu, vv = np.meshgrid(u, v)
    inv = view.rotation.T
    # Ray p(s) = (u, v, s) in the rotated frame; in head coordinates q = inv (p - pivot) + pivot = w0 + s d.
    w0 = (np.stack([uu, vv, np.zeros_like(uu)], axis=-1) - _PIVOT) @ inv.T + _PIVOT  # (rows, cols, 3)
    d = inv[:, 2]
    axes = np.array([ident.face_width, 1.05, _FACE_DEPTH])
    dd, ww = d / axes**2, w0 / axes**2
    a = float(d @ dd)
    b = ww @ d
    c = np.einsum("...i,...i->...", w0, ww) - 1.0
    disc = np.maximum(b * b - a * c, 0.0)
    s = (-b + np.sqrt(disc)) / a  # the root nearer the camera
    q = w0 + s[..., None] * d
    normal = (q / axes**2) @ view.rotation.T  # back to the camera's axes
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
    light = np.array([0.6 * ident.light, -0.45, 1.0])
    light /= np.linalg.norm(light)
    lambert = np.clip(normal @ light, 0.0, 1.0)
    shade = (0.45 + 0.55 * lambert).astype(np.float32)  # 1 where the light falls straight on
    return cv2.resize(shade, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)


def _shading_marks(frame: _Frame, roi: tuple[int, int, int, int]) -> np.ndarray:
    """Soft shadows (positive) and highlights (negative) of the features on the skin, ``(h, w)`` float32."""
    ident, view = frame.identity, frame.view
    x0, y0, x1, y1 = roi
    marks = np.zeros((y1 - y0, x1 - x0), np.float32)
    offset = np.array([x0, y0], np.float64)

    def blob(xy_points, value, lift=0.0):
        cv2.fillPoly(marks, [_pts(_place(ident, view, xy_points, lift) - offset)], float(value),
                     cv2.LINE_8, _SUBPIXEL)

    ex, ey = ident.eye_spacing, ident.eye_y
    for side in (-1.0, 1.0):
        blob(_ellipse_points((side * ex, ey - 0.05), (1.6 * ident.eye_size, 0.11), 20), 0.16)  # eye sockets
        blob(_ellipse_points((side * 0.36 * ident.face_width / 0.75, 0.18), (0.16, 0.1), 16), -0.07)  # cheekbones
    nose = ident.nose_length
    shadow_side = -1.0 if ident.light > 0 else 1.0  # the side of the nose away from the light
    blob(np.array([[0.02 * shadow_side, ey + 0.02], [0.09 * shadow_side, ey + 0.05], [0.12 * shadow_side, nose],
                   [0.03 * shadow_side, nose + 0.02]]), 0.3, 0.1)
    blob(_ellipse_points((0.0, nose + 0.09), (0.1, 0.035), 16), 0.22)  # under the nose
    blob(_ellipse_points((0.0, nose - 0.04), (0.04, 0.05), 12), -0.12, 0.25)  # the tip catches the light
    blob(_ellipse_points((0.0, -0.55), (0.32, 0.2), 16), -0.06)  # forehead highlight
    gap = frame.state.mouth * _MAX_GAP
    blob(_ellipse_points((0.0, ident.mouth_y + 0.7 * gap + ident.lip_thickness + 0.06), (0.13, 0.04), 16), 0.14)
    sigma = max(0.05 * view.scale, 0.8)
    return cv2.GaussianBlur(marks, (0, 0), sigma)


def _draw_skin(frame: _Frame) -> None:
    """The face: a shaded silhouette, blended in with an anti-aliased mask."""
    ident, state, view, image = frame.identity, frame.state, frame.view, frame.image
    gap = state.mouth * _MAX_GAP
    outline = view.project(np.concatenate([_silhouette(ident, gap), np.zeros((48, 1))], axis=-1))
    roi = _bounds(outline, image.shape[1], image.shape[0])
    if roi is None:
        return
    x0, y0, x1, y1 = roi
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _fill(mask, outline - np.array([x0, y0]), (255,))
    shade = _shade(frame, roi) * (1.0 - _shading_marks(frame, roi))
    skin = np.array(ident.skin, np.float32) * shade[..., None]
    alpha = mask[..., None].astype(np.float32) / 255.0
    region = image[y0:y1, x0:x1]
    region[:] = np.clip(np.rint(region + alpha * (skin - region)), 0, 255).astype(np.uint8)


def _draw_brows(frame: _Frame) -> None:
    ident, view, image = frame.identity, frame.view, frame.image
    colour = _colour(_hair_colour(ident), 0.75) if luma(ident.hair) > 60 else ident.hair
    t = np.linspace(0.0, 1.0, 12)
    for side in (-1.0, 1.0):
        inner = ident.eye_spacing - 1.0 * ident.eye_size
        outer = ident.eye_spacing + 1.35 * ident.eye_size
        x = side * (inner + (outer - inner) * t)
        base = ident.eye_y - ident.brow_height - ident.brow_arch * np.sin(np.pi * np.clip(t / 1.2, 0, 1)) + 0.03 * t
        thick = ident.brow_thickness * (1.0 - 0.6 * t)
        upper = np.stack([x, base - thick / 2], axis=-1)
        lower = np.stack([x, base + thick / 2], axis=-1)[::-1]
        _fill(image, _place(ident, view, np.concatenate([upper, lower]), 0.02), colour)


def _draw_eyes(frame: _Frame) -> None:
    """Eye whites within the lids, iris and pupil (following the gaze), lash line, crease; blinks lower the lid."""
    ident, state, view, image = frame.identity, frame.state, frame.view, frame.image
    t = np.linspace(0.0, 1.0, 13)
    half_w, up, down = ident.eye_size, 0.62 * ident.eye_size, 0.38 * ident.eye_size
    closed = float(np.clip(state.blink, 0.0, 1.0))
    gaze_pitch, gaze_yaw = state.gaze
    lash = (35.0, 25.0, 25.0)
    for side in (-1.0, 1.0):
        cx, cy = side * ident.eye_spacing, ident.eye_y
        x = cx + side * half_w * (2 * t - 1)  # inner corner (t = 0) to outer
        arch = np.sin(np.pi * t) ** 0.8
        # The lids follow the eye up and down (the upper one more), as real lids do; the face mesh reads vertical
        # gaze largely from them.
        lift = 0.14 * math.sin(gaze_pitch)
        lower_y = cy + (down - 0.4 * lift) * arch
        open_upper = cy - (up + 0.8 * lift) * np.sin(np.pi * t**1.1) ** 0.8
        upper_y = open_upper + closed * (cy + 0.7 * down * arch - open_upper)  # the lid comes down to the lower one
        upper = surface_points(ident, np.stack([x, upper_y], -1), -0.02)
        lower = surface_points(ident, np.stack([x, lower_y], -1), -0.02)
        crease = surface_points(ident, np.stack([x, open_upper - 0.035 - 0.01 * arch], -1), 0.0)
        _line(image, view.project(crease[2:-1]), _colour(ident.skin, 0.72), 0.012 * view.scale)
        if closed < 0.97:
            eye = view.project(np.concatenate([upper, lower[::-1]]))
            # The iris turns with an eyeball of radius 0.14 face units (12 mm on an adult face).
            iris_centre = np.array([cx - 0.14 * math.sin(gaze_yaw), cy - 0.14 * math.sin(gaze_pitch)])
            r = 0.52 * ident.eye_size
            iris = _place(ident, view, _ellipse_points(iris_centre, (r, r), 24), 0.01)
            pupil = _place(ident, view, _ellipse_points(iris_centre, (0.42 * r, 0.42 * r), 16), 0.015)
            glint = _place(ident, view, _ellipse_points(iris_centre + (0.3 * r, -0.35 * r), (0.18 * r, 0.18 * r), 10),
                           0.02)
            _fill_clipped(image, eye, [
                (eye, (238.0, 234.0, 228.0)),
                (iris, ident.iris),
                (_place(ident, view, _ellipse_points(iris_centre, (0.7 * r, 0.7 * r), 20), 0.012),
                 _colour(ident.iris, 0.75)),
                (pupil, (12.0, 10.0, 10.0)),
                (glint, (250.0, 250.0, 250.0)),
                (view.project(np.concatenate([upper, upper[::-1] + (0, 0.35 * up, 0)])), (150.0, 140.0, 135.0)),
            ])
        _line(image, view.project(upper), lash, (0.025 - 0.008 * closed) * view.scale)
        _line(image, view.project(lower[1:-1]), _colour(ident.skin, 0.7), 0.008 * view.scale)


def _draw_nose(frame: _Frame) -> None:
    ident, view, image = frame.identity, frame.view, frame.image
    tip, width = ident.nose_length, ident.nose_width
    line = _colour(ident.skin, 0.62)
    for side in (-1.0, 1.0):
        wing = _ellipse_points((side * 0.7 * width, tip + 0.01), (0.45 * width, 0.05), 10,
                               np.pi * (0.5 - 0.6 * side), np.pi * (0.5 + 0.6 * side))
        _line(image, _place(ident, view, wing, 0.12), line, 0.012 * view.scale)
        nostril = _ellipse_points((side * 0.4 * width, tip + 0.045), (0.032, 0.016), 12)
        _fill(image, _place(ident, view, nostril, 0.14), _colour(ident.skin, 0.35))


def _mouth_contours(ident: Identity, state: FaceState, count: int = 15):
    """Outer upper, inner upper, inner lower and outer lower lip contours, each ``(count, 2)``, left to right."""
    gap = float(np.clip(state.mouth, 0.0, 1.0)) * _MAX_GAP
    rounding = float(np.clip(state.rounding, 0.0, 1.0))
    half = ident.mouth_width * (1.0 - 0.3 * rounding)
    x = half * np.linspace(-1.0, 1.0, count)
    profile = np.sqrt(np.clip(1.0 - (x / half) ** 2, 0.0, 1.0))
    centre = ident.mouth_y + 0.15 * gap  # the corners drop a little as the jaw opens
    inner_upper = centre - (0.3 * gap + 0.004) * profile ** 0.7
    inner_lower = centre + (0.7 * gap + 0.004) * profile ** 0.7
    upper_thick = 0.7 * ident.lip_thickness * (1.0 + 0.3 * rounding)
    # Cupid's bow: a dip in the middle of the upper lip between two small peaks.
    bow = 1.0 - 0.3 * np.exp(-((x / (0.18 * half)) ** 2)) + 0.12 * np.exp(-((np.abs(x) / half - 0.3) / 0.2) ** 2)
    outer_upper = inner_upper - upper_thick * profile**0.6 * bow
    outer_lower = inner_lower + ident.lip_thickness * (1.0 + 0.3 * rounding) * profile**0.7
    return tuple(np.stack([x, y], axis=-1) for y in (outer_upper, inner_upper, inner_lower, outer_lower))


def _draw_mouth(frame: _Frame) -> None:
    """Lips (upper a little darker), and when open the dark interior with upper teeth and tongue."""
    ident, state, view, image = frame.identity, frame.state, frame.view, frame.image
    contours = _mouth_contours(ident, state)
    outer_upper, inner_upper, inner_lower, outer_lower = (_place(ident, view, c, 0.05) for c in contours)
    _fill(image, np.concatenate([outer_upper, inner_upper[::-1]]), _colour(ident.lips, 0.88))
    _fill(image, np.concatenate([inner_lower, outer_lower[::-1]]), ident.lips)
    gap = float(np.clip(state.mouth, 0.0, 1.0)) * _MAX_GAP
    if gap > 0.01:
        interior = np.concatenate([inner_upper, inner_lower[::-1]])
        # Upper front teeth: a band hanging from the upper lip, and the tongue resting low; both clipped to the
        # mouth's interior, so only what the lips leave open shows.
        top = contours[1][:, 1].min() - 0.02
        half = 0.75 * contours[1][-1, 0]
        teeth = np.array([[-half, top], [half, top], [half, top + 0.075], [-half, top + 0.075]])
        tongue = _ellipse_points((0.0, contours[2][:, 1].max()), (0.8 * contours[2][-1, 0], 0.07), 20)
        _fill_clipped(image, interior, [
            (interior, (70.0, 22.0, 28.0)),
            (_place(ident, view, tongue, 0.0), (165.0, 78.0, 80.0)),
            (_place(ident, view, teeth, 0.03), (236.0, 232.0, 222.0)),
        ])
    _line(image, (inner_upper + inner_lower) / 2 if gap <= 0.01 else inner_upper, _colour(ident.lips, 0.45),
          0.012 * view.scale)
    highlight = _ellipse_points((0.0, ident.mouth_y + 0.7 * gap + 0.55 * ident.lip_thickness),
                                (0.35 * ident.mouth_width, 0.015), 12)
    _fill(image, _place(ident, view, highlight, 0.06), _colour(ident.lips, 1.18))


def _hairline(ident: Identity) -> np.ndarray:
    """The front hair's lower edge on the forehead, ``(n, 2)`` in the face plane, image left to right."""
    w = ident.face_width
    style = HAIR_STYLES[ident.hair_style]
    x = np.linspace(-1.0, 1.0, 21) * w * 1.02
    u = x / w
    if style == "receding":
        y = -0.86 + 0.12 * np.exp(-((np.abs(u) - 0.55) / 0.2) ** 2) + 0.5 * np.clip(np.abs(u) - 0.85, 0, 1)
    elif style == "fringe":
        y = -0.5 - 0.2 * (u + 1) / 2 + 0.6 * np.clip(np.abs(u) - 0.8, 0, 1)
    elif style == "bob":
        y = -0.56 + 0.02 * np.cos(7 * u) + 1.8 * np.clip(np.abs(u) - 0.85, 0, 1)
    else:  # short, long: a rounded hairline with temples
        y = -0.72 + 0.2 * u**2 + 1.2 * np.clip(np.abs(u) - 0.9, 0, 1)
        if style == "long":  # centre parting
            y -= 0.08 * np.exp(-(u / 0.12) ** 2)
    return np.stack([x, y], axis=-1)


def _draw_front_hair(frame: _Frame) -> None:
    """Hair over the top of the forehead, from the hairline up over the skull's cap."""
    ident, view, image = frame.identity, frame.view, frame.image
    colour = _hair_colour(ident)
    edge = surface_points(ident, _hairline(ident), 0.03)
    centre, axes = _hair_cap(ident)
    top = _ellipse_points(centre, axes, 40, 0.0, -np.pi)  # right side, over the top, to the left
    cap = surface_points(ident, top, 0.03)  # the same points as the back cap's top, so their outlines agree
    _fill(image, np.concatenate([view.project(edge), view.project(cap)]), colour)


def draw_face(identity: Identity, state: FaceState, size: int, background: np.ndarray | None = None) -> np.ndarray:
    """Draws one frame.

    Args:
        identity: Who.
        state: Pose, gaze, mouth, blink and camera of this frame.
        size: Side of the square image in pixels.
        background: The ``(size, size, 3)`` uint8 background to draw on (copied), e.g. a clip's precomputed one;
            None makes it.

    Returns:
        ``(size, size, 3)`` uint8 RGB image.
    """
    size = check_size(size)
    base = background_image(identity, size) if background is None else background
    frame = _Frame(identity, state, make_view(identity, state, size), base.copy())
    # Painter's order, back to front.
    _draw_back_hair(frame)
    _draw_body(frame)
    _draw_ears(frame)
    _draw_skin(frame)
    _draw_brows(frame)
    _draw_eyes(frame)
    _draw_nose(frame)
    _draw_mouth(frame)
    _draw_front_hair(frame)
    return frame.image
