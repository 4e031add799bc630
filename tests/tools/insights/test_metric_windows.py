"""Every metric recomputed by hand on a small ledger, for a whole month, a month to date and a
single day: the figures a CFO reads must follow the standard definitions for any period.

The console used to open on the first days of the current month and divide the receivables by
those few days of sales (DSO 8,377 days, average days delinquent 4,900 days). A period shorter
than ``SALES_WINDOW_MIN_DAYS`` now averages sales over the 30 days ending on its last day, and
says so (``window``); the default is the last complete month, with the month to date beside it.

The ledger (USD; cents written as dollars below):

    inv  issued      due         amount  payments
    A    2025-10-10  2025-11-09  1,000   1,000 on 11-20 (settled)
    B    2025-11-05  2025-12-05  2,000     500 on 12-02
    C    2025-11-20  2025-12-20  3,000
    D    2025-12-02  2026-01-01    900
    E    2025-10-01  2025-10-31    400
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy.orm import Session

from memory.models import (
    Customer,
    Invoice,
    InvoiceStatus,
    Organisation,
    Payment,
    PromiseStatus,
    PromiseToPay,
)
from tools.commitments import promises
from tools.insights import metrics
from tools.insights.metrics import Period, Scope

DEC5 = date(2025, 12, 5)
NOV = Period.month(2025, 11)
MTD = Period(date(2025, 12, 1), DEC5)
ONE_DAY = Period(DEC5, DEC5)


def _d(text: str) -> date:
    return date.fromisoformat(text)


def build_small_ledger(session: Session, org: Organisation) -> Customer:
    cust = Customer(org_id=org.id, external_ref="SMALL", name="Small Ledger Ltd")
    session.add(cust)
    session.flush()
    rows = [
        ("A", "2025-10-10", "2025-11-09", 1_000_00, [(1_000_00, "2025-11-20")]),
        ("B", "2025-11-05", "2025-12-05", 2_000_00, [(500_00, "2025-12-02")]),
        ("C", "2025-11-20", "2025-12-20", 3_000_00, []),
        ("D", "2025-12-02", "2026-01-01", 900_00, []),
        ("E", "2025-10-01", "2025-10-31", 400_00, []),
    ]
    for number, issued, due, amount, paid in rows:
        balance = amount - sum(p for p, _ in paid)
        inv = Invoice(
            org_id=org.id,
            customer_id=cust.id,
            number=number,
            currency="USD",
            amount_minor=amount,
            balance_minor=balance,
            issue_date=_d(issued),
            due_date=_d(due),
            status=InvoiceStatus.PAID if balance == 0 else InvoiceStatus.OPEN,
            settled_date=_d(paid[-1][1]) if balance == 0 else None,
        )
        session.add(inv)
        session.flush()
        for cents, day in paid:
            session.add(
                Payment(
                    org_id=org.id,
                    customer_id=cust.id,
                    invoice_id=inv.id,
                    amount_minor=cents,
                    applied_minor=cents,
                    currency="USD",
                    received_on=_d(day),
                )
            )
    created = datetime(2025, 10, 1, tzinfo=UTC)
    for due, status in [
        ("2025-11-10", PromiseStatus.KEPT),
        ("2025-11-15", PromiseStatus.MISSED),
        ("2025-11-25", PromiseStatus.OPEN),  # grace 3 days: lapsed on 11-28, missed
        ("2025-12-03", PromiseStatus.OPEN),  # grace to 12-06: still pending on 12-05
        ("2025-11-12", PromiseStatus.CANCELLED),  # never counts
        ("2025-12-01", PromiseStatus.KEPT),
    ]:
        session.add(
            PromiseToPay(
                org_id=org.id, customer_id=cust.id, amount_minor=100_00, currency="USD",
                promised_date=_d(due), grace_days=3, status=status, created_at=created,
            )
        )  # fmt: skip
    session.commit()
    return cust


@pytest.fixture
def small(session: Session, org: Organisation) -> Scope:
    build_small_ledger(session, org)
    return Scope(org.id)


def test_sales_windows() -> None:
    assert metrics.sales_window(NOV) == NOV
    assert metrics.sales_window(Period.month(2025, 2)) == Period.month(2025, 2)  # 28 days
    assert metrics.sales_window(MTD) == Period(date(2025, 11, 6), DEC5)
    assert metrics.sales_window(ONE_DAY) == Period(date(2025, 11, 6), DEC5)
    assert metrics.last_complete_month(DEC5) == NOV
    assert metrics.last_complete_month(date(2026, 1, 1)) == Period.month(2025, 12)
    assert metrics.month_to_date(DEC5) == MTD


def test_a_whole_month_by_hand(session: Session, small: Scope) -> None:
    # Receivables on 11-30: B 2,000 (its 500 came after) + C 3,000 + E 400 = 5,400; current (not
    # yet due) B + C = 5,000. On 10-31: A 1,000 + E 400 = 1,400. November's sales: B + C = 5,000.
    dso = metrics.dso_simple(session, small, NOV)
    assert dso.value == pytest.approx(5_400 / 5_000 * 30)  # 32.4 days
    assert dso.window == NOV and dso.inputs["credit_sales"] == 5_000_00
    add = metrics.average_days_delinquent(session, small, NOV)
    assert add.value == pytest.approx(32.4 - 5_000 / 5_000 * 30)  # 2.4 days
    cei = metrics.cei(session, small, NOV)
    assert cei.value == pytest.approx((1_400 + 5_000 - 5_400) / (1_400 + 5_000 - 5_000) * 100)
    # Countback from 11-30: November's 5,000 absorbs 5,000 (30 days), October's 1,400 the
    # remaining 400: 30 + 400 / 1,400 × 31.
    countback = metrics.dso_countback(session, small, NOV.end)
    assert countback.value == pytest.approx(30 + 400 / 1_400 * 31)
    # Promises due in November: kept 1, missed 1 + 1 lapsed; the cancelled one left out.
    adherence = metrics.promise_adherence(session, small, NOV, as_of=DEC5)
    assert adherence.value == pytest.approx(100 / 3)


def test_a_month_to_date_by_hand(session: Session, small: Scope) -> None:
    # Receivables on 12-05: B 1,500 + C 3,000 + D 900 + E 400 = 5,800; current B + C + D = 5,400
    # (B falls due that very day). Sales window 11-06..12-05: C 3,000 + D 900 = 3,900.
    dso = metrics.dso_simple(session, small, MTD)
    assert dso.value == pytest.approx(5_800 / 3_900 * 30)  # 44.6 days (5 days of sales: 32.2)
    assert dso.window == Period(date(2025, 11, 6), DEC5)
    assert dso.to_dict()["window"] == {
        "start": "2025-11-06", "end": "2025-12-05", "days": 30,
        "label": "2025-11-06 – 2025-12-05",
    }  # fmt: skip
    add = metrics.average_days_delinquent(session, small, MTD)
    assert add.value == pytest.approx((5_800 - 5_400) / 3_900 * 30)  # 3.1 days
    assert add.window == dso.window
    # CEI is a flow over the period itself: opening 5,400, December's sales 900, closing 5,800.
    cei = metrics.cei(session, small, MTD)
    assert cei.value == pytest.approx((5_400 + 900 - 5_800) / (5_400 + 900 - 5_400) * 100)
    # Countback from 12-05: December's 900 (5 days), then 4,900 of November's 5,000.
    countback = metrics.dso_countback(session, small, DEC5)
    assert countback.value == pytest.approx(5 + 4_900 / 5_000 * 30)
    adherence = metrics.promise_adherence(session, small, MTD, as_of=DEC5)
    assert adherence.value == pytest.approx(100.0)  # the 12-01 kept; 12-03 still in grace
    assert adherence.inputs["pending"] == 1


def test_a_single_day_by_hand(session: Session, small: Scope) -> None:
    dso = metrics.dso_simple(session, small, ONE_DAY)
    assert dso.value == pytest.approx(5_800 / 3_900 * 30)  # not "no credit sales on 12-05"
    add = metrics.average_days_delinquent(session, small, ONE_DAY)
    assert add.value == pytest.approx(400 / 3_900 * 30)
    # Nothing was collected on 12-05: opening (12-04) 5,800, no sales, closing 5,800.
    cei = metrics.cei(session, small, ONE_DAY)
    assert cei.value == pytest.approx(0.0)
    # 12-02: 500 collected of 5,400 opening + 900 sales − 5,400 current at the close.
    dec2 = metrics.cei(session, small, Period(date(2025, 12, 2), date(2025, 12, 2)))
    assert dec2.value == pytest.approx(500 / 900 * 100)


def test_promise_adherence_is_counted_in_one_place(session: Session, small: Scope) -> None:
    """The console's figure and the Commitment Radar's come from the same count."""
    to_date = metrics.promise_adherence(session, small, None, as_of=DEC5)
    assert to_date.value == pytest.approx(50.0)  # kept 2; missed 1 + 1 lapsed; 1 pending
    radar_view = promises.adherence(session, small.org_id, as_of=DEC5)
    assert (radar_view.kept, radar_view.missed, radar_view.open) == (2, 2, 1)
    assert radar_view.rate == pytest.approx(to_date.value / 100)
    per = promises.adherence_by_customer(session, small.org_id, as_of=DEC5)
    assert [(a.kept, a.missed, a.open) for a in per.values()] == [(2, 2, 1)]
