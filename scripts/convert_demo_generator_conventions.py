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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", type=Path, default=BUNDLED)
    parser.add_argument("--out", type=Path, default=None, help="default: overwrite --generator")
    args = parser.parse_args()
    metadata = read_checkpoint(args.generator).metadata or {}
    if metadata.get("conditions") == PUBLISHED:
        raise SystemExit(f"{args.generator} already takes conditions in the published conventions")
    generator = load_generator(args.generator).float()
    with torch.no_grad():
        for name, (matrix, offset) in legacy_from_published().items():
            linear = getattr(generator, f"{name}_projection")[0]
            weight = linear.weight.double()  # (cond_dim, in)
            linear.bias.copy_(linear.bias.double() + weight @ torch.from_numpy(offset))
            linear.weight.copy_(weight @ torch.from_numpy(matrix))
    metadata = {key: value for key, value in metadata.items() if isinstance(value, str)}
    save_model(generator, args.out or args.generator, dtype=torch.float16, metadata={**metadata, "conditions": PUBLISHED})
    print(f"wrote {args.out or args.generator} (conditions: {PUBLISHED})")


if __name__ == "__main__":
    main()
