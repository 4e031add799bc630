"""Keep credentials out of every log line, the web server's access log included.

A mini-portal link carries its token in the path (``/portal/<token>/...``), Slack and scripts send
bearer tokens, and a query string may carry ``?token=``. Anyone who can read the logs must not be
able to replay them, so a filter on the root handlers rewrites each record before it is written:
token path segments, token-like query values and ``Bearer`` credentials become ``[redacted]``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"

# Path segments that are credentials: the mini-portal token (the segment after /portal/).
_PORTAL_SEGMENT = re.compile(r"(/portal/)([^/?#\s\"']+)")
# Query parameters whose value is a credential.
_QUERY_SECRET = re.compile(
    r"([?&](?:token|access_token|api_token|auth|key|api_key|secret|signature|sig|code)=)"
    r"([^&#\s\"']+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(Bearer\s+)([A-Za-z0-9._~+/=-]+)", re.IGNORECASE)
# plixo's own bearer tokens have a prefix: redact them wherever they appear.
_PLIXO_TOKEN = re.compile(r"plx_[A-Za-z0-9_-]{8,}")


def redact(text: str) -> str:
    """``text`` with every credential it carries replaced by ``[redacted]``."""
    text = _PORTAL_SEGMENT.sub(rf"\1{REDACTED}", text)
    text = _QUERY_SECRET.sub(rf"\1{REDACTED}", text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    return _PLIXO_TOKEN.sub(REDACTED, text)


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    """Rewrites a record's message and string arguments (uvicorn's access log passes the path as
    an argument); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        return True


def redacted_log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration with :class:`RedactTokens` on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = {
        **LOGGING_CONFIG,
        "filters": {"redact_tokens": {"()": "api.logredact.RedactTokens"}},
        "handlers": {
            name: {**handler, "filters": ["redact_tokens"]}
            for name, handler in LOGGING_CONFIG["handlers"].items()
        },
        # plixo's own loggers propagate to the root: give it the filtered handler too (the level
        # matches Python's last-resort handler, which would otherwise write them unfiltered).
        "root": {"handlers": ["default"], "level": "WARNING"},
    }
    return config


def install() -> None:
    """Put the filter on the handlers that exist now (the root's and uvicorn's), for processes that
    did not start through :func:`redacted_log_config` (tests, embedding)."""
    f = RedactTokens()
    for name in ("", "uvicorn", "uvicorn.access", "uvicorn.error"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(x, RedactTokens) for x in handler.filters):
                handler.addFilter(f)
