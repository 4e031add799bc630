"""The audited path that changes whether a contact may be e-mailed: opt-out and bounce.

Why one path: the guardrails read ``Contact.opted_out_email`` and ``Contact.bounced`` on every
send (``tools.grounding.guardrail_facts.contact_facts``), so flipping either one silences every
future e-mail to that address. Such a change must say who or what made it and on what evidence
(the payer's words, the DSN's status code), and it is never made twice: marking a contact that is
already marked changes nothing and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import Contact, User
from tools.kit import audit

Change = Literal["opted_out", "bounced"]


def contacts_by_email(
    session: Session, org_id: int, email: str, *, customer_id: int | None = None
) -> list[Contact]:
    """This organisation's contacts with this address (case-insensitive), optionally of one
    customer; the same address may belong to several customers' contact lists."""
    address = email.strip().lower()
    if not address:
        return []
    query = select(Contact).where(Contact.org_id == org_id, func.lower(Contact.email) == address)
    if customer_id is not None:
        query = query.where(Contact.customer_id == customer_id)
    return list(session.scalars(query.order_by(Contact.id)))


def mark_contacts(
    session: Session,
    org_id: int,
    contacts: Iterable[Contact],
    change: Change,
    *,
    actor: User | str,
    evidence: dict[str, Any],
) -> list[int]:
    """Mark each contact opted out of e-mail, or bounced; audited as ``contact.<change>``.

    Returns the ids of the contacts that changed (already-marked ones are skipped). Flushed, not
    committed: the caller's transaction holds it with whatever caused it (the stored message).
    """
    changed: list[int] = []
    for contact in contacts:
        if contact.org_id != org_id:
            raise LookupError("That contact does not belong to this organisation.")
        current = contact.opted_out_email if change == "opted_out" else contact.bounced
        if current:
            continue
        if change == "opted_out":
            contact.opted_out_email = True
        else:
            contact.bounced = True
        session.flush()
        audit.record(
            session,
            org_id,
            actor=actor,
            action=f"contact.{change}",
            subject_type="contact",
            subject_id=contact.id,
            from_state="reachable",
            to_state=change,
            detail={"customer_id": contact.customer_id, **evidence},
        )
        changed.append(contact.id)
    return changed
