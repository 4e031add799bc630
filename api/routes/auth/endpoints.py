"""Log-in: server-side sessions for the pages, expiring bearer tokens for scripts.

Every attempt is counted before the password is checked (``tools.admin.sessions.LoginLimiter``: in
the
ledger, shared by every worker, per account and source address, and per source), so a burst gets
no more guesses than the limit and a guesser elsewhere cannot lock the real user out. An unknown
e-mail costs the same password-hash check as a wrong password. Log-out and a password change end
the session on the server.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Path, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import (
    SESSION_COOKIE,
    AppSettings,
    CsrfChecked,
    CurrentUser,
    DbSession,
    MaybeUser,
    bearer_token,
    login_session,
    template_context,
)
from api.pages import templates
from memory import clock
from memory.models import ApiToken, User, utcnow
from policies.access import permissions_for
from tools.admin import sessions
from tools.admin.sessions import LimitVerdict, LoginLimiter, PasswordRefused
from tools.kit import audit
from tools.ledger.users import authenticate, issue_api_token

router = APIRouter(tags=["auth"])

TOO_MANY = "Too many failed attempts; wait {minutes} minutes and try again."


class _AllLimiters:
    """Tests clear every app's counters between cases (each app keeps its own on app.state)."""

    def clear(self) -> None:
        for each in list(LoginLimiter.instances):
            each.clear()


limiter = _AllLimiters()


def _source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _attempt(request: Request, email: str) -> LimitVerdict:
    app_limiter: LoginLimiter = request.app.state.login_limiter
    return app_limiter.attempt(email, _source(request))


def _succeeded(request: Request, email: str) -> None:
    request.app.state.login_limiter.succeeded(email, _source(request))


def _too_many(verdict: LimitVerdict) -> str:
    return TOO_MANY.format(minutes=max(1, -(-verdict.retry_after_s // 60)))


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
    expires_at: datetime | None = None


class TokenInfo(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The token's first characters, to recognise it; not usable.")
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    live: bool


class NewTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=120)
    ttl_days: int | None = Field(default=None, ge=1, le=365)


class NewTokenOut(BaseModel):
    token: str = Field(description="Shown once; only its hash is kept.")
    info: TokenInfo


class PasswordChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(min_length=1, max_length=200)
    new_password: str = Field(min_length=1, max_length=200)


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
    verdict = _attempt(request, email)
    if not verdict.allowed:
        return templates.TemplateResponse(
            request,
            "login.html",
            template_context(
                request, None, next=_safe_next(next), email=email, message=_too_many(verdict)
            ),
            status_code=429,
            headers={"Retry-After": str(verdict.retry_after_s)},
        )
    user = authenticate(db, email, password)
    if user is None:
        db.commit()  # nothing to keep but the read; the attempt is already counted
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
    _succeeded(request, email)
    sid = sessions.start_session(db, user, client=_source(request))
    login_session(request, user, sid)
    audit.record(
        db, user.org_id, actor=user, action="user.login", subject_type="user", subject_id=user.id
    )
    db.commit()
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout", include_in_schema=False)
def logout(request: Request, db: DbSession, _csrf: CsrfChecked) -> Response:
    """End the session on the server too: a copy of the cookie stops working at once."""
    sid = request.session.get("sid")
    if isinstance(sid, str) and sid:
        sessions.end_session(db, sid)
        db.commit()
    request.session.clear()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.post(
    "/api/auth/token",
    response_model=TokenResponse,
    responses={401: {"description": "Wrong e-mail or password"}, 429: {"description": "Too many"}},
)
def create_token(
    body: TokenRequest, request: Request, db: DbSession, settings: AppSettings
) -> TokenResponse:
    """Exchange an e-mail and password for a bearer token, valid for ``PLIXO_API_TOKEN_TTL_DAYS``
    (the caller's earlier tokens stop working; ``POST /api/auth/tokens`` adds one instead)."""
    verdict = _attempt(request, body.email)
    if not verdict.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            _too_many(verdict),
            {"Retry-After": str(verdict.retry_after_s)},
        )
    user = authenticate(db, body.email, body.password)
    if user is None:
        db.commit()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "That e-mail and password do not match an active user."
        )
    _succeeded(request, body.email)
    ttl = timedelta(days=settings.api_token_ttl_days)
    token = issue_api_token(db, user, ttl=ttl, name="POST /api/auth/token")
    audit.record(
        db,
        user.org_id,
        actor=user,
        action="user.token_issued",
        subject_type="user",
        subject_id=user.id,
    )
    db.commit()
    return TokenResponse(token=token, user=_user_out(user), expires_at=clock.now() + ttl)


@router.delete("/api/auth/token", status_code=204)
def revoke_token(request: Request, user: CurrentUser, db: DbSession) -> Response:
    """Revoke the bearer token this request carries (with a session cookie: nothing to revoke)."""
    raw = bearer_token(request.headers.get("authorization", ""))
    if raw:
        sessions.revoke_token_by_value(db, raw)
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


def _token_info(t: object) -> TokenInfo:

    assert isinstance(t, ApiToken)
    live = t.revoked_at is None and t.expires_at > utcnow()
    return TokenInfo(
        id=t.id,
        name=t.name,
        prefix=t.prefix,
        created_at=t.created_at,
        expires_at=t.expires_at,
        revoked_at=t.revoked_at,
        live=live,
    )


@router.get("/api/auth/tokens", response_model=list[TokenInfo])
def list_tokens(user: CurrentUser, db: DbSession) -> list[TokenInfo]:
    """The caller's bearer tokens (live, expired and revoked), newest first."""
    return [_token_info(t) for t in sessions.list_tokens(db, user)]


@router.post("/api/auth/tokens", response_model=NewTokenOut, status_code=201)
def add_token(
    body: NewTokenIn, user: CurrentUser, db: DbSession, settings: AppSettings
) -> NewTokenOut:
    """One more bearer token for the caller (the others keep working), e.g. one per script."""
    ttl = timedelta(days=body.ttl_days or settings.api_token_ttl_days)
    raw = issue_api_token(db, user, ttl=ttl, name=body.name, replace=False)
    audit.record(
        db, user.org_id, actor=user, action="user.token_issued", subject_type="user",
        subject_id=user.id, detail={"name": body.name},
    )  # fmt: skip
    db.commit()
    newest = sessions.list_tokens(db, user)[0]
    return NewTokenOut(token=raw, info=_token_info(newest))


@router.delete("/api/auth/tokens/{token_id}", response_model=TokenInfo)
def delete_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], user: CurrentUser, db: DbSession
) -> TokenInfo:
    """Revoke one of the caller's tokens (it stops working at once)."""
    token = sessions.revoke_token(db, user, token_id)
    audit.record(
        db, user.org_id, actor=user, action="user.token_revoked", subject_type="user",
        subject_id=user.id, detail={"token_id": token_id},
    )  # fmt: skip
    db.commit()
    return _token_info(token)


@router.post("/api/auth/password", status_code=204, responses={422: {"description": "Refused"}})
def change_password(
    body: PasswordChangeIn, request: Request, user: CurrentUser, db: DbSession
) -> Response:
    """Change your password: every other session and every bearer token of yours ends."""
    sid = request.session.get("sid") if "session" in request.scope else None
    sessions.change_password(
        db,
        user.org_id,
        user.id,
        actor=user,
        current_password=body.current_password,
        new_password=body.new_password,
        keep_session=sid if isinstance(sid, str) else None,
    )
    db.commit()
    return Response(status_code=204)


# --- the password page: the same change as ``/api/auth/password``, from a form ------------------


def _password_page(
    request: Request, user: User, message: str | None, *, ok: bool = False, status_code: int = 200
) -> Response:
    return templates.TemplateResponse(
        request,
        "account_password.html",
        template_context(request, user, message=message, ok=ok),
        status_code=status_code,
    )


@router.get("/account/password", response_class=HTMLResponse, include_in_schema=False)
def password_page(request: Request, user: CurrentUser) -> Response:
    return _password_page(request, user, None)


@router.post("/account/password", include_in_schema=False)
def password_submit(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    _csrf: CsrfChecked,
    current_password: Annotated[str, Form(max_length=200)],
    new_password: Annotated[str, Form(max_length=200)],
    confirm_password: Annotated[str, Form(max_length=200)],
) -> Response:
    """Change your own password from the panel; this session stays, every other one ends."""
    if new_password != confirm_password:
        return _password_page(
            request,
            user,
            "The two new passwords differ; type the same new password twice.",
            status_code=422,
        )
    sid = request.session.get("sid")
    try:
        sessions.change_password(
            db,
            user.org_id,
            user.id,
            actor=user,
            current_password=current_password,
            new_password=new_password,
            keep_session=sid if isinstance(sid, str) else None,
        )
    except PasswordRefused as exc:
        db.rollback()
        return _password_page(request, user, str(exc), status_code=422)
    db.commit()
    return _password_page(
        request, user, "Password changed. Your other sessions and API tokens have ended.", ok=True
    )
