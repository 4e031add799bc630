"""Log-in: session cookies for the pages, bearer tokens for scripts.

Failed attempts are counted per e-mail and per client address; after too many the answer is 429 for
a while, so a password cannot be guessed at the speed of the network.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import (
    SESSION_COOKIE,
    CsrfChecked,
    CurrentUser,
    DbSession,
    MaybeUser,
    login_session,
    template_context,
)
from policies.access import permissions_for
from tools import audit
from tools.users import authenticate, issue_api_token

router = APIRouter(tags=["auth"])

MAX_FAILURES = 10  # per e-mail: a password cannot be guessed
MAX_FAILURES_PER_CLIENT = 50  # per client address: a whole office behind one NAT still logs in
FAILURE_WINDOW_S = 15 * 60


class _Limiter:
    """Failed log-ins per key inside a sliding window (in-process; one plixo server per ledger)."""

    def __init__(self) -> None:
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                q = self._fails.get(key)
                while q and now - q[0] > FAILURE_WINDOW_S:
                    q.popleft()
                limit = MAX_FAILURES_PER_CLIENT if key.startswith("ip:") else MAX_FAILURES
                if q and len(q) >= limit:
                    return True
        return False

    def clear(self) -> None:
        with self._lock:
            self._fails.clear()

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._fails.setdefault(key, deque()).append(now)

    def reset(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._fails.pop(key, None)


limiter = _Limiter()


def _keys(request: Request, email: str) -> tuple[str, str]:
    client = request.client.host if request.client else "unknown"
    return f"email:{email.strip().lower()}", f"ip:{client}"


def _safe_next(target: str | None) -> str:
    """Only local paths: no open redirect through ``?next=``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=200)


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    role: str
    org_id: int
    approval_limits: dict[str, int] | None = Field(
        description="Own approval limits by currency (minor units); null: the role's limits only."
    )
    permissions: list[str]


class TokenResponse(BaseModel):
    token: str
    token_type: str = "bearer"
    user: UserOut


def _user_out(user: CurrentUser) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role.value,
        org_id=user.org_id,
        approval_limits=user.approval_limits,
        permissions=sorted(permissions_for(user.role.value)),
    )


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request, user: MaybeUser, next: str = "/", expired: int = 0) -> Response:
    from api.app import templates

    if user is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    message = "Your session has expired; log in again." if expired else None
    return templates.TemplateResponse(
        request,
        "login.html",
        template_context(request, None, next=_safe_next(next), message=message, email=""),
    )


@router.post("/login", include_in_schema=False)
def login_submit(
    request: Request,
    db: DbSession,
    _csrf: CsrfChecked,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    from api.app import templates

    keys = _keys(request, email)
    if limiter.blocked(*keys):
        return templates.TemplateResponse(
            request,
            "login.html",
            template_context(
                request,
                None,
                next=_safe_next(next),
                email=email,
                message="Too many failed attempts; wait 15 minutes and try again.",
            ),
            status_code=429,
        )
    user = authenticate(db, email, password)
    if user is None:
        limiter.fail(*keys)
        return templates.TemplateResponse(
            request,
            "login.html",
            template_context(
                request,
                None,
                next=_safe_next(next),
                email=email,
                message="That e-mail and password do not match an active user.",
            ),
            status_code=401,
        )
    limiter.reset(keys[0])
    login_session(request, user)
    audit.record(
        db, user.org_id, actor=user, action="user.login", subject_type="user", subject_id=user.id
    )
    db.commit()
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout", include_in_schema=False)
def logout(request: Request, _csrf: CsrfChecked) -> Response:
    request.session.clear()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.post(
    "/api/auth/token",
    response_model=TokenResponse,
    responses={401: {"description": "Wrong e-mail or password"}, 429: {"description": "Too many"}},
)
def create_token(body: TokenRequest, request: Request, db: DbSession) -> TokenResponse:
    """Exchange an e-mail and password for a bearer token (the previous token stops working)."""
    keys = _keys(request, body.email)
    if limiter.blocked(*keys):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Too many failed attempts; wait 15 minutes and try again.",
        )
    user = authenticate(db, body.email, body.password)
    if user is None:
        limiter.fail(*keys)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "That e-mail and password do not match an active user."
        )
    limiter.reset(keys[0])
    token = issue_api_token(db, user)
    audit.record(
        db,
        user.org_id,
        actor=user,
        action="user.token_issued",
        subject_type="user",
        subject_id=user.id,
    )
    db.commit()
    return TokenResponse(token=token, user=_user_out(user))


@router.delete("/api/auth/token", status_code=204)
def revoke_token(user: CurrentUser, db: DbSession) -> Response:
    """Revoke the caller's bearer token."""
    user.api_token_hash = None
    audit.record(
        db,
        user.org_id,
        actor=user,
        action="user.token_revoked",
        subject_type="user",
        subject_id=user.id,
    )
    db.commit()
    return Response(status_code=204)


@router.get("/api/me", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    """Who the caller is, and what the access matrix lets them do."""
    return _user_out(user)
