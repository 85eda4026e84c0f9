"""Checks and bad inputs shared by the audio and video I/O tests and the audio front ends' tests."""

from __future__ import annotations

import av
import pytest
import torch


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


# Waveforms (and frame counts) that both audio front ends refuse, with a fragment of their message.
BAD_WAVEFORMS = [
    (torch.zeros(1, 1, 640), 1, "shape"),
    (torch.zeros(640, dtype=torch.int16), 1, "floating-point"),
    (torch.zeros(1, 0), 1, "at least one sample"),
    (torch.zeros(0, 640), 1, "at least one sample"),
    (torch.tensor([0.0, float("nan"), 1.0]), 1, "finite"),
    (torch.tensor([0.0, float("inf"), 1.0]), 1, "finite"),
    (torch.zeros(640), 0, "num_frames"),
    (torch.zeros(640), 2.5, "num_frames"),
    ([0.0] * 640, 1, "torch.Tensor"),
]
