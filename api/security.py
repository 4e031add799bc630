"""Browser-facing protections every route gets: security headers and same-origin state changes.

* Headers: a Content-Security-Policy (scripts only from plixo itself, Stripe.js and the page's
  own nonce; no framing by other sites), ``X-Content-Type-Options: nosniff``, a Referrer-Policy
  and ``X-Frame-Options`` for older browsers. A route's own value wins (the mini-portal sends
  ``Referrer-Policy: no-referrer``).
* Cross-site request forgery on the JSON API: a state-changing ``/api/*`` call authenticated by
  the session cookie must come from plixo's own pages (``Origin``, else ``Referer``, naming the
  served host or ``PLIXO_PUBLIC_BASE_URL``) or carry the session's CSRF token in
  ``X-CSRF-Token``. Bearer-token calls are exempt: a browser never attaches one by itself.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import SESSION_COOKIE
from memory.config import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# The interactive API docs load their script and styles from a CDN with inline bootstrapping.
DOCS_PATHS = ("/docs", "/redoc")


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def content_security_policy(settings: Settings, nonce: str) -> str:
    stripe = ["https://js.stripe.com"]
    connect = ["https://api.stripe.com"]
    if settings.stripe_api_base:
        base = _origin(settings.stripe_api_base)
        if base:
            stripe.append(base)
            connect.append(base)
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}' {' '.join(stripe)}",
            "style-src 'self' 'unsafe-inline'",  # style="width: 40%" meters; no script runs
            "img-src 'self' data:",
            f"connect-src 'self' {' '.join(connect)}",
            f"frame-src {' '.join(stripe)} https://hooks.stripe.com",
            "frame-ancestors 'none'",
            "form-action 'self'",
            "base-uri 'none'",
            "object-src 'none'",
        ]
    )


class SecurityHeadersMiddleware:
    """Adds the headers above to every HTTP response; a nonce per request for inline scripts
    (templates write ``nonce="{{ request.state.csp_nonce }}"``)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        docs = scope.get("path", "").startswith(DOCS_PATHS)
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"strict-origin-when-cross-origin"),
            (b"x-frame-options", b"DENY"),
            (
                b"content-security-policy",
                (
                    "frame-ancestors 'none'"
                    if docs
                    else content_security_policy(self.settings, nonce)
                ).encode(),
            ),
        ]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in extra if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class SameOriginMiddleware:
    """Refuses cookie-authenticated state changes on ``/api/*`` from other sites (403).

    Runs inside the session middleware, so the session (and its CSRF token) is readable.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.public_origin = _origin(settings.public_base_url)

    def _same_origin(self, scope: Scope, headers: dict[bytes, bytes]) -> bool:
        claimed = headers.get(b"origin") or headers.get(b"referer")
        if not claimed:
            return False
        origin = _origin(claimed.decode("latin-1"))
        if origin is None:
            return False
        host = headers.get(b"host", b"").decode("latin-1").lower()
        return origin == self.public_origin or (bool(host) and urlsplit(origin).netloc == host)

    @staticmethod
    def _token_matches(scope: Scope, headers: dict[bytes, bytes]) -> bool:
        sent = headers.get(b"x-csrf-token", b"").decode("latin-1")
        expected = (scope.get("session") or {}).get("csrf")
        return bool(sent) and isinstance(expected, str) and hmac.compare_digest(sent, expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("method", "GET") not in SAFE_METHODS
            and scope.get("path", "").startswith("/api/")
        ):
            headers = dict(scope.get("headers", []))
            cookie = headers.get(b"cookie", b"").decode("latin-1")
            by_cookie = f"{SESSION_COOKIE}=" in cookie and b"authorization" not in headers
            if by_cookie and not (
                self._same_origin(scope, headers) or self._token_matches(scope, headers)
            ):
                response = JSONResponse(
                    {
                        "detail": "A change through the session cookie must come from plixo's own "
                        "pages (same Origin) or carry the X-CSRF-Token header; scripts use "
                        "'Authorization: Bearer <token>'."
                    },
                    status_code=403,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
