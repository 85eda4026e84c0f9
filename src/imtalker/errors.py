"""Errors that mean "the input is wrong", reported by the CLI in one line with exit code 2."""

from __future__ import annotations


class InputError(ValueError):
    """A user-supplied file or value cannot be used; the message says what is wrong and with which input."""


class NoFaceError(InputError):
    """No face was found where one is needed."""
