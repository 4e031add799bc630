"""FastAPI dependencies: the ledger session, the caller, and the access matrix on every route.

Pages authenticate with a signed session cookie; scripts with ``Authorization: Bearer <token>``.
Every query below a route is scoped to ``user.org_id``. Each guarded route carries its permission on
the dependency (``require(...).permission``), so the access-matrix test can read it from the app.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit

from fastapi import Depends, Form, HTTPException, Request, status
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool
from starlette.datastructures import State

from memory import clock
from memory.config import Settings
from memory.models import Organisation, Persona, User
from policies.access import access_matrix, allowed
from tools.admin.sessions import snapshot_for_session, user_for_session
from tools.commitments import disputes
from tools.inbox import notifications
from tools.kit import labels
from tools.ledger.users import CallerSnapshot, snapshot_for_token, user_for_token

SESSION_COOKIE = "plixo_session"


def pool_capacity(engine: Engine) -> int:
    """How many connections the engine's pool can hand out at once."""
    pool = engine.pool
    if isinstance(pool, QueuePool):
        overflow = pool._max_overflow  # noqa: SLF001 - no public accessor
        return pool.size() + overflow if overflow >= 0 else 64
    return 16


def db_slots(state: State) -> asyncio.Semaphore:
    """One semaphore per event loop (asyncio primitives belong to the loop that first uses them)."""
    loop = asyncio.get_running_loop()
    slots: asyncio.Semaphore | None = getattr(state, "db_slots", None)
    if slots is None or getattr(state, "db_slots_loop", None) is not loop:
        slots = asyncio.Semaphore(pool_capacity(state.engine))
        state.db_slots, state.db_slots_loop = slots, loop
    return slots


async def get_db(request: Request) -> AsyncGenerator[Session, None]:
    """One session per request; the route commits what it changes, the rest is rolled back.

    A request first takes one of as many slots as the pool has connections, waiting on the event
    loop if none is free. So a request that reaches a worker thread always finds a connection: no
    thread ever blocks on the pool while the requests that hold connections wait for threads (a
    deadlock until the pool times out). The clean-up runs on the event loop for the same reason.
    """
    async with db_slots(request.app.state):
        session: Session = request.app.state.sessions()
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


DbSession = Annotated[Session, Depends(get_db)]


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(get_settings_dep)]


def system_clock() -> datetime:
    return clock.now()


async def get_clock(request: Request) -> Callable[[], datetime]:
    """The app's clock (``app.state.clock``): guardrails such as quiet hours depend on "now", so
    tests pin it; production uses the system clock."""
    clock: Callable[[], datetime] = getattr(request.app.state, "clock", system_clock)
    return clock


Clock = Annotated[Callable[[], datetime], Depends(get_clock)]


class NotAuthenticated(HTTPException):
    """401 for the API; the app turns it into a redirect to the log-in page for page requests."""

    def __init__(self, detail: str = "Log in first (session cookie or Bearer token).") -> None:
        super().__init__(status.HTTP_401_UNAUTHORIZED, detail, {"WWW-Authenticate": "Bearer"})


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value; None when malformed."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


_CALLER = "plixo.caller"  # the resolved ORM caller, kept in the request scope
_SNAPSHOT = "plixo.caller_snapshot"
_UNRESOLVED = object()


class _Caller(Protocol):
    active: bool
    org_id: int


def resolve_caller(request: Request, db: Session) -> User | None:
    """The caller from the bearer token or the session cookie, or None; looked up once a request.

    A plain function called by the dependencies below rather than a dependency they nest: every
    API call authenticates, and each nested dependency costs FastAPI a resolution pass. It runs
    on the event loop: a unique-index read is cheaper than the hop to a worker thread.
    """
    cached = request.scope.get(_CALLER, _UNRESOLVED)
    if cached is _UNRESOLVED:
        cached = _lookup_caller(
            request,
            db,
            lambda s, token: user_for_token(s, token),
            lambda s, sid: user_for_session(s, sid),
        )
        request.scope[_CALLER] = cached
    return cast(User | None, cached)


def resolve_snapshot(request: Request, db: Session) -> CallerSnapshot | None:
    """Like :func:`resolve_caller`, as a :class:`CallerSnapshot` (one Core read, no ORM user)."""
    cached = request.scope.get(_SNAPSHOT, _UNRESOLVED)
    if cached is _UNRESOLVED:
        cached = _lookup_caller(
            request,
            db,
            lambda s, token: snapshot_for_token(s.connection(), token),
            lambda s, sid: snapshot_for_session(s.connection(), sid),
        )
        request.scope[_SNAPSHOT] = cached
    return cast(CallerSnapshot | None, cached)


_C = TypeVar("_C", bound=_Caller)


def _lookup_caller(
    request: Request,
    db: Session,
    by_token: Callable[[Session, str], _C | None],
    by_session: Callable[[Session, str], _C | None],
) -> _C | None:
    auth = request.headers.get("authorization", "")
    if auth:
        token = bearer_token(auth)
        if token is None:
            raise NotAuthenticated("Use 'Authorization: Bearer <token>' (POST /api/auth/token).")
        found = by_token(db, token)
        if found is None:
            raise NotAuthenticated("The bearer token is unknown or revoked; ask for a new one.")
        return found
    session = request.session if "session" in request.scope else {}
    sid = session.get("sid")
    if not isinstance(sid, str) or not sid:
        if SESSION_COOKIE in request.cookies:
            # The cookie is there but its signature is expired or invalid (or it predates
            # server-side sessions): say so on 401.
            session.clear()
            request.state.auth_problem = "Your session has expired; log in again."
        return None
    # The signed cookie only names a session; the ledger says whether it is still live (log-out
    # and a password change end it there, so a copied cookie stops working).
    user = by_session(db, sid)
    if user is None or not user.active or user.org_id != session.get("org_id"):
        session.clear()
        request.state.auth_problem = "Your session is no longer valid; log in again."
        return None
    return user


def _unauthenticated(request: Request) -> NotAuthenticated:
    problem = getattr(request.state, "auth_problem", None)
    return NotAuthenticated(problem) if problem else NotAuthenticated()


def authenticated(request: Request, db: Session) -> User:
    """The caller, or 401 saying why (no credentials, expired session, revoked token)."""
    user = resolve_caller(request, db)
    if user is None:
        raise _unauthenticated(request)
    check_same_origin(request)
    return user


# --- cross-site request forgery on the JSON API ---------------------------------------------------
# A state-changing /api/* call authenticated by the session cookie must come from plixo's own
# pages (Origin, else Referer, naming the served host or PLIXO_PUBLIC_BASE_URL) or carry the
# session's CSRF token in X-CSRF-Token. Bearer-token calls are exempt: a browser never attaches
# one by itself. Checked once the caller and their permission are known, so a persona without
# the permission hears that first.

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url`` (lower case), or None when it has none."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _same_origin(request: Request) -> bool:
    claimed = request.headers.get("origin") or request.headers.get("referer")
    origin = origin_of(claimed) if claimed else None
    if origin is None:
        return False
    settings: Settings = request.app.state.settings
    host = request.headers.get("host", "").lower()
    return origin == origin_of(settings.public_base_url) or (
        bool(host) and urlsplit(origin).netloc == host
    )


def check_same_origin(request: Request) -> None:
    if (
        request.method in SAFE_METHODS
        or not request.url.path.startswith("/api/")
        or request.headers.get("authorization")
    ):
        return
    sent = request.headers.get("x-csrf-token", "")
    expected = request.session.get("csrf") if "session" in request.scope else None
    token_ok = bool(sent) and isinstance(expected, str) and hmac.compare_digest(sent, expected)
    if not (token_ok or _same_origin(request)):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "A change through the session cookie must come from plixo's own pages (same "
            "Origin) or carry the X-CSRF-Token header; scripts use 'Authorization: Bearer'.",
        )


async def optional_user(request: Request, db: DbSession) -> User | None:
    return resolve_caller(request, db)


async def current_user(request: Request, db: DbSession) -> User:
    return authenticated(request, db)


CurrentUser = Annotated[User, Depends(current_user)]
MaybeUser = Annotated[User | None, Depends(optional_user)]


class Forbidden(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(status.HTTP_403_FORBIDDEN, detail)


def forbidden_message(role: str, permission: str) -> str:
    """'Sales may not approve a draft in Shadow Mode review.' (the matrix's own sentence)."""
    sentence = access_matrix().permissions.get(permission, permission.replace("_", " "))
    sentence = sentence.rstrip(".")
    return f"{role} may not {sentence[:1].lower()}{sentence[1:]}."


class _Role(Protocol):
    @property
    def role(self) -> Persona: ...


_R = TypeVar("_R", bound=_Role)


def _requirement(
    permission: str, resolve: Callable[[Request, Session], _R | None], name: str
) -> Callable[[Request, Session], Awaitable[_R]]:
    allowed("Admin", permission)  # an unknown permission fails at import time, not per request

    async def check(request: Request, db: DbSession) -> _R:
        caller = resolve(request, db)
        if caller is None:
            raise _unauthenticated(request)
        if not allowed(caller.role.value, permission):
            raise Forbidden(forbidden_message(caller.role.value, permission))
        check_same_origin(request)
        return caller

    check.__name__ = name
    check.permission = permission  # type: ignore[attr-defined]
    return check


def require(permission: str) -> Callable[[Request, Session], Awaitable[User]]:
    """A dependency that lets the caller through only if the access matrix grants ``permission``."""
    return _requirement(permission, resolve_caller, f"require_{permission}")


def require_snapshot(permission: str) -> Callable[[Request, Session], Awaitable[CallerSnapshot]]:
    """:func:`require` for read-only hot paths: the caller as a :class:`CallerSnapshot`."""
    return _requirement(permission, resolve_snapshot, f"require_{permission}_snapshot")


def can(user: User | None, permission: str) -> bool:
    """For templates: show a button only to those the matrix lets press it."""
    return user is not None and allowed(user.role.value, permission)


# --- CSRF for form posts ------------------------------------------------------------------------
# Pages post forms with the session cookie; SameSite=Lax already keeps cross-site POSTs out, and a
# per-session token makes that independent of browser behaviour. Bearer-token calls need neither.


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


async def check_csrf(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> None:
    if request.headers.get("authorization"):
        return  # a bearer token is never sent by a browser on its own: no cross-site forgery
    expected = request.session.get("csrf") if "session" in request.scope else None
    if not expected or not hmac.compare_digest(str(expected), csrf):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "The form is out of date (missing or wrong CSRF token); reload the page and retry.",
        )


CsrfChecked = Annotated[None, Depends(check_csrf)]


def login_session(request: Request, user: User, sid: str) -> None:
    """Start a fresh cookie session for ``user`` naming the server-side session ``sid`` (a new
    CSRF token too: no fixation)."""
    request.session.clear()
    request.session.update(
        {
            "sid": sid,
            "user_id": user.id,
            "org_id": user.org_id,
            "csrf": secrets.token_urlsafe(24),
            "at": int(clock.now().timestamp()),
        }
    )


def wants_html(request: Request) -> bool:
    """Page requests get pages (and log-in redirects); API requests get JSON."""
    path = request.url.path
    return not (path.startswith("/api/") or path in {"/openapi.json", "/docs", "/redoc"})


def template_context(request: Request, user: User | None, **extra: Any) -> dict[str, Any]:
    """What every page template gets: the user, a CSRF token, and the permission helper."""
    ctx: dict[str, Any] = {
        "request": request,
        "user": user,
        "csrf": csrf_token(request) if "session" in request.scope else "",
        "can": lambda permission: can(user, permission),
    }
    ctx.update(page_words(request, user))
    ctx.update(extra)
    return ctx


def page_words(request: Request, user: User | None) -> dict[str, Any]:
    """Labels, plurals, dates in the reader's locale and the header's unread count for pages
    (``tools.kit.labels``, ``tools.inbox.notifications``); the count is read only if the page
    shows it."""
    from sqlalchemy import inspect as sa_inspect

    locale = labels.locale_from_header(request.headers.get("accept-language"))
    session = sa_inspect(user).session if user is not None else None
    org = session.get(Organisation, user.org_id) if session is not None and user else None
    tz = org.timezone if org is not None else None

    def unread() -> int:
        if session is None or user is None:
            return 0
        return notifications.unread_count(session, user.id)

    return {
        "label": labels.label,
        "rule_label": labels.rule_label,
        "promise_label": labels.promise_label,
        "plan_label": labels.plan_label,
        "installment_label": labels.installment_label,
        "plural": labels.plural,
        "listing": labels.listing,
        "hours": labels.hours,
        "money_text": labels.money,
        "when": lambda moment: labels.when(moment, locale=locale, tz=tz),
        "day": lambda value, weekday=False: labels.day(value, locale=locale, weekday=weekday),
        "period": lambda p: labels.period(p.start, p.end, locale=locale),
        "language": labels.language,  # in the panel's own language, like its other words
        "dispute_reason": lambda key: disputes.REASONS.get(key) or labels.humanize(key or ""),
        "unread_notifications": unread,
    }
