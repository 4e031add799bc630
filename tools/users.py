"""Users and their credentials: password hashes (scrypt) and API bearer tokens (stored hashed)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from memory.models import Organisation, Persona, User

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt_hex, digest_hex = stored.split("$", 2)
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), dklen=32, **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


def token_hash(token: str) -> str:
    """Bearer tokens are high-entropy, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_api_token(session: Session, user: User) -> str:
    """A new bearer token for scripts; only its hash is kept, the old one stops working."""
    token = "plx_" + secrets.token_urlsafe(32)
    user.api_token_hash = token_hash(token)
    session.flush()
    return token


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with this e-mail and password, across organisations (e-mails are unique)."""
    users = session.scalars(select(User).where(User.email == email.strip().lower())).all()
    for user in users:
        if user.active and verify_password(password, user.password_hash):
            return user
    return None


def own_limit(user: User, currency: str) -> int | None:
    """``user``'s own approval limit in ``currency`` (minor units): None when they have no limits
    of their own, 0 when they have limits but none in this currency (fail closed)."""
    if user.approval_limits is None:
        return None
    return int(user.approval_limits.get(currency, 0))


# Built once: every API call authenticates, so the statement is not rebuilt per request.
_BY_TOKEN = select(User).where(User.api_token_hash == bindparam("token_hash")).limit(1)


def user_for_token(session: Session, token: str) -> User | None:
    user = session.scalars(_BY_TOKEN, {"token_hash": token_hash(token)}).first()
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
_SNAPSHOT_BY_TOKEN = _SNAPSHOT.where(User.api_token_hash == bindparam("token_hash")).limit(1)
_SNAPSHOT_BY_ID = _SNAPSHOT.where(User.id == bindparam("user_id"))


def snapshot_for_token(conn: Connection, token: str) -> CallerSnapshot | None:
    """The active caller behind a bearer token, as a snapshot (None if unknown or revoked)."""
    row = conn.execute(_SNAPSHOT_BY_TOKEN, {"token_hash": token_hash(token)}).first()
    snapshot = CallerSnapshot(*row) if row is not None else None
    return snapshot if snapshot is not None and snapshot.active else None


def snapshot_for_id(conn: Connection, user_id: int) -> CallerSnapshot | None:
    row = conn.execute(_SNAPSHOT_BY_ID, {"user_id": user_id}).first()
    return CallerSnapshot(*row) if row is not None else None
