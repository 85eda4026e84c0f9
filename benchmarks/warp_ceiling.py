"""How far can moving the source's pixels go on a corpus? Reenactment PSNR of warps drawn from the face mesh.

For each prepared held-out clip, frame 0 is the source and frames 5, 10, ... drive it (as in
`probe_renderer_motion.py`). Each driving frame gets a dense flow back to the source interpolated from where the
face-mesh landmarks went (inverse-distance weights of the nearest landmarks, with the image border held still),
then:

- copy: the source itself (what a renderer that ignores motion scores);
- warp: the source resampled by that flow, pixel by pixel (bilinear);
- block warp: the source's 4 x 4 pixel blocks moved by the flow at their centres, rounded to whole blocks (what a
  renderer moving the source's pixels by the finest attention's arg-max could do with a perfect arg-max at 128 px);
- best of warp and copy: per pixel whichever is closer to the real frame, an optimistic bound for a warp that knew
  which pixels belong to the moving head.

None of them paints what the source does not show (an open mouth, closed eyes, hair the head turned into view).
The landmark flow is a poor guess away from the face mesh (hair, neck, the head's outline), so the script also
optimises, for every pair on its own, a smooth flow on a g x g grid (upsampled bilinearly) against the real frame:
L1, Adam, the images blurred at first so that moves of several pixels have a gradient. That flow knows the answer;
it bounds what a renderer that moves its source by a flow of that resolution (the demo renderer's `SourceWarp`) can
reach.

    python benchmarks/warp_ceiling.py runs/demo/heldout

Prints its numbers; writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imtalker.metrics import psnr

NEIGHBOURS = 8  # landmarks (or border anchors) each pixel's flow is interpolated from


def border_anchors(size: int, per_side: int = 9) -> np.ndarray:
    """Points on the image border, (4 * per_side, 2), whose flow is zero: the background stays."""
    t = np.linspace(0, size, per_side)
    zero, full = np.zeros_like(t), np.full_like(t, size)
    return np.concatenate([np.stack(p, 1) for p in ((t, zero), (t, full), (zero, t), (full, t))])


def landmark_flow(source_points: np.ndarray, driving_points: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Source coordinates (N, 2) of driving-frame positions (N, 2), interpolated from landmark pairs (P, 2) each."""
    size = float(np.ceil(max(positions.max(), 1.0)))
    anchors = border_anchors(int(size))
    points = np.concatenate([driving_points, anchors])
    shifts = np.concatenate([source_points - driving_points, np.zeros_like(anchors)])
    distance = np.linalg.norm(positions[:, None] - points[None], axis=-1)  # (N, P + anchors)
    nearest = np.argpartition(distance, NEIGHBOURS, axis=1)[:, :NEIGHBOURS]
    weights = 1.0 / (np.take_along_axis(distance, nearest, 1) ** 2 + 1e-3)
    weights /= weights.sum(1, keepdims=True)
    return positions + (weights[..., None] * shifts[nearest]).sum(1)


def warps(source: torch.Tensor, driving: torch.Tensor, source_points: np.ndarray, driving_points: np.ndarray,
          cell: int = 4) -> dict[str, torch.Tensor]:
    """PSNR (dB, one value each) of the copy, pixel warp, block warp and best-of-warp-and-copy of one frame pair."""
    size = source.shape[-1]
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    pixels = landmark_flow(source_points, driving_points, np.stack([xs.ravel(), ys.ravel()], 1))
    grid = torch.from_numpy(pixels.reshape(1, size, size, 2) / size * 2 - 1).float()
    warped = F.grid_sample(source, grid, align_corners=False, padding_mode="border")

    cells = size // cell
    cy, cx = (np.mgrid[0:cells, 0:cells] + 0.5) * cell
    centres = landmark_flow(source_points, driving_points, np.stack([cx.ravel(), cy.ravel()], 1))
    picked = np.clip(np.round(centres / cell - 0.5), 0, cells - 1).astype(int)  # (cells^2, 2) as (x, y)
    blocks = F.pixel_unshuffle(source, cell)[0]  # (3 cell^2, cells, cells)
    moved = blocks[:, picked[:, 1], picked[:, 0]].view(1, -1, cells, cells)
    block_warped = F.pixel_shuffle(moved, cell)

    warp_error = (warped - driving).square().sum(1, keepdim=True)
    copy_error = (source - driving).square().sum(1, keepdim=True)
    best = torch.where(warp_error < copy_error, warped, source)
    return {name: psnr(image, driving)[0] for name, image in
            (("copy", source), ("warp", warped), ("block warp", block_warped), ("best of warp and copy", best))}


def optimised_flow(sources: torch.Tensor, drivings: torch.Tensor, grid: int, steps: int = 300) -> torch.Tensor:
    """PSNR (dB, per pair) of the sources (N, 3, S, S) resampled by a flow on a grid x grid lattice optimised to
    match the driving frames (N, 3, S, S); coarse to fine: a box blur of 7, 5, 3 pixels, then none, for a quarter
    of the steps each."""
    n, _, size, _ = sources.shape
    identity = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, 3, size, size], align_corners=False)
    flow = torch.zeros(n, 2, grid, grid, requires_grad=True)
    optimiser = torch.optim.Adam([flow], lr=0.01)

    def warp() -> torch.Tensor:
        offset = F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        return F.grid_sample(sources, identity + offset, padding_mode="border", align_corners=False)

    for step in range(steps):
        blur = (3, 2, 1, 0)[min(4 * step // steps, 3)]
        warped, real = warp(), drivings
        if blur:
            warped, real = (F.avg_pool2d(x, 2 * blur + 1, 1, blur) for x in (warped, real))
        loss = (warped - real).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return psnr(warp(), drivings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("heldout", type=Path, help="prepared held-out clips (imtalker prepare)")
    parser.add_argument("--every", type=int, default=5, help="drive with every n-th frame")
    parser.add_argument("--grids", type=int, nargs="*", default=[8, 16, 32], help="lattices of the optimised flow")
    args = parser.parse_args()
    clips = sorted(p for p in (args.heldout / "clips").iterdir() if (p / "landmarks.npy").is_file())
    if not clips:
        raise SystemExit(f"no prepared clips with landmarks in {args.heldout / 'clips'}")
    scores: dict[str, list[torch.Tensor]] = {}
    sources, drivings = [], []
    for clip in clips:
        frames = np.load(clip / "frames.npy", mmap_mode="r")
        points = np.load(clip / "landmarks.npy").astype(np.float64)  # (N, 478, 2) pixels of the prepared frames
        source = torch.from_numpy(frames[0].copy()).permute(2, 0, 1)[None].float() / 255
        for t in range(args.every, len(frames), args.every):
            if not (np.isfinite(points[0]).all() and np.isfinite(points[t]).all()):
                continue
            driving = torch.from_numpy(frames[t].copy()).permute(2, 0, 1)[None].float() / 255
            for name, value in warps(source, driving, points[0], points[t]).items():
                scores.setdefault(name, []).append(value)
            sources.append(source)
            drivings.append(driving)
    pairs = len(next(iter(scores.values())))
    print(f"{len(clips)} clips, {pairs} pairs, source = frame 0; PSNR (dB): "
          + ", ".join(f"{name} {torch.stack(values).mean():.2f}" for name, values in scores.items()), flush=True)
    for grid in args.grids:
        value = optimised_flow(torch.cat(sources), torch.cat(drivings), grid).mean()
        print(f"source warped by a flow optimised per pair on a {grid} x {grid} grid: {value:.2f} dB", flush=True)


if __name__ == "__main__":
    main()
