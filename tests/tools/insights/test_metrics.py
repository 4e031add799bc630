"""Receivables metrics: DSO (both methods), CEI and aging on the IBM file match an independent
computation in plain Python over the CSV; bad input says "not enough data"; scopes and exposure."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import pytest
from sqlalchemy.orm import Session

from memory.models import (
    AgingBucket,
    Customer,
    Invoice,
    Organisation,
    Payment,
    PromiseStatus,
    PromiseToPay,
)
from tests.tools.insights.test_focus import TODAY, build_book
from tools.imports.importer import import_invoices
from tools.insights import metrics
from tools.insights.metrics import NOT_ENOUGH_DATA, Period, Scope

IBM = Path(__file__).resolve().parents[4] / "shared" / "data" / "ibm-accounts-receivable.csv"
needs_ibm = pytest.mark.skipif(not IBM.exists(), reason="../shared/data is not beside the repo")

PERIODS = [
    Period(date(2012, 7, 1), date(2012, 12, 31)),
    Period(date(2013, 1, 1), date(2013, 3, 31)),
    Period.month(2013, 6),
    Period.month(2013, 11),
]


# --- the independent route: the CSV in plain Python -------------------------------------------


class Row(NamedTuple):
    issue: date
    due: date
    settled: date
    cents: int


def _csv_rows() -> list[Row]:
    def day(text: str) -> date:
        m, d, y = (int(p) for p in text.split("/"))
        return date(y, m, d)

    with IBM.open(newline="", encoding="utf-8") as fh:
        return [
            Row(
                day(r["InvoiceDate"]),
                day(r["DueDate"]),
                day(r["SettledDate"]),
                int(Decimal(r["InvoiceAmount"]) * 100),
            )
            for r in csv.DictReader(fh)
        ]


def _outstanding(rows: list[Row], d: date) -> dict[str, int]:
    """Unpaid at the end of ``d``, by days past due."""
    out = {b: 0 for b in ("Current", "1-30", "31-60", "61-90", "90+")}
    for r in rows:
        if r.issue <= d < r.settled:
            late = (d - r.due).days
            bucket = (
                "Current"
                if late <= 0
                else "1-30"
                if late <= 30
                else "31-60"
                if late <= 60
                else "61-90"
                if late <= 90
                else "90+"
            )
            out[bucket] += r.cents
    return out


def _sales(rows: list[Row], start: date, end: date) -> int:
    return sum(r.cents for r in rows if start <= r.issue <= end)


def _countback(rows: list[Row], end: date) -> float:
    remaining = sum(_outstanding(rows, end).values())
    dso = 0.0
    month_end = end
    while True:
        month_start = month_end.replace(day=1)
        days = (month_end - month_start).days + 1
        sales = _sales(rows, month_start, month_end)
        if sales and remaining <= sales:
            return dso + remaining / sales * days
        remaining -= sales
        dso += days
        month_end = month_start - timedelta(days=1)


@pytest.fixture
def ibm_org(session: Session, org: Organisation) -> Organisation:
    report = import_invoices(session, org, IBM)
    assert report.committed and report.created == 2466
    session.commit()
    return org


@needs_ibm
def test_ibm_metrics_match_an_independent_computation(
    session: Session, ibm_org: Organisation
) -> None:
    rows = _csv_rows()
    scope = Scope(ibm_org.id)
    for period in PERIODS:
        end_ar = _outstanding(rows, period.end)
        start_ar = _outstanding(rows, period.start - timedelta(days=1))
        sales = _sales(rows, period.start, period.end)

        aging = metrics.aging(session, scope, period.end)["USD"]
        assert {b.value: aging.amounts[b] for b in AgingBucket} == end_ar

        dso = metrics.dso_simple(session, scope, period)
        assert dso.value == pytest.approx(sum(end_ar.values()) / sales * period.days, rel=1e-12)
        assert dso.currency == "USD" and dso.inputs["credit_sales"] == sales

        countback = metrics.dso_countback(session, scope, period.end)
        assert countback.value == pytest.approx(_countback(rows, period.end), rel=1e-12)

        collected = sum(start_ar.values()) + sales - sum(end_ar.values())
        collectible = sum(start_ar.values()) + sales - end_ar["Current"]
        cei = metrics.cei(session, scope, period)
        assert cei.value == pytest.approx(collected / collectible * 100, rel=1e-12)

        add = metrics.average_days_delinquent(session, scope, period)
        best = end_ar["Current"] / sales * period.days
        assert add.value is not None and dso.value is not None
        assert add.value == pytest.approx(dso.value - best, rel=1e-9)

        cash = metrics.cash_collected(session, scope, period)
        expected_cash = sum(r.cents for r in rows if period.start <= r.settled <= period.end)
        assert cash.amounts == {"USD": expected_cash}


@needs_ibm
def test_ibm_period_without_invoices_says_not_enough_data(
    session: Session, ibm_org: Organisation
) -> None:
    scope = Scope(ibm_org.id)
    empty = Period.year(2016)
    for figure in (
        metrics.dso_simple(session, scope, empty),
        metrics.cei(session, scope, empty),
        metrics.average_days_delinquent(session, scope, empty),
        metrics.dso_countback(session, scope, empty.end),
        metrics.promise_adherence(session, scope, empty),
    ):
        assert figure.value is None and figure.reason and figure.reason.startswith(NOT_ENOUGH_DATA)
        assert figure.text() == NOT_ENOUGH_DATA
    before = Period.year(2010)
    assert metrics.cash_collected(session, scope, before).reason == (
        f"{NOT_ENOUGH_DATA}: no invoices by 2010-12-31"
    )
    assert metrics.aging(session, scope, date(2016, 1, 1)) == {}


def test_org_without_history_says_not_enough_data(session: Session, org: Organisation) -> None:
    scope = Scope(org.id)
    period = Period.month(2025, 9)
    for figure in (
        metrics.dso_simple(session, scope, period),
        metrics.dso_countback(session, scope, period.end),
        metrics.cei(session, scope, period),
        metrics.average_days_delinquent(session, scope, period),
        metrics.promise_adherence(session, scope, period),
    ):
        assert not figure.ok and NOT_ENOUGH_DATA in (figure.reason or "")
    assert not metrics.cash_collected(session, scope, period).ok
    exposure = metrics.exposure(session, scope, period.end)
    assert exposure.rows() == []
    assert metrics.latest_activity_date(session, org.id) is None


def _invoice(
    session: Session, org: Organisation, cust: Customer, n: int, cur: str, amount: int, due: date
) -> Invoice:
    inv = Invoice(
        org_id=org.id,
        customer_id=cust.id,
        number=f"M-{n}",
        currency=cur,
        amount_minor=amount,
        balance_minor=amount,
        issue_date=due - timedelta(days=30),
        due_date=due,
    )
    session.add(inv)
    return inv


def test_currency_mix_is_never_summed(session: Session, org: Organisation) -> None:
    cust = Customer(org_id=org.id, external_ref="X", name="X")
    session.add(cust)
    session.flush()
    _invoice(session, org, cust, 1, "USD", 100_00, date(2025, 9, 10))
    _invoice(session, org, cust, 2, "EUR", 300_00, date(2025, 9, 20))
    session.commit()
    period = Period(date(2025, 8, 1), date(2025, 9, 30))  # both issued in August
    dso = metrics.dso_simple(session, Scope(org.id), period)
    assert dso.value is None and dso.reason == (
        f"{NOT_ENOUGH_DATA}: currency mix (EUR, USD); choose one currency"
    )
    assert not metrics.cei(session, Scope(org.id), period).ok
    usd = metrics.dso_simple(session, Scope(org.id, currency="USD"), period)
    assert usd.ok and usd.currency == "USD"
    assert usd.value == pytest.approx(100_00 / 100_00 * 61)
    aging = metrics.aging(session, Scope(org.id), date(2025, 9, 30))
    assert set(aging) == {"EUR", "USD"}
    assert aging["EUR"].amounts[AgingBucket.D1_30] == 300_00


def test_partial_payments_roll_back_to_the_day(session: Session, org: Organisation) -> None:
    """Outstanding on a past day adds back what was paid after it."""
    cust = Customer(org_id=org.id, external_ref="P", name="P")
    session.add(cust)
    session.flush()
    inv = _invoice(session, org, cust, 1, "USD", 1_000_00, date(2025, 6, 30))
    inv.balance_minor = 400_00
    session.flush()
    session.add(
        Payment(
            org_id=org.id,
            customer_id=cust.id,
            invoice_id=inv.id,
            amount_minor=600_00,
            applied_minor=600_00,
            currency="USD",
            received_on=date(2025, 7, 15),
        )
    )
    session.commit()
    scope = Scope(org.id)
    assert metrics.aging(session, scope, date(2025, 7, 10))["USD"].total == 1_000_00
    assert (
        metrics.aging(session, scope, date(2025, 7, 20))["USD"].amounts[AgingBucket.D1_30] == 400_00
    )
    assert metrics.cash_collected(session, scope, Period.month(2025, 7)).amounts == {"USD": 600_00}


def test_scopes_by_segment_and_owner_partition_the_organisation(
    session: Session, org: Organisation
) -> None:
    book = build_book(session, org)
    usd = Scope(org.id, currency="USD")
    whole = metrics.aging(session, usd, TODAY)["USD"].total
    segments = {c.segment_id for c in book.customers}
    by_segment = sum(
        metrics.aging(session, Scope(org.id, segment_id=s, currency="USD"), TODAY)
        .get("USD", metrics.AgingRow("USD", {}, {}))
        .total
        if metrics.aging(session, Scope(org.id, segment_id=s, currency="USD"), TODAY)
        else 0
        for s in segments
    )
    assert by_segment == whole
    owners = (book.users["collector1"].id, book.users["collector2"].id)
    by_owner = sum(
        metrics.aging(
            session, Scope(org.id, owner_user_id=u, owner_role="collector", currency="USD"), TODAY
        )["USD"].total
        for u in owners
    )
    assert by_owner == whole
    sales_only = metrics.aging(
        session, Scope(org.id, owner_user_id=book.users["sales"].id, owner_role="sales"), TODAY
    )["USD"].total
    expected = sum(
        i.balance_minor
        for i in book.open_invoices
        if i.customer_id in {c.id for c in book.customers[:3]}
    )
    assert sales_only == expected


def test_promise_adherence_and_exposure(session: Session, org: Organisation) -> None:
    book = build_book(session, org)
    cust = book.customers[5]
    now = datetime.combine(TODAY, datetime.min.time(), tzinfo=UTC)
    for i, (status, days) in enumerate(
        [
            (PromiseStatus.KEPT, -20),
            (PromiseStatus.KEPT, -15),
            (PromiseStatus.MISSED, -12),
            (PromiseStatus.OPEN, -9),  # open past its grace: broken
            (PromiseStatus.OPEN, -1),  # still inside its grace: pending
            (PromiseStatus.CANCELLED, -5),
        ]
    ):
        session.add(
            PromiseToPay(
                org_id=org.id,
                customer_id=cust.id,
                amount_minor=1_000 * (i + 1),
                currency="USD",
                promised_date=TODAY + timedelta(days=days),
                status=status,
                created_at=now - timedelta(days=30),
            )
        )
    session.commit()
    period = Period(TODAY - timedelta(days=25), TODAY)
    scope = Scope(org.id, owner_user_id=book.users["collector1"].id, owner_role="collector")
    adherence = metrics.promise_adherence(session, scope, period, as_of=TODAY)
    # Kept 2; missed 1 + 1 lapsed; the one in grace and the cancelled one left out; plus the
    # book's own missed promise (customer 1) and its promise due today (pending).
    assert adherence.inputs["kept"] == 2 and adherence.inputs["missed"] == 3
    assert adherence.inputs["pending"] == 2
    assert adherence.value == pytest.approx(40.0)

    exposure = metrics.exposure(session, Scope(org.id, currency="USD"), TODAY)
    plan_invoice = book.marked["plan_near_default"]
    assert exposure.plan == {"USD": plan_invoice.balance_minor}
    disputed = book.marked["sla"].balance_minor + book.marked["legal"].balance_minor
    assert exposure.dispute == {"USD": disputed}
    open_promises = book.marked["promise_due_today"].balance_minor + 4_000 + 5_000
    assert exposure.promise == {"USD": open_promises}
    assert exposure.counts == {"promises": 3, "plans": 1, "disputes": 2}


def test_period_rejects_an_end_before_its_start() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        Period(date(2025, 2, 1), date(2025, 1, 1))
    assert Period.quarter(2025, 1) == Period(date(2025, 1, 1), date(2025, 3, 31))
    assert Period.month(2024, 2).days == 29
    assert [p.start.month for p in metrics.last_months(date(2025, 2, 14), 3)] == [12, 1, 2]
    assert metrics.last_months(date(2025, 2, 14), 1)[0].end == date(2025, 2, 14)


def test_monthly_series_covers_each_month(session: Session, org: Organisation) -> None:
    build_book(session, org)
    series = metrics.monthly_series(session, Scope(org.id, currency="USD"), TODAY, 6)
    assert len(series) == 6 and series[-1].period.end == TODAY
    assert all(p.dso_countback.ok for p in series)
    assert all(p.cash_collected.ok for p in series)
    by_month: dict[str, int] = defaultdict(int)
    assert by_month == {}


@needs_ibm
def test_ibm_short_periods_average_sales_over_their_window(
    session: Session, ibm_org: Organisation
) -> None:
    """A month to date and single days on the IBM file, recomputed over the CSV: DSO (simple)
    and ADD divide by the sales of the 30 days ending on the period's last day, CEI is the
    period's own flow, countback does not depend on the period's length."""
    rows = _csv_rows()
    scope = Scope(ibm_org.id)
    for period in (
        Period(date(2013, 6, 1), date(2013, 6, 10)),
        Period(date(2013, 6, 10), date(2013, 6, 10)),
        Period(date(2013, 11, 30), date(2013, 11, 30)),
    ):
        end_ar = _outstanding(rows, period.end)
        start_ar = _outstanding(rows, period.start - timedelta(days=1))
        window_sales = _sales(rows, period.end - timedelta(days=29), period.end)
        sales = _sales(rows, period.start, period.end)

        dso = metrics.dso_simple(session, scope, period)
        assert dso.window == Period(period.end - timedelta(days=29), period.end)
        assert dso.value == pytest.approx(sum(end_ar.values()) / window_sales * 30, rel=1e-12)
        assert 0 <= dso.value <= 365

        add = metrics.average_days_delinquent(session, scope, period)
        past_due = sum(end_ar.values()) - end_ar["Current"]
        assert add.value == pytest.approx(past_due / window_sales * 30, rel=1e-9)

        collected = sum(start_ar.values()) + sales - sum(end_ar.values())
        collectible = sum(start_ar.values()) + sales - end_ar["Current"]
        cei = metrics.cei(session, scope, period)
        assert cei.value == pytest.approx(collected / collectible * 100, rel=1e-12)
        assert 0 <= cei.value <= 100

        countback = metrics.dso_countback(session, scope, period.end)
        assert countback.value == pytest.approx(_countback(rows, period.end), rel=1e-12)
