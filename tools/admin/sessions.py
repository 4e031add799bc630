"""Signed-in sessions, bearer tokens and the log-in limiter: credentials the server can take back.

* A browser session is a row (``user_session``): the signed cookie carries a random session id,
  and only its hash is stored. Log-out ends that row; a password change ends every row of the
  user, so a copied cookie stops working at once instead of living out its eight hours.
* Bearer tokens (``api_token``) expire (``ttl``), can be listed, and revoked one by one.
* The log-in limiter counts attempts per account *and* source address (so someone guessing from
  elsewhere cannot lock the real user out) and per source, with ``limits``' fixed windows stored
  in the ledger (:mod:`memory.ratelimit`): every worker shares the counts, and each attempt is
  counted atomically before the password is checked, so a burst cannot slip extra guesses in.
"""

from __future__ import annotations

import hashlib
import secrets
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from limits import RateLimitItemPerMinute
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.orm import Session

from memory.errors import PlixoError
from memory.models import ApiToken, Organisation, User, UserSession, utcnow
from memory.ratelimit import LedgerStorage
from tools.commitments.promises import NotFound, foreign_not_found
from tools.kit import audit
from tools.kit.authz import guarded
from tools.ledger.users import (
    CallerSnapshot,
    hash_password,
    password_problem,
    token_hash,
    verify_password,
)

SESSION_TTL = timedelta(hours=8)


def _sid_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def start_session(
    session: Session, user: User, *, client: str | None = None, now: datetime | None = None
) -> str:
    """A new server-side session for ``user``; the raw id goes into the signed cookie only."""
    now = now or utcnow()
    raw = secrets.token_urlsafe(32)
    session.add(
        UserSession(
            user_id=user.id,
            org_id=user.org_id,
            sid_hash=_sid_hash(raw),
            created_at=now,
            expires_at=now + SESSION_TTL,
            client=(client or "")[:120] or None,
        )
    )
    session.flush()
    return raw


def end_session(session: Session, raw: str, *, now: datetime | None = None) -> bool:
    """Log-out: the session row is revoked (True when there was a live one)."""
    result = session.execute(
        update(UserSession)
        .where(UserSession.sid_hash == _sid_hash(raw), UserSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def end_all_sessions(
    session: Session, user_id: int, *, now: datetime | None = None, keep: str | None = None
) -> int:
    """Revoke every live session of the user (except ``keep``, a raw id); how many ended."""
    stmt = update(UserSession).where(
        UserSession.user_id == user_id, UserSession.revoked_at.is_(None)
    )
    if keep:
        stmt = stmt.where(UserSession.sid_hash != _sid_hash(keep))
    result = session.execute(stmt.values(revoked_at=now or utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]


_LIVE_SESSION = (
    (UserSession.sid_hash == bindparam("sid_hash"))
    & UserSession.revoked_at.is_(None)
    & (UserSession.expires_at > bindparam("now"))
)
_USER_BY_SESSION = (
    select(User).join(UserSession, UserSession.user_id == User.id).where(_LIVE_SESSION)
)
_SNAPSHOT_BY_SESSION = (
    select(User.id, User.org_id, User.role, User.active, Organisation.queue_version)
    .join(Organisation, Organisation.id == User.org_id)
    .join(UserSession, UserSession.user_id == User.id)
    .where(_LIVE_SESSION)
)


def user_for_session(session: Session, raw: str, now: datetime | None = None) -> User | None:
    """The user of a live (not ended, not expired) session, or None."""
    params = {"sid_hash": _sid_hash(raw), "now": now or utcnow()}
    return session.scalars(_USER_BY_SESSION, params).first()


def snapshot_for_session(
    conn: Connection, raw: str, now: datetime | None = None
) -> CallerSnapshot | None:
    row = conn.execute(
        _SNAPSHOT_BY_SESSION, {"sid_hash": _sid_hash(raw), "now": now or utcnow()}
    ).first()
    return CallerSnapshot(*row) if row is not None else None


# --- passwords ----------------------------------------------------------------------------------


class PasswordRefused(PlixoError, ValueError):
    """The new password, or the current one given, is not acceptable; nothing was changed."""

    http_status = 422


def _own_or_manage_users(args: dict[str, Any]) -> tuple[str, ...]:
    actor = args.get("actor")
    own = isinstance(actor, User) and args.get("user_id") == actor.id
    return () if own else ("manage_users",)


@guarded(actor="actor", permissions_for=_own_or_manage_users, foreign=foreign_not_found)
def change_password(
    session: Session,
    org_id: int,
    user_id: int,
    *,
    actor: User,
    new_password: str,
    current_password: str | None = None,
    keep_session: str | None = None,
    now: datetime | None = None,
) -> int:
    """Set a user's password and end their sessions and bearer tokens (all but ``keep_session``,
    the raw id of the session the change was made from). Changing your own password needs the
    current one; another user's needs ``manage_users``. Returns how many sessions ended."""
    now = now or utcnow()
    user = session.get(User, user_id)
    if user is None or user.org_id != org_id:
        raise NotFound("No such user in your organisation.")
    if user.id == actor.id and not verify_password(current_password or "", user.password_hash):
        raise PasswordRefused("The current password is not right; nothing was changed.")
    problem = password_problem(new_password)
    if problem:
        raise PasswordRefused(problem)
    user.password_hash = hash_password(new_password)
    ended = end_all_sessions(session, user.id, now=now, keep=keep_session)
    session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    audit.record(
        session,
        org_id,
        actor=actor,
        action="user.password_changed",
        subject_type="user",
        subject_id=user.id,
        detail={"sessions_ended": ended},
    )
    session.flush()
    return ended


# --- bearer tokens ------------------------------------------------------------------------------


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    """The caller's tokens, newest first (live, expired and revoked: the history is useful)."""
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
        )
    )


def revoke_token(
    session: Session, user: User, token_id: int, *, now: datetime | None = None
) -> ApiToken:
    """Revoke one of the caller's own tokens (another user's id is "not found")."""
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        raise NotFound(f"No token {token_id} of yours.")
    if token.revoked_at is None:
        token.revoked_at = now or utcnow()
        session.flush()
    return token


def revoke_token_by_value(session: Session, raw: str, *, now: datetime | None = None) -> bool:
    """Revoke the token presented (``DELETE /api/auth/token``)."""

    result = session.execute(
        update(ApiToken)
        .where(ApiToken.token_hash == token_hash(raw), ApiToken.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --- the log-in limiter -------------------------------------------------------------------------

WINDOW_MINUTES = 15
MAX_PER_ACCOUNT_AND_SOURCE = 10  # a password cannot be guessed from one place
MAX_PER_SOURCE = 50  # a whole office behind one NAT still logs in


@dataclass(frozen=True)
class LimitVerdict:
    allowed: bool
    retry_after_s: int = 0


class LoginLimiter:
    """Counts log-in attempts in the ledger (shared by every worker), before the password check."""

    instances: weakref.WeakSet[LoginLimiter] = weakref.WeakSet()

    def __init__(self, engine: Engine) -> None:
        LoginLimiter.instances.add(self)
        self.storage = LedgerStorage(engine)
        self.strategy = FixedWindowRateLimiter(self.storage)
        self.per_account = RateLimitItemPerMinute(MAX_PER_ACCOUNT_AND_SOURCE, WINDOW_MINUTES)
        self.per_source = RateLimitItemPerMinute(MAX_PER_SOURCE, WINDOW_MINUTES)

    @staticmethod
    def _account(email: str, source: str) -> tuple[str, str]:
        return ("login-account", f"{email.strip().lower()}|{source}")

    def attempt(self, email: str, source: str) -> LimitVerdict:
        """Count one attempt (atomically) and say whether it may proceed to the password check."""
        ok_source = self.strategy.hit(self.per_source, "login-source", source)
        ok_account = self.strategy.hit(self.per_account, *self._account(email, source))
        if ok_source and ok_account:
            return LimitVerdict(True)
        item, ids = (
            (self.per_account, self._account(email, source))
            if not ok_account
            else (self.per_source, ("login-source", source))
        )
        reset_at = self.strategy.get_window_stats(item, *ids).reset_time
        return LimitVerdict(False, max(1, int(reset_at - self.storage.clock())))

    def succeeded(self, email: str, source: str) -> None:
        """A right password: this account's count from this source starts again."""
        self.strategy.clear(self.per_account, *self._account(email, source))

    def clear(self) -> None:
        self.storage.reset()
