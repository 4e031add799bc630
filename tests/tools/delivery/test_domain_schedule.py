"""The daily sending-domain re-check runs as a DBOS schedule in the worker: triggered here in a
real DBOS, against a real DNS server on loopback whose DKIM record has since disappeared."""

from __future__ import annotations

from datetime import timedelta

from dbos import DBOS
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api import worker
from memory import clock
from memory.config import Settings
from memory.models import AuditEvent, Organisation, Persona, Segment, SendingDomain
from tests.api.factories import make_users
from tests.dns_server import dns_server
from tools.delivery import domain_schedule
from tools.delivery import sending_domain as sd


def test_the_schedule_rechecks_a_day_old_domain_and_pauses_autopilot(
    session: Session,
    sessions: sessionmaker[Session],
    org: Organisation,
    durable_settings: Settings,
) -> None:
    users, _ = make_users(session, org)
    now = clock.now()
    row = sd.set_up(
        session,
        org.id,
        users[Persona.ADMIN],
        domain="mail.acme.test",
        spf_include="spf.relay.test",
        now=now,
    )
    with dns_server() as (nameserver, resolver):
        for rec in sd.records(row):
            resolver.txt[rec.name] = [rec.value]
        assert sd.check(session, org.id, nameserver=nameserver, now=now, actor="test").ok
        session.add(Segment(org_id=org.id, name="SMB", autopilot_enabled=True, shadow_mode=False))
        session.commit()
        settings = durable_settings.model_copy(
            update={"dns_nameserver": nameserver, "domain_recheck_cron": "0 7 * * * *"}
        )
        worker.start(settings, sessions)
        domain_schedule.apply_schedule(settings)  # DBOS launched once per test process
        schedule = DBOS.get_schedule(domain_schedule.SCHEDULE_NAME)
        assert schedule is not None and schedule["schedule"] == "0 7 * * * *"

        # Checked an hour ago: not due, nothing read or changed.
        DBOS.trigger_schedule(domain_schedule.SCHEDULE_NAME).get_result()
        with sessions() as s:
            fresh = s.get(SendingDomain, org.id)
            assert fresh is not None and fresh.checked_at == row.checked_at

        # A day later the DKIM record is gone: the scheduled check fails and pauses Autopilot.
        resolver.txt.pop(f"{row.selector}._domainkey.mail.acme.test")
        row.checked_at = now - timedelta(days=1, minutes=1)
        session.commit()
        DBOS.trigger_schedule(domain_schedule.SCHEDULE_NAME).get_result()
        domain_schedule.apply_schedule(durable_settings)  # no cron: the schedule is removed
        assert DBOS.get_schedule(domain_schedule.SCHEDULE_NAME) is None

    with sessions() as s:
        fresh = s.get(SendingDomain, org.id)
        assert fresh is not None and not fresh.check_ok and fresh.checked_at is not None
        assert fresh.checked_at > now - timedelta(minutes=5)
        assert any("DKIM" in r for r in fresh.check_reasons)
        again = s.get(Organisation, org.id)
        assert again is not None and again.sending_domain_verified is False
        segment = s.scalars(select(Segment).where(Segment.org_id == org.id)).one()
        assert segment.autopilot_enabled is False
        paused = s.scalars(
            select(AuditEvent).where(
                AuditEvent.org_id == org.id, AuditEvent.action == "sending_mode.autopilot_paused"
            )
        ).one()
        assert paused.actor == "daily domain check"
