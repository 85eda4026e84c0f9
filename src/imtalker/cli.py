"""Command line: `imtalker generate`, `imtalker reenact`, `imtalker convert`, `imtalker info`.

Exit codes: 0 ok, 2 bad input (missing or wrong files, bad arguments), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  imtalker generate -i face.jpg -a speech.wav -o talking.mp4 --weights weights/ --seed 0
  imtalker generate -i photo.png -a speech.mp3 -o out.mp4 --paste-back --cfg-scale 2.5 --nfe 10
  imtalker reenact -i face.jpg -d driving.mp4 -o reenacted.mp4 --weights weights/
  imtalker convert --renderer renderer.ckpt --generator generator.ckpt --audio-encoder wav2vec2-base-960h -o weights/
  imtalker info weights/renderer.safetensors
"""


GENERATE_EXAMPLES = """\
examples:
  imtalker generate -i face.jpg -a speech.wav -o talking.mp4 --weights weights/ --seed 0
  imtalker generate -i photo.png -a speech.mp3 -o out.mp4 --paste-back --cfg-scale 2.5 --pose pose.npy
  IMTALKER_HOME=weights/ imtalker generate -i face.jpg -a speech.m4a -o out.mp4 --frames-dir frames/ --quiet
"""
REENACT_EXAMPLES = """\
examples:
  imtalker reenact -i face.jpg -d driving.mp4 -o reenacted.mp4 --weights weights/
  imtalker reenact -i photo.png -d driving.mov -o out.mp4 --paste-back --absolute
"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, examples kept as written."""


class BadInput(Exception):
    """A user error the CLI reports in one line with exit code 2."""


WEIGHTS_HELP = ("folder with renderer/generator/audio encoder weights (our .safetensors or the published "
                "renderer.ckpt, generator.ckpt, wav2vec2-base-960h/); default: $IMTALKER_HOME")


def _weight_paths(args: argparse.Namespace, need: tuple[str, ...]) -> dict[str, Path]:
    """Network files from --renderer/--generator/--audio-encoder, else from --weights DIR or $IMTALKER_HOME."""
    from .weights import find_weights

    given = {name: getattr(args, name, None) for name in need}
    missing = tuple(name for name, path in given.items() if path is None)
    folder = args.weights or os.environ.get("IMTALKER_HOME")
    if missing and not folder:
        raise BadInput("no weights: pass --weights DIR or set IMTALKER_HOME to a folder with the published or "
                       "converted weights, or name each file (--renderer ...); a bundled demo model is not part "
                       "of this release yet")
    paths = find_weights(folder, need=missing) if missing else {}
    paths.update({name: Path(path) for name, path in given.items() if path is not None})
    return paths


def _dtype(args: argparse.Namespace):
    import torch

    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None


def _progress(args: argparse.Namespace):
    """A tqdm bar on stderr (frames done / total, with ETA), or None with --quiet."""
    if args.quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="frame", desc="rendering", file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return update, bar.close


def _generate(args: argparse.Namespace) -> None:
    from .pipelines import AudioDrivenPipeline

    _check_inputs(args.image, args.audio)
    from .weights import load_audio_encoder, load_generator, load_renderer

    paths = _weight_paths(args, ("renderer", "generator", "audio_encoder"))
    pipe = AudioDrivenPipeline(load_renderer(paths["renderer"]), load_generator(paths["generator"]),
                               load_audio_encoder(paths["audio_encoder"]), device=args.device, dtype=_dtype(args))
    progress, close = _progress(args)
    try:
        path = pipe.to_file(args.output, args.image, args.audio, frames_dir=args.frames_dir,
                            max_seconds=args.max_seconds, cfg_scale=args.cfg_scale, nfe=args.nfe, seed=args.seed,
                            pose=args.pose, gaze=args.gaze, cam=args.cam, tracks_from=args.tracks_from,
                            crop=not args.no_crop,
                            paste_back=args.paste_back, face_index=args.face_index, batch_size=args.batch_size,
                            progress=progress)
    finally:
        close()
    if not args.quiet:
        print(f"wrote {path}", file=sys.stderr)


def _reenact(args: argparse.Namespace) -> None:
    from .pipelines import VideoDrivenPipeline

    _check_inputs(args.image, args.driving)
    from .weights import load_renderer

    pipe = VideoDrivenPipeline(load_renderer(_weight_paths(args, ("renderer",))["renderer"]), device=args.device,
                               dtype=_dtype(args))
    progress, close = _progress(args)
    try:
        path = pipe.to_file(args.output, args.image, args.driving, frames_dir=args.frames_dir,
                            max_seconds=args.max_seconds, relative=not args.absolute, crop=not args.no_crop,
                            crop_driving=not args.no_crop_driving, paste_back=args.paste_back,
                            face_index=args.face_index, batch_size=args.batch_size, progress=progress)
    finally:
        close()
    if not args.quiet:
        print(f"wrote {path}", file=sys.stderr)


def _check_inputs(*paths: str) -> None:
    """Fail fast on missing input files, before any model is loaded."""
    for path in paths:
        if not Path(path).is_file():
            raise BadInput(f"input file not found: {path}")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--image", required=True, help="source portrait (any size; jpg, png, webp, ...)")
    parser.add_argument("-o", "--output", required=True, help="output .mp4 (H.264 + AAC, 25 fps)")
    parser.add_argument("--weights", help=WEIGHTS_HELP)
    parser.add_argument("--renderer", help="renderer file (overrides the one in --weights)")
    parser.add_argument("--no-crop", action="store_true", help="use the whole (centre-square) image, no face crop")
    parser.add_argument("--paste-back", action="store_true", help="render into the full original photo")
    parser.add_argument("--face-index", type=int, help="which face when there are several (0 = largest)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames rendered at once")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="refuse longer inputs")
    parser.add_argument("--frames-dir", help="also save every frame as PNG in this folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or GPU)")
    precision.add_argument("--fp16", action="store_true", help="float16 autocast (GPU)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _convert(args: argparse.Namespace) -> None:
    from .weights import load_audio_encoder, load_generator, load_renderer, save_model

    if not (args.renderer or args.generator or args.audio_encoder):
        raise BadInput("nothing to convert: give --renderer, --generator and/or --audio-encoder")
    out = Path(args.output)
    jobs = [("renderer", args.renderer, lambda p: load_renderer(p)),
            ("generator", args.generator, lambda p: load_generator(p, ema=args.ema)),
            ("audio_encoder", args.audio_encoder, lambda p: load_audio_encoder(p))]
    for name, source, load in jobs:
        if source is None:
            continue
        model = load(source)
        path = save_model(model, out / f"{name}.safetensors")
        print(f"{name}: {source} -> {path}")


def _info(args: argparse.Namespace) -> None:
    from .weights import describe_checkpoint

    print(json.dumps(describe_checkpoint(args.checkpoint), indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imtalker", description="Talking-face video with implicit motion transfer.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    generate = sub.add_parser("generate", help="portrait + speech -> talking video", epilog=GENERATE_EXAMPLES,
                              formatter_class=HelpFormatter)
    generate.add_argument("-a", "--audio", required=True, help="speech: wav, flac, mp3, ogg, m4a, or a video file")
    _add_common(generate)
    generate.add_argument("--generator", help="motion generator file (overrides the one in --weights)")
    generate.add_argument("--audio-encoder", help="audio encoder file or wav2vec2 folder (overrides --weights)")
    generate.add_argument("--cfg-scale", type=float, default=3.0, help="audio guidance (2-3 recommended)")
    generate.add_argument("--nfe", type=int, default=10, help="points of the Euler time grid")
    generate.add_argument("--seed", type=int, help="makes the motion reproducible")
    generate.add_argument("--pose", help="head pose track (T, 3): yaw, pitch, roll as .npy or .csv")
    generate.add_argument("--gaze", help="gaze track (T, 2): pitch, yaw as .npy or .csv")
    generate.add_argument("--cam", help="camera track (T, 3) as .npy or .csv")
    generate.add_argument("--tracks-from", help="take head pose, gaze and camera tracks from this video")
    generate.set_defaults(func=_generate)

    reenact = sub.add_parser("reenact", help="portrait + driving video -> the portrait moving like the video",
                             epilog=REENACT_EXAMPLES, formatter_class=HelpFormatter)
    reenact.add_argument("-d", "--driving", required=True, help="driving video: mp4, mov, webm, ... (any fps)")
    _add_common(reenact)
    reenact.add_argument("--absolute", action="store_true",
                         help="use the driving motion as is instead of relative to its first frame")
    reenact.add_argument("--no-crop-driving", action="store_true", help="the driving video is already a face crop")
    reenact.set_defaults(func=_reenact)

    convert = sub.add_parser("convert", help="convert the published checkpoints to imtalker .safetensors files",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    convert.add_argument("--renderer", help="published renderer.ckpt (or any renderer file we read)")
    convert.add_argument("--generator", help="published generator.ckpt")
    convert.add_argument("--audio-encoder", help="wav2vec2 folder (Hugging Face layout)")
    convert.add_argument("--ema", action="store_true", help="take the generator's EMA weights")
    convert.add_argument("-o", "--output", required=True, help="output folder")
    convert.set_defaults(func=_convert)

    info = sub.add_parser("info", help="say what a checkpoint file or wav2vec2 folder holds")
    info.add_argument("checkpoint")
    info.set_defaults(func=_info)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    from .errors import InputError
    from .weights import CheckpointError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (BadInput, InputError, CheckpointError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        print(f"imtalker: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imtalker: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line for the user; IMTALKER_DEBUG=1 shows the traceback
        if os.environ.get("IMTALKER_DEBUG"):
            raise
        print(f"imtalker: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
