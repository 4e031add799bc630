"""True at send time: a draft approved on one day and delivered on another is read again first.

Real components: the ledger, the guardrails (quiet hours defer the approval), the outbox worker and
an aiosmtpd relay on loopback; the clock is moved with time-machine between approval and delivery.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from dbos import DBOS
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from memory import durable
from memory.config import Settings
from memory.models import AuditEvent, Draft, DraftStatus, Organisation, OutboxMessage, Persona
from tests.api.factories import Seeded, make_draft, make_invoice, seed_review, settings_for
from tests.api.smtp_server import SmtpSink, start_smtp
from tools.delivery import flow as delivery_flow
from tools.delivery import outbox
from tools.delivery.send_check import recheck_before_send
from tools.drafts import service as drafts
from tools.insights.account360 import pay_link
from tools.kit.formatting import format_amount, format_day

NY = ZoneInfo("America/New_York")
SEEDED_AT = datetime(2025, 10, 7, 14, 0, tzinfo=NY)  # Tuesday afternoon
# The week after Columbus Day (Monday 13 October 2025 is a US public holiday: the seeded US
# customer's contact is not written to on it, so a weekend deferral would run to Tuesday).
FRIDAY_NIGHT = datetime(2025, 10, 17, 21, 0, tzinfo=NY)  # quiet hours, then the weekend
MONDAY_MORNING = datetime(2025, 10, 20, 8, 5, tzinfo=NY)  # the deferral has passed
DUE_FRIDAY = date(2025, 10, 17)
SERVER_ZONE = ZoneInfo("UTC")  # time-machine runs the process in this zone while travelling


@pytest.fixture
def smtp() -> Iterator[tuple[int, SmtpSink]]:
    controller, sink = start_smtp()
    yield controller.port, sink
    controller.stop()


@pytest.fixture
def seeded(session: Session, org: Organisation, tmp_path: Path) -> Seeded:
    return seed_review(session, org, settings_for(str(tmp_path)), drafts=1, now=SEEDED_AT)


def _smtp(port: int) -> Settings:
    return Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_from="ar@acme.test")


def _deliver(sessions: sessionmaker[Session], settings: Settings, port: int) -> None:
    """What a worker does now: release deferrals that are due (the guardrails again), then run
    every queued delivery workflow, whose last step before the relay is the send-time re-check."""
    durable.set_ledger(sessions, settings)
    with delivery_flow.use_sender(lambda _s: outbox.smtp_sender(_smtp(port))):
        for wid in delivery_flow.dispatch(sessions):  # releases and deliveries: wait for each
            DBOS.retrieve_workflow(wid).get_result()
        delivery_flow.drain(sessions, timeout_s=60)


def _date_worded_draft(
    session: Session, seeded: Seeded, tmp_path: Path, *, due: date, number: str
) -> Draft:
    """A reviewed draft saying the invoice "is due on" its (future) due date, "ahead of" it."""
    settings = settings_for(str(tmp_path))
    customer = seeded.customers[0]
    invoice = make_invoice(
        session, seeded.org, customer, number=number, amount_minor=98_765, due=due
    )
    draft = make_draft(
        session, settings, seeded.org, customer, invoice, segment=seeded.segment, now=SEEDED_AT
    )
    session.commit()
    link = pay_link(settings, seeded.org.slug, invoice.number)
    body = (
        f"Hello {customer.name} team,\n\nA short reminder ahead of {format_day(due)}: invoice "
        f"{invoice.number} for {format_amount(invoice.balance_minor, 'USD')} is due on "
        f"{format_day(due)}. You can pay it here: {link}\n\nThank you,\nAccounts receivable"
    )
    drafts.edit_draft(
        session,
        seeded.org.id,
        draft.id,
        user=seeded.users[Persona.COLLECTOR],
        expected_version=draft.version,
        subject=f"Invoice {invoice.number} is due on {format_day(due)}",
        body=body,
        settings=settings,
        now=SEEDED_AT,
    )
    session.commit()
    assert draft.status is DraftStatus.EDITED, draft.decision
    return draft


def _approve_at_night(session: Session, seeded: Seeded, draft: Draft, tmp_path: Path) -> None:
    drafts.approve_draft(
        session,
        seeded.org.id,
        draft.id,
        user=seeded.users[Persona.COLLECTOR],
        expected_version=draft.version,
        settings=settings_for(str(tmp_path)),
        now=FRIDAY_NIGHT,
    )
    session.commit()
    # Quiet hours and the weekend: approved, delivery deferred to Monday morning.
    assert draft.status is DraftStatus.APPROVED and draft.decision_outcome == "defer"
    assert datetime.fromisoformat(draft.decision["not_before"]) > FRIDAY_NIGHT


def test_wording_that_turned_false_while_deferred_is_held_never_sent(
    sessions: sessionmaker[Session],
    worker_id: str,
    durable_settings: Settings,
    session: Session,
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
) -> None:
    port, sink = smtp
    draft = _date_worded_draft(session, seeded, tmp_path, due=DUE_FRIDAY, number="INV-D-1")
    _approve_at_night(session, seeded, draft, tmp_path)

    with time_machine.travel(MONDAY_MORNING.astimezone(SERVER_ZONE), tick=True):
        _deliver(sessions, durable_settings, port)

    assert sink.received == []  # never sent as written
    with sessions() as s:
        held = s.get(Draft, draft.id)
        assert held is not None and held.status is DraftStatus.PENDING_REVIEW
        assert "Held at send time (2025-10-20)" in (held.hold_reason or "")
        assert "is due on October 17, 2025" in (held.hold_reason or "")
        assert "ahead of October 17, 2025" in (held.hold_reason or "")
        assert held.grounding["ok"] is False
        assert (
            s.scalars(select(OutboxMessage).where(OutboxMessage.draft_id == draft.id)).all() == []
        )
        actions = s.scalars(
            select(AuditEvent.action).where(AuditEvent.org_id == seeded.org.id)
        ).all()
        assert "draft.held_at_send" in actions and "outbox.withdrawn" in actions

        # Re-rendered by the reviewer with Monday's truth, approved again: it leaves once.
        settings = settings_for(str(tmp_path))
        link = pay_link(settings, seeded.org.slug, "INV-D-1")
        drafts.edit_draft(
            s,
            seeded.org.id,
            draft.id,
            user=seeded.users[Persona.COLLECTOR],
            expected_version=held.version,
            subject="Invoice INV-D-1 is overdue",
            body=(
                f"Hello,\n\ninvoice INV-D-1 for {format_amount(98_765, 'USD')} was due on "
                f"{format_day(DUE_FRIDAY)}. You can pay it here: {link}\n\nAccounts receivable"
            ),
            settings=settings,
            now=MONDAY_MORNING,
        )
        s.commit()
        drafts.approve_draft(
            s,
            seeded.org.id,
            draft.id,
            user=seeded.users[Persona.COLLECTOR],
            expected_version=held.version,
            settings=settings,
            now=MONDAY_MORNING,
        )
        s.commit()
    with time_machine.travel(
        (MONDAY_MORNING + timedelta(minutes=5)).astimezone(SERVER_ZONE), tick=True
    ):
        _deliver(sessions, durable_settings, port)
    assert len(sink.received) == 1
    assert (
        "was due on October 17, 2025" in sink.received[0].message.get_payload(decode=True).decode()
    )


def test_wording_still_true_at_send_time_is_delivered_as_written(
    sessions: sessionmaker[Session],
    worker_id: str,
    durable_settings: Settings,
    session: Session,
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
) -> None:
    port, sink = smtp
    due = date(2025, 10, 27)
    draft = _date_worded_draft(session, seeded, tmp_path, due=due, number="INV-D-2")
    _approve_at_night(session, seeded, draft, tmp_path)
    with time_machine.travel(MONDAY_MORNING.astimezone(SERVER_ZONE), tick=True):
        _deliver(sessions, durable_settings, port)
    assert len(sink.received) == 1
    assert (
        "is due on October 27, 2025" in sink.received[0].message.get_payload(decode=True).decode()
    )
    with sessions() as s:
        assert s.get(Draft, draft.id).status is DraftStatus.SENT  # type: ignore[union-attr]


def test_a_paid_invoice_is_not_chased_at_send_time(
    session: Session, seeded: Seeded, tmp_path: Path
) -> None:
    draft = seeded.drafts[0]
    settings = settings_for(str(tmp_path))
    assert recheck_before_send(session, draft, SEEDED_AT, settings=settings).ok
    invoice = seeded.invoices[0]
    invoice.balance_minor = 0
    invoice.status = type(invoice.status)("paid")
    invoice.settled_date = SEEDED_AT.date()
    session.flush()
    check = recheck_before_send(session, draft, SEEDED_AT, settings=settings)
    assert check.action == "hold"
    assert any(f"invoice {invoice.number} is paid now" in r for r in check.reasons)


def test_today_is_the_organisations_date_not_the_contacts(
    session: Session, seeded: Seeded, tmp_path: Path
) -> None:
    """23:30 on Saturday in New York is already Sunday in Tokyo: a message about Saturday's due
    date to a contact in Tokyo is judged on the organisation's Saturday."""
    settings = settings_for(str(tmp_path))
    saturday = date(2025, 10, 11)
    draft = _date_worded_draft(session, seeded, tmp_path, due=saturday, number="INV-D-3")
    contact = seeded.customers[0].contacts[0]
    contact.timezone = "Asia/Tokyo"
    seeded.customers[0].timezone = "Asia/Tokyo"
    session.flush()
    late_saturday = datetime(2025, 10, 11, 23, 30, tzinfo=NY)
    check = recheck_before_send(session, draft, late_saturday, settings=settings)
    assert check.ok and check.business_date == saturday, check.reasons
    sunday = recheck_before_send(
        session, draft, late_saturday + timedelta(hours=1), settings=settings
    )
    assert sunday.action == "hold" and sunday.business_date == saturday + timedelta(days=1)
