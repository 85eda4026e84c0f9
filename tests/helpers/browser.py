"""Headless Chromium for the page tests: Debian's /usr/bin/chromium driven by playwright (both skipped if missing)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


@contextmanager
def chromium(extra_args: tuple[str, ...] = ()):
    """A launched headless browser; skips the test when Chromium or playwright is not installed."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing (it is in the dev extra)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + list(extra_args))
        try:
            yield browser
        finally:
            browser.close()
