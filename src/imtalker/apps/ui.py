"""Web UI: `imtalker ui` serves the audio- and video-driven pipelines as a local Gradio page (offline, no share link).

    audio, video = load_pipelines("weights/")
    build_ui(audio, video).launch(server_name="127.0.0.1", server_port=7860)

The page calls the very pipeline objects the CLI uses; this module only maps widgets to their arguments. It needs
the `ui` extra (`pip install "imtalker[ui]"`); the core package never imports it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr

from ..constants import DEFAULT_CFG_SCALE, DEFAULT_NFE
from ..errors import InputError
from ..pipelines import AudioDrivenPipeline, PreparedSource, VideoDrivenPipeline
from ..pipelines.portraits import PortraitCache, file_content_id

SOURCE_CACHE_SIZE = 4  # prepared portraits kept (renderer caches of a few MB each at 512 px)
OUTPUT_MAX_AGE_S = 3600.0  # our mp4s are copied into Gradio's cache when returned; ours can go after this
RENDER_QUEUE = "imtalker-render"  # both tabs share one queue of one: the pipelines and detector are not thread-safe
DEFAULT_MAX_SECONDS = 300.0


def load_pipelines(weights, device="cpu", dtype=None, **deployment) -> tuple[AudioDrivenPipeline, VideoDrivenPipeline]:
    """Both pipelines from one weights folder, sharing a single renderer in memory (`deployment`: backend, onnx_dir,
    compile, as the pipelines take them; the renderer is converted or compiled once)."""
    audio = AudioDrivenPipeline.from_pretrained(weights, device=device, dtype=dtype, **deployment)
    return audio, VideoDrivenPipeline(audio.renderer, device=device, dtype=dtype, **deployment)


def bundled_asset(name: str) -> str | None:
    """Path of a sample file shipped with the package (`imtalker.data.synthetic.demo_asset`), or None without one."""
    try:
        from ..data.synthetic import demo_asset

        path = Path(demo_asset(name))
    except (ImportError, OSError, LookupError, ValueError):  # older install or asset not shipped: no sample
        return None
    return str(path) if path.is_file() else None


def prepared_source(cache: PortraitCache, pipeline: AudioDrivenPipeline | VideoDrivenPipeline, image: str,
                    crop: bool) -> PreparedSource:
    """The portrait prepared for `pipeline`, from the cache when this photo was used with these settings before."""
    # the renderer is part of the key: a source encoded by one network is meaningless to another
    key = (file_content_id(image), crop, id(pipeline.renderer))
    return cache.get(key) or cache.put(key, pipeline.prepare_source(image, crop=crop))


@contextlib.contextmanager
def _shown_to_user() -> Iterator[None]:
    """Bad input (no face, unreadable file, too long, ...) becomes the page's error message, not a traceback."""
    try:
        yield
    except InputError as err:
        raise gr.Error(str(err), print_exception=False) from None


def _require(value, message: str) -> None:
    if value is None or value == "":
        raise gr.Error(message, print_exception=False)


def _frames_progress(progress: gr.Progress) -> Callable[[int, int], None]:
    """The pipeline's (done, total) callback drawn as the page's progress bar."""
    return lambda done, total: progress((done, total), desc="rendering", unit="frames")


class Handlers:
    """What the page's buttons do: widget values in, (video, download) out. Tests call these directly.

    Args:
        output_dir: where the videos are written; None makes a temporary folder removed with this object.
    """

    def __init__(self, audio_pipeline: AudioDrivenPipeline, video_pipeline: VideoDrivenPipeline,
                 output_dir: str | Path | None = None, max_seconds: float | None = DEFAULT_MAX_SECONDS):
        self.audio_pipeline, self.video_pipeline = audio_pipeline, video_pipeline
        self.max_seconds = max_seconds
        self.sources = PortraitCache(SOURCE_CACHE_SIZE)
        self._tmp = None if output_dir else tempfile.TemporaryDirectory(prefix="imtalker-ui-")  # removed on GC/exit
        self.output_dir = Path(output_dir or self._tmp.name)

    def talk(self, image, audio, cfg_scale=DEFAULT_CFG_SCALE, nfe=DEFAULT_NFE, seed=0, crop=True, paste_back=False, tracks_from=None,
             progress=gr.Progress()):
        """Portrait + speech -> talking video (AudioDrivenPipeline); seed < 0 or empty means random."""
        _require(image, "Upload a portrait (or pick the sample) first.")
        _require(audio, "Record or upload speech (or pick the sample) first.")
        path = self._new_output("talking")
        with _shown_to_user():
            progress(0, desc="preparing the portrait")
            source = prepared_source(self.sources, self.audio_pipeline, image, bool(crop))
            self.audio_pipeline.to_file(
                path, image, audio, source=source, cfg_scale=float(cfg_scale), nfe=int(nfe),
                seed=None if seed is None or seed < 0 else int(seed), paste_back=bool(paste_back),
                tracks_from=tracks_from or None, max_seconds=self.max_seconds, progress=_frames_progress(progress))
        return _ready(path)

    def reenact(self, image, driving, crop=True, crop_driving=True, paste_back=False, relative=True,
                progress=gr.Progress()):
        """Portrait + driving video -> the portrait moving like the video (VideoDrivenPipeline)."""
        _require(image, "Upload a portrait (or pick the sample) first.")
        _require(driving, "Upload a driving video first.")
        path = self._new_output("reenacted")
        with _shown_to_user():
            progress(0, desc="preparing the portrait")
            source = prepared_source(self.sources, self.video_pipeline, image, bool(crop))
            self.video_pipeline.to_file(
                path, image, driving, source=source, relative=bool(relative), crop_driving=bool(crop_driving),
                paste_back=bool(paste_back), max_seconds=self.max_seconds, progress=_frames_progress(progress))
        return _ready(path)

    def _new_output(self, stem: str) -> Path:
        """A fresh file name; old outputs (already copied into Gradio's cache) are removed so the folder stays small."""
        now = time.time()
        for old in self.output_dir.glob("*.mp4"):
            with contextlib.suppress(OSError):
                if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                    old.unlink()
        return self.output_dir / f"{stem}-{uuid.uuid4().hex[:12]}.mp4"


def _ready(path: Path) -> tuple[str, gr.DownloadButton]:
    """The finished video for the player, and the download button made visible with the same file."""
    return str(path), gr.DownloadButton(value=str(path), visible=True)


# -- page -----------------------------------------------------------------------------------------------------


def build_ui(audio_pipeline: AudioDrivenPipeline, video_pipeline: VideoDrivenPipeline, *,
             output_dir: str | Path | None = None, max_seconds: float | None = DEFAULT_MAX_SECONDS) -> gr.Blocks:
    """The page: an audio-driven tab and a video-driven tab over the given pipelines.

    Args:
        output_dir: where videos are written (see `Handlers`); Gradio serves copies from its own cache, which it
            empties hourly and on close.
        max_seconds: refuse longer speech or driving videos.
    """
    handlers = Handlers(audio_pipeline, video_pipeline, output_dir, max_seconds)
    portrait, speech = bundled_asset("demo_portrait.png"), bundled_asset("demo_speech.wav")
    with gr.Blocks(title="imtalker", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# imtalker\nA portrait and speech (or a driving video) become a talking video. "
                    "Everything runs on this machine.")
        with gr.Tab("Audio-driven", id="audio"):
            _audio_tab(handlers, portrait, speech)
        with gr.Tab("Video-driven", id="video"):
            _video_tab(handlers, portrait)
    return demo


def _portrait_input(prefix: str) -> gr.Image:
    # filepath + image_mode=None hand over the uploaded file untouched: our loader applies EXIF rotation and
    # composites transparency itself, and the file's hash keys the source cache
    return gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Portrait",
                    height=320, elem_id=f"{prefix}-portrait")


def _result(prefix: str) -> tuple[gr.Video, gr.DownloadButton]:
    video = gr.Video(label="Result", interactive=False, height=420, elem_id=f"{prefix}-video")
    download = gr.DownloadButton("Download mp4", visible=False, elem_id=f"{prefix}-download")
    return video, download


def _samples(values: dict) -> None:
    """One clickable example row filling the inputs that have a bundled sample; nothing when none is shipped."""
    present = {component: value for component, value in values.items() if value}
    if present:
        gr.Examples([list(present.values())], inputs=list(present), label="Samples")


def _audio_tab(handlers: Handlers, portrait: str | None, speech: str | None) -> None:
    with gr.Row():
        with gr.Column():
            image = _portrait_input("talk")
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech",
                             elem_id="talk-audio")
            with gr.Accordion("Options", open=False, elem_id="talk-options"):
                cfg_scale = gr.Slider(1.0, 5.0, value=DEFAULT_CFG_SCALE, step=0.1, label="Audio guidance (cfg scale, 2-3 usual)")
                nfe = gr.Slider(2, 50, value=DEFAULT_NFE, step=1, label="Steps (nfe)")
                seed = gr.Number(value=0, precision=0, label="Seed (-1: random)")
                crop = gr.Checkbox(value=True, label="Find and crop the face")
                paste_back = gr.Checkbox(value=False, label="Paste back into the full photo")
                tracks = gr.Video(sources=["upload"], label="Head pose and gaze from a driving clip (optional)",
                                  height=200)
            button = gr.Button("Generate", variant="primary", elem_id="talk-generate")
            _samples({image: portrait, audio: speech})
        with gr.Column():
            video, download = _result("talk")
    button.click(handlers.talk, [image, audio, cfg_scale, nfe, seed, crop, paste_back, tracks], [video, download],
                 concurrency_id=RENDER_QUEUE, concurrency_limit=1)


def _video_tab(handlers: Handlers, portrait: str | None) -> None:
    with gr.Row():
        with gr.Column():
            image = _portrait_input("reenact")
            driving = gr.Video(sources=["upload"], label="Driving video", height=320, elem_id="reenact-driving")
            with gr.Accordion("Options", open=False):
                crop = gr.Checkbox(value=True, label="Find and crop the face in the portrait")
                crop_driving = gr.Checkbox(value=True, label="Find and crop the face in the driving video")
                paste_back = gr.Checkbox(value=False, label="Paste back into the full photo")
                relative = gr.Checkbox(value=True, label="Relative motion (keep the portrait's own pose at rest)")
            button = gr.Button("Generate", variant="primary", elem_id="reenact-generate")
            _samples({image: portrait})
        with gr.Column():
            video, download = _result("reenact")
    button.click(handlers.reenact, [image, driving, crop, crop_driving, paste_back, relative], [video, download],
                 concurrency_id=RENDER_QUEUE, concurrency_limit=1)


def serve(audio_pipeline: AudioDrivenPipeline, video_pipeline: VideoDrivenPipeline, host: str = "127.0.0.1",
          port: int = 7860, max_seconds: float | None = DEFAULT_MAX_SECONDS) -> None:
    """Serve the page until Ctrl-C or SIGTERM; our videos and Gradio's copies of them are removed on the way out."""
    with tempfile.TemporaryDirectory(prefix="imtalker-ui-") as output_dir:
        demo = build_ui(audio_pipeline, video_pipeline, output_dir=output_dir, max_seconds=max_seconds)
        try:
            # share=False always: the page is for this machine or its network, never tunnelled out
            _, url, _ = demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True,
                                    quiet=True)
            print(f"imtalker: serving {url} (Ctrl-C stops)", file=sys.stderr)
            _wait_for_stop()
        finally:
            demo.close()


def _wait_for_stop() -> None:
    """Sleep until Ctrl-C or SIGTERM (how service managers stop a process), so clean-up still runs after either."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):  # a timed wait, so Ctrl-C is delivered promptly
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
