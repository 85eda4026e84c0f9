"""The live page `imtalker serve` serves at /live, driven in headless Chromium: the face idles from Start, talks
while a speech file plays (latency shown), goes back to rest on Interrupt, and needs nothing from outside."""

from __future__ import annotations

import pytest

from helpers.browser import chromium
from helpers.server import running_server, voice, wav_bytes


@pytest.fixture(scope="module")
def server(pipe):
    with running_server(pipe, workers=1, max_audio_seconds=60.0) as running:  # an always-on session runs on
        yield running


@pytest.fixture
def browser():
    with chromium(("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")) as launched:
        yield launched


def shown(page) -> int:
    return int(page.locator("#frames").text_content())


def test_page_idles_talks_and_stops_when_interrupted(browser, server, tmp_path):
    speech = tmp_path / "speech.wav"
    speech.write_bytes(wav_bytes(voice(3.0)))
    page = browser.new_page()
    page.set_default_timeout(60_000)
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{server.url}/live")
    page.locator("#start").click()
    page.wait_for_function("Number(document.querySelector('#frames').textContent) >= 10")  # no audio: it idles
    assert page.locator("#state").text_content() == "idle"
    # a new frame's picture loads asynchronously after its src is set (naturalWidth 0 meanwhile): wait for a loaded one
    page.wait_for_function("(() => { const img = document.querySelector('#face'); "
                           "return img.complete && img.naturalWidth === 128; })()", timeout=10_000)

    page.locator("#file").set_input_files(str(speech))
    page.wait_for_function("document.querySelector('#state').textContent === 'speaking'")
    latency = page.locator("#latency").text_content()
    assert latency.endswith("speech frames)") and 0 < int(latency.split(" ms")[0]) < 5000

    page.locator("#interrupt").click()
    page.wait_for_function("document.querySelector('#interrupt-latency').textContent.includes('ms')")
    page.wait_for_function("document.querySelector('#state').textContent === 'idle'")
    before = shown(page)
    page.wait_for_function(f"Number(document.querySelector('#frames').textContent) >= {before + 5}")  # idles on

    page.locator("#mic").click()  # Chromium's fake microphone (a beep) goes in like speech
    page.wait_for_function("document.querySelector('#state').textContent === 'speaking'")
    page.locator("#stop").click()
    page.wait_for_function("['ended', 'closed'].includes(document.querySelector('#state').textContent)")
    assert page.locator("#error").text_content() == "" and not errors
    assert all(url.startswith((server.url, "blob:", "data:")) for url in requests), "the page must work offline"
