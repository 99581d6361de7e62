"""The error a route raises to answer a client: its own module, so that routes need not import the app."""

from __future__ import annotations


class ApiError(Exception):
    """Answered as OpenAI's error shape with `status` (app.py turns it into the response)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
