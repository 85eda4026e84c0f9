"""Errors the API answers with a status code and a JSON body `{"error": code, "message": text}`."""

from __future__ import annotations

from ...errors import InputError, NoFaceError


class ApiError(Exception):
    """An error with its HTTP status (and WebSocket close code) and a one-line message for the client."""

    CLOSE_CODES = {400: 1007, 401: 1008, 403: 1008, 404: 1008, 408: 1008, 413: 1009, 422: 1007, 429: 1013, 503: 1013}

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}

    @property
    def close_code(self) -> int:
        return self.CLOSE_CODES.get(self.status, 1011)

    @classmethod
    def from_input(cls, err: InputError) -> "ApiError":
        """A bad input (unreadable image or audio, no face, bad option) is 422; too long or too big is 413."""
        if isinstance(err, NoFaceError):
            return cls(422, "no_face", str(err))
        if "longer than the limit" in str(err) or "more than the limit" in str(err):
            return cls(413, "too_large", str(err))
        return cls(422, "bad_input", str(err))
