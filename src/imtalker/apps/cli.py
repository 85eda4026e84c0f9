"""Command line: `imtalker demo`, `imtalker generate`, `imtalker reenact`, `imtalker convert`, `imtalker info`,
`imtalker ui`, `imtalker serve`, `imtalker batch`, `imtalker synth-data`, `imtalker prepare`, `imtalker train`,
`imtalker export`, `imtalker eval`.

Exit codes: 0 ok, 2 bad input (missing or wrong files, bad arguments), 1 anything else (for `batch`: some job
failed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ..errors import IMTalkerError, InputError, TrainingInterrupted
from ..constants import DEFAULT_CFG_SCALE, DEFAULT_NFE

EXAMPLES = """\
examples:
  imtalker demo                                  # bundled portrait + speech -> demo.mp4 (bundled demo model)
  imtalker demo --source me.jpg --audio hello.wav --out me.mp4
  imtalker generate -i face.jpg -a speech.wav -o talking.mp4 --weights weights/ --seed 0
  imtalker generate -i photo.png -a speech.mp3 -o out.mp4 --paste-back --cfg-scale 2.5 --nfe 10
  imtalker reenact -i face.jpg -d driving.mp4 -o reenacted.mp4 --weights weights/
  imtalker convert --renderer renderer.ckpt --generator generator.ckpt --audio-encoder wav2vec2-base-960h -o weights/
  imtalker info weights/renderer.safetensors
  imtalker ui --weights weights/ --port 7860
  imtalker serve --weights weights/ --port 8000 --workers 2
  imtalker batch jobs.jsonl --out videos/ --weights weights/ --workers 2
"""


GENERATE_EXAMPLES = """\
examples:
  imtalker generate -i face.jpg -a speech.wav -o talking.mp4 --weights weights/ --seed 0
  imtalker generate -i photo.png -a speech.mp3 -o out.mp4 --paste-back --cfg-scale 2.5 --pose pose.npy
  imtalker generate -i face.jpg -a speech.wav -o turned.mp4 --weights weights/ --pose "yaw=20deg" --gaze look-at-camera
  imtalker generate -i face.jpg -a speech.wav -o nod.mp4 --weights weights/ --pose "turn:-20..20deg,nod:5deg"
  IMTALKER_HOME=weights/ imtalker generate -i face.jpg -a speech.m4a -o out.mp4 --frames-dir frames/ --quiet
"""
UI_EXAMPLES = """\
examples:
  imtalker ui --weights weights/                      # then open http://127.0.0.1:7860
  IMTALKER_HOME=weights/ imtalker ui --host 0.0.0.0 --port 8080 --device cuda
"""
REENACT_EXAMPLES = """\
examples:
  imtalker reenact -i face.jpg -d driving.mp4 -o reenacted.mp4 --weights weights/
  imtalker reenact -i photo.png -d driving.mov -o out.mp4 --paste-back --absolute
"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, examples kept as written."""


WEIGHTS_HELP = ("folder with renderer/generator/audio encoder weights (our .safetensors or the published "
                "renderer.ckpt, generator.ckpt, wav2vec2-base-960h/); default: $IMTALKER_HOME")


def _weight_paths(args: argparse.Namespace, need: tuple[str, ...], demo: bool = False) -> dict[str, Path]:
    """Network files from --renderer/--generator/--audio-encoder, else from the folder `resolve_weights` picks
    (--weights DIR, $IMTALKER_HOME, then the bundled demo model where `demo` allows it)."""
    from ..weights import find_weights, resolve_weights

    given = {name: getattr(args, name, None) for name in need}
    missing = tuple(name for name, path in given.items() if path is None)
    paths = find_weights(resolve_weights(args.weights, demo=demo), need=missing) if missing else {}
    paths.update({name: Path(path) for name, path in given.items() if path is not None})
    return paths


def _dtype(args: argparse.Namespace):
    import torch

    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None


def _deployment(args: argparse.Namespace) -> dict:
    """The pipelines' deployment options from --backend, --onnx-dir and --compile."""
    return {"backend": args.backend, "onnx_dir": args.onnx_dir, "compile": args.compile}


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


def _check_conditions(args: argparse.Namespace) -> None:
    """Fail fast on a bad --pose/--gaze/--cam description or a missing track file, before any model is loaded."""
    from ..preprocess.conditions import TRACK_FILE_SUFFIXES, parse_description

    for name in ("pose", "gaze", "cam"):
        value = getattr(args, name)
        if value is None:
            continue
        if Path(value).suffix.lower() in TRACK_FILE_SUFFIXES:
            _check_inputs(value)
        else:
            parse_description(value, name)
    if args.tracks_from is not None:
        _check_inputs(args.tracks_from)


def _generate(args: argparse.Namespace) -> None:
    _check_inputs(args.image, args.audio)
    _check_conditions(args)
    paths = _weight_paths(args, ("renderer", "generator", "audio_encoder"))
    from ..pipelines import AudioDrivenPipeline  # after the checks: it imports the models (seconds)
    from ..weights import load_audio_encoder, load_generator, load_renderer

    pipe = AudioDrivenPipeline(load_renderer(paths["renderer"]), load_generator(paths["generator"]),
                               load_audio_encoder(paths["audio_encoder"]), device=args.device, dtype=_dtype(args),
                               **_deployment(args))
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
    _check_inputs(args.image, args.driving)
    renderer_path = _weight_paths(args, ("renderer",))["renderer"]
    from ..pipelines import VideoDrivenPipeline
    from ..weights import load_renderer

    pipe = VideoDrivenPipeline(load_renderer(renderer_path), device=args.device,
                               dtype=_dtype(args), **_deployment(args))
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


DEMO_EXAMPLES = """\
examples:
  imtalker demo                                            # bundled portrait and speech -> demo.mp4
  imtalker demo --out talking.mp4 --seed 3 --paste-back    # into the whole 512 px portrait
  imtalker demo --source face.jpg --audio speech.wav --out mine.mp4   # your files, the demo model
  imtalker demo --pose "yaw=20deg" --out turned.mp4         # the head turned towards the image's left

The demo model is small (128 px) and trained only on synthetic faces: see imtalker/assets/demo_model/MODEL_CARD.md.
"""


def _demo(args: argparse.Namespace) -> None:
    from ..data.synthetic import demo_asset
    from ..weights import DEMO_MODEL_DIR, bundled_demo_model

    folder = bundled_demo_model()
    if folder is None:
        raise InputError(f"this install has no bundled demo model (looked in imtalker/{'/'.join(DEMO_MODEL_DIR)})")
    args.image = args.image or str(demo_asset("demo_portrait.png"))
    args.audio = args.audio or str(demo_asset("demo_speech.wav"))
    args.weights = str(folder)
    _generate(args)


def _write_atomically(path: str, text: str) -> None:
    """Written whole or not at all."""
    out = Path(path)
    temp = out.with_name(f".{out.name}.tmp")
    temp.write_text(text)
    os.replace(temp, out)


def _eval(args: argparse.Namespace) -> None:
    from ..evaluation import MetricPaths, evaluate
    from ..weights import resolve_weights

    args.weights = str(resolve_weights(args.weights))
    _weight_paths(args, ("renderer", "generator", "audio_encoder"))
    paths = MetricPaths(folder=args.metric_weights, lpips_net=args.lpips_net, lpips_backbone=args.lpips_backbone,
                        lpips_heads=args.lpips_heads, inception=args.inception, i3d=args.i3d, arcface=args.arcface,
                        syncnet=args.syncnet)
    require = tuple(name.strip() for name in args.require.split(",") if name.strip()) if args.require else ()
    result = evaluate(args.weights, args.data, args.corpus, metric_paths=paths, require=require, seed=args.seed,
                      cfg_scale=args.cfg_scale, nfe=args.nfe, max_clips=args.max_clips, cache=args.cache,
                      device=args.device, progress=not args.quiet, landmarks=not args.no_landmarks, name=args.name)
    if args.out:
        _write_atomically(args.out, json.dumps(result, indent=1) + "\n")
    if args.table:
        _write_atomically(args.table, result["tables"])
    if not args.quiet:
        print(result["tables"], file=sys.stderr)
    print(json.dumps(result["summary"], indent=1))


def _check_inputs(*paths: str) -> None:
    """Fail fast on missing input files, before any model is loaded."""
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"input file not found: {path}")


def _add_head_motion(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pose", help="head pose: a description (\"yaw=20deg\", \"nod\", \"turn:-20..20deg\") "
                        "or a (T, 3) FLAME axis-angle track as .npy/.csv, or a tracks .npz (docs/conditions.md)")
    parser.add_argument("--gaze", help="gaze: a description (\"look-at-camera\", \"yaw=10deg\") or a (T, 2) "
                        "L2CS pitch, yaw track as .npy/.csv/.npz")
    parser.add_argument("--cam", help="camera: a description (\"still\", \"s=6,tx=0..0.02\") or a (T, 3) "
                        "SMIRK s, tx, ty track as .npy/.csv/.npz")
    parser.add_argument("--tracks-from", help="take head pose, gaze and camera tracks from this video "
                        "(explicit --pose/--gaze/--cam win)")


def _add_precision(parser: argparse.ArgumentParser) -> None:
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or GPU)")
    precision.add_argument("--fp16", action="store_true", help="float16 autocast (GPU)")


def _add_deployment(parser: argparse.ArgumentParser) -> None:
    """--backend, --onnx-dir, --compile (docs/deploy.md)."""
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="run the networks in PyTorch or as ONNX graphs in onnxruntime (CPU; the onnx extra)")
    parser.add_argument("--onnx-dir", help="exported graphs for --backend onnxruntime (imtalker export-onnx); "
                                           "default: exported on first use into ~/.cache/imtalker/onnx")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the renderer's per-frame work and the generator step (torch backend)")


EXPORT_ONNX_EXAMPLES = """\
examples:
  imtalker export-onnx weights/ onnx/                   # renderer, generator and audio encoder
  imtalker export-onnx weights/renderer.safetensors onnx-renderer/
  imtalker generate -i face.jpg -a speech.wav -o out.mp4 --weights weights/ --backend onnxruntime --onnx-dir onnx/

Graphs, opset, dynamic axes and the TensorRT route: docs/deploy.md.
"""


def _export_onnx(args: argparse.Namespace) -> None:
    from importlib.util import find_spec

    from ..export.graphs import export_onnx
    from ..weights import WEIGHT_FILES, describe_checkpoint, load_audio_encoder, load_generator, load_renderer

    if find_spec("onnx") is None:
        raise InputError('export-onnx needs onnx: pip install "imtalker[onnx]"')
    source = Path(args.weights)
    renderer = generator = audio_encoder = None
    if source.is_dir() and not (source / "config.json").is_file():  # a weights folder, not a wav2vec2 one
        names = {name: next((source / n for n in WEIGHT_FILES[name] if (source / n).exists()), None)
                 for name in ("renderer", "generator", "audio_encoder")}
        if not any(names.values()):
            raise InputError(f"{source} has no renderer, generator or audio encoder file")
        renderer = load_renderer(names["renderer"]) if names["renderer"] else None
        generator = load_generator(names["generator"]) if names["generator"] else None
        audio_encoder = load_audio_encoder(names["audio_encoder"]) if names["audio_encoder"] else None
    elif source.exists():
        kind = describe_checkpoint(source).get("kind")
        if kind == "renderer":
            renderer = load_renderer(source)
        elif kind == "generator":
            generator = load_generator(source)
        elif kind in ("audio_encoder", "mel_audio_encoder"):
            audio_encoder = load_audio_encoder(source)
        else:
            raise InputError(f"{source} is a {kind or 'unknown'} checkpoint; export-onnx takes a renderer, generator "
                             "or audio encoder")
    else:
        raise InputError(f"weights not found: {source}")
    path = export_onnx(args.output, renderer, generator, audio_encoder)
    print(f"wrote {path.parent} ({', '.join(json.loads(path.read_text())['graphs'])})")


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
    _add_precision(parser)
    _add_deployment(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _convert(args: argparse.Namespace) -> None:
    import torch

    from ..weights import load_audio_encoder, load_generator, load_renderer, save_model

    if not (args.renderer or args.generator or args.audio_encoder):
        raise InputError("nothing to convert: give --renderer, --generator and/or --audio-encoder")
    out = Path(args.output)
    jobs = [("renderer", args.renderer, lambda p: load_renderer(p)),
            ("generator", args.generator, lambda p: load_generator(p, ema=args.ema)),
            ("audio_encoder", args.audio_encoder, lambda p: load_audio_encoder(p))]
    for name, source, load in jobs:
        if source is None:
            continue
        model = load(source)
        path = save_model(model, out / f"{name}.safetensors", dtype=torch.float16 if args.half else None)
        print(f"{name}: {source} -> {path}")


def _ui(args: argparse.Namespace) -> None:
    try:
        from .ui import load_pipelines, serve
    except ModuleNotFoundError as err:
        if err.name != "gradio":
            raise
        raise InputError('the web UI needs gradio: pip install "imtalker[ui]"') from None
    from ..weights import resolve_weights

    args.weights = str(resolve_weights(args.weights))
    _weight_paths(args, ("renderer", "generator", "audio_encoder"))  # one-line error before anything loads
    audio, video = load_pipelines(args.weights, device=args.device, dtype=_dtype(args), **_deployment(args))
    serve(audio, video, host=args.host, port=args.port, max_seconds=args.max_seconds)


SERVE_EXAMPLES = """\
examples:
  imtalker serve --weights weights/                                   # http://127.0.0.1:8000, 2 workers
  IMTALKER_API_KEY=secret-key imtalker serve --host 0.0.0.0 --workers 4 --max-queue 16
  curl -F portrait=@face.jpg -F audio=@speech.wav -F seed=0 http://127.0.0.1:8000/v1/videos
  a live avatar in the browser: http://127.0.0.1:8000/live

API: POST /v1/videos, GET /v1/videos/{id}[/video], DELETE /v1/videos/{id}, POST /v1/portraits,
WS /v1/stream (live PCM in, frames out), POST /v1/webrtc (webrtc extra), GET /live, /healthz, /metrics.
See docs/streaming.md.
"""


def _serve(args: argparse.Namespace) -> None:
    from importlib.util import find_spec

    missing = [name for name, modules in (("fastapi", ("fastapi",)), ("uvicorn", ("uvicorn",)),
                                          ("python-multipart", ("python_multipart", "multipart")),
                                          ("websockets", ("websockets",)))
               if not any(find_spec(module) for module in modules)]
    if missing:
        raise InputError(f'the server needs {", ".join(missing)}: pip install "imtalker[serve]"')
    from ..pipelines import AudioDrivenPipeline
    from .server import ServerSettings
    from .server.runner import serve
    from ..weights import load_audio_encoder, load_generator, load_renderer, resolve_weights

    args.weights = str(resolve_weights(args.weights))
    settings = ServerSettings(host=args.host, port=args.port, workers=args.workers, max_queue=args.max_queue,
                              api_key=args.api_key or os.environ.get("IMTALKER_API_KEY") or None,
                              max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                              max_audio_seconds=args.max_seconds, ws_idle_seconds=args.idle_seconds,
                              batch_size=args.batch_size, allow_origins=tuple(args.allow_origin),
                              allow_hosts=tuple(args.allow_host))
    paths = _weight_paths(args, ("renderer", "generator", "audio_encoder"))
    pipe = AudioDrivenPipeline(load_renderer(paths["renderer"]), load_generator(paths["generator"]),
                               load_audio_encoder(paths["audio_encoder"]), device=args.device, dtype=_dtype(args),
                               **_deployment(args))
    serve(pipe, settings, log_level="warning" if args.quiet else "info")


def _add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="HTTP + WebSocket API: video jobs and live streams (needs the serve extra)",
                           epilog=SERVE_EXAMPLES, formatter_class=HelpFormatter)
    serve.add_argument("--weights", help=WEIGHTS_HELP + " or the bundled demo model")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: the whole network; "
                                                           "then set an API key)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=int, default=2, help="jobs and streams rendered at once (threads)")
    serve.add_argument("--max-queue", type=int, default=8, help="jobs waiting for a worker; more get 429")
    serve.add_argument("--api-key", help="require this key in the X-API-Key header (default: $IMTALKER_API_KEY; "
                                         "none: no key)")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body")
    serve.add_argument("--max-seconds", type=float, default=120.0, help="longest audio per job or stream, and longest "
                                                                          "always-on session")
    serve.add_argument("--idle-seconds", type=float, default=30.0, help="close streams silent for this long")
    serve.add_argument("--batch-size", type=int, default=8, help="frames rendered at once")
    serve.add_argument("--allow-origin", action="append", default=[], help="CORS origin for browser clients "
                                                                           "(repeatable)")
    serve.add_argument("--allow-host", action="append", default=[], help="a host name clients may call the server "
                       "by besides localhost and --host (repeatable; others get 421: DNS rebinding)")
    serve.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    _add_precision(serve)
    _add_deployment(serve)
    serve.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    serve.set_defaults(func=_serve)


BATCH_EXAMPLES = """\
examples:
  imtalker batch jobs.jsonl --out videos/ --weights weights/            # one worker process, models loaded once
  imtalker batch jobs.csv --out videos/ --workers 2 --seed 0            # two processes on this machine
  imtalker batch jobs.jsonl --out videos/ --retry-failed                 # a rerun: failed jobs again, done ones kept
  imtalker batch jobs.jsonl --out /shared/videos --ray auto --device cuda   # one Ray actor per GPU of the cluster

A manifest line (JSONL; CSV takes the same names as columns):
  {"portrait": "faces/ann.jpg", "audio": "speech/01.wav", "output": "ann/01.mp4", "seed": 3}
  {"portrait": "faces/bob.png", "driving": "drive/nod.mp4", "paste_back": true}
Progress is kept in OUT/results.jsonl; a rerun makes only what is not finished. See docs/scale.md.
"""


def _ray_cluster(args: argparse.Namespace):
    from .batch.ray_actors import RayCluster

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    return RayCluster(address=args.ray or None, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                      retries=args.retries)


def _batch_deployment(args: argparse.Namespace, weights: Path, audio: bool) -> dict:
    """The workers' deployment options, checked here. For onnxruntime the graphs are exported here, once, so that
    workers starting together do not all export into the same folder."""
    import torch

    from ..export.runtime import check_backend, exported_folder, require_onnxruntime
    from ..weights import find_weights, load_audio_encoder, load_generator, load_renderer

    deployment = _deployment(args)
    check_backend(args.backend, torch.device(args.device), _dtype(args), args.compile)
    if args.backend == "onnxruntime":
        require_onnxruntime()
        paths = find_weights(weights, need=("renderer",) + (("generator", "audio_encoder") if audio else ()))
        generator = load_generator(paths["generator"]) if audio else None
        audio_encoder = load_audio_encoder(paths["audio_encoder"]) if audio else None
        deployment["onnx_dir"] = str(exported_folder(load_renderer(paths["renderer"]), generator, args.onnx_dir,
                                                     audio_encoder))
    return deployment


def _batch(args: argparse.Namespace) -> int:
    from .batch import LocalRunner, WorkerSettings, read_manifest, run_batch
    from .batch.progress import BatchProgress
    from ..weights import find_weights, resolve_weights

    jobs = read_manifest(args.manifest)
    weights = resolve_weights(args.weights)
    kinds = {job.kind for job in jobs if job.problem is None}
    find_weights(weights, need=("renderer",) + (("generator", "audio_encoder") if "audio" in kinds else ()))
    if args.batch_size < 1 or args.retries < 0:
        raise InputError("--batch-size must be at least 1 and --retries at least 0")
    defaults = {"seed": args.seed, "cfg_scale": args.cfg_scale, "nfe": args.nfe, "max_seconds": args.max_seconds}
    deployment = _batch_deployment(args, weights, audio="audio" in kinds)
    if args.ray is not None:
        from .batch.ray_actors import RayRunner, import_ray

        import_ray()
        runner, threads = RayRunner(_ray_cluster(args)), max(1, int(args.cpus_per_worker))
    else:
        workers = args.workers or 1
        if workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        # one process: torch's own choice; several: the cores shared out, not each process taking them all
        threads = None if workers == 1 else max(1, (os.cpu_count() or 1) // workers)
        runner = LocalRunner(workers, retries=args.retries)
    settings = WorkerSettings(weights=str(weights), device=args.device,
                              precision="bf16" if args.bf16 else "fp16" if args.fp16 else None,
                              batch_size=args.batch_size, defaults=defaults, portraits=args.portraits,
                              threads=threads, deployment=deployment)
    bars = None if args.quiet else BatchProgress()
    try:
        summary = run_batch(jobs, args.out, settings, runner, retry_failed=args.retry_failed,
                            on_start=bars and bars.start, on_frames=bars and bars.on_frames,
                            on_record=bars and bars.on_record)
    finally:
        if bars is not None:
            bars.close()
    minutes = summary.seconds / 60
    rate = f" ({summary.done / minutes:.1f} jobs/min)" if summary.done and minutes > 0 else ""
    print(f"{summary.done} done, {len(summary.failed)} failed in {summary.seconds:.1f} s{rate}, "
          f"{summary.frames} frames; {summary.skipped_done} finished earlier, {summary.skipped_failed} failed earlier"
          f"{' (--retry-failed makes them again)' if summary.skipped_failed else ''}; results: {summary.results}")
    for job, reason in summary.failed.items():
        print(f"  failed {job}: {reason}")
    return 1 if summary.failed or summary.skipped_failed else 0


def _add_batch(sub) -> None:
    batch = sub.add_parser("batch", help="many videos from a JSONL/CSV manifest: resumable, several workers or a "
                                         "Ray cluster", epilog=BATCH_EXAMPLES, formatter_class=HelpFormatter)
    batch.add_argument("manifest", metavar="MANIFEST", help="jobs, one per line: .jsonl or .csv with a header")
    batch.add_argument("--out", required=True, help="output folder: the videos and results.jsonl")
    batch.add_argument("--weights", help=WEIGHTS_HELP + " or the bundled demo model")
    batch.add_argument("--workers", type=int, help="worker processes on this machine (default 1); with --ray, "
                                                   "actors (default: one per GPU or per --cpus-per-worker CPUs)")
    _add_ray(batch)
    batch.add_argument("--retry-failed", action="store_true", help="make again the jobs that failed in earlier runs")
    batch.add_argument("--retries", type=int, default=1, help="times a job is tried again after its worker died")
    batch.add_argument("--seed", type=int, default=0, help="seed of the jobs that set none (reproducible runs)")
    batch.add_argument("--cfg-scale", type=float, default=DEFAULT_CFG_SCALE, help="audio guidance of jobs that set "
                                                                                  "none")
    batch.add_argument("--nfe", type=int, default=DEFAULT_NFE, help="Euler grid points of jobs that set none")
    batch.add_argument("--max-seconds", type=float, default=600.0, help="refuse longer inputs (jobs may set less)")
    batch.add_argument("--batch-size", type=int, default=8, help="frames rendered at once")
    batch.add_argument("--portraits", type=int, default=32, help="prepared portraits each worker keeps for reuse")
    batch.add_argument("--device", default="cpu", help="cpu, cuda (with --ray: one GPU per actor), ...")
    _add_precision(batch)
    _add_deployment(batch)
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    batch.set_defaults(func=_batch)


def _add_ray(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                        help="run on Ray actors (the ray extra): no ADDRESS starts a local instance, 'auto' joins "
                             "this node's cluster, ray://head:10001 connects through Ray Client")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="with --ray: CPUs each actor reserves")


def _info(args: argparse.Namespace) -> None:
    from ..weights import describe_checkpoint

    print(json.dumps(describe_checkpoint(args.checkpoint), indent=2))


SYNTH_DATA_EXAMPLES = """\
examples:
  imtalker synth-data corpus/ --clips 100 --workers 2          # 100 clips of 8 s at 256 x 256
  imtalker synth-data corpus/ --clips 200 --workers 2          # later: adds clips 100-199, keeps the rest
  imtalker synth-data small/ --clips 4 --seconds 2 --size 128 --seed 1 --quiet
"""


def _synth_data(args: argparse.Namespace) -> None:
    from ..data.synthetic import write_corpus

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder '{out}' exists and is a file")
    # write_corpus checks every value (InputError, exit 2) before it creates anything.
    path = write_corpus(out, args.clips, seed=args.seed, seconds=args.seconds, size=args.size,
                        workers=args.workers, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {args.clips} clips to {path}", file=sys.stderr)


def _add_synth_data(sub) -> None:
    parser = sub.add_parser("synth-data", help="write a synthetic talking-head corpus (mp4 + ground-truth npz)",
                            epilog=SYNTH_DATA_EXAMPLES, formatter_class=HelpFormatter)
    parser.add_argument("out", metavar="OUT", help="output folder (created; existing complete clips are kept)")
    parser.add_argument("--clips", type=int, required=True, help="number of clips")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each clip")
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels (even)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed; clip i depends only on (seed, i)")
    parser.add_argument("--workers", type=int, default=1, help="processes making clips in parallel")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_synth_data)


TRAIN_EXAMPLES = """\
examples:
  imtalker prepare videos/ data/ --size 128 --workers 2
  imtalker prepare /shared/videos /shared/data --size 512 --ray auto     # one Ray actor per CPU of the cluster
  imtalker train renderer --data data/ --out runs/renderer --config configs/renderer-128-tiny.yaml --max-steps 200
  imtalker train renderer --data data/ --out runs/r512 --config configs/renderer-512.yaml --vgg vgg19.pth --devices 4
  imtalker train generator --data data/ --renderer runs/renderer --out runs/gen --config configs/generator-tiny-mel.yaml
  imtalker train renderer --data data/ --out runs/r512 --config configs/renderer-512.yaml --devices 8 --num-nodes 2
  imtalker export runs/renderer weights/ && imtalker export runs/generator weights/

SIGTERM or Ctrl-C saves checkpoints/last.ckpt at the current step and exits with 143 (SIGTERM) or 130 (SIGINT);
the same command continues from the run folder's newest checkpoint. Multi-GPU, multi-node and SLURM: docs/training.md.
"""


def _prepare(args: argparse.Namespace) -> None:
    from ..training.prepare import PrepareConfig, prepare_dataset

    config = PrepareConfig(size=args.size, min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                           max_missing_face=args.max_missing_face, val_fraction=args.val_fraction,
                           audio_encoder=str(Path(args.audio_encoder).resolve()) if args.audio_encoder else None,
                           shard_mb=args.shard_mb)
    run_videos = None
    if args.ray is not None:
        from .batch.ray_actors import import_ray, ray_video_runner

        import_ray()
        run_videos = ray_video_runner(_ray_cluster(args))
    elif (args.workers or 1) < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="video", desc="preparing", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        report = prepare_dataset(args.videos, args.out, config, workers=args.workers or 1, progress=progress,
                                 run_videos=run_videos)
    finally:
        if bar is not None:
            bar.close()
    print(f"{len(report.written)} clips written, {len(report.existing)} already there, "
          f"{len(report.skipped)} videos skipped; manifest: {report.manifest}")
    for source, reason in sorted(report.skipped.items()):
        print(f"  skipped {source}: {reason}")


def _trainer_overrides(args: argparse.Namespace) -> dict:
    devices = args.devices
    if devices is not None and devices.isdigit():
        devices = int(devices)
    elif devices is not None and "," in devices:
        devices = [int(d) for d in devices.split(",") if d]
    return {"max_steps": args.max_steps, "max_time": args.max_time, "precision": args.precision,
            "accelerator": args.accelerator, "devices": devices, "num_nodes": args.num_nodes, "loggers": args.logger,
            "seed": args.seed, "num_workers": args.num_workers, "strategy": args.strategy,
            "accumulate_grad_batches": args.accumulate_grad_batches, "threads": args.threads}


def _train(args: argparse.Namespace) -> None:
    from ..training.run import read_config, train_generator, train_renderer

    config = read_config(args.config)
    training = dict(config.get("training") or {})
    if args.batch_size is not None:
        training["batch_size"] = args.batch_size
    if args.lr is not None:
        training["lr"] = args.lr
    if args.network == "renderer" and args.vgg is not None:
        training["vgg_path"] = args.vgg
    config["training"] = training
    options = dict(resume=not args.restart, overrides=_trainer_overrides(args))
    logging.getLogger("imtalker.training").setLevel(logging.INFO)  # resumes, changed settings, latent extraction
    if args.network == "renderer":
        trainer = train_renderer(args.data, args.out, config, **options)
    else:
        if args.renderer is None:
            raise InputError("train generator needs --renderer: the trained renderer whose motion latents it learns")
        renderer = Path(args.renderer)
        if renderer.is_dir():
            from ..training.trainer import latest_checkpoint

            renderer = latest_checkpoint(renderer) or renderer / "checkpoints" / "last.ckpt"
        trainer = train_generator(args.data, renderer, args.out, config, **options)
    print(f"trained to step {trainer.global_step}; checkpoint: {Path(args.out) / 'checkpoints' / 'last.ckpt'}")


def _export(args: argparse.Namespace) -> None:
    from ..training.run import export_run

    result = export_run(args.checkpoint, args.out, ema=not args.no_ema)
    print(f"exported step {result.step} from {result.checkpoint}")
    for path in result.written:
        print(f"wrote {path}")


def _add_training(sub) -> None:
    prepare = sub.add_parser("prepare", help="talking-head videos -> training dataset (crops, audio, tracks)",
                             epilog=TRAIN_EXAMPLES, formatter_class=HelpFormatter)
    prepare.add_argument("videos", metavar="VIDEOS_DIR", help="folder searched recursively for videos")
    prepare.add_argument("out", metavar="OUT_DIR", help="dataset folder (an existing one is continued)")
    prepare.add_argument("--size", type=int, default=512, help="face crop side (the renderer's image size)")
    prepare.add_argument("--workers", type=int, help="videos processed in parallel (default 1); with --ray, actors "
                                                     "(default: one per --cpus-per-worker CPUs of the cluster)")
    _add_ray(prepare)
    prepare.add_argument("--retries", type=int, default=1, help="with --ray: times a video is tried again after its "
                                                                "actor died")
    prepare.add_argument("--audio-encoder", help="also store features of this frozen encoder (e.g. wav2vec2 folder)")
    prepare.add_argument("--val-fraction", type=float, default=0.05, help="share of videos held out")
    prepare.add_argument("--min-seconds", type=float, default=2.4, help="skip shorter videos")
    prepare.add_argument("--max-seconds", type=float, default=600.0, help="skip longer videos")
    prepare.add_argument("--max-missing-face", type=float, default=0.2,
                         help="skip videos with a larger share of frames without a face")
    prepare.add_argument("--shard-mb", type=int,
                         help="pack the clips into tar shards of about this many MB (for corpora too large for one "
                              "folder of files; training streams them)")
    prepare.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(func=_prepare)

    train = sub.add_parser("train", help="train the renderer or the motion generator (Lightning; CPU to multi-node)",
                           epilog=TRAIN_EXAMPLES, formatter_class=HelpFormatter)
    train.add_argument("network", choices=("renderer", "generator"))
    train.add_argument("--data", required=True, help="dataset folder made by `imtalker prepare`")
    train.add_argument("--out", required=True, help="run folder: checkpoints/, logs/, samples/")
    train.add_argument("--config", help="YAML config (sections model, training, audio, trainer)")
    train.add_argument("--renderer", help="generator only: the trained renderer (file or run folder)")
    train.add_argument("--max-steps", type=int, help="total training steps")
    train.add_argument("--max-time", help="wall-clock budget DD:HH:MM:SS; stops with a checkpoint when spent")
    train.add_argument("--batch-size", type=int, help="batch per device")
    train.add_argument("--lr", type=float, help="learning rate")
    train.add_argument("--vgg", help="renderer only: torchvision VGG19 state dict for the perceptual losses")
    train.add_argument("--precision", help="32-true (default), bf16-mixed, ...")
    train.add_argument("--accelerator", help="auto (default), cpu, gpu")
    train.add_argument("--devices", help="devices per node: a count, 'auto', or GPU indices like 0,1")
    train.add_argument("--num-nodes", type=int, help="nodes for multi-node DDP (launch one process per node)")
    train.add_argument("--logger", action="append", choices=("csv", "tensorboard", "wandb"),
                       help="loggers (repeatable; default both)")
    train.add_argument("--num-workers", type=int, help="data loader worker processes")
    train.add_argument("--strategy", help="Lightning strategy: auto (DDP on several devices), ddp, fsdp, ...")
    train.add_argument("--accumulate-grad-batches", type=int, help="batches whose gradients make one step")
    train.add_argument("--threads", type=int, help="torch CPU threads per process (none: torch's choice)")
    train.add_argument("--seed", type=int, help="seed of weights and data order")
    train.add_argument("--restart", action="store_true",
                       help="start afresh (an existing checkpoints/ is kept as checkpoints.before-restart-N/)")
    train.set_defaults(func=_train)

    export = sub.add_parser("export", help="training checkpoint -> .safetensors weights the pipelines load",
                            epilog=TRAIN_EXAMPLES, formatter_class=HelpFormatter)
    export.add_argument("checkpoint", help="run folder or .ckpt file")
    export.add_argument("out", help="weights folder to write into")
    export.add_argument("--no-ema", action="store_true", help="generator: the raw weights instead of the EMA")
    export.set_defaults(func=_export)

    evaluation = sub.add_parser(
        "eval", help="the paper's two protocols (self-reenactment, audio-driven) on held-out clips",
        description="Self-reenactment (PSNR, SSIM, LPIPS, CSIM, LMD, FID, FVD) and audio-driven (FID, FVD, CSIM, "
                    "Sync-C/D, LMD) on prepared held-out clips; metrics that need weights run when their files are "
                    "in WEIGHTS/metrics/ (or given below); see docs/evaluation.md",
        formatter_class=HelpFormatter)
    evaluation.add_argument("data", help="dataset folder made by `imtalker prepare` (held-out videos), or its "
                                         "manifest.json")
    evaluation.add_argument("--weights", help=WEIGHTS_HELP + " or the bundled demo model")
    evaluation.add_argument("--corpus", help="synthetic corpus with the ground-truth .npz files, if moved since "
                                             "`prepare` (default: beside the videos the manifest names)")
    evaluation.add_argument("--out", help="write the full result (per clip) as JSON here")
    evaluation.add_argument("--table", help="write the two tables (Markdown, the paper's layout) here")
    evaluation.add_argument("--cache", help="folder for per-clip scores and features: a rerun skips the clips "
                                            "found there with the same settings")
    evaluation.add_argument("--name", help="the model's name in the tables (default: the weights folder's)")
    evaluation.add_argument("--max-clips", type=int, help="only the first clips")
    evaluation.add_argument("--seed", type=int, default=0, help="audio-driven sampling seed")
    evaluation.add_argument("--cfg-scale", type=float, default=DEFAULT_CFG_SCALE, help="audio guidance")
    evaluation.add_argument("--nfe", type=int, default=DEFAULT_NFE, help="points of the Euler time grid")
    evaluation.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    metric_files = evaluation.add_argument_group("metric weights (never downloaded; names in docs/evaluation.md)")
    metric_files.add_argument("--metric-weights", help="folder with the metric networks' files under their "
                                                       "published names (default: WEIGHTS/metrics)")
    metric_files.add_argument("--require", help="comma-separated metrics that must run: lpips,fid,fvd,csim,sync "
                                                "(default: those whose files are found)")
    metric_files.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS backbone")
    metric_files.add_argument("--lpips-backbone", help="torchvision AlexNet/VGG16 .pth")
    metric_files.add_argument("--lpips-heads", help="the lpips wheel's linear heads (alex.pth / vgg.pth)")
    metric_files.add_argument("--inception", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (FID)")
    metric_files.add_argument("--i3d", help="pytorch-i3d's rgb_imagenet.pt (FVD)")
    metric_files.add_argument("--arcface", help="insightface iresnet backbone .pth or an ArcFace .onnx (CSIM)")
    metric_files.add_argument("--syncnet", help="the SyncNet release's syncnet_v2.model (Sync-C/D)")
    evaluation.add_argument("--no-landmarks", action="store_true", help="skip the face mesh (LMD, lip-sync r)")
    evaluation.add_argument("-q", "--quiet", action="store_true", help="no progress and no tables on stderr")
    evaluation.set_defaults(func=_eval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imtalker", description="Talking-face video with implicit motion transfer.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="a talking video from the bundled demo model, offline",
                          epilog=DEMO_EXAMPLES, formatter_class=HelpFormatter)
    demo.add_argument("-o", "--out", dest="output", default="demo.mp4", help="output .mp4")
    demo.add_argument("-i", "--source", dest="image", help="portrait; when not given, the bundled synthetic portrait")
    demo.add_argument("-a", "--audio", help="speech; when not given, the bundled synthetic speech")
    demo.add_argument("--seed", type=int, default=0, help="makes the motion reproducible")
    demo.add_argument("--cfg-scale", type=float, default=DEFAULT_CFG_SCALE, help="audio guidance")
    demo.add_argument("--nfe", type=int, default=DEFAULT_NFE, help="points of the Euler time grid")
    demo.add_argument("--paste-back", action="store_true", help="render into the full original photo")
    demo.add_argument("--frames-dir", help="also save every frame as PNG in this folder")
    demo.add_argument("--max-seconds", type=float, default=600.0, help="refuse longer speech")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_head_motion(demo)
    demo.set_defaults(func=_demo, renderer=None, generator=None, audio_encoder=None, no_crop=False, face_index=None,
                      batch_size=8, device="cpu", bf16=False, fp16=False)
    _add_deployment(demo)

    generate = sub.add_parser("generate", help="portrait + speech -> talking video", epilog=GENERATE_EXAMPLES,
                              formatter_class=HelpFormatter)
    generate.add_argument("-a", "--audio", required=True, help="speech: wav, flac, mp3, ogg, m4a, or a video file")
    _add_common(generate)
    generate.add_argument("--generator", help="motion generator file (overrides the one in --weights)")
    generate.add_argument("--audio-encoder", help="audio encoder file or wav2vec2 folder (overrides --weights)")
    generate.add_argument("--cfg-scale", type=float, default=DEFAULT_CFG_SCALE, help="audio guidance (2-3 recommended)")
    generate.add_argument("--nfe", type=int, default=DEFAULT_NFE, help="points of the Euler time grid")
    generate.add_argument("--seed", type=int, help="makes the motion reproducible")
    _add_head_motion(generate)
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
    convert.add_argument("--half", action="store_true",
                         help="store the weights as float16 (half the bytes; loaded back as float32)")
    convert.add_argument("-o", "--output", required=True, help="output folder")
    convert.set_defaults(func=_convert)

    export_onnx = sub.add_parser("export-onnx", help="renderer, generator and audio encoder -> ONNX graphs "
                                                     "+ manifest.json (needs the onnx extra)",
                                 epilog=EXPORT_ONNX_EXAMPLES, formatter_class=HelpFormatter)
    export_onnx.add_argument("weights", help="a renderer, generator or audio encoder file, or a weights "
                                             "folder (e.g. the demo model's)")
    export_onnx.add_argument("output", help="output folder")
    export_onnx.set_defaults(func=_export_onnx)

    info = sub.add_parser("info", help="say what a checkpoint file or wav2vec2 folder holds")
    info.add_argument("checkpoint")
    info.set_defaults(func=_info)

    ui = sub.add_parser("ui", help="web page for generate and reenact (local Gradio app, no share link)",
                        epilog=UI_EXAMPLES, formatter_class=HelpFormatter)
    ui.add_argument("--weights", help=WEIGHTS_HELP + " or the bundled demo model")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: the whole network)")
    ui.add_argument("--port", type=int, default=7860, help="port to listen on")
    ui.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    _add_precision(ui)
    _add_deployment(ui)
    ui.add_argument("--max-seconds", type=float, default=300.0, help="refuse longer speech or driving videos")
    ui.set_defaults(func=_ui)
    _add_serve(sub)
    _add_batch(sub)
    _add_synth_data(sub)
    _add_training(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imtalker")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except TrainingInterrupted as err:  # non-zero, so a scheduler requeues the job (docs/training.md)
        print(f"imtalker: interrupted: {err}", file=sys.stderr)
        return err.exit_code
    except (IMTalkerError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
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
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
