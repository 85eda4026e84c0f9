"""Errors the API answers with a status code and a JSON body `{"error": code, "message": text}`."""

from __future__ import annotations

import json

from ...errors import IMTalkerError, InputError, NoFaceError


class ApiError(IMTalkerError):
    """An error with its HTTP status (and WebSocket close code) and a one-line message for the client."""

    CLOSE_CODES = {400: 1007, 401: 1008, 403: 1008, 404: 1008, 408: 1008, 413: 1009, 421: 1008, 422: 1007,
                   429: 1013, 503: 1013}

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after  # seconds a client should wait before trying again (429, 503)

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}

    @property
    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def websocket_message(self) -> str:
        """The text message a stream gets before the close: `{"type": "error", "status", "error", "message"}`
        and, when it should try again later, `"retry_after"` (a WebSocket close carries no headers)."""
        message = {"type": "error", "status": self.status, **self.body()}
        if self.retry_after is not None:
            message["retry_after"] = self.retry_after
        return json.dumps(message)

    @property
    def close_code(self) -> int:
        return self.CLOSE_CODES.get(self.status, 1011)

    @classmethod
    def from_input(cls, err: InputError) -> "ApiError":
        """A bad input (unreadable image or audio, no face, bad option) is 422; too long or too big is 413."""
        if isinstance(err, NoFaceError):
            return cls(422, "no_face", str(err))
        if "than the limit" in str(err):  # "longer than the limit", "more (pixels) than the limit"
            return cls(413, "too_large", str(err))
        return cls(422, "bad_input", str(err))
