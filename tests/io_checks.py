"""Checks shared by the audio and video I/O tests."""

from __future__ import annotations

import av
import pytest


def need(*codecs: str) -> None:
    """Skip unless this PyAV build has every named encoder."""
    missing = [c for c in codecs if c not in av.codecs_available]
    if missing:
        pytest.skip(f"this PyAV build has no {', '.join(missing)} encoder")


def check_input_error(excinfo, *fragments: str) -> None:
    """A one-line message holding every fragment, raised without a chained traceback."""
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    error = excinfo.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
