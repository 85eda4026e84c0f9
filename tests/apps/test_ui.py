"""`imtalker ui`: the handlers behind the page, the CLI entry, and the page itself driven in headless Chromium.

The browser test keeps its screenshot in its tmp folder; IMTALKER_UI_SCREENSHOT=path copies it there too.
"""

from __future__ import annotations

import os
import shutil
import socket
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

gr = pytest.importorskip("gradio", reason="the web UI needs the `ui` extra (gradio)")

from imtalker.apps.cli import main  # noqa: E402
from imtalker.apps.ui import Handlers, build_ui, load_pipelines  # noqa: E402
from imtalker.io.video import VideoWriter  # noqa: E402
from helpers.browser import chromium  # noqa: E402
from helpers.tiny_models import save_tiny_weights  # noqa: E402

# gradio 6.31's queue calls pandas options that pandas 3 deprecates: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")




@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks gain nothing from a second thread, and on a busy shared machine its spin-waits cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return save_tiny_weights(tmp_path_factory.mktemp("weights"))  # the page and the data flow are under test


@pytest.fixture(scope="module")
def pipelines(weights):
    return load_pipelines(weights)  # the CLI's path: from_pretrained, one renderer shared by both pipelines


def test_both_tabs_share_one_renderer_in_onnxruntime(weights, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from imtalker.export.runtime import OnnxGenerator, OnnxRenderer

    audio, video = load_pipelines(weights, backend="onnxruntime", onnx_dir=tmp_path / "onnx")
    assert isinstance(audio.renderer, OnnxRenderer) and isinstance(audio.generator, OnnxGenerator)
    assert video.renderer is audio.renderer
    assert main(["ui", "--weights", str(weights), "--backend", "onnxruntime", "--fp16"]) == 2  # before serving
    assert "float32" in capsys.readouterr().err


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """A real face photo, 0.8 s of a voiced tone, a 6-frame clip of that face and a blank (face-less) image."""
    folder = tmp_path_factory.mktemp("media")
    portrait = folder / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(portrait)
    blank = folder / "wall.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(blank)
    t = np.arange(int(0.8 * 16000)) / 16000
    voice = 0.3 * np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    speech = folder / "speech.wav"
    with wave.open(str(speech), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((voice * 32767).astype(np.int16).tobytes())
    driving = folder / "driving.mp4"
    face = np.asarray(Image.fromarray(skdata.astronaut()[:256, 96:352]).resize((128, 128)))  # head and shoulders
    with VideoWriter(driving, fps=25) as writer:
        for shift in range(6):
            writer.write(np.roll(face, shift, axis=1))
    return {"portrait": portrait, "blank": blank, "speech": speech, "driving": driving}


def mp4_frames(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


# -- handlers (no browser) ----------------------------------------------------------------------------------------


def test_bad_inputs_become_error_messages(pipelines, media, tmp_path):
    handlers = Handlers(*pipelines, output_dir=tmp_path)
    cases = [((None, media["speech"]), "portrait"),
             ((media["portrait"], None), "speech"),
             ((media["speech"], media["speech"]), "image"),  # not an image: InputError
             ((media["blank"], media["speech"]), "face")]  # no face: NoFaceError
    for (image, audio), word in cases:
        with pytest.raises(gr.Error) as info:
            handlers.talk(None if image is None else str(image), None if audio is None else str(audio))
        assert word in info.value.message.lower()
    with pytest.raises(gr.Error, match="driving video"):
        handlers.reenact(str(media["portrait"]), None)
    assert not list(tmp_path.glob("*.mp4"))


def test_handlers_make_videos_and_reuse_the_prepared_portrait(pipelines, media, tmp_path):
    handlers = Handlers(*pipelines, output_dir=tmp_path)
    video, button = handlers.talk(str(media["portrait"]), str(media["speech"]), nfe=2, seed=0, crop=False,
                                  tracks_from=str(media["driving"]))  # head pose and gaze from the clip
    assert button.visible and mp4_frames(video) == 20  # 0.8 s at 25 fps
    video, _ = handlers.reenact(str(media["portrait"]), str(media["driving"]), crop=False, crop_driving=False)
    assert mp4_frames(video) == 6
    assert handlers.sources.stats()["size"] == 1  # the shared renderer lets both tabs use one encoded portrait
    assert len(list(tmp_path.glob("*.mp4"))) == 2


@pytest.mark.parametrize("shipped", [{}, {"demo_portrait.png"}, {"demo_portrait.png", "demo_speech.wav"}])
def test_bundled_samples_are_offered_when_shipped(pipelines, media, monkeypatch, shipped):
    files = {"demo_portrait.png": str(media["portrait"]), "demo_speech.wav": str(media["speech"])}
    monkeypatch.setattr("imtalker.apps.ui.bundled_asset", lambda name: files[name] if name in shipped else None)
    samples = [block for block in build_ui(*pipelines).blocks.values() if isinstance(block, gr.Dataset)]
    assert len(samples) == (2 if shipped else 0)  # one row per tab; none without a sample portrait
    assert [len(sample.raw_samples[0]) for sample in samples] == ([len(shipped), 1] if shipped else [])


def test_cli_ui_reports_missing_weights_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IMTALKER_HOME", raising=False)
    monkeypatch.setattr("imtalker.weights.bundled_demo_model", lambda: None)
    assert main(["ui"]) == 2
    assert main(["ui", "--weights", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "no weights" in err[0] and "not found" in err[1]


# -- the page in a browser ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def page_url(pipelines, tmp_path):
    demo = build_ui(*pipelines, output_dir=tmp_path / "outputs")
    (tmp_path / "outputs").mkdir()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, share=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_page_generates_plays_and_downloads(browser, page_url, media, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page.set_default_timeout(60_000)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(page_url)
    page.locator("#talk-portrait input[type=file]").set_input_files(str(media["portrait"]))
    page.locator("#talk-portrait img").wait_for()

    page.locator("#talk-generate").click()  # no speech yet: the page says so instead of failing
    page.get_by_test_id("toast-text").filter(has_text="Record or upload speech").wait_for()
    page.get_by_test_id("toast-close").click()

    page.locator("#talk-audio input[type=file]").set_input_files(str(media["speech"]))
    page.locator("#talk-audio audio, #talk-audio canvas, #talk-audio wave").first.wait_for(state="attached")
    page.locator("#talk-generate").click()
    video = page.locator("#talk-video video")
    video.wait_for()
    page.wait_for_function("v => v.currentSrc && v.readyState >= 2", arg=video.element_handle())
    playback = video.evaluate("""async v => {
        v.muted = true;
        await v.play();
        const start = v.currentTime;
        await new Promise(done => setTimeout(done, 400));
        return {ready: v.readyState, advanced: v.currentTime > start, duration: v.duration, error: v.error};
    }""")
    assert playback["ready"] >= 2 and playback["advanced"] and playback["error"] is None
    assert 0.7 < playback["duration"] < 1.0  # 0.8 s of speech -> 20 frames

    with page.expect_download() as download:
        page.locator("#talk-download").click()
    saved = tmp_path / "download.mp4"
    download.value.save_as(saved)
    assert saved.read_bytes()[4:8] == b"ftyp" and mp4_frames(saved) == 20

    assert all(url.startswith((page_url, "data:", "blob:")) for url in requests), "the page must work offline"

    video.evaluate("v => { v.pause(); v.currentTime = 0.4; }")
    page.locator("#talk-options").click()  # opened, so the screenshot shows every control
    page.get_by_text("Steps (nfe)").wait_for()
    shot = tmp_path / "ui.png"
    page.screenshot(path=shot, full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("IMTALKER_UI_SCREENSHOT"):
        shutil.copy(shot, os.environ["IMTALKER_UI_SCREENSHOT"])
