"""Re-express the demo generator's pose, gaze and camera inputs in the published conventions, without retraining.

    python scripts/convert_demo_generator_conventions.py            # rewrites the bundled generator in place

The demo generator (trained 2026-12-02) saw tracks in our legacy conventions: Euler (yaw, pitch, roll), gaze relative
to the head, cam (x / z, y / z, z / Z_REF). Each condition enters through a Linear layer, so a change of variables
``legacy = M published + c`` folds into it: ``W' = W M``, ``b' = b + W c``. For the pose this is the axis
permutation and signs of `imtalker.preprocess.conventions.euler_to_flame` linearised at the frontal head (the
two agree to second order in the angle); for the camera the conversion linearised at the corpus's mean framing; for
the gaze the swap of L2CS's (horizontal, vertical) order, leaving out the head turn that L2CS gaze includes (the
gaze projection does not see the pose). docs/conditions.md states what this gives (bench_tracks.py measures it).
A generator whose file records ``conditions: published`` is not converted again.

The tracks it saw were also measured by the estimator as it was then, which read a face looking into the lens as
tilted back by about 8 degrees and its eyes as looking up by about 8.5 (the median over the synthetic training
clips; `imtalker.preprocess.tracks.FRONTAL_TILT_DEGREES` and its eyeball model now read such faces level). The same
fold re-expresses its inputs in the new estimator's terms (``old = new + offset``), so that pitch 0 still means a
level head to it; ``estimator: ESTIMATOR`` in the file records that it was done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from imtalker.preprocess.conventions import PUBLISHED, Z_REF_METRES
from imtalker.weights import load_generator, read_checkpoint, save_model

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "imtalker" / "assets" / "demo_model" / "generator.safetensors"
MEAN_DEPTH = 1.25  # z / Z_REF of the synthetic corpus's base framing (imtalker.data.synthetic docstring)


def legacy_from_published() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per condition, (M, c) with legacy ~= M published + c."""
    pose = np.array([[0.0, -1.0, 0.0],  # yaw = -(FLAME y-rotation)
                     [-1.0, 0.0, 0.0],  # pitch = -(FLAME x-rotation)
                     [0.0, 0.0, -1.0]])  # roll = -(FLAME z-rotation)
    gaze = np.array([[0.0, 1.0],  # our pitch (up) = L2CS g1 (vertical), less the head's pitch
                     [1.0, 0.0]])  # our yaw (image left) = L2CS g0 (horizontal), less the head's yaw
    s0 = 2.0 / (MEAN_DEPTH * Z_REF_METRES)
    cam = np.array([[0.0, s0 / 2, 0.0],  # x / z = s tx / 2
                    [0.0, 0.0, -s0 / 2],  # y / z = -s ty / 2
                    [-MEAN_DEPTH / s0, 0.0, 0.0]])  # z / Z_REF = 2 / (s Z_REF), linearised at s0
    return {"pose": (pose, np.zeros(3)), "gaze": (gaze, np.zeros(2)), "cam": (cam, np.array([0.0, 0.0, 2 * MEAN_DEPTH]))}


ESTIMATOR = "frontal-tilt-8deg/eyeball"  # the estimator the generator's inputs are now expressed in
# The old estimator's readings less the new one's, over the synthetic training clips (medians): the head's pitch up
# (a FLAME x-rotation of the opposite sign) and the eyes' (L2CS's second, vertical, component: what the converted
# gaze layer reads as the eyes' pitch).
OLD_ESTIMATOR_POSE_OFFSET = np.radians([-8.0, 0.0, 0.0])
OLD_ESTIMATOR_GAZE_OFFSET = np.radians([0.0, 8.5])


def old_estimates_from_new() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per condition, (M, c) with the old estimator's reading ~= M new + c (published conventions)."""
    return {"pose": (np.eye(3), OLD_ESTIMATOR_POSE_OFFSET), "gaze": (np.eye(2), OLD_ESTIMATOR_GAZE_OFFSET)}


def fold(generator, changes: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Folds ``input_seen_in_training = M input + c`` into each condition's first Linear layer."""
    with torch.no_grad():
        for name, (matrix, offset) in changes.items():
            linear = getattr(generator, f"{name}_projection")[0]
            weight = linear.weight.double()  # (cond_dim, in)
            linear.bias.copy_(linear.bias.double() + weight @ torch.from_numpy(offset))
            linear.weight.copy_(weight @ torch.from_numpy(matrix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", type=Path, default=BUNDLED)
    parser.add_argument("--out", type=Path, default=None, help="default: overwrite --generator")
    args = parser.parse_args()
    metadata = read_checkpoint(args.generator).metadata or {}
    steps = []
    if metadata.get("conditions") != PUBLISHED:
        steps.append(("conditions", PUBLISHED, legacy_from_published()))
    if metadata.get("estimator") != ESTIMATOR:
        steps.append(("estimator", ESTIMATOR, old_estimates_from_new()))
    if not steps:
        raise SystemExit(f"{args.generator} already takes conditions in the published conventions, as the "
                         f"estimator {ESTIMATOR} measures them")
    generator = load_generator(args.generator).float()
    for _, _, changes in steps:
        fold(generator, changes)
    metadata = {key: value for key, value in metadata.items() if isinstance(value, str)}
    metadata.update({key: value for key, value, _ in steps})
    save_model(generator, args.out or args.generator, dtype=torch.float16, metadata=metadata)
    print(f"wrote {args.out or args.generator} ({', '.join(f'{key}: {value}' for key, value, _ in steps)})")


if __name__ == "__main__":
    main()
