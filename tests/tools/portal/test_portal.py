"""Portal tokens: unguessable, hashed, expiring, revocable, scoped, logged, brute-force limited."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import Organisation, OutboxMessage, Persona, PortalAccessLog, PortalToken
from tests.tools.commit_factories import NOW, TODAY, Factory
from tools.commitments import plans
from tools.commitments.promises import CommitmentError
from tools.portal import access as portal
from tools.portal.access import PortalDenied

BASE = "https://pay.example.com"


@pytest.fixture
def cf(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


def _logs(session: Session) -> list[PortalAccessLog]:
    return list(session.scalars(select(PortalAccessLog).order_by(PortalAccessLog.id)))


def test_token_is_random_and_only_its_hash_is_stored(session: Session, cf: Factory) -> None:
    c = cf.customer()
    a = portal.issue_token(session, cf.org.id, c.id, actor="t", base_url=BASE, now=NOW)
    b = portal.issue_token(session, cf.org.id, c.id, actor="t", base_url=BASE, now=NOW)
    assert a.raw != b.raw and len(a.raw) >= 43  # 32 random bytes, base64url
    assert a.url == f"{BASE}/portal/{a.raw}"
    assert a.token.token_hash == hashlib.sha256(a.raw.encode()).hexdigest()
    stored = session.scalars(select(PortalToken.token_hash)).all()
    assert a.raw not in stored and a.token.expires_at == NOW + portal.DEFAULT_TTL


def test_valid_use_is_logged_with_the_customer(session: Session, cf: Factory) -> None:
    c = cf.customer()
    t = portal.issue_token(session, cf.org.id, c.id, actor="t", base_url=BASE, now=NOW)
    access = portal.authenticate(session, t.raw, client="10.0.0.1", action="view", now=NOW)
    assert (access.org_id, access.customer_id, access.token_id) == (cf.org.id, c.id, t.token.id)
    (log,) = _logs(session)
    assert (log.outcome, log.customer_id, log.token_id, log.client) == (
        "ok",
        c.id,
        t.token.id,
        "10.0.0.1",
    )


def test_expired_token_is_refused_and_logged(session: Session, cf: Factory) -> None:
    c = cf.customer()
    t = portal.issue_token(
        session, cf.org.id, c.id, actor="t", base_url=BASE, ttl=timedelta(hours=1), now=NOW
    )
    portal.authenticate(session, t.raw, client="c", now=NOW + timedelta(minutes=59))
    with pytest.raises(PortalDenied) as err:
        portal.authenticate(session, t.raw, client="c", now=NOW + timedelta(hours=1))
    assert err.value.reason == "expired" and err.value.status_code == 410
    assert "expired" in err.value.public  # the payer is not told which check failed
    log = _logs(session)[-1]
    assert (log.outcome, log.token_id, log.customer_id) == ("expired", t.token.id, None)


def test_revoked_token_is_refused_and_logged(session: Session, cf: Factory) -> None:
    c = cf.customer()
    t = portal.issue_token(session, cf.org.id, c.id, actor="t", base_url=BASE, now=NOW)
    portal.revoke_token(session, cf.org.id, t.token.id, actor="t", now=NOW)
    with pytest.raises(PortalDenied) as err:
        portal.authenticate(session, t.raw, client="c", now=NOW)
    assert err.value.reason == "revoked"
    assert _logs(session)[-1].outcome == "revoked"


# A well-formed token nobody issued (fixed, so every xdist worker collects the same test ids).
GUESSED = "Zk3q9vR2wXyL0pN8sT4uV6aB1cD5eF7gH2iJ9kM3nO0"


@pytest.mark.parametrize("raw", [GUESSED, "../../etc/passwd", "", "a" * 500])
def test_guessed_or_malformed_tokens_are_refused_and_logged(
    session: Session, cf: Factory, raw: str
) -> None:
    with pytest.raises(PortalDenied) as err:
        portal.authenticate(session, raw, client="6.6.6.6", now=NOW)
    assert err.value.reason == "unknown" and err.value.status_code == 404
    (log,) = _logs(session)
    assert (log.outcome, log.token_id, log.org_id, log.client) == ("unknown", None, None, "6.6.6.6")


def test_foreign_invoice_is_refused_and_logged(session: Session, cf: Factory) -> None:
    mine, theirs = cf.customer(), cf.customer(email="x@other.example")
    own_inv, their_inv = cf.invoice(mine), cf.invoice(theirs)
    t = portal.issue_token(session, cf.org.id, mine.id, actor="t", base_url=BASE, now=NOW)
    access = portal.authenticate(session, t.raw, client="c", now=NOW)
    assert portal.customer_invoice(session, access, own_inv.id, action="pay").id == own_inv.id
    with pytest.raises(PortalDenied) as err:
        portal.customer_invoice(session, access, their_inv.id, action="pay")
    assert err.value.reason == "foreign"
    log = _logs(session)[-1]
    assert (log.outcome, log.detail) == ("foreign", {"target": f"invoice:{their_inv.id}"})


def test_brute_force_is_refused_per_client_and_logged(session: Session, cf: Factory) -> None:
    c = cf.customer()
    t = portal.issue_token(session, cf.org.id, c.id, actor="t", base_url=BASE, now=NOW)
    for i in range(portal.RATE_MAX_FAILURES):
        with pytest.raises(PortalDenied):
            portal.authenticate(
                session, secrets.token_urlsafe(32), client="evil", now=NOW + timedelta(seconds=i)
            )
    # Locked out, even with a valid token; other clients are unaffected.
    with pytest.raises(PortalDenied) as err:
        portal.authenticate(session, t.raw, client="evil", now=NOW + timedelta(minutes=1))
    assert err.value.reason == "rate_limited" and err.value.status_code == 429
    assert _logs(session)[-1].outcome == "rate_limited"
    portal.authenticate(session, t.raw, client="friendly", now=NOW + timedelta(minutes=1))
    # The window slides: once the failures are older than it, the client may try again.
    later = NOW + timedelta(minutes=1) + portal.RATE_WINDOW + timedelta(seconds=1)
    assert portal.authenticate(session, t.raw, client="evil", now=later).customer_id == c.id
    outcomes = [log.outcome for log in _logs(session)]
    assert outcomes.count("unknown") == portal.RATE_MAX_FAILURES
    assert outcomes.count("rate_limited") == 1 and outcomes.count("ok") == 2


def test_ttl_bounds(session: Session, cf: Factory) -> None:
    c = cf.customer()
    with pytest.raises(CommitmentError, match="between 5 minutes and 90 days"):
        portal.issue_token(
            session, cf.org.id, c.id, actor="t", base_url=BASE, ttl=timedelta(days=91)
        )


def test_customer_sees_only_approved_plans(session: Session, cf: Factory) -> None:
    c = cf.customer()
    a, b = cf.invoice(c, 30_000), cf.invoice(c, 30_000)
    sched = plans.split_evenly(30_000, 3, TODAY + timedelta(days=5))
    pending = plans.propose_plan(
        session,
        cf.org.id,
        customer_id=c.id,
        invoice_ids=[a.id],
        installments=sched,
        proposer=None,
        source="portal",
        now=NOW,
    )
    active = plans.propose_plan(
        session,
        cf.org.id,
        customer_id=c.id,
        invoice_ids=[b.id],
        installments=sched,
        proposer=cf.user(Persona.CONTROLLER),
        now=NOW,
    )
    t = portal.issue_token(session, cf.org.id, c.id, actor="t", base_url=BASE, now=NOW)
    access = portal.authenticate(session, t.raw, client="c", now=NOW)
    assert [p.id for p in portal.visible_plans(session, access)] == [active.plan.id]
    assert portal.proposals_under_review(session, access) == 1
    assert pending.plan.id not in [p.id for p in portal.visible_plans(session, access)]


def test_resend_plan_link_queues_a_fresh_link(session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 30_000)
    sched = plans.split_evenly(30_000, 3, TODAY + timedelta(days=5))
    collector = cf.user(Persona.COLLECTOR)
    pending = plans.propose_plan(
        session,
        cf.org.id,
        customer_id=c.id,
        invoice_ids=[inv.id],
        installments=sched,
        proposer=None,
        source="portal",
        now=NOW,
    )
    with pytest.raises(CommitmentError, match="never sees an unapproved plan"):
        portal.resend_plan_link(session, cf.org.id, pending.plan.id, actor=collector, base_url=BASE)
    plans.approve_plan(session, cf.org.id, pending.plan.id, approver=collector, now=NOW)
    sent = portal.resend_plan_link(
        session, cf.org.id, pending.plan.id, actor=collector, base_url=BASE, now=NOW
    )
    msg = session.scalars(select(OutboxMessage)).one()
    assert sent.issued.url in msg.body and msg.recipient == "ap@payer.example"
    assert msg.draft_id is None
    assert portal.authenticate(session, sent.issued.raw, client="c", now=NOW).customer_id == c.id
