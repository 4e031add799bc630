"""Notifications: idempotent per person and event, only to active people of the organisation,
by e-mail through the outbox when chosen, and the sweep of breached SLAs and missed promises,
run by the worker's DBOS schedule (no inbox opened) and safe when two sweeps race."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from dbos import DBOS
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from memory import clock, durable
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
from tools.commitments import disputes, promises
from tools.inbox import notification_schedule, notifications
from tools.kit import labels


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


# --- the worker's schedule: nobody has to open the inbox ----------------------------------------


def _breach_and_miss(session: Session, seeded: Seeded) -> tuple[int, int]:
    """A dispute opened a week ago (its 48-hour SLA long passed) and a promise the Autopilot
    pass's bookkeeping marks missed (promised ten days ago, nothing paid); committed."""
    collector = seeded.users[Persona.COLLECTOR]
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    now = clock.now()
    d = disputes.open_dispute(
        session, seeded.org.id, invoice_id=seeded.invoices[0].id, reason="quantity",
        actor=collector, now=now - timedelta(days=7),
    )  # fmt: skip
    p = PromiseToPay(
        org_id=seeded.org.id, customer_id=seeded.customers[0].id, amount_minor=50_000,
        currency="USD", promised_date=now.date() - timedelta(days=10), grace_days=0,
        created_by_user_id=manager.id,
    )  # fmt: skip
    session.add(p)
    session.flush()
    assert promises.evaluate_promises(session, seeded.org.id, actor="Autopilot").missed == [p.id]
    session.commit()
    return d.id, p.id


def test_the_worker_schedule_notifies_breached_slas_and_missed_promises_once(
    session: Session,
    sessions: sessionmaker[Session],
    seeded: Seeded,
    worker_id: str,
    durable_settings: Settings,
) -> None:
    collector = seeded.users[Persona.COLLECTOR]
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    notifications.set_preferences(session, collector, email=True, slack=False)
    dispute_id, promise_id = _breach_and_miss(session, seeded)
    assert session.scalars(select(Notification)).all() == []  # nothing until someone sweeps

    settings = durable_settings.model_copy(update={"notification_sweep_cron": "0 */5 * * * *"})
    durable.set_ledger(sessions, settings)
    notification_schedule.apply_schedule(settings)  # DBOS launched once per test process
    schedule = DBOS.get_schedule(notification_schedule.SCHEDULE_NAME)
    assert schedule is not None and schedule["schedule"] == "0 */5 * * * *"
    try:
        DBOS.trigger_schedule(notification_schedule.SCHEDULE_NAME).get_result()
        DBOS.trigger_schedule(notification_schedule.SCHEDULE_NAME).get_result()  # runs again
    finally:
        notification_schedule.apply_schedule(durable_settings)  # no cron: the schedule is removed
    assert DBOS.get_schedule(notification_schedule.SCHEDULE_NAME) is None

    with sessions() as s:
        got = sorted(
            (n.user_id, n.kind, n.link)
            for n in s.scalars(select(Notification).where(Notification.org_id == seeded.org.id))
        )
        account = f"/accounts/{seeded.customers[0].id}"
        assert got == sorted(
            [
                (collector.id, "sla_breach", f"/disputes/{dispute_id}"),
                (collector.id, "promise_missed", account),
                (manager.id, "promise_missed", account),
            ]
        )
        assert notifications.unread_count(s, collector.id) == 2
        mails = s.scalars(
            select(OutboxMessage).where(OutboxMessage.recipient == collector.email)
        ).all()
        assert sorted(m.subject for m in mails) == [
            "plixo: Dispute SLA breached: Customer 001 Ltd (Open)",
            f"plixo: Promise missed: Customer 001 Ltd, $500.00 promised for "
            f"{labels.day(s.get(PromiseToPay, promise_id).promised_date)}",  # type: ignore[union-attr]
        ]
        # a sweep from anywhere else (a second worker, a person's request) adds nothing
        assert notifications.sweep(s, seeded.org.id) == 0


def test_two_sweeps_racing_notify_each_person_once(
    session: Session, sessions: sessionmaker[Session], seeded: Seeded
) -> None:
    _breach_and_miss(session, seeded)
    org_id = seeded.org.id
    barrier = threading.Barrier(2)
    counts: list[int] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            with sessions() as s:
                barrier.wait(timeout=30)
                counts.append(notifications.sweep(s, org_id))
                s.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and sum(counts) == 3
    with sessions() as s:
        keys = [(n.user_id, n.key) for n in s.scalars(select(Notification))]
    assert len(keys) == len(set(keys)) == 3
