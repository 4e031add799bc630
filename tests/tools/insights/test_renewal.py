"""Renewal Risk: the window, the ranking by past-due balance, broken promises and dispute
frequency, the segment and owner filters, and the freshness stamps."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from memory.models import Organisation
from tests.tools.insights.test_focus import NOW, TODAY, Book, build_book
from tools.insights.renewal import RenewalInputError, renewal_risk


@pytest.fixture
def book(session: Session, org: Organisation) -> Book:
    return build_book(session, org)


def test_window_ranking_and_reasons(session: Session, book: Book) -> None:
    report = renewal_risk(session, book.org.id, as_of=TODAY, window_days=90, now=NOW)
    in_window = {c.id for i, c in enumerate(book.customers) if i % 4 != 3}
    assert {r.customer_id for r in report.rows} == in_window
    largest: dict[str, int] = {}
    for r in report.rows:
        for cur, amount in r.past_due_minor.items():
            largest[cur] = max(largest.get(cur, 0), amount)
    for r in report.rows:
        customer = next(c for c in book.customers if c.id == r.customer_id)
        assert r.renewal_date == customer.renewal_date
        assert r.days_to_renewal == (customer.renewal_date - TODAY).days  # type: ignore[operator]
        mine = [i for i in book.open_invoices if i.customer_id == r.customer_id]
        past = sum(i.balance_minor for i in mine if i.due_date < TODAY)
        assert sum(r.past_due_minor.values()) == past
        assert sum(r.open_minor.values()) == sum(i.balance_minor for i in mine)
        share = max(a / largest[c] for c, a in r.past_due_minor.items()) if past else 0.0
        expected = 2 * share + min(r.broken_promises, 3) / 3 + min(r.dispute_frequency or 0, 1)
        assert r.score == pytest.approx(expected)
        assert r.level == ("High" if expected >= 1.5 else "Medium" if expected >= 0.5 else "Low")
    scores = [r.score for r in report.rows]
    assert scores == sorted(scores, reverse=True)
    broken = next(r for r in report.rows if r.customer_id == book.customers[1].id)
    assert broken.broken_promises == 1 and "1 broken promise" in broken.reasons
    assert report.computed_at == NOW and report.ledger_updated_at is not None


def test_filters_by_segment_and_owner(session: Session, book: Book) -> None:
    smb = next(c.segment_id for c in book.customers if c.segment_id != book.segment.id)
    by_segment = renewal_risk(session, book.org.id, as_of=TODAY, window_days=365, segment_id=smb)
    assert {r.customer_id for r in by_segment.rows} == {c.id for c in book.customers[8:]}
    csm = book.users["csm"].id
    by_owner = renewal_risk(session, book.org.id, as_of=TODAY, window_days=365, owner_user_id=csm)
    assert {r.customer_id for r in by_owner.rows} == {c.id for c in book.customers[:4]}
    assert all(r.csm == "Cass CSM" for r in by_owner.rows)
    sales = renewal_risk(
        session,
        book.org.id,
        as_of=TODAY,
        window_days=365,
        owner_user_id=book.users["sales"].id,
        owner_role="sales",
    )
    assert {r.customer_id for r in sales.rows} == {c.id for c in book.customers[:3]}
    short = renewal_risk(session, book.org.id, as_of=TODAY, window_days=30)
    assert {r.customer_id for r in short.rows} == {book.customers[i].id for i in (0, 4, 8)}


def test_dispute_frequency_over_the_lookback(session: Session, book: Book) -> None:
    report = renewal_risk(session, book.org.id, as_of=TODAY, window_days=365, now=NOW)
    disputed = next(r for r in report.rows if r.customer_id == book.customers[3].id)
    assert disputed.disputes == 1 and disputed.invoices > 0
    assert disputed.dispute_frequency == pytest.approx(1 / disputed.invoices)
    quiet = next(r for r in report.rows if r.customer_id == book.customers[5].id)
    assert quiet.disputes == 0 and quiet.dispute_frequency == 0.0


def test_empty_window_and_bad_input(session: Session, book: Book) -> None:
    past = renewal_risk(session, book.org.id, as_of=TODAY + timedelta(days=400), window_days=10)
    assert past.rows == []
    with pytest.raises(RenewalInputError, match="window"):
        renewal_risk(session, book.org.id, as_of=TODAY, window_days=-1)
    with pytest.raises(RenewalInputError, match="look-back"):
        renewal_risk(session, book.org.id, as_of=TODAY, lookback_days=0)


def test_account_without_invoices_in_the_lookback(session: Session, org: Organisation) -> None:
    from memory.models import Customer

    session.add(
        Customer(org_id=org.id, external_ref="N", name="New", renewal_date=TODAY + timedelta(5))
    )
    session.commit()
    report = renewal_risk(session, org.id, as_of=TODAY)
    (row,) = report.rows
    assert row.dispute_frequency is None and row.score == 0.0 and row.level == "Low"
    assert row.to_dict()["dispute_frequency"] is None
    assert report.ledger_updated_at is None
