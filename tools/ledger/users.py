"""Users and their credentials: password hashes (argon2 through ``pwdlib``; scrypt hashes from
earlier releases are still accepted and replaced on the next log-in) and API bearer tokens (stored
hashed, expiring, revocable: ``tools.admin.sessions``)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from memory.models import ApiToken, Organisation, Persona, User, utcnow

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD_LENGTH = 12


class LegacyScryptHasher:
    """Verifies the ``scrypt$<salt>$<digest>`` hashes plixo wrote before argon2 (never writes
    them): listed second in :data:`PASSWORDS`, so a match is re-hashed with argon2 on log-in."""

    @classmethod
    def identify(cls, hash: str | bytes) -> bool:
        text = hash.decode() if isinstance(hash, bytes) else hash
        return text.startswith("scrypt$") and text.count("$") == 2

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        raise NotImplementedError("scrypt hashes are only verified; new hashes are argon2")

    def verify(self, password: str | bytes, hash: str | bytes) -> bool:
        text = hash.decode() if isinstance(hash, bytes) else hash
        raw = password.encode() if isinstance(password, str) else password
        _, salt_hex, digest_hex = text.split("$", 2)
        try:
            salt = bytes.fromhex(salt_hex)
        except ValueError:
            return False
        digest = hashlib.scrypt(raw, salt=salt, dklen=32, **_SCRYPT)  # type: ignore[arg-type]
        return hmac.compare_digest(digest.hex(), digest_hex)

    def check_needs_rehash(self, hash: str | bytes) -> bool:
        return True


PASSWORDS = PasswordHash((Argon2Hasher(), LegacyScryptHasher()))


def hash_password(password: str) -> str:
    return PASSWORDS.hash(password)


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        return PASSWORDS.verify(password, stored)
    except Exception:  # noqa: BLE001 - an unreadable stored hash matches nothing
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A real argon2 hash of nothing anyone knows: verified against when the e-mail is unknown,
    so an unknown address takes as long to refuse as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


def token_hash(token: str) -> str:
    """Bearer tokens are high-entropy, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


DEFAULT_TOKEN_TTL = timedelta(days=30)


def issue_api_token(
    session: Session,
    user: User,
    *,
    ttl: timedelta = DEFAULT_TOKEN_TTL,
    name: str = "",
    replace: bool = True,
    now: datetime | None = None,
) -> str:
    """A new bearer token for scripts, valid for ``ttl``; only its hash is kept.

    ``replace`` (what ``POST /api/auth/token`` does): the caller's earlier tokens stop working.
    """
    now = now or utcnow()
    if ttl <= timedelta(0):
        raise ValueError("A token's lifetime must be positive.")
    if replace:
        for old in session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        ):
            old.revoked_at = now
    token = "plx_" + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            user_id=user.id,
            org_id=user.org_id,
            token_hash=token_hash(token),
            prefix=token[:8],
            name=name[:120],
            created_at=now,
            expires_at=now + ttl,
        )
    )
    session.flush()
    return token


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with this e-mail and password, across organisations (e-mails are unique).

    Exactly one password hash is verified whatever happens (a dummy one for an unknown e-mail),
    so the answer takes the same time either way. A hash from an older scheme is replaced by an
    argon2 one on success.
    """
    users = session.scalars(select(User).where(User.email == email.strip().lower())).all()
    candidates = [u for u in users if u.active and u.password_hash]
    if not candidates:
        PASSWORDS.verify(password, _dummy_hash())
        return None
    for user in candidates:
        try:
            valid, updated = PASSWORDS.verify_and_update(password, user.password_hash or "")
        except Exception:  # noqa: BLE001 - an unreadable stored hash matches nothing
            valid, updated = False, None
        if valid:
            if updated is not None:
                user.password_hash = updated
                session.flush()
            return user
    return None


def password_problem(password: str) -> str | None:
    """Why ``password`` may not be set (None when it may)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > 200:
        return "Use at most 200 characters."
    return None


def own_limit(user: User, currency: str) -> int | None:
    """``user``'s own approval limit in ``currency`` (minor units): None when they have no limits
    of their own, 0 when they have limits but none in this currency (fail closed)."""
    if user.approval_limits is None:
        return None
    return int(user.approval_limits.get(currency, 0))


# Built once: every API call authenticates, so the statement is not rebuilt per request. A token
# counts while it is neither revoked nor past its expiry (``now`` is bound per call).
_LIVE_TOKEN = (
    (ApiToken.token_hash == bindparam("token_hash"))
    & ApiToken.revoked_at.is_(None)
    & (ApiToken.expires_at > bindparam("now"))
)
_BY_TOKEN = select(User).join(ApiToken, ApiToken.user_id == User.id).where(_LIVE_TOKEN).limit(1)


def user_for_token(session: Session, token: str, now: datetime | None = None) -> User | None:
    params = {"token_hash": token_hash(token), "now": now or utcnow()}
    user = session.scalars(_BY_TOKEN, params).first()
    return user if user is not None and user.active else None


@dataclass(frozen=True, slots=True)
class CallerSnapshot:
    """Who is calling, as plain values, with their organisation's review-queue version.

    For read-only hot paths (the review queue): one Core statement answers both "who is this" and
    "has the queue changed", where an ORM user plus a second read would cost three times as much.
    """

    id: int
    org_id: int
    role: Persona
    active: bool
    queue_version: int


_SNAPSHOT = select(User.id, User.org_id, User.role, User.active, Organisation.queue_version).join(
    Organisation, Organisation.id == User.org_id
)
_SNAPSHOT_BY_TOKEN = (
    _SNAPSHOT.join(ApiToken, ApiToken.user_id == User.id).where(_LIVE_TOKEN).limit(1)
)
_SNAPSHOT_BY_ID = _SNAPSHOT.where(User.id == bindparam("user_id"))


def snapshot_for_token(
    conn: Connection, token: str, now: datetime | None = None
) -> CallerSnapshot | None:
    """The active caller behind a bearer token, as a snapshot (None if unknown, expired or
    revoked)."""
    params = {"token_hash": token_hash(token), "now": now or utcnow()}
    row = conn.execute(_SNAPSHOT_BY_TOKEN, params).first()
    snapshot = CallerSnapshot(*row) if row is not None else None
    return snapshot if snapshot is not None and snapshot.active else None


def snapshot_for_id(conn: Connection, user_id: int) -> CallerSnapshot | None:
    row = conn.execute(_SNAPSHOT_BY_ID, {"user_id": user_id}).first()
    return CallerSnapshot(*row) if row is not None else None
