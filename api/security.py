"""Browser-facing protections every route gets: security headers and same-origin state changes.

* Headers: a Content-Security-Policy (scripts only from plixo itself, Stripe.js and the page's
  own nonce; no framing by other sites), ``X-Content-Type-Options: nosniff``, a Referrer-Policy
  and ``X-Frame-Options`` for older browsers. A route's own value wins (the mini-portal sends
  ``Referrer-Policy: no-referrer``).
* Cross-site request forgery on the JSON API is refused where the caller is resolved
  (:func:`api.deps.check_same_origin`).
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import origin_of as _origin
from memory.config import Settings

# The interactive API docs load their script and styles from a CDN with inline bootstrapping.
DOCS_PATHS = ("/docs", "/redoc")


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
