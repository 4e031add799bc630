"""Per-organisation policy overrides: versioned rows, validation first, the matrix decides who."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import AuditEvent, Organisation, Persona, PolicySetVersion, User
from policies.engine import decide
from policies.policy_set import load_default
from policies.types import PolicyError
from tools.ledger.policy_overrides import (
    PolicyChangeRefused,
    active_policy_set,
    active_version,
    history,
    policy_set_for,
    restore_version,
    update_policy,
)


def make_user(session: Session, org: Organisation, role: Persona) -> User:
    user = User(
        org_id=org.id,
        email=f"{role.value.lower().replace(' ', '.')}.{uuid.uuid4().hex[:6]}@example.com",
        name=f"{role.value} user",
        role=role,
    )
    session.add(user)
    session.commit()
    return user


def versions(session: Session, org: Organisation) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(PolicySetVersion)
            .where(PolicySetVersion.org_id == org.id)
        )
        or 0
    )


def test_an_organisation_without_overrides_runs_the_default(
    session: Session, org: Organisation
) -> None:
    assert active_version(session, org.id) is None
    assert active_policy_set(session, org.id) == load_default()
    assert policy_set_for(session, org.id) == load_default()
    assert history(session, org.id) == []


def test_a_controller_changes_a_threshold_and_the_engine_uses_it(
    session: Session, org: Organisation
) -> None:
    controller = make_user(session, org, Persona.CONTROLLER)
    row = update_policy(
        session,
        org.id,
        controller,
        {"plans": {"controller_above_minor": 2_000_000}},
        comment="tighter",
    )
    session.commit()
    assert row.version == 1 and row.active and row.changed_by_user_id == controller.id
    assert row.diff == {"plans.controller_above_minor": {"from": 5_000_000, "to": 2_000_000}}
    assert row.comment == "tighter" and row.created_at is not None
    ps = active_policy_set(session, org.id)
    assert ps.plans.controller_above_minor == 2_000_000
    facts = {
        "actor_role": "Collections Manager",
        "total_minor": 2_100_000,
        "currency": "USD",
        "installments": 3,
        "months": 3,
        "non_standard_terms": False,
    }
    assert decide("offer_plan", facts).allowed  # default: within the manager's $25,000
    d = decide("offer_plan", facts, ps)
    assert d.outcome == "needs_approval"
    assert "Plan exceeds $20,000: Controller approval required" in [r.message for r in d.reasons]
    audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "policy.changed")).one()
    assert audit.actor_user_id == controller.id and audit.detail["diff"] == row.diff
    assert audit.from_state == load_default().digest and audit.to_state == ps.digest


def test_changes_accumulate_and_each_version_keeps_its_diff(
    session: Session, org: Organisation
) -> None:
    admin = make_user(session, org, Persona.ADMIN)
    update_policy(session, org.id, admin, {"cadence": {"max_touches": 2}})
    update_policy(session, org.id, admin, {"quiet_hours": {"start": "19:00"}})
    session.commit()
    ps = active_policy_set(session, org.id)
    assert ps.cadence.max_touches == 2 and ps.quiet_hours.start == "19:00"
    rows = history(session, org.id)
    assert [r.version for r in rows] == [2, 1]
    assert [r.active for r in rows] == [True, False]
    assert rows[0].diff == {"quiet_hours.start": {"from": "20:00", "to": "19:00"}}
    assert rows[0].content == {"cadence": {"max_touches": 2}, "quiet_hours": {"start": "19:00"}}


def test_replace_resets_omitted_keys_to_the_default(session: Session, org: Organisation) -> None:
    admin = make_user(session, org, Persona.ADMIN)
    update_policy(session, org.id, admin, {"cadence": {"max_touches": 2}})
    row = update_policy(session, org.id, admin, {"plans": {"max_months": 6}}, replace=True)
    ps = active_policy_set(session, org.id)
    assert ps.cadence.max_touches == 3 and ps.plans.max_months == 6
    assert set(row.diff) == {"cadence.max_touches", "plans.max_months"}


@pytest.mark.parametrize(
    "role",
    [Persona.SALES, Persona.CSM, Persona.COLLECTOR, Persona.COLLECTIONS_MANAGER, Persona.VIEWER],
)
def test_only_roles_the_matrix_allows_may_change_policy(
    session: Session, org: Organisation, role: Persona
) -> None:
    user = make_user(session, org, role)
    with pytest.raises(PolicyChangeRefused) as err:
        update_policy(session, org.id, user, {"cadence": {"max_touches": 9}})
    assert "edit_policy" in str(err.value)
    assert err.value.decision.outcome == "block"
    session.commit()
    assert versions(session, org) == 0


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"cadence": {"max_touches": "many"}}, "cadence.max_touches"),
        ({"plans": {"max_instalments": 3}}, "unknown key 'plans.max_instalments'"),
        ({"quiet_hours": {"start": 2000}}, "quoted 'HH:MM'"),
        ({"approval_limits": {"Intern": 1}}, "unknown role 'Intern'"),
        ({}, "changes nothing"),
        ({"cadence": {"max_touches": 3}}, "changes nothing"),
    ],
)
def test_an_invalid_or_empty_override_writes_nothing(
    session: Session, org: Organisation, override: dict, needle: str
) -> None:
    admin = make_user(session, org, Persona.ADMIN)
    with pytest.raises(PolicyError) as err:
        update_policy(session, org.id, admin, override)
    assert needle in str(err.value)
    session.commit()
    assert versions(session, org) == 0
    assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_a_user_cannot_change_another_organisations_policy(
    session: Session, org: Organisation
) -> None:
    other = Organisation(name="Other", slug=f"other-{uuid.uuid4().hex[:6]}")
    session.add(other)
    session.commit()
    admin = make_user(session, other, Persona.ADMIN)
    with pytest.raises(PermissionError):
        update_policy(session, org.id, admin, {"cadence": {"max_touches": 2}})


def test_restore_writes_a_new_version_with_the_old_content(
    session: Session, org: Organisation
) -> None:
    controller = make_user(session, org, Persona.CONTROLLER)
    update_policy(session, org.id, controller, {"cadence": {"max_touches": 2}})
    update_policy(session, org.id, controller, {"cadence": {"max_touches": 5}})
    row = restore_version(session, org.id, controller, 1)
    session.commit()
    assert row.version == 3 and row.content == {"cadence": {"max_touches": 2}}
    assert row.diff == {"cadence.max_touches": {"from": 5, "to": 2}}
    assert active_policy_set(session, org.id).cadence.max_touches == 2
    assert [r.active for r in history(session, org.id)] == [True, False, False]
    with pytest.raises(PolicyError, match="no policy version 9"):
        restore_version(session, org.id, controller, 9)


def test_organisations_are_isolated(session: Session, org: Organisation) -> None:
    other = Organisation(name="Other", slug=f"other-{uuid.uuid4().hex[:6]}")
    session.add(other)
    session.commit()
    update_policy(
        session, org.id, make_user(session, org, Persona.ADMIN), {"cadence": {"max_touches": 2}}
    )
    session.commit()
    assert active_policy_set(session, other.id) == load_default()
    assert history(session, other.id) == []
