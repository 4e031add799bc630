"""Notifications: idempotent per person and event, only to active people of the organisation,
by e-mail through the outbox when chosen, and the sweep of breached SLAs and missed promises."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import (
    Notification,
    Organisation,
    OutboxMessage,
    Persona,
    PromiseStatus,
    PromiseToPay,
)
from tests.api.factories import NOW, Seeded, seed_review, settings_for
from tools import disputes, notifications


@pytest.fixture
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return settings_for(str(tmp_path))


@pytest.fixture
def seeded(session: Session, org: Organisation, settings: Settings) -> Seeded:
    return seed_review(session, org, settings, drafts=1)


def test_notify_is_idempotent_and_skips_inactive_and_foreign_people(
    session: Session, seeded: Seeded
) -> None:
    manager, sales = seeded.users[Persona.COLLECTIONS_MANAGER], seeded.users[Persona.SALES]
    sales.active = False
    other = Organisation(name="Other", slug="other-org")
    session.add(other)
    session.flush()
    first = notifications.notify(
        session, seeded.org.id, [manager.id, sales.id, 10_000], "mention", "Hello", key="k1"
    )
    again = notifications.notify(session, seeded.org.id, [manager.id], "mention", "Hi", key="k1")
    assert [n.user_id for n in first] == [manager.id] and again == []
    assert notifications.unread_count(session, manager.id) == 1
    assert notifications.notify(session, other.id, [manager.id], "mention", "x", key="k2") == []
    with pytest.raises(ValueError, match="Unknown notification kind"):
        notifications.notify(session, seeded.org.id, [manager.id], "gossip", "x", key="k3")


def test_mark_read_touches_only_ones_own_items(session: Session, seeded: Seeded) -> None:
    a, b = seeded.users[Persona.COLLECTOR], seeded.users[Persona.CONTROLLER]
    notifications.notify(session, seeded.org.id, [a.id, b.id], "approval", "Wait", key="x")
    theirs = session.scalars(select(Notification).where(Notification.user_id == b.id)).one()
    assert notifications.mark_read(session, a, [theirs.id]) == 0
    assert notifications.mark_read(session, a) == 1
    assert (
        notifications.unread_count(session, a.id),
        notifications.unread_count(session, b.id),
    ) == (0, 1)


def test_email_preference_queues_one_email_and_slack_needs_an_id(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    notifications.set_preferences(session, manager, email=True, slack=False)
    notifications.notify(
        session, seeded.org.id, [manager.id], "nudge", "Sales nudged", key="n1",
        link="/drafts/1", settings=settings,
    )  # fmt: skip
    notifications.notify(session, seeded.org.id, [manager.id], "nudge", "again", key="n1")
    mails = session.scalars(
        select(OutboxMessage).where(OutboxMessage.recipient == manager.email)
    ).all()
    assert len(mails) == 1 and "http://testserver/drafts/1" in mails[0].body
    manager.slack_user_id = None
    with pytest.raises(ValueError, match="Slack user id"):
        notifications.set_preferences(session, manager, email=True, slack=True)


def test_sweep_notifies_breached_slas_and_missed_promises_once(
    session: Session, seeded: Seeded
) -> None:
    collector = seeded.users[Persona.COLLECTOR]
    d = disputes.open_dispute(
        session, seeded.org.id, invoice_id=seeded.invoices[0].id, reason="quantity",
        actor=collector, now=NOW - timedelta(hours=10),
    )  # fmt: skip
    assert notifications.sweep(session, seeded.org.id, now=NOW) == 0  # 10 of 48 hours
    assert notifications.sweep(session, seeded.org.id, now=NOW + timedelta(hours=40)) == 1
    assert notifications.sweep(session, seeded.org.id, now=NOW + timedelta(hours=41)) == 0
    items = session.scalars(select(Notification).where(Notification.user_id == collector.id)).all()
    assert [(n.kind, n.link) for n in items] == [("sla_breach", f"/disputes/{d.id}")]
    session.add(
        PromiseToPay(
            org_id=seeded.org.id, customer_id=seeded.customers[0].id, amount_minor=50_000,
            currency="USD", promised_date=NOW.date() - timedelta(days=5),
            status=PromiseStatus.MISSED,
        )
    )  # fmt: skip
    session.flush()
    assert notifications.sweep(session, seeded.org.id, now=NOW + timedelta(hours=41)) == 1
    missed = session.scalars(
        select(Notification).where(Notification.kind == "promise_missed")
    ).one()
    assert "$500.00" in missed.title and "Customer 001 Ltd" in missed.title
