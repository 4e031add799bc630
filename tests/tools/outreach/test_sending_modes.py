"""Sending modes: who may switch, what the guardrails gate, every switch audited, nothing leaves."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from memory.models import AuditEvent, Organisation, OutboxMessage, Persona, Segment
from tests.api.factories import NOW, Seeded, seed_review, settings_for
from tools.delivery import outbox
from tools.drafts import service as drafts
from tools.ledger.policy_overrides import update_policy
from tools.outreach import sending_modes
from tools.outreach.sending_modes import ModeRefused


@pytest.fixture
def seeded(session: Session, org: Organisation, tmp_path: Path) -> Seeded:
    return seed_review(session, org, settings_for(str(tmp_path)), drafts=1)


def _audit(session: Session) -> list[AuditEvent]:
    return list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "sending_mode.changed")
            .order_by(AuditEvent.id)
        )
    )


@pytest.mark.parametrize(
    "role", [Persona.COLLECTOR, Persona.SALES, Persona.CSM, Persona.VIEWER, Persona.LEGAL]
)
def test_roles_without_the_permission_are_refused(
    session: Session, seeded: Seeded, role: Persona
) -> None:
    with pytest.raises(ModeRefused) as err:
        sending_modes.set_org_switch(
            session, seeded.org.id, user=seeded.users[role], switch="maintenance", value=True
        )
    assert role.value in str(err.value)
    session.rollback()
    assert session.get(Organisation, seeded.org.id).maintenance is False  # type: ignore[union-attr]
    assert _audit(session) == []


@pytest.mark.parametrize("role", [Persona.ADMIN, Persona.CONTROLLER, Persona.COLLECTIONS_MANAGER])
def test_org_switches_are_audited_with_who_and_from_which_state(
    session: Session, seeded: Seeded, role: Persona
) -> None:
    user = seeded.users[role]
    assert sending_modes.set_org_switch(
        session, seeded.org.id, user=user, switch="maintenance", value=True
    )
    assert not sending_modes.set_org_switch(  # a no-op is not audited
        session, seeded.org.id, user=user, switch="maintenance", value=True
    )
    sending_modes.set_org_switch(session, seeded.org.id, user=user, switch="cron_pause", value=True)
    sending_modes.set_org_switch(
        session, seeded.org.id, user=user, switch="shadow_mode", value=False
    )
    session.commit()
    state = sending_modes.sending_state(session, seeded.org.id)
    assert (state.maintenance, state.cron_paused, state.shadow_mode) == (True, True, False)
    assert state.nothing_leaves
    events = _audit(session)
    assert [(e.detail["switch"], e.from_state, e.to_state) for e in events] == [
        ("maintenance", "off", "on"),
        ("cron_pause", "off", "on"),
        ("shadow_mode", "on", "off"),
    ]
    assert all(
        e.actor_user_id == user.id and e.detail["decision"]["outcome"] == "allow" for e in events
    )


def test_enabling_autopilot_is_gated_by_data_ready(session: Session, seeded: Seeded) -> None:
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    segment = seeded.segment
    # no import has ever run: the Data-Ready score is below the threshold
    with pytest.raises(ModeRefused) as err:
        sending_modes.set_segment_switch(
            session,
            seeded.org.id,
            segment.id,
            user=manager,
            switch="autopilot",
            value=True,
            now=NOW,
        )
    assert "Data-Ready" in str(err.value) or "data" in str(err.value).lower()
    assert err.value.reasons
    session.rollback()
    assert session.get(Segment, segment.id).autopilot_enabled is False  # type: ignore[union-attr]
    # a fresh import makes the organisation Data-Ready; the domain is verified: allowed
    org = session.get(Organisation, seeded.org.id)
    assert org is not None
    org.last_import_at = NOW
    session.commit()
    # Data-Ready now, but no draft of the segment has been decided in Shadow Mode yet
    with pytest.raises(ModeRefused) as err:
        sending_modes.set_segment_switch(
            session,
            seeded.org.id,
            segment.id,
            user=manager,
            switch="autopilot",
            value=True,
            now=NOW,
        )
    assert "Only 0 drafts" in str(err.value) and "Data-Ready" not in str(err.value)
    assert err.value.agreement is not None and err.value.agreement["decided"] == 0
    session.rollback()
    # a policy asking for one draft approved unchanged, and one approved as written: allowed
    update_policy(
        session,
        seeded.org.id,
        seeded.users[Persona.CONTROLLER],
        {"autopilot": {"shadow_window_drafts": 1}},
    )
    d = seeded.drafts[0]
    drafts.approve_draft(
        session,
        seeded.org.id,
        d.id,
        user=seeded.users[Persona.COLLECTOR],
        expected_version=d.version,
        settings=settings_for(),
        now=NOW,
    )
    session.commit()
    assert sending_modes.set_segment_switch(
        session, seeded.org.id, segment.id, user=manager, switch="autopilot", value=True, now=NOW
    )
    # turning it off needs only the permission
    assert sending_modes.set_segment_switch(
        session, seeded.org.id, segment.id, user=manager, switch="autopilot", value=False, now=NOW
    )
    session.commit()
    events = _audit(session)
    assert [(e.subject_type, e.detail["switch"], e.to_state) for e in events] == [
        ("segment", "autopilot", "on"),
        ("segment", "autopilot", "off"),
    ]


def test_segment_shadow_mode_and_foreign_segments(session: Session, seeded: Seeded) -> None:
    controller = seeded.users[Persona.CONTROLLER]
    sending_modes.set_segment_switch(
        session,
        seeded.org.id,
        seeded.segment.id,
        user=controller,
        switch="shadow_mode",
        value=False,
    )
    session.commit()
    assert sending_modes.sending_state(session, seeded.org.id).segments[0].shadow_mode is False
    other = Organisation(name="Other", slug="other-seg-org")
    session.add(other)
    session.commit()
    with pytest.raises(sending_modes.SegmentNotFound):
        sending_modes.set_segment_switch(
            session, other.id, seeded.segment.id, user=controller, switch="shadow_mode", value=True
        )


def test_maintenance_keeps_approved_messages_in_the_outbox(
    session: Session, seeded: Seeded, tmp_path: Path
) -> None:
    d = seeded.drafts[0]
    drafts.approve_draft(
        session,
        seeded.org.id,
        d.id,
        user=seeded.users[Persona.COLLECTOR],
        expected_version=d.version,
        settings=settings_for(str(tmp_path)),
        now=NOW,
    )
    sending_modes.set_org_switch(
        session,
        seeded.org.id,
        user=seeded.users[Persona.CONTROLLER],
        switch="maintenance",
        value=True,
    )
    session.commit()
    assert sending_modes.may_send(session, seeded.org.id) == (
        False,
        "The maintenance toggle is on: nothing leaves.",
    )
    row = session.scalars(select(OutboxMessage)).one()
    sent: list[str] = []
    assert (
        outbox.hand_off(
            sessionmaker(bind=session.get_bind()), row.id, lambda m: sent.append(m.id), executor="w"
        )
        == outbox.SKIP_PAUSED
    )
    assert sent == []
