"""The errors imtalker raises on purpose. All derive from `IMTalkerError`, so a caller can catch the package's
errors in one clause; each message is one line that says what is wrong and with which input.

`InputError` means "the input is wrong" (the CLI reports it with exit code 2, the server as a 4xx JSON error);
`CheckpointError` means a weights file or folder cannot be used for the network asked for.
"""

from __future__ import annotations

import signal


class IMTalkerError(Exception):
    """Base class of every error imtalker raises on purpose."""


class InputError(IMTalkerError, ValueError):
    """A user-supplied file or value cannot be used; the message says what is wrong and with which input."""


class NoFaceError(InputError):
    """No face was found where one is needed."""


class CheckpointError(IMTalkerError, ValueError):
    """A file that is not a usable checkpoint for the network asked for; the message says why."""


class TrainingInterrupted(IMTalkerError):
    """Training stopped by a signal after saving a checkpoint at the current step; rerunning the same command
    continues from it. `exit_code` is the shell's for the signal (143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, signum: int, step: int, checkpoint):
        self.signal, self.step, self.checkpoint = signal.Signals(signum), step, checkpoint
        self.exit_code = 128 + int(signum)
        super().__init__(f"{self.signal.name} at step {step}; saved {checkpoint}; run the same command again to "
                         "continue from it")
