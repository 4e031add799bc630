"""FastAPI dependencies: the ledger session, the caller, and the access matrix on every route.

Pages authenticate with a signed session cookie; scripts with ``Authorization: Bearer <token>``.
Every query below a route is scoped to ``user.org_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from memory.models import User
from policies.access import allowed
from tools.users import user_for_token


def get_db(request: Request) -> Iterator[Session]:
    """One session per request; the route commits what it changes, the rest is rolled back."""
    session: Session = request.app.state.sessions()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


DbSession = Annotated[Session, Depends(get_db)]


class NotAuthenticated(HTTPException):
    def __init__(self, detail: str = "Log in first (session cookie or Bearer token).") -> None:
        super().__init__(status.HTTP_401_UNAUTHORIZED, detail, {"WWW-Authenticate": "Bearer"})


def optional_user(request: Request, db: DbSession) -> User | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        user = user_for_token(db, auth[7:].strip())
        if user is None:
            raise NotAuthenticated("The bearer token is unknown or revoked.")
        return user
    user_id = request.session.get("user_id") if "session" in request.scope else None
    if user_id is None:
        return None
    user = db.get(User, int(user_id))
    if user is None or not user.active or user.org_id != request.session.get("org_id"):
        request.session.clear()
        return None
    return user


def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise NotAuthenticated()
    return user


CurrentUser = Annotated[User, Depends(current_user)]
MaybeUser = Annotated[User | None, Depends(optional_user)]


def require(permission: str) -> Callable[[User], User]:
    """A dependency that lets the caller through only if the access matrix grants ``permission``."""

    def check(user: CurrentUser) -> User:
        if not allowed(user.role.value, permission):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"{user.role.value} may not {permission.replace('_', ' ')}.",
            )
        return user

    check.__name__ = f"require_{permission}"
    return check
