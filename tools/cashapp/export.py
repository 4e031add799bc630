"""Applied cash per period, for the ledger of record (CSV or JSON; the shape is in the README).

One row per applied part of a bank line (``kind`` = ``applied``: an invoice or ``on_account``),
one row per parked line (``kind`` = ``unapplied``: money received, on no invoice yet), and what
a Stripe payout brought in without posting (:mod:`tools.cashapp.stripe_payouts`): the fees Stripe
withheld (``stripe_fee``, one row per payout's withheld fees and per fee transaction of its own,
the amount withheld; negative when Stripe gave a fee back) and each bank line cleared against a
payout (``payout_cleared``: the money moved from Stripe to the bank, its payments already posted
by their own lines). The ledger of record books those too: without them the bank account and the
Stripe clearing account do not reconcile. Undone applications are left out. Amounts are written
twice: exact minor units and a plain decimal string in the currency's own precision. Money is
never summed across currencies here.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import (
    CashApplication,
    CashImport,
    CashLine,
    CashLineStatus,
    Customer,
    Invoice,
    Payment,
    User,
)
from memory.money import to_decimal
from tools.cashapp.applying import period_closed, require
from tools.commitments.promises import CommitmentError

COLUMNS = (
    "period",
    "kind",
    "booked_on",
    "statement",
    "bank_ref",
    "payer_name",
    "customer_ref",
    "customer_name",
    "invoice_number",
    "currency",
    "amount",
    "amount_minor",
    "adjustment_kind",
    "adjustment",
    "adjustment_minor",
    "payment_ref",
    "applied_by",
    "applied_at",
    "payout_id",
)

#: The ``totals`` key each kind of row adds to (per currency).
_TOTALS = {
    "applied": "applied_minor",
    "unapplied": "unapplied_minor",
    "stripe_fee": "stripe_fees_minor",
    "payout_cleared": "cleared_minor",
}


def _check_period(period: str) -> tuple[date, date]:
    try:
        start = datetime.strptime(period, "%Y-%m").date()
    except ValueError:
        raise CommitmentError(f"{period!r} is not a period; write it as YYYY-MM.") from None
    end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    return start, end


def applied_cash(
    session: Session, org_id: int, period: str, *, actor: User | str
) -> dict[str, Any]:
    """The period's applied and unapplied cash as JSON-ready data (``rows`` in COLUMNS order)."""
    require(actor, "export")
    start, end = _check_period(period)
    rows = [_applied_row(*r) for r in _applications(session, org_id, period)]
    rows += [_parked_row(*r) for r in _parked(session, org_id, start, end)]
    rows += [_stripe_row(*r) for r in _stripe_recorded(session, org_id, start, end)]
    rows.sort(key=lambda r: (r["booked_on"], r["statement"], r["bank_ref"] or "", r["kind"]))
    totals: dict[str, dict[str, int]] = {}
    for r in rows:
        cur = totals.setdefault(r["currency"], dict.fromkeys(_TOTALS.values(), 0))
        cur[_TOTALS[r["kind"]]] += r["amount_minor"]
    return {
        "period": period,
        "closed": period_closed(session, org_id, period),
        "columns": list(COLUMNS),
        "rows": rows,
        "totals": totals,
    }


def _applications(session: Session, org_id: int, period: str) -> list[Any]:
    return list(
        session.execute(
            select(CashApplication, CashLine, CashImport, Customer, Invoice, Payment.external_ref)
            .join(CashLine, CashLine.id == CashApplication.line_id)
            .join(CashImport, CashImport.id == CashLine.import_id)
            .join(Customer, Customer.id == CashApplication.customer_id)
            .outerjoin(Invoice, Invoice.id == CashApplication.invoice_id)
            .outerjoin(Payment, Payment.id == CashApplication.payment_id)
            .where(
                CashApplication.org_id == org_id,
                CashApplication.period == period,
                CashApplication.undone_at.is_(None),
            )
            .order_by(CashApplication.id)
        ).all()
    )


def _parked(session: Session, org_id: int, start: date, end: date) -> list[Any]:
    return list(
        session.execute(
            select(CashLine, CashImport)
            .join(CashImport, CashImport.id == CashLine.import_id)
            .where(
                CashLine.org_id == org_id,
                CashLine.status == CashLineStatus.PARKED,
                CashLine.booked_on >= start,
                CashLine.booked_on < end,
            )
            .order_by(CashLine.id)
        ).all()
    )


def _stripe_recorded(session: Session, org_id: int, start: date, end: date) -> list[Any]:
    """The period's Stripe fee lines and bank lines cleared against a payout (both ``ignored``:
    recorded, never posted; which one is in the line's decision)."""
    found = session.execute(
        select(CashLine, CashImport)
        .join(CashImport, CashImport.id == CashLine.import_id)
        .where(
            CashLine.org_id == org_id,
            CashLine.status == CashLineStatus.IGNORED,
            CashLine.booked_on >= start,
            CashLine.booked_on < end,
        )
        .order_by(CashLine.id)
    ).all()
    return [(line, run) for line, run in found if _stripe_kind(line) is not None]


def _stripe_kind(line: CashLine) -> str | None:
    decision = line.decision or {}
    if decision.get("kind") == "stripe_fee":
        return "stripe_fee"
    if decision.get("outcome") == "cleared" and decision.get("kind") == "stripe_payout":
        return "payout_cleared"
    return None  # a charge linked to its webhook payment, a refund, a dispute: not booked here


def _stripe_row(line: CashLine, run: CashImport) -> dict[str, Any]:
    kind = _stripe_kind(line)
    # a fee line holds the money withheld as a negative amount: the export states the fee
    amount = -line.amount_minor if kind == "stripe_fee" else line.amount_minor
    return {
        "period": line.booked_on.strftime("%Y-%m"),
        "kind": kind,
        "booked_on": line.booked_on.isoformat(),
        "statement": run.statement_ref or run.filename,
        "bank_ref": line.bank_ref,
        "payer_name": line.payer_name,
        "customer_ref": None,
        "customer_name": None,
        "invoice_number": None,
        "currency": line.currency,
        "amount": _money(amount, line.currency),
        "amount_minor": amount,
        "adjustment_kind": None,
        "adjustment": _money(0, line.currency),
        "adjustment_minor": 0,
        "payment_ref": None,
        "applied_by": line.applied_by,
        "applied_at": line.applied_at.isoformat() if line.applied_at else None,
        "payout_id": (line.decision or {}).get("payout_id"),
    }


def _money(minor: int, currency: str) -> str:
    return str(to_decimal(minor, currency))


def _applied_row(
    app: CashApplication,
    line: CashLine,
    run: CashImport,
    cust: Customer,
    inv: Invoice | None,
    payment_ref: str | None,
) -> dict[str, Any]:
    return {
        "period": app.period,
        "kind": "applied",
        "booked_on": line.booked_on.isoformat(),
        "statement": run.statement_ref or run.filename,
        "bank_ref": line.bank_ref,
        "payer_name": line.payer_name,
        "customer_ref": cust.external_ref,
        "customer_name": cust.name,
        "invoice_number": inv.number if inv is not None else "on_account",
        "currency": app.currency,
        "amount": _money(app.amount_minor, app.currency),
        "amount_minor": app.amount_minor,
        "adjustment_kind": app.adjustment_kind,
        "adjustment": _money(app.adjustment_minor, app.currency),
        "adjustment_minor": app.adjustment_minor,
        "payment_ref": payment_ref,
        "applied_by": app.applied_by,
        "applied_at": app.applied_at.isoformat(),
        "payout_id": None,
    }


def _parked_row(line: CashLine, run: CashImport) -> dict[str, Any]:
    return {
        "period": line.booked_on.strftime("%Y-%m"),
        "kind": "unapplied",
        "booked_on": line.booked_on.isoformat(),
        "statement": run.statement_ref or run.filename,
        "bank_ref": line.bank_ref,
        "payer_name": line.payer_name,
        "customer_ref": None,
        "customer_name": None,
        "invoice_number": None,
        "currency": line.currency,
        "amount": _money(line.amount_minor, line.currency),
        "amount_minor": line.amount_minor,
        "adjustment_kind": None,
        "adjustment": _money(0, line.currency),
        "adjustment_minor": 0,
        "payment_ref": None,
        "applied_by": line.applied_by,
        "applied_at": line.applied_at.isoformat() if line.applied_at else None,
        "payout_id": None,
    }


def to_csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in data["rows"]:
        writer.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})
    return buf.getvalue()
