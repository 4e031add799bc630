"""People in an organisation: invitations, personas, approval limits, owned accounts, deactivation.

An invitation creates the user without a password plus a one-time, expiring link (only its hash is
stored); following the link sets the password. The first Admin made by ``plixo init`` gets the same
kind of link. Every change checks ``manage_users`` here, where the write happens, and is audited.
Functions flush; the caller commits, so an e-mail that cannot be sent leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.errors import PlixoError
from memory.models import Customer, Invitation, Organisation, Persona, User
from policies.access import allowed
from tools.admin.units import UnitError, format_amount, parse_money
from tools.delivery.smtp import send_email
from tools.kit import audit
from tools.ledger.users import hash_password

INVITATION_TTL = timedelta(hours=72)
MIN_PASSWORD_LENGTH = 12
# Which customer column "owns" an account for each persona that can own one.
_OWNER_COLUMN = {
    Persona.COLLECTOR: "collector_user_id",
    Persona.COLLECTIONS_MANAGER: "collector_user_id",
    Persona.CSM: "csm_user_id",
    Persona.SALES: "sales_user_id",
}


class PeopleError(PlixoError, ValueError):
    """A refused people change; ``status_code`` is what the API answers (nothing was saved)."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message, http_status=status_code)


@dataclass(frozen=True)
class IssuedInvitation:
    user: User
    token: str
    expires_at: datetime


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_link(settings: Settings, token: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}/invitations/{token}"


def check_manager(actor: User, org_id: int) -> None:
    """The one permission check for every people change (``manage_users`` in access.yaml)."""
    if actor.org_id != org_id:
        raise PeopleError("You may only manage people in your own organisation.", 403)
    if not actor.active or not allowed(actor.role.value, "manage_users"):
        raise PeopleError(f"{actor.role.value} may not invite users or change their roles.", 403)


def parse_persona(value: str) -> Persona:
    for persona in Persona:
        if value.strip().lower() in (persona.value.lower(), persona.name.lower()):
            return persona
    names = ", ".join(p.value for p in Persona)
    raise PeopleError(f"{value!r} is not a persona; choose one of {names}.")


def parse_limits(limits: dict[str, str] | None) -> dict[str, int] | None:
    """``{"USD": "25,000.00"}`` (or ``"25,000.00 USD"``) to minor units per currency."""
    if limits is None:
        return None
    out: dict[str, int] = {}
    for code, text in limits.items():
        try:
            minor, currency = parse_money(str(text), default_currency=code)
        except UnitError as exc:
            raise PeopleError(f"Approval limit for {code}: {exc}") from None
        if currency != code.strip().upper():
            raise PeopleError(f"Approval limit for {code} is written in {currency}; use {code}.")
        out[currency] = minor
    return out


def describe_limits(limits: dict[str, int] | None) -> list[str]:
    if limits is None:
        return []
    return [format_amount(v, c) for c, v in sorted(limits.items())]


def _issue_token(
    session: Session, user: User, actor: User | None, now: datetime
) -> IssuedInvitation:
    """A fresh link for ``user``; any earlier unused link of theirs stops working."""
    session.execute(
        update(Invitation)
        .where(Invitation.user_id == user.id, Invitation.accepted_at.is_(None))
        .values(expires_at=now)
    )
    token = secrets.token_urlsafe(32)
    expires = now + INVITATION_TTL
    session.add(
        Invitation(
            org_id=user.org_id,
            user_id=user.id,
            token_hash=token_digest(token),
            expires_at=expires,
            invited_by_user_id=actor.id if actor else None,
            created_at=now,
        )
    )
    session.flush()
    return IssuedInvitation(user=user, token=token, expires_at=expires)


def create_first_admin(
    session: Session, org: Organisation, *, email: str, name: str, now: datetime
) -> IssuedInvitation:
    """The organisation's first Admin (no one can invite them), with a set-password link."""
    user = User(org_id=org.id, email=_clean_email(email), name=name, role=Persona.ADMIN)
    session.add(user)
    session.flush()
    audit.record(
        session,
        org.id,
        actor="plixo init",
        action="user.created",
        subject_type="user",
        subject_id=user.id,
        to_state=Persona.ADMIN.value,
        detail={"email": user.email},
    )
    return _issue_token(session, user, None, now)


def _clean_email(email: str) -> str:
    value = email.strip().lower()
    local, _, domain = value.partition("@")
    if not local or "." not in domain or " " in value or len(value) > 254:
        raise PeopleError(f"{email!r} is not an e-mail address.")
    return value


def invite(
    session: Session,
    org_id: int,
    actor: User,
    *,
    email: str,
    name: str,
    role: str,
    approval_limits: dict[str, str] | None = None,
    now: datetime,
) -> IssuedInvitation:
    """Create the invited user (no password yet) and their one-time link."""
    check_manager(actor, org_id)
    persona = parse_persona(role)
    address = _clean_email(email)
    if not name.strip():
        raise PeopleError("Give the person's name; it is shown on drafts they approve.")
    existing = session.scalars(
        select(User).where(User.org_id == org_id, User.email == address)
    ).first()
    if existing is not None:
        state = "a pending invitation" if existing.password_hash is None else "an account"
        raise PeopleError(
            f"{address} already has {state} in this organisation; resend the invitation or "
            "reactivate that user instead.",
            409,
        )
    user = User(
        org_id=org_id,
        email=address,
        name=name.strip(),
        role=persona,
        approval_limits=parse_limits(approval_limits),
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        org_id,
        actor=actor,
        action="user.invited",
        subject_type="user",
        subject_id=user.id,
        to_state=persona.value,
        detail={"email": address},
    )
    return _issue_token(session, user, actor, now)


def resend(
    session: Session, org_id: int, actor: User, user_id: int, now: datetime
) -> IssuedInvitation:
    check_manager(actor, org_id)
    user = _member(session, org_id, user_id)
    if user.password_hash is not None:
        raise PeopleError(f"{user.name} has already set a password; no invitation needed.", 409)
    audit.record(
        session,
        org_id,
        actor=actor,
        action="user.invitation_resent",
        subject_type="user",
        subject_id=user.id,
    )
    return _issue_token(session, user, actor, now)


def send_invitation(settings: Settings, org: Organisation, issued: IssuedInvitation) -> None:
    """E-mail the link through the organisation's SMTP settings (raises ``DeliveryError``)."""
    link = invitation_link(settings, issued.token)
    body = (
        f"Hello {issued.user.name},\n\n"
        f"You have been invited to {org.name} on plixo as {issued.user.role.value}.\n"
        f"Set your password here (the link works once, until "
        f"{issued.expires_at:%Y-%m-%d %H:%M} UTC):\n\n{link}\n"
    )
    send_email(
        settings,
        to=issued.user.email,
        subject=f"Your plixo invitation to {org.name}",
        body=body,
        message_id=f"<invite-{secrets.token_hex(8)}@plixo>",
    )


def invitation_for(session: Session, token: str, now: datetime) -> Invitation:
    """The usable invitation behind ``token``, or a :class:`PeopleError` saying why not."""
    row = session.scalars(
        select(Invitation).where(Invitation.token_hash == token_digest(token))
    ).first()
    if row is None:
        raise PeopleError("This invitation link is not valid; ask your Admin for a new one.", 404)
    if row.accepted_at is not None:
        raise PeopleError("This invitation link was already used; log in with your password.", 410)
    if row.expires_at <= now:
        raise PeopleError(
            f"This invitation link expired on {row.expires_at:%Y-%m-%d %H:%M} UTC; "
            "ask your Admin to resend it.",
            410,
        )
    return row


def accept(session: Session, token: str, password: str, now: datetime) -> User:
    """Set the invited person's password; the link is used up."""
    row = invitation_for(session, token, now)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PeopleError(f"Choose a password of at least {MIN_PASSWORD_LENGTH} characters.")
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        raise PeopleError("This account was deactivated; ask your Admin.", 410)
    user.password_hash = hash_password(password)
    row.accepted_at = now
    audit.record(
        session,
        row.org_id,
        actor=user,
        action="user.invitation_accepted",
        subject_type="user",
        subject_id=user.id,
    )
    session.flush()
    return user


def _member(session: Session, org_id: int, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or user.org_id != org_id:
        raise PeopleError("No such person in this organisation.", 404)
    return user


def _active_admins(session: Session, org_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.org_id == org_id, User.role == Persona.ADMIN, User.active.is_(True))
        )
        or 0
    )


def set_persona(session: Session, org_id: int, actor: User, user_id: int, role: str) -> User:
    check_manager(actor, org_id)
    user = _member(session, org_id, user_id)
    persona = parse_persona(role)
    if (
        user.role is Persona.ADMIN
        and persona is not Persona.ADMIN
        and _active_admins(session, org_id) <= 1
    ):
        raise PeopleError(
            "This is the organisation's only Admin; make someone else Admin first.", 409
        )
    before = user.role
    user.role = persona
    audit.record(
        session,
        org_id,
        actor=actor,
        action="user.persona_changed",
        subject_type="user",
        subject_id=user.id,
        from_state=before.value,
        to_state=persona.value,
    )
    session.flush()
    return user


def set_limits(
    session: Session, org_id: int, actor: User, user_id: int, limits: dict[str, str] | None
) -> User:
    """Replace the user's own per-currency approval limits (None: the role's limits apply)."""
    check_manager(actor, org_id)
    user = _member(session, org_id, user_id)
    parsed = parse_limits(limits)
    before = user.approval_limits
    user.approval_limits = parsed
    audit.record(
        session,
        org_id,
        actor=actor,
        action="user.limits_changed",
        subject_type="user",
        subject_id=user.id,
        detail={"before": before, "after": parsed},
    )
    session.flush()
    return user


def set_owned_accounts(
    session: Session, org_id: int, actor: User, user_id: int, customer_ids: list[int]
) -> list[Customer]:
    """Make ``user`` the owner (collector, CSM or Sales, by persona) of exactly these accounts."""
    check_manager(actor, org_id)
    user = _member(session, org_id, user_id)
    column = _OWNER_COLUMN.get(user.role)
    if column is None:
        raise PeopleError(f"A {user.role.value} does not own accounts; change the persona first.")
    wanted = set(customer_ids)
    if any(not 1 <= cid < 2**31 for cid in wanted):
        raise PeopleError("Some of the chosen accounts are not in this organisation.", 404)
    customers = list(
        session.scalars(select(Customer).where(Customer.org_id == org_id, Customer.id.in_(wanted)))
    )
    if len(customers) != len(wanted):
        raise PeopleError("Some of the chosen accounts are not in this organisation.", 404)
    owner_col = getattr(Customer, column)
    for customer in session.scalars(
        select(Customer).where(Customer.org_id == org_id, owner_col == user.id)
    ):
        if customer.id not in wanted:
            setattr(customer, column, None)
    for customer in customers:
        setattr(customer, column, user.id)
    audit.record(
        session,
        org_id,
        actor=actor,
        action="user.accounts_changed",
        subject_type="user",
        subject_id=user.id,
        detail={"customer_ids": sorted(wanted), "as": column},
    )
    session.flush()
    return customers


def set_active(session: Session, org_id: int, actor: User, user_id: int, active: bool) -> User:
    """Deactivate (or reactivate) a user: a deactivated user cannot log in or use a token."""
    check_manager(actor, org_id)
    user = _member(session, org_id, user_id)
    if not active and user.id == actor.id:
        raise PeopleError("You cannot deactivate yourself; ask another Admin.", 409)
    if not active and user.role is Persona.ADMIN and _active_admins(session, org_id) <= 1:
        raise PeopleError("This is the organisation's only Admin; it cannot be deactivated.", 409)
    before = user.active
    user.active = active
    audit.record(
        session,
        org_id,
        actor=actor,
        action="user.activated" if active else "user.deactivated",
        subject_type="user",
        subject_id=user.id,
        from_state=str(before),
        to_state=str(active),
    )
    session.flush()
    return user


def people(session: Session, org_id: int) -> list[User]:
    return list(session.scalars(select(User).where(User.org_id == org_id).order_by(User.name)))
