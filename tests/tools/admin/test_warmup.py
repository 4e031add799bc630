"""A new sending domain's warm-up ramp, enforced where a message is claimed for the relay: the
policy's daily caps grow from the day the domain's DNS check passed; messages over the cap stay
queued until the organisation's next day; a real SMTP server counts what actually arrived."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy.orm import Session, sessionmaker

from memory.config import Settings
from memory.models import Organisation, OutboxMessage, OutboxStatus, Persona, SendingDomain
from policies.policy_set import load_default, merge
from policies.types import PolicyError
from tests.api.factories import NOW, make_users
from tests.api.smtp_server import SmtpSink, start_smtp
from tests.dns_server import dns_server
from tools.delivery import outbox
from tools.delivery import sending_domain as sd
from tools.ledger.policy_overrides import update_policy


@pytest.fixture
def smtp() -> Iterator[tuple[int, SmtpSink]]:
    controller, sink = start_smtp()
    yield controller.port, sink
    controller.stop()


@pytest.fixture
def verified(session: Session, org: Organisation) -> SendingDomain:
    """A domain whose records a loopback DNS server serves: verified on NOW's date."""
    users, _ = make_users(session, org)
    row = sd.set_up(
        session,
        org.id,
        users[Persona.ADMIN],
        domain="mail.acme.test",
        spf_include="spf.relay.test",
        now=NOW,
    )
    with dns_server() as (nameserver, resolver):
        for rec in sd.records(row):
            resolver.txt[rec.name] = [rec.value]
        assert sd.check(session, org.id, nameserver=nameserver, now=NOW, actor="test").ok
    update_policy(
        session,
        org.id,
        users[Persona.ADMIN],
        {"sending": {"warmup_daily_caps": [2, 3]}},
        comment="a short ramp for the test",
    )
    session.commit()
    assert row.verified_since == NOW.date()
    return row


def _queue(session: Session, org: Organisation, n: int) -> list[int]:
    ids = [
        outbox.enqueue_email(
            session,
            org.id,
            to=f"payer{i}@example.com",
            subject=f"Statement {i}",
            body="Your statement is attached.",
            idempotency_key=f"warmup-{i}",
        ).id
        for i in range(n)
    ]
    session.commit()
    return ids


def _hand_off_all(
    sessions: sessionmaker[Session], ids: list[int], port: int, at: datetime
) -> list[str]:
    sender = outbox.smtp_sender(
        Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_from="ar@mail.acme.test")
    )
    with time_machine.travel(at, tick=False):
        return [outbox.hand_off(sessions, i, sender, executor="test-worker") for i in ids]


def test_the_daily_cap_grows_and_ends(
    session: Session,
    sessions: sessionmaker[Session],
    org: Organisation,
    verified: SendingDomain,
    smtp: tuple[int, SmtpSink],
) -> None:
    port, sink = smtp
    ids = _queue(session, org, 7)

    day0 = _hand_off_all(sessions, ids, port, NOW)
    assert day0 == [outbox.SENT] * 2 + [outbox.SKIP_WARMUP] * 5
    assert len(sink.received) == 2
    with sessions() as s, time_machine.travel(NOW, tick=False):
        reason = sd.warmup_hold(s, org.id, NOW)
        assert reason is not None
        assert "mail.acme.test is warming up (day 0" in reason
        assert "today's cap of 2 messages is reached" in reason
        assert f"from {(NOW.date() + timedelta(days=1)).isoformat()}" in reason
        queued = [r for r in s.query(OutboxMessage).all() if r.status == OutboxStatus.QUEUED]
        assert len(queued) == 5  # nothing over the cap was claimed or lost

    day1 = _hand_off_all(sessions, ids[2:], port, NOW + timedelta(days=1))
    assert day1 == [outbox.SENT] * 3 + [outbox.SKIP_WARMUP] * 2
    assert len(sink.received) == 5

    day2 = _hand_off_all(sessions, ids[5:], port, NOW + timedelta(days=2))
    assert day2 == [outbox.SENT] * 2  # the ramp is over: no cap
    assert len(sink.received) == 7


def test_the_day_is_the_organisations(
    session: Session, org: Organisation, verified: SendingDomain
) -> None:
    org.timezone = "Pacific/Auckland"
    session.commit()
    # 18:00 UTC on 7 October is already 8 October, 07:00, in Auckland: day 1 of the ramp.
    assert sd.next_send_day(session, org.id, NOW) == datetime(2025, 10, 8, 11, 0, tzinfo=UTC)
    assert sd.warmup_cap([2, 3], verified.verified_since, NOW.date()) == 2  # type: ignore[arg-type]
    assert sd.warmup_cap([2, 3], NOW.date(), NOW.date() + timedelta(days=2)) is None


def test_an_unverified_domain_or_an_empty_ramp_has_no_cap(
    session: Session, org: Organisation, verified: SendingDomain
) -> None:
    assert sd.warmup_cap([], NOW.date(), NOW.date()) is None
    verified.verified_since = None
    session.commit()
    assert sd.warmup_hold(session, org.id, NOW) is None


def test_a_ramp_that_shrinks_is_refused() -> None:
    with pytest.raises(PolicyError, match="day 2's cap 100 is below day 1's 200"):
        merge(load_default(), {"sending": {"warmup_daily_caps": [50, 200, 100]}})
    assert load_default().sending.warmup_daily_caps[0] == 50
