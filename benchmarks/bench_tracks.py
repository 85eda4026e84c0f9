"""Head pose, gaze and camera: how well `imtalker.tracks` measures them, and how well the demo model follows them.

- Estimation: held-out synthetic clips (seed 1: faces the demo model never saw), whose true head rotation, gaze and
  camera are known, go through `imtalker.tracks.tracks_from_frames`; the estimates (published conventions) are
  compared with the truth converted to the same conventions. Rotation errors in degrees as yaw, pitch, roll
  (the FLAME rotation decomposed as in docs/conditions.md) and as the angle between the two rotations; gaze as the
  angle between L2CS gaze directions (head turn included); camera as the eye point's position in crop widths and the
  relative error of SMIRK's scale. Median and 90th percentile over all frames.
- Following: the demo model renders each held-out clip's portrait speaking its clip's audio while asked for a head
  turn (yaw 20 deg * sin(2 pi t / 4 s)) and a nod (pitch 10 deg * sin(2 pi t / 2 s)); the pose is estimated back
  from the rendered frames. Pearson r and gain (least-squares slope) between requested and rendered angle, each
  clip's series less its mean (the estimator reads each face's rest pose with an offset of its own).
  First row: the renderer alone, driven by the clip's own frames (video-driven, relative motion), against the
  clip's true yaw and pitch: what the renderer can show at all.

    python benchmarks/bench_tracks.py                 # 6 clips of 8 s, written to BENCHMARKS.md
    python benchmarks/bench_tracks.py --quick         # one 2-second clip, not written
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from common import header, write_section
from imtalker.constants import FPS, SAMPLE_RATE
from imtalker.data.synthetic import make_clip, make_portrait
from imtalker.preprocess.conventions import axis_angle_to_matrix, flame_to_euler, l2cs_to_direction, legacy_to_published
from imtalker.tracks import tracks_from_frames
from imtalker.weights import bundled_demo_model

HELDOUT_SEED = 1


def _stats(values: np.ndarray, digits: int = 2) -> str:
    return f"{np.median(values):.{digits}f} | {np.percentile(values, 90):.{digits}f}"


def estimation_errors(clips) -> dict[str, np.ndarray]:
    """Per-frame absolute errors of the estimated tracks against each clip's truth."""
    errors: dict[str, list[np.ndarray]] = {}
    for clip in clips:
        truth = legacy_to_published({"pose": clip.pose, "gaze": clip.gaze, "cam": clip.camera})
        found = tracks_from_frames(clip.frames)
        signed = np.degrees(flame_to_euler(found["pose"]) - flame_to_euler(truth["pose"]))  # (T, 3)
        angles = np.abs(signed)
        steady = np.abs(signed - np.median(signed, axis=0))  # less the clip's constant offset
        gaze_signed = np.degrees(found["gaze"] - truth["gaze"])  # (T, 2) L2CS horizontal, vertical
        relative = axis_angle_to_matrix(found["pose"]).transpose(0, 2, 1) @ axis_angle_to_matrix(truth["pose"])
        geodesic = np.degrees(np.arccos(np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1)))
        cosine = (l2cs_to_direction(found["gaze"]) * l2cs_to_direction(truth["gaze"])).sum(1)
        u_found = found["cam"][:, :1] * found["cam"][:, 1:] * np.array([1, -1])  # (u, v) in [-1, 1] crop units
        u_truth = truth["cam"][:, :1] * truth["cam"][:, 1:] * np.array([1, -1])
        for name, value in (("yaw", angles[:, 0]), ("pitch", angles[:, 1]), ("roll", angles[:, 2]),
                            ("yaw offset", signed[:, 0]), ("pitch offset", signed[:, 1]), ("roll offset", signed[:, 2]),
                            ("yaw steady", steady[:, 0]), ("pitch steady", steady[:, 1]),
                            ("roll steady", steady[:, 2]), ("gaze offset h", gaze_signed[:, 0]),
                            ("gaze offset v", gaze_signed[:, 1]),
                            ("gaze steady", np.linalg.norm(gaze_signed - np.median(gaze_signed, axis=0), axis=1)),
                            ("rotation", geodesic), ("gaze", np.degrees(np.arccos(np.clip(cosine, -1, 1)))),
                            ("position", np.linalg.norm(u_found - u_truth, axis=1) / 2),
                            ("scale", 100 * np.abs(found["cam"][:, 0] / truth["cam"][:, 0] - 1))):
            errors.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in errors.items()}


def _fit(requested: np.ndarray, rendered: np.ndarray) -> tuple[float, float]:
    """(Pearson r, least-squares gain) of rendered against requested."""
    r = float(np.corrcoef(requested, rendered)[0, 1])
    gain = float(np.polyfit(requested, rendered, 1)[0])
    return r, gain


def following(clips, weights: Path, folder: Path) -> list[tuple[str, str, float, float]]:
    """(what, axis, r, gain) per request, pooled over the clips."""
    from imtalker.io.video import VideoWriter
    from imtalker.pipelines import AudioDrivenPipeline, VideoDrivenPipeline
    from imtalker.preprocess.conditions import parse_description
    from imtalker.weights import find_weights, load_audio_encoder, load_generator, load_renderer

    paths = find_weights(weights, need=("renderer", "generator", "audio_encoder"))
    renderer = load_renderer(paths["renderer"])
    audio_pipe = AudioDrivenPipeline(renderer, load_generator(paths["generator"]),
                                     load_audio_encoder(paths["audio_encoder"]))
    video_pipe = VideoDrivenPipeline(renderer)
    requests = {"turn (yaw)": ("shake:20deg@0.25", 0), "nod (pitch)": ("nod:10deg@0.5", 1)}
    pooled: dict[str, tuple[list, list]] = {}

    def add(key, requested, rendered):
        """One clip's series, each less its mean: the estimator reads each face's rest pose with its own offset
        (the estimation table's offset column), which is not motion."""
        pooled.setdefault(key, ([], [], []))
        pooled[key][0].append(requested - requested.mean())
        pooled[key][1].append(rendered - rendered.mean())
        pooled[key][2].append(float(np.corrcoef(requested, rendered)[0, 1]))

    for clip in clips:
        portrait = make_portrait(HELDOUT_SEED, size=256, index=clip.index)
        driving = folder / f"clip{clip.index}.mp4"
        with VideoWriter(driving, fps=FPS) as writer:
            writer.write(clip.frames)
        rendered = np.stack(list(video_pipe.frames(portrait, driving)))[:len(clip.frames)]
        measured = flame_to_euler(tracks_from_frames(rendered)["pose"])
        for axis, name in ((0, "yaw"), (1, "pitch")):
            add(("renderer alone, driven by the clip's frames", name), clip.pose[:len(measured), axis],
                measured[:, axis])
        audio = (clip.audio, SAMPLE_RATE)
        for label, (description, axis) in requests.items():
            motion = parse_description(description, "pose")
            track = motion.track(len(clip.frames))
            frames = np.stack(list(audio_pipe.frames(portrait, audio, seed=0, pose=track)))
            measured = flame_to_euler(tracks_from_frames(frames)["pose"])
            requested = flame_to_euler(track)[:len(measured)]
            add((f"demo model asked for a {label}: `--pose \"{description}\"`", ("yaw", "pitch")[axis]),
                requested[:, axis], measured[:, axis])
    rows = []
    for (what, axis), (requested, rendered, per_clip) in pooled.items():
        r, gain = _fit(np.degrees(np.concatenate(requested)), np.degrees(np.concatenate(rendered)))
        rows.append((what, axis, r, gain, min(per_clip)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--size", type=int, default=256, help="frame size of the clips the tracks are measured on")
    parser.add_argument("--weights", type=Path, default=None, help="demo model folder (default: the bundled one)")
    parser.add_argument("--quick", action="store_true", help="one 2-second clip, not written")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.seconds = 1, 2.0
    weights = args.weights or bundled_demo_model()
    started = time.perf_counter()
    clips = [make_clip(HELDOUT_SEED, args.seconds, args.size, index=i) for i in range(args.clips)]
    errors = estimation_errors(clips)
    estimated = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        follow = following(clips, weights, Path(folder))
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    frames = sum(len(c.frames) for c in clips)
    command = "python benchmarks/bench_tracks.py" + (" --quick" if args.quick else "")
    body = header("Head pose, gaze and camera tracks: estimate errors and the demo model following a request",
                  command)
    body += (f"- load while it ran: `{load}` (the machine was shared with other jobs when the load is above 2)\n"
             f"- {len(clips)} held-out synthetic clips (seed {HELDOUT_SEED}) of {args.seconds:g} s, {args.size} px, "
             f"{frames} frames; estimation {estimated - started:.0f} s, following "
             f"{time.perf_counter() - estimated:.0f} s\n\n"
             "Estimates (`imtalker.tracks`, published conventions) against the truth, all frames:\n\n"
             "| quantity | median error | 90th percentile | median signed error (offset) | error less each clip's "
             "offset: median, p90 | target (median) |\n|---|---|---|---|---|---|\n"
             + "".join(f"| {name} (deg) | {_stats(errors[name])} | {np.median(errors[name + ' offset']):+.2f} | "
                       f"{_stats(errors[name + ' steady'])} | <= 3 |\n" for name in ("yaw", "pitch", "roll"))
             + f"| rotation, angle between the two (deg) | {_stats(errors['rotation'])} | | | |\n"
             f"| gaze direction, L2CS (deg) | {_stats(errors['gaze'])} | horizontal "
             f"{np.median(errors['gaze offset h']):+.2f}, vertical {np.median(errors['gaze offset v']):+.2f} | "
             f"{_stats(errors['gaze steady'])} | <= 5 |\n"
             f"| eye point position (crop widths) | {_stats(errors['position'], 3)} | | | |\n"
             f"| SMIRK scale (%) | {_stats(errors['scale'])} | | | |\n\n"
             f"Following a requested pose (demo model `{Path(weights).name}`, seed 0; the pose measured back from "
             "the rendered frames with `imtalker.tracks`; r and gain of rendered against requested angle, all "
             "frames of all clips, each clip's series less its mean; and the lowest r of a single clip):\n\n"
             "| what | axis | r | gain | lowest r of a clip | target |\n|---|---|---|---|---|---|\n"
             + "\n".join(f"| {what} | {axis} | {r:.2f} | {gain:.2f} | {worst:.2f} | "
                         f"{'' if what.startswith('renderer') else 'r >= 0.8'} |" for what, axis, r, gain, worst in follow)
             + "\n")
    if args.quick or args.no_write:
        print(body)
    else:
        write_section("tracks", body)
        print(body)
        print("written to BENCHMARKS.md")


if __name__ == "__main__":
    main()
