"""The PyAV layer shared by the audio and video readers: file checks, opening containers, decoding packets, and
one-line messages for PyAV's errors. Every failure is an `InputError`; PyAV's own exceptions never leak out."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

MIN_SAMPLE_RATE = 1000  # below this a "sample rate" is almost surely a mistake (e.g. kHz given instead of Hz)
MAX_SAMPLE_RATE = 768000


def is_number(value: Any) -> bool:
    """A real number that is not a bool (NumPy scalars included)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_rate(rate: Any, name: str) -> int:
    """A sample rate in Hz as an int, or an InputError naming `name`."""
    if not is_number(rate) or not math.isfinite(rate) or rate != int(rate):
        raise InputError(f"{name} must be a whole number of Hz, got {rate!r}")
    rate = int(rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(f"{name} must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {rate}")
    return rate


def check_file(path: Path, what: str) -> None:
    """An InputError unless `path` is an existing readable file."""
    if not path.exists():
        raise InputError(f"{what} '{path}' does not exist")
    if path.is_dir():
        raise InputError(f"{what} '{path}' is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} '{path}' is not readable (permission denied)")


def describe_error(error: Exception) -> str:
    """One line from a PyAV/OS error, without the file name that the caller already shows."""
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(reason).split())


def open_container(path: Path, what: str) -> "av.container.InputContainer":
    """Opens a media file for reading; an unreadable one is an InputError naming `what` and the path."""
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{what} '{path}' cannot be read as a media file ({describe_error(error)})") from None


def decode_packets(container: Any, stream: Any, path: Path, kind: str) -> Iterator[Any]:
    """Decoded frames of one stream; bad packets are skipped the way the ffmpeg tool skips them.

    Raises InputError when decoding fails outright or more than half of the packets cannot be decoded.
    """
    packets = bad_packets = 0
    try:
        for packet in container.demux(stream):
            packets += 1
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                bad_packets += 1
                continue
            yield from frames
    except (av.FFmpegError, OSError) as error:
        raise InputError(f"{kind} file '{path}' is corrupt or cannot be decoded ({describe_error(error)})") from None
    if bad_packets:
        if bad_packets * 2 > packets:
            raise InputError(f"{kind} file '{path}' is corrupt: {bad_packets} of {packets} packets cannot be decoded")
        logger.warning("%s file '%s': skipped %d of %d packets that could not be decoded", kind, path, bad_packets,
                       packets)
