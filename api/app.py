"""The FastAPI application: JSON API (documented OpenAPI), the review panel pages, webhooks, portal.

Cross-cutting behaviour lives here so every router gets it: a request-body size limit (413 before a
byte is parsed), domain errors mapped to clear 4xx answers, and log-in redirects for pages whose
session expired (the API answers 401 instead).
"""

from __future__ import annotations

import gc
import importlib
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import SESSION_COOKIE, system_clock, wants_html
from api.pages import templates
from api.queue_cache import QueueCacheMiddleware, QueuePageCache
from api.security import SecurityHeadersMiddleware
from api.uploads import PortalUploadGuard
from memory.config import Settings, get_settings
from memory.db import make_engine, session_factory
from memory.errors import PlixoError
from tools.admin.sessions import LoginLimiter

HERE = Path(__file__).parent

SESSION_MAX_AGE_S = 8 * 3600  # a working day; an expired session logs in again

DEFAULT_BODY_LIMIT = 1 * 1024 * 1024  # JSON and forms: 1 MiB is far above any real request
# Routes that accept file uploads (dispute evidence in the mini-portal) get more room; their own
# handlers enforce the exact per-file limits and types.
UPLOAD_BODY_LIMIT = 25 * 1024 * 1024
UPLOAD_PREFIXES = ("/portal", "/api/portal", "/api/disputes", "/disputes")

ROUTER_MODULES = (
    "api.routes.auth.endpoints",
    "api.routes.review.endpoints",
    "api.routes.review.pages",
    "api.routes.conversations.replies",
    "api.routes.commitments.promises",
    "api.routes.commitments.plans",
    "api.routes.commitments.disputes",
    "api.routes.commitments.payments",
    "api.routes.commitments.portal_links",
    "api.routes.commitments.radar",
    "api.routes.insights.endpoints",
    "api.routes.portal.endpoints",
    "api.routes.webhooks.stripe",
    "api.routes.webhooks.slack",
    "api.routes.conversations.pages",
    "api.routes.admin.endpoints",
    "api.routes.cashapp.endpoints",
    "api.routes.commitments.pages",
    "api.routes.commitments.dispute_pages",
    "api.routes.conversations.messages",
    "api.routes.inbox.pages",
)

log = logging.getLogger("plixo.api")


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413, whether declared or streamed (chunked)."""

    def __init__(self, app: ASGIApp, default_limit: int = DEFAULT_BODY_LIMIT) -> None:
        self.app = app
        self.default_limit = default_limit

    def limit_for(self, path: str) -> int:
        if path.startswith(UPLOAD_PREFIXES):
            return UPLOAD_BODY_LIMIT
        return self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _too_large(send, "Content-Length is not a number.", 400)
                    return
                if declared > limit:
                    await _too_large(send, _limit_text(limit))
                    return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(_limit_text(limit))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await _too_large(send, _limit_text(limit))
            else:  # pragma: no cover - a handler that streamed before reading its body
                raise


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``: an HTTPException so the framework answers 413, not 400 or 500."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


def _limit_text(limit: int) -> str:
    return f"The request body is larger than {limit // 1024} KiB; send less data."


async def _too_large(send: Send, detail: str, status: int = 413) -> None:
    response = JSONResponse({"detail": detail}, status_code=status)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def _install_error_handlers(app: FastAPI) -> None:
    """Every refusal and failure answered in the reader's terms: the error page for the panel,
    JSON for the API."""
    _install_request_error_handlers(app)
    _install_database_error_handlers(app)


def _install_request_error_handlers(app: FastAPI) -> None:
    """Domain refusals, HTTP errors (a 401 in the panel goes to the login page) and invalid
    requests."""

    @app.exception_handler(PlixoError)
    async def refused(request: Request, exc: PlixoError) -> Response:
        """Every domain's refusal (``memory.errors``): its status, its message, its reasons; the
        panel shows the error page, the API answers JSON."""
        status = exc.http_status
        if wants_html(request):
            return templates.TemplateResponse(
                request,
                "error.html",
                {"user": None, "status": status, "message": str(exc), "reasons": exc.reasons},
                status_code=status,
            )
        return JSONResponse(exc.body(), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if wants_html(request) and exc.status_code == 401:
            target = request.url.path
            if request.method == "GET" and not target.startswith("/login"):
                expired = SESSION_COOKIE in request.cookies
                response = RedirectResponse(
                    f"/login?next={target}" + ("&expired=1" if expired else ""), status_code=303
                )
                if expired:
                    response.delete_cookie(SESSION_COOKIE)
                return response
        if wants_html(request) and exc.status_code in (401, 403, 404, 405, 409, 413, 422):
            return templates.TemplateResponse(
                request,
                "error.html",
                {"user": None, "status": exc.status_code, "message": exc.detail, "reasons": None},
                status_code=exc.status_code,
                headers=getattr(exc, "headers", None),
            )
        return JSONResponse(
            {"detail": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        messages = []
        for err in errors[:10]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            if err.get("type") == "json_invalid":
                messages.append("The body is not valid JSON; send a JSON object.")
            else:
                messages.append(f"{loc or 'body'}: {err.get('msg')}")
        detail = "; ".join(messages) or "The request is not valid."
        if wants_html(request):
            return templates.TemplateResponse(
                request,
                "error.html",
                {"user": None, "status": 422, "message": detail, "reasons": None},
                status_code=422,
            )
        safe = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in errors[:50]]
        return JSONResponse({"detail": detail, "errors": safe}, status_code=422)


def _install_database_error_handlers(app: FastAPI) -> None:
    """Ledger trouble as a clear "retry" (409 / 503), never a traceback."""

    @app.exception_handler(StaleDataError)
    async def stale(request: Request, exc: StaleDataError) -> Response:
        # An optimistic-lock race that surfaced outside the draft tools (e.g. an autoflush).
        return JSONResponse(
            {"detail": "The record was changed by someone else at the same moment; reload it."},
            status_code=409,
        )

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def pool_exhausted(request: Request, exc: SQLAlchemyTimeoutError) -> Response:
        return JSONResponse(
            {"detail": "The server is busy; retry in a moment."},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(OperationalError)
    async def busy(request: Request, exc: OperationalError) -> Response:
        # SQLite under concurrent writers: a clear "try again" instead of a traceback.
        if "locked" in str(exc.orig).lower():
            return JSONResponse(
                {"detail": "The ledger is busy with another change; retry in a moment."},
                status_code=409,
            )
        log.exception("database error")
        return JSONResponse({"detail": "The ledger is unavailable."}, status_code=503)


def create_app(engine: Engine | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app for ``engine`` (default: the configured ledger)."""
    settings = settings or get_settings()
    # As many pooled connections as worker threads (anyio's default is 40), so a thread never
    # waits for a connection that only a queued request could give back.
    engine = engine or make_engine(settings.resolved_database_url, pool_size=10, max_overflow=30)
    app = FastAPI(
        title="plixo",
        version="0.1.0",
        description=(
            "Accounts-receivable co-pilot: drafts by the agent, decisions by the guardrails. "
            "Authenticate with `POST /api/auth/token` and send `Authorization: Bearer <token>`; "
            "every route checks the persona access matrix (policies/access.yaml)."
        ),
    )
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.settings = settings
    app.state.clock = system_clock
    app.state.queue_cache = QueuePageCache()
    # Innermost first: the cached-page fast path runs after the body limit and the session.
    app.add_middleware(QueueCacheMiddleware)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.signing_key(),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
        https_only=settings.public_base_url.startswith("https://"),
    )
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(PortalUploadGuard)
    app.add_middleware(SecurityHeadersMiddleware, settings=settings)
    app.state.login_limiter = LoginLimiter(engine)
    _install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for name in ROUTER_MODULES:
        module = importlib.import_module(name)
        app.include_router(module.router)
    return app


def serve_app() -> FastAPI:
    """The app as ``plixo serve`` runs it (uvicorn's factory, once per worker process).

    After start-up every module, template and compiled statement is long-lived: collect once and
    freeze them out of the garbage collector, so its full passes under load walk only what
    requests allocate (otherwise a pass over the whole heap stalls every request in flight).
    """
    app = create_app()
    gc.collect()
    gc.freeze()
    return app
