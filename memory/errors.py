"""The one error model: every refusal a person can act on is a ``PlixoError``.

Why: each domain used to carry its own status attribute (``http_status`` here, ``status_code``
there) and the app had one handler per family, so a new family answered 500 until someone added
a handler. A ``PlixoError`` says what went wrong and what to do in its message, carries the HTTP
status the API answers with, and may add structured fields (the guardrails' reasons); the app has
one handler for all of them (``api.app``). Domain errors subclass it (and ``ValueError`` where
callers already catch bad input as such). It lives at the bottom layer so every layer can raise it.
"""

from __future__ import annotations

from typing import Any


class PlixoError(Exception):
    """A refusal with a user message (``str(error)``) and the HTTP status the API answers with."""

    http_status: int = 400

    def __init__(self, message: str = "", *, http_status: int | None = None) -> None:
        super().__init__(message)
        if http_status is not None:
            self.http_status = http_status

    @property
    def status_code(self) -> int:
        """The same status under the name FastAPI and older callers use."""
        return self.http_status

    #: The guardrails' reasons, where rules refused; shown beside the message.
    reasons: list[dict[str, Any]] | None = None

    def body(self) -> dict[str, Any]:
        """The JSON answer: the message, and the reasons when there are any."""
        out: dict[str, Any] = {"detail": str(self)}
        if self.reasons:
            out["reasons"] = self.reasons
        return out
