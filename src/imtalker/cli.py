"""Command line: `imtalker convert` and `imtalker info`.

Exit codes: 0 ok, 2 bad input (missing or wrong files, bad arguments), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  imtalker convert --renderer renderer.ckpt --generator generator.ckpt --audio-encoder wav2vec2-base-960h -o weights/
  imtalker info weights/renderer.safetensors
"""


class BadInput(Exception):
    """A user error the CLI reports in one line with exit code 2."""


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
    from .weights import CheckpointError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (BadInput, CheckpointError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        print(f"imtalker: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imtalker: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
