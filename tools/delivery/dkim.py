"""DKIM signing of outgoing mail: ONE function, :func:`sign_message`, called once by the send path.

The key and selector come from the organisation's :class:`~memory.models.SendingDomain`; mail is
signed only once the domain's checks have passed (an unverified key in DNS would make receivers
distrust the mail more than no signature). Keys are read through a small per-process cache so the
delivery worker does not query the ledger for every message. The private key is never logged.
"""

from __future__ import annotations

import logging
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from functools import lru_cache
from typing import Any

import dkim
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from memory.config import Settings, get_settings
from memory.db import make_engine
from memory.models import Organisation, SendingDomain

log = logging.getLogger("plixo.dkim")
_TTL_S = 60.0
_keys: dict[tuple[str, int], tuple[float, tuple[str, str, bytes] | None]] = {}
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    """A small pool of its own: keys are cached for a minute, so a worker's sends seldom read
    them, and the connections count against the worker's budget (``worker_connection_budget``)."""
    return make_engine(url, pool_size=1, max_overflow=1)


def _load(session: Session, org_id: int) -> tuple[str, str, bytes] | None:
    row = session.scalars(
        select(SendingDomain).where(
            SendingDomain.org_id == org_id, SendingDomain.check_ok.is_(True)
        )
    ).first()
    return None if row is None else (row.domain, row.selector, row.private_key_pem.encode())


def _key_for(org: Organisation | int, settings: Settings | None) -> tuple[str, str, bytes] | None:
    from sqlalchemy.orm import object_session

    if isinstance(org, Organisation):
        session = object_session(org)
        if session is not None:
            return _load(session, org.id)
        org = org.id
    url = (settings or get_settings()).resolved_database_url
    cached = _keys.get((url, org))
    if cached is not None and time.monotonic() - cached[0] < _TTL_S:
        return cached[1]
    try:
        with Session(_engine(url)) as session:
            key = _load(session, org)
    except SQLAlchemyError as exc:
        # A ledger without the sending_domain table holds no key: nothing to sign with.
        log.warning("no DKIM key lookup for org %s: %s", org, exc.__class__.__name__)
        key = None
    _keys[(url, org)] = (time.monotonic(), key)
    return key


def forget_keys() -> None:
    """Drop cached keys (after a domain set-up or check in this process)."""
    _keys.clear()


def sign_message(
    msg: EmailMessage, org: Organisation | int, settings: Settings | None = None
) -> EmailMessage:
    """``msg`` with a DKIM-Signature header for the organisation's verified sending domain, or
    ``msg`` unchanged when it has none."""
    key = _key_for(org, settings)
    if key is None:
        return msg
    domain, selector, private_pem = key
    raw = msg.as_bytes(policy=policy.SMTP)
    signature = dkim.sign(
        raw, selector.encode(), domain.encode(), private_pem, include_headers=SIGNED_HEADERS
    )
    signed: Any = message_from_bytes(signature + raw, _class=EmailMessage, policy=policy.SMTP)
    return signed  # type: ignore[no-any-return]
