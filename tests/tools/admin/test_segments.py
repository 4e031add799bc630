"""Segments place customers by their rules; cadences are validated and versioned (who, when)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import AuditEvent, Cadence, ConfigVersion, Customer, Organisation, Persona
from tests.api.factories import NOW, make_customer, make_invoice, make_users
from tools.admin import segments as seg


@pytest.fixture
def team(session: Session, org: Organisation):  # type: ignore[no-untyped-def]
    users, _ = make_users(session, org)
    return users


def test_customers_move_to_the_first_matching_segment(
    session: Session, org: Organisation, team
) -> None:  # type: ignore[no-untyped-def]
    admin, collector = team[Persona.ADMIN], team[Persona.COLLECTOR]
    big = make_customer(session, org, None, name="Big Co")
    small = make_customer(session, org, None, name="Small Co")
    german = make_customer(session, org, None, name="Berlin GmbH", collector=collector)
    german.country_code = "DE"
    due = (NOW - timedelta(days=10)).date()
    make_invoice(session, org, big, number="B1", amount_minor=20_000_000, due=due)
    make_invoice(session, org, small, number="S1", amount_minor=90_000, due=due)
    make_invoice(
        session, org, german, number="G1", amount_minor=50_000_000, due=due, currency="EUR"
    )
    europe = seg.save_segment(
        session, org.id, admin, name="Europe", rule={"regions": ["de", "FR"]}, priority=10
    )
    enterprise = seg.save_segment(
        session, org.id, admin, name="Enterprise", rule={"min_size": "100,000.00 USD"}, priority=20
    )
    rest = seg.save_segment(
        session, org.id, admin, name="SMB", rule={"max_size": "99,999.99"}, priority=30
    )
    moves = seg.place_customers(session, org.id, admin, NOW)
    assert {m["customer"]: m["to"] for m in moves} == {
        "Berlin GmbH": "Europe",  # EUR invoices do not count toward a USD size; the region decides
        "Big Co": "Enterprise",
        "Small Co": "SMB",
    }
    assert (german.segment_id, big.segment_id, small.segment_id) == (
        europe.id,
        enterprise.id,
        rest.id,
    )
    # the rules change: SMB's widened rule is tried first and takes Big Co and (0 USD) Berlin
    seg.save_segment(
        session,
        org.id,
        admin,
        name="SMB",
        rule={"max_size": "1,000,000.00 USD"},
        priority=5,
        segment_id=rest.id,
    )
    moves = seg.place_customers(session, org.id, admin, NOW)
    assert sorted(m["customer"] for m in moves) == ["Berlin GmbH", "Big Co"]
    assert big.segment_id == rest.id == german.segment_id
    # nothing changes twice
    assert seg.place_customers(session, org.id, admin, NOW) == []
    assert (
        session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "customer.segment_changed")
        )
        == 5
    )
    versions = seg.versions(session, org.id, "segment", rest.id)
    assert [v.version for v in versions] == [2, 1] and versions[0].changed_by_user_id == admin.id


def test_tags_and_owner_rules(session: Session, org: Organisation, team) -> None:  # type: ignore[no-untyped-def]
    admin, collector = team[Persona.ADMIN], team[Persona.COLLECTOR]
    a = make_customer(session, org, None, name="Agency A", collector=collector)
    b = make_customer(session, org, None, name="Bureau B")
    seg.set_tags(session, org.id, admin, b.id, ["Public-Sector", " "])
    public = seg.save_segment(
        session, org.id, admin, name="Public", rule={"tags": ["public-sector"]}, priority=1
    )
    mine = seg.save_segment(
        session, org.id, admin, name="Sam's", rule={"owners": [collector.id]}, priority=2
    )
    seg.place_customers(session, org.id, admin, NOW)
    assert (a.segment_id, b.segment_id) == (mine.id, public.id)
    assert "tagged public-sector" in seg.describe_rule({"tags": ["public-sector"]}, "USD")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"min_size": "-5 USD"}, "negative"),
        ({"min_size": "10 EUR"}, "organisation's currency"),
        ({"min_size": "10", "max_size": "5"}, "above max_size"),
        ({"regions": ["USA"]}, "two-letter"),
        ({"owners": [999999]}, "not a person"),
        ({"colour": "red"}, "Unknown rule fields"),
    ],
)
def test_bad_rules_save_nothing(session: Session, org: Organisation, team, rule, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(seg.ConfigError, match=message):
        seg.save_segment(session, org.id, team[Persona.ADMIN], name="X", rule=rule)
    assert session.scalar(select(func.count()).select_from(ConfigVersion)) == 0


def test_cadence_steps_validated_and_versioned(session: Session, org: Organisation, team) -> None:  # type: ignore[no-untyped-def]
    manager = team[Persona.COLLECTIONS_MANAGER]
    steps = [
        {
            "offset": 7,
            "channel": "email",
            "template": "friendly_reminder",
            "tone": "friendly",
            "mode": "autopilot",
        },
        {"offset": -3, "channel": "email", "template": "pre_due_courtesy", "tone": "warm"},
    ]
    cadence = seg.save_cadence(session, org.id, manager, name="Standard", steps=steps)
    session.commit()
    assert [(s.position, s.day_offset) for s in cadence.steps] == [(1, -3), (2, 7)]
    modes = seg.step_modes(session, org.id)
    assert [modes[s.id] for s in cadence.steps] == ["shadow", "autopilot"]
    dup = [*steps, {"offset": 7, "template": "second_reminder"}]
    with pytest.raises(seg.ConfigError, match=r"Step 3: offset \+7 days is already used by step 1"):
        seg.save_cadence(
            session, org.id, manager, name="Standard", steps=dup, cadence_id=cadence.id
        )
    session.rollback()
    cadence = session.scalars(select(Cadence).where(Cadence.org_id == org.id)).one()
    assert len(cadence.steps) == 2
    with pytest.raises(seg.ConfigError, match="template 'threat'"):
        seg.save_cadence(
            session, org.id, manager, name="Other", steps=[{"offset": 1, "template": "threat"}]
        )
    edited = seg.save_cadence(
        session,
        org.id,
        manager,
        name="Standard",
        cadence_id=cadence.id,
        steps=[{"offset": 14, "template": "firm_reminder", "tone": "firm"}],
    )
    assert [s.day_offset for s in edited.steps] == [14]
    assert [v.version for v in seg.versions(session, org.id, "cadence", cadence.id)] == [2, 1]


def test_sales_and_viewer_may_not_change_segments(
    session: Session, org: Organisation, team
) -> None:  # type: ignore[no-untyped-def]
    for role in (Persona.SALES, Persona.CSM, Persona.VIEWER):
        with pytest.raises(seg.ConfigError, match="may not|not allowed|permission") as info:
            seg.save_segment(session, org.id, team[role], name="Mine", rule={})
        assert info.value.status_code == 403
        with pytest.raises(seg.ConfigError):
            seg.save_cadence(
                session,
                org.id,
                team[role],
                name="Mine",
                steps=[{"offset": 1, "template": "due_today"}],
            )
    assert session.scalar(select(func.count()).select_from(Customer)) == 0
