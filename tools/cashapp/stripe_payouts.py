"""Stripe payouts explained by their balance transactions, and the bank's payout line cleared.

A Stripe payout reaches the bank statement as ONE credit ("STRIPE PAYOUT po_..."): the customers'
card payments of several days, less Stripe's fees, refunds and dispute adjustments. Cash App Assist
explains it by the payout's balance transactions, read from one of three sources:

* the organisation's own Stripe account through the official SDK (``payouts.retrieve`` and
  ``balance_transactions.list(payout=..., expand=["data.source"])`` with auto-pagination; the
  ``Stripe-Account`` header when the organisation is a connected account): ``plixo cash
  stripe-payout PO_ID``, or the ``payout.reconciliation_completed`` / ``payout.paid`` webhook;
* an uploaded Stripe "Itemized payout reconciliation" CSV (``payout_reconciliation.itemized``),
  recognised by its ``automatic_payout_id`` and ``balance_transaction_id`` columns (see
  :data:`CSV_REQUIRED` and :data:`CSV_OPTIONAL`; other columns are ignored).

Each balance transaction is one :class:`~memory.models.CashLine`, imported once (its fingerprint
is made from the balance transaction id alone):

* a charge whose PaymentIntent the webhook already posted is *linked* to that payment (status
  ``ignored`` with the payment named: it can be neither applied nor posted again);
* a charge not posted yet waits for the normal decision path: its suggestion comes from plixo's
  own PaymentIntent (the ``PaymentIntentLink``, or the ``plixo_*`` metadata that
  :func:`tools.payments.stripe_pay.create_intent` writes), else from the matcher; auto-apply
  decides, the
  rest waits in the exceptions queue. Once such a line is applied, the later webhook for the same
  PaymentIntent posts nothing (:func:`applied_line_for_intent`); if the webhook comes first, the
  waiting line is linked to its payment (:func:`link_posted_intent`);
* Stripe's fees (each transaction's ``fee``, and fee transactions of their own) are recorded as
  fee lines: gross - fees (- refunds, disputes) = the payout;
* refunds and dispute adjustments are recorded and reported for a person (plixo does not reopen
  invoices on its own).

The bank line of the payout is then matched to the payout (kind ``stripe_payout``, with the
reasons) and cleared: it posts nothing, because the payments it carries are already on the ledger
(or wait as their own lines). It is matched by the payout id it names, or, for a line naming
Stripe, by the payout's exact amount and currency within :data:`ARRIVAL_WINDOW_DAYS` of its
arrival date, and only when the payout's balance transactions add up to it. Either may arrive
first: the statement line waits until the payout is imported, and is cleared then.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import stripe
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.errors import PlixoError
from memory.models import (
    CashImport,
    CashLine,
    CashLineStatus,
    Invoice,
    InvoiceStatus,
    Organisation,
    Payment,
    PaymentIntentLink,
    PlanInstallment,
    StripeEvent,
    User,
    utcnow,
)
from memory.money import MoneyError, check_currency, exponent, format_money, parse_amount
from tools.cashapp import service
from tools.cashapp.applying import require
from tools.cashapp.parsers import MAX_FILE_BYTES
from tools.cashapp.schemas import Allocation, BankLine, LineError, Suggestion
from tools.kit import audit
from tools.payments import stripe_pay
from tools.payments.stripe_pay import StripeFailure, StripeNotConfigured, WebhookResult

KIND = "stripe_payout"
PAYOUT_EVENTS = ("payout.paid", "payout.reconciliation_completed")
ARRIVAL_WINDOW_DAYS = 5
PAYOUT_ID = re.compile(r"\bpo_[A-Za-z0-9]{4,}\b")
PAYOUT_ID_EXACT = re.compile(r"po_[A-Za-z0-9]{4,64}")
WEBHOOK_ACTOR = "stripe webhook"

# Stripe's own smallest units where they differ from two decimals (its API docs, "Currencies").
STRIPE_ZERO_DECIMAL = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
STRIPE_THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])

#: Columns a Stripe itemized payout reconciliation CSV must have (header names as Stripe writes).
CSV_REQUIRED = (
    "automatic_payout_id",
    "automatic_payout_effective_at",
    "balance_transaction_id",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
)
#: Columns read when present (Stripe's optional report columns; ``payment_metadata[...]`` is the
#: PaymentIntent's metadata, which plixo fills with ``plixo_invoice_id`` and friends).
CSV_OPTIONAL = (
    "created",
    "created_utc",
    "automatic_payout_effective_at_utc",
    "description",
    "source_id",
    "charge_id",
    "payment_intent_id",
    "customer_facing_amount",
    "customer_facing_currency",
    "customer_name",
    "invoice_number",
    "payment_metadata[plixo_org_id]",
    "payment_metadata[plixo_invoice_id]",
    "payment_metadata[plixo_installment_id]",
    "payment_metadata[plixo_customer_id]",
)

CHARGE = "charge"
REFUND = "refund"
DISPUTE = "dispute"
FEE = "fee"
ADJUSTMENT = "adjustment"
PAYOUT = "payout"

_CATEGORY = {
    "charge": CHARGE,
    "payment": CHARGE,
    "refund": REFUND,
    "payment_refund": REFUND,
    "refund_failure": REFUND,
    "partial_capture_reversal": REFUND,
    "dispute": DISPUTE,
    "dispute_reversal": DISPUTE,
    "fee": FEE,
    "stripe_fee": FEE,
    "network_cost": FEE,
    "tax": FEE,
    "payout": PAYOUT,
}


class PayoutError(PlixoError, ValueError):
    """A payout that cannot be imported as asked; nothing was written."""

    http_status = 400


class PayoutNotFound(PayoutError):
    http_status = 404


# --- what a payout is made of ----------------------------------------------------------------


@dataclass(frozen=True)
class PayoutItem:
    """One balance transaction of a payout, in the payout's (settlement) currency, minor units."""

    txn_id: str
    category: str  # charge | refund | dispute | fee | adjustment | payout
    reporting_category: str
    currency: str
    amount_minor: int  # gross, signed
    fee_minor: int
    net_minor: int
    created_on: date
    description: str = ""
    source_id: str | None = None
    charge_id: str | None = None
    intent_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    payer_name: str | None = None
    invoice_number: str | None = None
    # What the payer paid, when it was another currency than the settlement's.
    customer_amount_minor: int | None = None
    customer_currency: str | None = None
    row_no: int = 0


@dataclass
class PayoutData:
    """A payout and its balance transactions, whichever source they were read from."""

    payout_id: str
    currency: str
    amount_minor: int
    arrival_date: date
    source: str  # stripe | webhook | csv
    status: str = "paid"
    items: list[PayoutItem] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        """Gross per kind, fees withheld and net, in minor units of the payout's currency."""
        out = {"charges_minor": 0, "refunds_minor": 0, "disputes_minor": 0, "other_minor": 0}
        fees = 0
        for it in self.items:
            if it.category == PAYOUT:
                continue
            fees += it.fee_minor
            if it.category == FEE:
                fees -= it.amount_minor  # a fee transaction's amount is negative
                continue
            key = {CHARGE: "charges_minor", REFUND: "refunds_minor", DISPUTE: "disputes_minor"}
            out[key.get(it.category, "other_minor")] += it.amount_minor
        out["fees_minor"] = fees
        out["net_minor"] = sum(it.net_minor for it in self.items if it.category != PAYOUT)
        return out

    @property
    def complete(self) -> bool:
        """Every balance transaction was read and they add up to the payout."""
        return not self.errors and self.totals()["net_minor"] == self.amount_minor


def from_stripe_amount(amount: int, currency: str) -> int:
    """Stripe's integer amount (its own smallest unit) in plixo's minor units (ISO 4217)."""
    cur = check_currency(currency)
    stripe_places = 0 if cur in STRIPE_ZERO_DECIMAL else 3 if cur in STRIPE_THREE_DECIMAL else 2
    shift = exponent(cur) - stripe_places
    if shift >= 0:
        return int(amount) * 10**shift
    scale = 10**-shift
    if int(amount) % scale:
        raise MoneyError(f"{amount} is not a whole amount of {cur}")
    return int(amount) // scale


def _plain(obj: Any) -> dict[str, Any]:
    """An SDK object (or a webhook's JSON) as plain dicts all the way down."""
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict()
    return dict(obj or {})


def _id(value: Any) -> str | None:
    """An id, whether Stripe sent the id or the expanded object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return str(value) if value else None


def _day(ts: Any) -> date:
    return datetime.fromtimestamp(int(ts or 0), UTC).date()


def payout_from_stripe(
    payout: Any, transactions: Iterable[Any], *, source: str = "stripe"
) -> PayoutData:
    """A :class:`PayoutData` from Stripe's Payout and its BalanceTransactions (SDK objects or
    their JSON); a transaction that cannot be read is a per-line error, the others are kept."""
    po = _plain(payout)
    currency = str(po.get("currency") or "").upper()
    try:
        amount = from_stripe_amount(int(po.get("amount") or 0), currency)
    except MoneyError as exc:
        raise PayoutError(f"Payout {po.get('id')}: {exc}; nothing was imported.") from None
    data = PayoutData(
        payout_id=str(po.get("id")),
        currency=currency,
        amount_minor=amount,
        arrival_date=_day(po.get("arrival_date")),
        source=source,
        status=str(po.get("status") or ""),
    )
    for no, raw in enumerate(transactions, start=1):
        txn = _plain(raw)
        try:
            item = _item_from_stripe(txn, no)
        except MoneyError as exc:
            data.errors.append(
                LineError(no, f"Balance transaction {txn.get('id')}: {exc}; it was not imported.")
            )
            continue
        if item.category == PAYOUT and item.source_id == data.payout_id:
            continue  # the payout's own transaction: the total, not a part of it
        data.items.append(item)
    return data


def _item_from_stripe(txn: Mapping[str, Any], no: int) -> PayoutItem:
    currency = check_currency(str(txn.get("currency") or ""))
    src = txn.get("source")
    source = src if isinstance(src, Mapping) else {}
    kind = str(txn.get("type") or "")
    category = _CATEGORY.get(str(txn.get("reporting_category") or ""), _CATEGORY.get(kind))
    charge_id = _id(source.get("charge")) or (
        _id(source) if source.get("object") == "charge" else None
    )
    intent = source.get("payment_intent")
    metadata = dict(source.get("metadata") or {})
    if isinstance(intent, Mapping):
        metadata = {**dict(intent.get("metadata") or {}), **metadata}
    customer_amount = customer_currency = None
    if source.get("object") == "charge" and source.get("currency"):
        src_cur = check_currency(str(source["currency"]))
        if src_cur != currency:
            customer_currency = src_cur
            customer_amount = from_stripe_amount(int(source.get("amount") or 0), src_cur)
    billing = source.get("billing_details") or {}
    return PayoutItem(
        txn_id=str(txn.get("id")),
        category=category or ADJUSTMENT,
        reporting_category=str(txn.get("reporting_category") or kind),
        currency=currency,
        amount_minor=from_stripe_amount(int(txn.get("amount") or 0), currency),
        fee_minor=from_stripe_amount(int(txn.get("fee") or 0), currency),
        net_minor=from_stripe_amount(int(txn.get("net") or 0), currency),
        created_on=_day(txn.get("created")),
        description=str(txn.get("description") or source.get("description") or ""),
        source_id=_id(src),
        charge_id=charge_id,
        intent_id=_id(intent),
        metadata={str(k): str(v) for k, v in metadata.items()},
        payer_name=(billing.get("name") if isinstance(billing, Mapping) else None) or None,
        customer_amount_minor=customer_amount,
        customer_currency=customer_currency,
        row_no=no,
    )


# --- the itemized payout reconciliation CSV ----------------------------------------------------


def payouts_from_csv(text: str) -> list[PayoutData]:
    """Every payout of the export, its rows grouped by ``automatic_payout_id``.

    Amounts are decimals in the currency's major unit, as Stripe writes them; a payout's amount
    is the sum of its rows' ``net``. A row that cannot be read is a per-row error of its payout
    (or of the file, when it names no payout), with the row number.
    """
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise PayoutError(
            f"This Stripe payout export has no {', '.join(missing)} column; download the "
            "'Itemized payout reconciliation' report (payout_reconciliation.itemized) with its "
            "default columns."
        )
    payouts: dict[str, PayoutData] = {}
    orphan: list[LineError] = []
    for no, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        po_id = row.get("automatic_payout_id", "")
        if not PAYOUT_ID_EXACT.fullmatch(po_id):
            orphan.append(
                LineError(no, f"Row {no}: no automatic payout id ({po_id or 'empty'}); skipped.")
            )
            continue
        try:
            item, currency, arrival = _item_from_csv(row, no)
        except (MoneyError, ValueError) as exc:
            data = payouts.setdefault(po_id, _csv_payout(po_id, row))
            data.errors.append(
                LineError(no, f"Row {no} ({row.get('balance_transaction_id')}): {exc}")
            )
            continue
        data = payouts.setdefault(po_id, _csv_payout(po_id, row))
        if data.currency and data.currency != currency:
            data.errors.append(
                LineError(no, f"Row {no}: {currency}, but payout {po_id} is in {data.currency}.")
            )
            continue
        data.currency = currency
        data.arrival_date = arrival
        data.items.append(item)
    out = list(payouts.values())
    for data in out:
        data.amount_minor = data.totals()["net_minor"]
    if out and orphan:
        out[0].errors.extend(orphan)
    elif orphan:
        raise PayoutError(
            "No row of this Stripe export names an automatic payout: "
            + " ".join(e.message for e in orphan[:5])
        )
    return out


def _csv_payout(po_id: str, row: Mapping[str, str]) -> PayoutData:
    try:
        arrival = _csv_date(row, "automatic_payout_effective_at")
    except ValueError:
        arrival = date.min  # set by the payout's first readable row
    return PayoutData(po_id, "", 0, arrival, "csv")


def _csv_date(row: Mapping[str, str], key: str) -> date:
    raw = row.get(key) or row.get(f"{key}_utc") or ""
    if not raw:
        raise ValueError(f"{key} is empty")
    return date.fromisoformat(raw[:10])


def _item_from_csv(row: Mapping[str, str], no: int) -> tuple[PayoutItem, str, date]:
    currency = check_currency(row["currency"])
    txn_id = row.get("balance_transaction_id", "")
    if not txn_id:
        raise ValueError("balance_transaction_id is empty")
    meta = {
        k[len("payment_metadata[") : -1]: v
        for k, v in row.items()
        if k.startswith("payment_metadata[") and k.endswith("]") and v
    }
    customer_amount = customer_currency = None
    if row.get("customer_facing_currency") and row.get("customer_facing_amount"):
        cur = check_currency(row["customer_facing_currency"])
        if cur != currency:
            customer_currency = cur
            customer_amount = parse_amount(row["customer_facing_amount"], cur)
    rep = row.get("reporting_category", "")
    created = row.get("created_utc") or row.get("created") or ""
    arrival = _csv_date(row, "automatic_payout_effective_at")
    item = PayoutItem(
        txn_id=txn_id,
        category=_CATEGORY.get(rep, ADJUSTMENT),
        reporting_category=rep,
        currency=currency,
        amount_minor=parse_amount(row["gross"] or "0", currency),
        fee_minor=parse_amount(row["fee"] or "0", currency),
        net_minor=parse_amount(row["net"] or "0", currency),
        created_on=date.fromisoformat(created[:10]) if created else arrival,
        description=row.get("description", ""),
        source_id=row.get("source_id") or None,
        charge_id=row.get("charge_id") or None,
        intent_id=row.get("payment_intent_id") or None,
        metadata=meta,
        payer_name=row.get("customer_name") or None,
        invoice_number=row.get("invoice_number") or None,
        customer_amount_minor=customer_amount,
        customer_currency=customer_currency,
        row_no=no,
    )
    return item, currency, arrival


# --- reading a payout from the organisation's Stripe account -----------------------------------


def stripe_client(settings: Settings) -> stripe.StripeClient:
    """The SDK client for the organisation's key, or a message saying what to set."""
    try:
        return stripe_pay.client(settings)
    except StripeNotConfigured:
        raise StripeNotConfigured(
            "Stripe payouts are read with the organisation's own Stripe key: set "
            "PLIXO_STRIPE_API_KEY (a restricted key that can read Payouts and Balance "
            "transactions is enough), or upload the payout's 'Itemized payout reconciliation' "
            "CSV from the Stripe Dashboard instead."
        ) from None


def fetch_payout(
    settings: Settings,
    org: Organisation,
    payout_id: str,
    *,
    client: stripe.StripeClient | None = None,
    source: str = "stripe",
) -> PayoutData:
    """The payout and every balance transaction it paid out (all pages), through the SDK."""
    payout_id = payout_id.strip()
    if not PAYOUT_ID_EXACT.fullmatch(payout_id):
        raise PayoutError(f"{payout_id!r} is not a Stripe payout id (po_...).")
    sc = client or stripe_client(settings)
    opts: dict[str, Any] = {"stripe_account": org.stripe_account} if org.stripe_account else {}
    where = f" in Stripe account {org.stripe_account}" if org.stripe_account else ""
    try:
        po = sc.v1.payouts.retrieve(payout_id, options=opts)  # type: ignore[arg-type]
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404 or exc.code == "resource_missing":
            raise PayoutNotFound(
                f"Stripe has no payout {payout_id}{where}: check the id (Dashboard > Balances > "
                "Payouts) and that PLIXO_STRIPE_API_KEY is this organisation's key."
            ) from None
        raise StripeFailure(
            f"Stripe refused to read payout {payout_id}: {exc.user_message}"
        ) from None
    except stripe.StripeError as exc:
        raise StripeFailure(
            f"Stripe did not answer for payout {payout_id}; try again in a minute ({exc})."
        ) from None
    if not po.automatic or po.reconciliation_status == "not_applicable":
        raise PayoutError(
            f"Payout {payout_id} is a manual payout: Stripe does not itemize which transactions "
            "it paid out. Clear its bank line by hand (park it with a note)."
        )
    if po.reconciliation_status != "completed":
        raise PayoutError(
            f"Stripe is still reconciling payout {payout_id} ({po.reconciliation_status}); it "
            "is imported when the payout.reconciliation_completed webhook arrives, or try again "
            "later."
        )
    try:
        listing = sc.v1.balance_transactions.list(
            params={"payout": payout_id, "expand": ["data.source"], "limit": 100},
            options=opts,  # type: ignore[arg-type]
        )
        txns = list(listing.auto_paging_iter())
    except stripe.StripeError as exc:
        raise StripeFailure(
            f"Stripe did not list the transactions of payout {payout_id}; try again ({exc})."
        ) from None
    return payout_from_stripe(po, txns, source=source)


# --- importing ---------------------------------------------------------------------------------


@dataclass
class PayoutReport(service.ImportReport):
    """An import's report (as for a bank file) with each payout's figures."""

    payouts: list[dict[str, Any]] = field(default_factory=list)


def import_from_stripe(
    session: Session,
    org_id: int,
    payout_id: str,
    *,
    settings: Settings,
    actor: User | str,
    now: datetime | None = None,
    client: stripe.StripeClient | None = None,
    source: str = "stripe",
) -> PayoutReport:
    """Read payout ``payout_id`` from the organisation's Stripe account and import it."""
    require(actor, "apply_cash")
    org = session.get(Organisation, org_id)
    if org is None:
        raise PayoutError(f"Organisation {org_id} does not exist.")
    data = fetch_payout(settings, org, payout_id, client=client, source=source)
    return import_payouts(
        session, org_id, [data], actor=actor, filename=f"Stripe payout {data.payout_id}", now=now
    )


def import_csv(
    session: Session,
    org_id: int,
    data: bytes,
    *,
    filename: str,
    actor: User | str,
    now: datetime | None = None,
) -> PayoutReport:
    """Import every payout of an itemized payout reconciliation export."""
    require(actor, "apply_cash")
    if len(data) > MAX_FILE_BYTES:
        raise PayoutError(f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PayoutError("The Stripe export is not UTF-8 text; download it again.") from None
    payouts = payouts_from_csv(text)
    sha = hashlib.sha256(data).hexdigest()
    return import_payouts(
        session, org_id, payouts, actor=actor, filename=filename, sha=sha, now=now
    )


def import_payouts(
    session: Session,
    org_id: int,
    payouts: list[PayoutData],
    *,
    actor: User | str,
    filename: str,
    sha: str | None = None,
    now: datetime | None = None,
) -> PayoutReport:
    """Store each payout's balance transactions once, link or decide its charges, record its fees,
    and clear the bank line that carries it (see the module docstring)."""
    now = now or utcnow()
    require(actor, "apply_cash")
    report: PayoutReport | None = None
    for data in payouts:
        one = _import_one(session, org_id, data, actor=actor, filename=filename, sha=sha, now=now)
        report = one if report is None else _merge(report, one)
    if report is None:
        raise PayoutError("The Stripe export has no balance transaction; nothing was imported.")
    return report


def _merge(into: PayoutReport, more: PayoutReport) -> PayoutReport:
    into.lines_read += more.lines_read
    into.lines_new += more.lines_new
    into.duplicates += more.duplicates
    into.errors += more.errors
    into.auto_applied += more.auto_applied
    into.exceptions += more.exceptions
    into.cleared += more.cleared
    into.payouts += more.payouts
    into.notice = " ".join(n for n in (into.notice, more.notice) if n) or None
    return into


def _fingerprint(txn_id: str) -> str:
    return service.fingerprint("stripe", BankLine(0, date.min, 0, "", bank_ref=txn_id), 0)


def _fees_fingerprint(payout_id: str) -> str:
    return service.fingerprint("stripe-fees", BankLine(0, date.min, 0, "", bank_ref=payout_id), 0)


def _sort_lines(
    session: Session,
    org_id: int,
    data: PayoutData,
    rows: list[tuple[PayoutItem, CashLine]],
    report: PayoutReport,
    actor: User | str,
    now: datetime,
) -> tuple[list[tuple[CashLine, BankLine]], dict[int, list[Suggestion]], list[dict[str, Any]]]:
    """Each new line's way: a charge the webhook posted is linked to its payment (an audit row
    each, returned), a charge not posted yet is to be decided (with plixo's own PaymentIntent as
    its suggestion where it has one), anything else (fees, refunds, disputes) is recorded."""
    posted = _posted_intents(session, org_id, [it.intent_id for it, _ in rows if it.intent_id])
    to_decide: list[tuple[CashLine, BankLine]] = []
    preset: dict[int, list[Suggestion]] = {}
    linked: list[dict[str, Any]] = []
    for item, row in rows:
        if item.category != CHARGE:
            _record_other(row, item, data, now, report)
            continue
        payment = posted.get(item.intent_id or "")
        if payment is not None:
            _link(row, item, payment, now)
            linked.append(_linked_row(org_id, row, item, payment, actor))
            continue
        line = _bank_line(row)
        to_decide.append((row, line))
        found = _from_intent(session, org_id, item, line)
        if found:
            preset[row.id] = found
    return to_decide, preset, linked


def _import_one(
    session: Session,
    org_id: int,
    data: PayoutData,
    *,
    actor: User | str,
    filename: str,
    sha: str | None,
    now: datetime,
) -> PayoutReport:
    totals = data.totals()
    earlier = _payout_imports(session, org_id, [data.payout_id]).get(data.payout_id, [])
    digest = (
        sha
        or hashlib.sha256(
            json.dumps([data.payout_id, sorted(i.txn_id for i in data.items)]).encode()
        ).hexdigest()
    )
    run = service.open_import(
        session, org_id, KIND, filename, digest, data.payout_id, actor=actor, now=now
    )
    report = PayoutReport(
        import_id=run.id,
        kind=KIND,
        filename=run.filename,
        statement_ref=data.payout_id,
        lines_read=len(data.items) + len(data.errors),
        lines_new=0,
        errors=list(data.errors),
        notice=(
            f"Payout {data.payout_id} was already imported on {earlier[0].created_at:%Y-%m-%d} "
            "UTC; balance transactions already stored are skipped, nothing is applied twice."
            if earlier
            else None
        ),
    )
    rows = _store(session, org_id, run, data, report, now)
    to_decide, preset, trail = _sort_lines(session, org_id, data, rows, report, actor, now)
    linked = len(trail)
    service.decide_lines(session, org_id, to_decide, report, now, preset=preset)
    figures = {
        "payout_id": data.payout_id,
        "currency": data.currency,
        "amount_minor": data.amount_minor,
        "arrival_date": data.arrival_date.isoformat(),
        "status": data.status,
        "source": data.source,
        "complete": data.complete,
        **totals,
        "charges_linked": linked,
        "charges_to_decide": len(to_decide),
    }
    run.report = {**report.as_dict(), "payout": figures}
    trail.append(
        audit.row(
            org_id,
            actor=actor,
            action="cash.stripe_payout_imported",
            subject_type="cash_import",
            subject_id=run.id,
            detail={**figures, "lines_new": report.lines_new, "errors": len(report.errors)},
        )
    )
    if totals["fees_minor"] and report.lines_new:
        detail = {"payout_id": data.payout_id, "fees_minor": totals["fees_minor"]}
        trail.append(
            audit.row(
                org_id,
                actor=actor,
                action="cash.stripe_fees_recorded",
                subject_type="cash_import",
                subject_id=run.id,
                detail={**detail, "currency": data.currency},
            )
        )
    audit.record_many(session, trail)
    session.flush()
    _clear_bank_line(session, org_id, data, run, report, actor, now)
    return report


def _clear_bank_line(
    session: Session,
    org_id: int,
    data: PayoutData,
    run: CashImport,
    report: PayoutReport,
    actor: User | str,
    now: datetime,
) -> None:
    """The payout's bank line, if it arrived first and waits, is cleared now; the report names
    the bank line either way."""
    report.cleared += _clear_waiting_bank_lines(session, org_id, data, actor, now)
    figures = dict(run.report["payout"])  # with bank_line_id when its bank line was just cleared
    figures["bank_line_id"] = figures.get("bank_line_id") or _bank_line_of(
        session, org_id, data.payout_id
    )
    report.payouts.append(figures)
    run.report = {**report.as_dict(), "payout": figures}
    session.flush()


def _store(
    session: Session,
    org_id: int,
    run: CashImport,
    data: PayoutData,
    report: PayoutReport,
    now: datetime,
) -> list[tuple[PayoutItem, CashLine]]:
    """One line per balance transaction not stored before, plus one for the fees withheld."""
    prints = [(_fingerprint(it.txn_id), it) for it in data.items]
    existing = service.existing_prints(
        session, org_id, [fp for fp, _ in prints] + [_fees_fingerprint(data.payout_id)]
    )
    out: list[tuple[PayoutItem, CashLine]] = []
    for fp, it in prints:
        if fp in existing:
            report.duplicates.append(
                LineError(
                    it.row_no,
                    f"Balance transaction {it.txn_id} "
                    f"({format_money(it.amount_minor, it.currency)}) was already imported; "
                    "skipped.",
                )
            )
            continue
        existing.add(fp)
        amount, currency = it.amount_minor, it.currency
        if it.category == CHARGE and it.customer_currency and it.customer_amount_minor:
            amount, currency = it.customer_amount_minor, it.customer_currency
        reference = " ".join(
            x
            for x in (it.invoice_number or "", _invoice_number(session, org_id, it), it.description)
            if x
        )
        row = CashLine(
            org_id=org_id,
            import_id=run.id,
            line_no=it.row_no,
            fingerprint=fp,
            booked_on=it.created_on,
            amount_minor=amount,
            currency=currency,
            payer_name=(it.payer_name or None) and it.payer_name[:200],
            reference=reference[:4000],
            bank_ref="/".join(x for x in (it.txn_id, it.intent_id) if x)[:140],
            created_at=now,
        )
        session.add(row)
        out.append((it, row))
    fee_line = _fee_line(org_id, run, data, now) if out else None
    if fee_line is not None and fee_line.fingerprint not in existing:
        session.add(fee_line)
    else:
        fee_line = None
    session.flush()
    report.lines_new = len(out) + (1 if fee_line is not None else 0)
    return out


def _fee_line(org_id: int, run: CashImport, data: PayoutData, now: datetime) -> CashLine | None:
    """The one line of the fees Stripe withheld from the payout (recorded, never applied), or
    None when nothing was withheld."""
    fees = data.totals()["fees_minor"]
    withheld = sum(it.fee_minor for it in data.items if it.category != PAYOUT)
    if not withheld:
        return None
    return CashLine(
        org_id=org_id,
        import_id=run.id,
        line_no=0,
        fingerprint=_fees_fingerprint(data.payout_id),
        booked_on=data.arrival_date,
        amount_minor=-withheld,
        currency=data.currency,
        reference=f"Stripe fees withheld from payout {data.payout_id}",
        bank_ref=data.payout_id,
        status=CashLineStatus.IGNORED,
        decision={
            "outcome": "recorded",
            "kind": "stripe_fee",
            "payout_id": data.payout_id,
            "fees_minor": fees,
            "reasons": [
                f"Stripe fees of {format_money(fees, data.currency)} in all: the difference "
                f"between the gross and payout {data.payout_id}"
            ],
        },
        note=f"Stripe fees withheld from payout {data.payout_id}",
        applied_by=WEBHOOK_ACTOR if data.source == "webhook" else "Cash App Assist",
        applied_at=now,
        created_at=now,
    )


def _invoice_number(session: Session, org_id: int, it: PayoutItem) -> str:
    inv_id = it.metadata.get("plixo_invoice_id")
    if it.invoice_number or not inv_id or not inv_id.isdigit():
        return ""
    inv = session.get(Invoice, int(inv_id))
    return inv.number if inv is not None and inv.org_id == org_id else ""


def _bank_line(row: CashLine) -> BankLine:
    return BankLine(
        line_no=row.line_no,
        booked_on=row.booked_on,
        amount_minor=row.amount_minor,
        currency=row.currency,
        reference=row.reference,
        payer_name=row.payer_name,
        bank_ref=row.bank_ref,
    )


def _posted_intents(session: Session, org_id: int, intents: list[str]) -> dict[str, Payment]:
    """Payments the webhook posted for these PaymentIntents (``external_ref`` is the intent)."""
    out: dict[str, Payment] = {}
    for i in range(0, len(intents), service.CHUNK):
        for p in session.scalars(
            select(Payment).where(
                Payment.org_id == org_id, Payment.external_ref.in_(intents[i : i + service.CHUNK])
            )
        ):
            out[p.external_ref or ""] = p
    return out


def _link(
    row: CashLine, item: PayoutItem, payment: Payment, now: datetime, *, fees: bool = True
) -> None:
    reasons = [
        f"Stripe PaymentIntent {item.intent_id} was posted by the Stripe webhook as payment "
        f"{payment.id} on {payment.received_on.isoformat()}"
    ]
    if fees:
        reasons.append(
            f"Stripe fee {format_money(item.fee_minor, item.currency)}, net "
            f"{format_money(item.net_minor, item.currency)}"
        )
    row.status = CashLineStatus.IGNORED
    row.customer_id = payment.customer_id
    row.note = f"Posted by the Stripe webhook (payment {payment.id}); not posted again."
    row.decision = {
        "outcome": "linked",
        "kind": "stripe_charge",
        "payment_id": payment.id,
        "intent_id": item.intent_id,
        "fee_minor": item.fee_minor,
        "net_minor": item.net_minor,
        "reasons": reasons,
    }
    row.applied_by = "Cash App Assist (Stripe payout)"
    row.applied_at = now


def _linked_row(
    org_id: int, row: CashLine, item: PayoutItem, payment: Payment, actor: User | str
) -> dict[str, Any]:
    return audit.row(
        org_id,
        actor=actor,
        action="cash.stripe_charge_linked",
        subject_type="cash_line",
        subject_id=row.id,
        to_state=CashLineStatus.IGNORED.value,
        detail={
            "payment_id": payment.id,
            "intent_id": item.intent_id,
            "txn_id": item.txn_id,
            "amount_minor": row.amount_minor,
            "currency": row.currency,
        },
    )


def _from_intent(
    session: Session, org_id: int, item: PayoutItem, line: BankLine
) -> list[Suggestion]:
    """The suggestion plixo's own PaymentIntent gives: the invoice or installment it was created
    for (the link plixo stored, else the ``plixo_*`` metadata); empty when it names none here."""
    link = None
    if item.intent_id:
        link = session.scalars(
            select(PaymentIntentLink).where(
                PaymentIntentLink.org_id == org_id, PaymentIntentLink.intent_id == item.intent_id
            )
        ).first()
    meta = item.metadata
    if link is None and meta.get("plixo_org_id") and meta["plixo_org_id"] != str(org_id):
        return []
    inv_id = link.invoice_id if link else _int(meta.get("plixo_invoice_id"))
    inst_id = link.installment_id if link else _int(meta.get("plixo_installment_id"))
    why = (
        f"Stripe PaymentIntent {item.intent_id} was created by plixo for "
        if item.intent_id
        else "the payment's Stripe metadata names "
    )
    if inst_id is not None:
        inst = session.get(PlanInstallment, inst_id)
        if inst is None or inst.plan.org_id != org_id or inst.plan.currency != line.currency:
            return []
        left = inst.amount_minor - inst.paid_minor
        if left != line.amount_minor:
            return []
        reasons = [
            f"{why}plan {inst.plan_id}, installment {inst.seq}",
            f"amount equals the installment's remaining {format_money(left, line.currency)}",
        ]
        return [
            Suggestion(
                inst.plan.customer_id, "installment", 100, reasons, [], installment_id=inst.id
            )
        ]
    if inv_id is None:
        return []
    inv = session.get(Invoice, inv_id)
    if inv is None or inv.org_id != org_id or inv.currency != line.currency:
        return []
    named = f"{why}invoice {inv.number}"
    amount = line.amount_minor
    if inv.status != InvoiceStatus.OPEN or inv.balance_minor <= 0:
        reasons = [named, f"{inv.number} has nothing left to pay: on account as credit"]
        return [Suggestion(inv.customer_id, "on_account", 40, reasons, [Allocation(None, amount)])]
    if amount == inv.balance_minor:
        reasons = [named, f"amount equals the open balance of {inv.number}"]
        return [Suggestion(inv.customer_id, "exact", 100, reasons, [Allocation(inv.id, amount)])]
    if amount < inv.balance_minor:
        short = inv.balance_minor - amount
        reasons = [named, f"pays {format_money(short, line.currency)} less: the rest stays open"]
        return [
            Suggestion(
                inv.customer_id,
                "short_pay",
                80,
                reasons,
                [Allocation(inv.id, amount)],
                difference_minor=short,
                difference_kind="open",
            )
        ]
    extra = amount - inv.balance_minor
    reasons = [named, f"pays {format_money(extra, line.currency)} more: kept as credit"]
    return [
        Suggestion(
            inv.customer_id,
            "over_payment",
            75,
            reasons,
            [Allocation(inv.id, inv.balance_minor), Allocation(None, extra)],
            difference_minor=-extra,
            difference_kind="credit",
        )
    ]


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _record_other(
    row: CashLine, item: PayoutItem, data: PayoutData, now: datetime, report: PayoutReport
) -> None:
    """Fees, refunds, disputes and adjustments: recorded on their line, never posted."""
    money = format_money(item.amount_minor, item.currency)
    kind = {FEE: "stripe_fee", REFUND: "stripe_refund", DISPUTE: "stripe_dispute"}.get(
        item.category, "stripe_adjustment"
    )
    what = {
        FEE: f"Stripe fee {money} ({item.description or item.reporting_category})",
        REFUND: f"Refund of {money} to the payer"
        + (f" (charge {item.charge_id})" if item.charge_id else ""),
        DISPUTE: f"Dispute adjustment {money} ({item.reporting_category})"
        + (f" on charge {item.charge_id}" if item.charge_id else ""),
    }.get(item.category, f"Stripe adjustment {money} ({item.reporting_category})")
    row.status = CashLineStatus.IGNORED
    row.note = f"{what}, in payout {data.payout_id}."
    row.decision = {
        "outcome": "recorded",
        "kind": kind,
        "payout_id": data.payout_id,
        "txn_id": item.txn_id,
        "fee_minor": item.fee_minor,
        "net_minor": item.net_minor,
        "reasons": [what],
    }
    row.applied_by = "Cash App Assist (Stripe payout)"
    row.applied_at = now
    if item.category in (REFUND, DISPUTE):
        report.errors.append(
            LineError(
                item.row_no,
                f"{what} in payout {data.payout_id}: plixo does not reopen invoices by itself; "
                "if it takes back money an invoice was paid with, reopen that invoice (or open "
                "the dispute) by hand.",
            )
        )


# --- the bank line of a payout ------------------------------------------------------------------


def _payout_imports(
    session: Session, org_id: int, payout_ids: list[str] | None = None
) -> dict[str, list[CashImport]]:
    q = select(CashImport).where(CashImport.org_id == org_id, CashImport.kind == KIND)
    if payout_ids is not None:
        q = q.where(CashImport.statement_ref.in_(payout_ids))
    out: dict[str, list[CashImport]] = {}
    for imp in session.scalars(q.order_by(CashImport.id)):
        out.setdefault(imp.statement_ref or "", []).append(imp)
    return out


def _bank_line_of(session: Session, org_id: int, payout_id: str) -> int | None:
    """The bank line this payout was matched to (by any of its imports), if any."""
    imports = _payout_imports(session, org_id, [payout_id]).get(payout_id, [])
    found = [(imp.report.get("payout") or {}).get("bank_line_id") for imp in imports]
    return next((int(x) for x in found if x), None)


@dataclass
class _Known:
    """What the ledger knows of one payout: its latest figures, and its bank line if matched."""

    payout_id: str
    figures: dict[str, Any]
    latest: CashImport
    bank_line_id: int | None

    @property
    def amount_minor(self) -> int:
        return int(self.figures.get("amount_minor") or 0)

    @property
    def currency(self) -> str:
        return str(self.figures.get("currency") or "")

    @property
    def arrival(self) -> date:
        return date.fromisoformat(str(self.figures.get("arrival_date")))


def _known(session: Session, org_id: int, payout_ids: list[str] | None = None) -> dict[str, _Known]:
    out: dict[str, _Known] = {}
    for po_id, imports in _payout_imports(session, org_id, payout_ids).items():
        with_figures = [i for i in imports if i.report.get("payout")]
        if not with_figures:
            continue
        matched = [
            i.report["payout"].get("bank_line_id")
            for i in with_figures
            if i.report["payout"].get("bank_line_id")
        ]
        latest = with_figures[-1]
        out[po_id] = _Known(po_id, latest.report["payout"], latest, matched[0] if matched else None)
    return out


def _looks_like_payout(line: BankLine) -> bool:
    text = f"{line.reference} {line.payer_name or ''}"
    return bool(PAYOUT_ID.search(text)) or "STRIPE" in text.upper()


def _which(line: BankLine, known: dict[str, _Known]) -> tuple[_Known | None, str]:
    """The payout this bank line carries, or why none can be said to (for the report)."""
    text = f"{line.reference} {line.payer_name or ''}"
    money = format_money(line.amount_minor, line.currency)
    named = PAYOUT_ID.findall(text)
    if named:
        po = known.get(named[0])
        if po is None:
            return None, (
                f"names Stripe payout {named[0]}, which is not imported yet: run `plixo cash "
                f"stripe-payout {named[0]}` or upload its itemized payout reconciliation CSV; the "
                "line is cleared when the payout arrives"
            )
        if (po.amount_minor, po.currency) != (line.amount_minor, line.currency):
            return None, (
                f"names Stripe payout {po.payout_id} of "
                f"{format_money(po.amount_minor, po.currency)}, but is {money}"
            )
        return po, f"the bank line names payout {po.payout_id}"
    window = timedelta(days=ARRIVAL_WINDOW_DAYS)
    fits = [
        po
        for po in known.values()
        if po.bank_line_id is None
        and (po.amount_minor, po.currency) == (line.amount_minor, line.currency)
        and abs(po.arrival - line.booked_on) <= window
    ]
    if len(fits) == 1:
        po = fits[0]
        return po, (
            f"the bank line names Stripe, and payout {po.payout_id} of {money} arrived "
            f"{po.arrival.isoformat()}"
        )
    if len(fits) > 1:
        ids = ", ".join(sorted(p.payout_id for p in fits))
        return None, f"looks like a Stripe payout, but payouts {ids} all fit: a person chooses"
    return None, (
        f"looks like a Stripe payout of {money}, but no imported payout has that amount near "
        f"{line.booked_on.isoformat()}: import the payout (`plixo cash stripe-payout PO_ID`, the "
        "webhook, or its itemized payout reconciliation CSV)"
    )


_Row = TypeVar("_Row", CashLine, dict[str, Any])


def clear_payout_lines(
    session: Session,
    org_id: int,
    lines: list[tuple[_Row, BankLine]],
    report: service.ImportReport,
    *,
    actor: User | str,
    now: datetime,
) -> list[tuple[_Row, BankLine]]:
    """Bank-statement lines that carry an imported Stripe payout are matched to it and cleared;
    the lines returned go on to the matcher (a payout-looking line that is not cleared gets a
    per-line message saying why). A line is a stored row (one waiting since an earlier import)
    or, from an import under way, the columns of a row not written yet: cleared, it is written."""
    if not any(_looks_like_payout(line) for _, line in lines):
        return lines
    known = _known(session, org_id)
    keep: list[tuple[_Row, BankLine]] = []
    for row, line in lines:
        if not _looks_like_payout(line):
            keep.append((row, line))
            continue
        po, why = _which(line, known)
        if po is None or po.bank_line_id is not None or not po.figures.get("complete"):
            if po is not None:
                why = (
                    f"carries payout {po.payout_id}, which is already matched to bank line "
                    f"{po.bank_line_id}"
                    if po.bank_line_id is not None
                    else f"carries payout {po.payout_id}, but not every balance transaction of it "
                    "was imported (see that import's errors)"
                )
            report.errors.append(
                LineError(
                    line.line_no,
                    f"Line {line.line_no} ({format_money(line.amount_minor, line.currency)}) "
                    f"{why}; it waits in the exceptions queue.",
                )
            )
            keep.append((row, line))
            continue
        stored = row if isinstance(row, CashLine) else CashLine(**row)
        session.add(stored)
        session.flush()  # its id names it in the payout's figures and the audit
        _clear(session, org_id, stored, po, why, actor, now)
        report.cleared += 1
    session.flush()
    return keep


def _clear(
    session: Session,
    org_id: int,
    row: CashLine,
    po: _Known,
    why: str,
    actor: User | str,
    now: datetime,
) -> None:
    f = po.figures
    cur = po.currency
    reasons = [
        why,
        f"amount equals payout {po.payout_id}: {format_money(po.amount_minor, cur)}",
        f"charges {format_money(f.get('charges_minor', 0), cur)} - Stripe fees "
        f"{format_money(f.get('fees_minor', 0), cur)}"
        + (f" + refunds {format_money(f['refunds_minor'], cur)}" if f.get("refunds_minor") else "")
        + (
            f" + disputes {format_money(f['disputes_minor'], cur)}"
            if f.get("disputes_minor")
            else ""
        )
        + (f" + other {format_money(f['other_minor'], cur)}" if f.get("other_minor") else "")
        + f" = {format_money(f.get('net_minor', 0), cur)}",
        f"{f.get('charges_linked', 0)} charge(s) already posted by the Stripe webhook, "
        f"{f.get('charges_to_decide', 0)} decided as their own lines: nothing is posted twice",
    ]
    row.suggestions = [
        {
            "customer_id": None,
            "kind": KIND,
            "score": 100,
            "reasons": reasons,
            "allocations": [],
            "difference_minor": 0,
            "difference_kind": None,
            "installment_id": None,
        }
    ]
    row.best_score = 100
    row.status = CashLineStatus.IGNORED
    row.decision = {
        "outcome": "cleared",
        "kind": KIND,
        "payout_id": po.payout_id,
        "import_id": po.latest.id,
        "reasons": reasons,
    }
    row.note = f"Stripe payout {po.payout_id}, explained by its balance transactions."
    row.applied_by = "Cash App Assist (Stripe payout)"
    row.applied_at = now
    po.bank_line_id = row.id
    po.figures = {**po.figures, "bank_line_id": row.id}
    po.latest.report = {**po.latest.report, "payout": po.figures}
    audit.record(
        session,
        org_id,
        actor=actor,
        action="cash.stripe_payout_matched",
        subject_type="cash_line",
        subject_id=row.id,
        from_state=CashLineStatus.EXCEPTION.value,
        to_state=CashLineStatus.IGNORED.value,
        detail={
            "payout_id": po.payout_id,
            "amount_minor": row.amount_minor,
            "currency": row.currency,
            "reasons": reasons,
        },
    )


def cleared_bank_lines(session: Session, org_id: int, *, limit: int = 100) -> list[CashLine]:
    """Bank-statement lines cleared against a Stripe payout, latest first: neither applied nor
    waiting, each with the payout and the reasons in its decision (the panel shows them apart
    from applied cash and exceptions). A payout's own lines (charges, fees) are not among them."""
    rows = session.scalars(
        select(CashLine)
        .join(CashImport, CashImport.id == CashLine.import_id)
        .where(
            CashLine.org_id == org_id,
            CashLine.status == CashLineStatus.IGNORED,
            CashImport.kind != KIND,
        )
        .order_by(CashLine.applied_at.desc(), CashLine.id.desc())
        .limit(limit)
    )
    return [r for r in rows if (r.decision or {}).get("outcome") == "cleared"]


def _clear_waiting_bank_lines(
    session: Session, org_id: int, data: PayoutData, actor: User | str, now: datetime
) -> int:
    """The payout arrived after its bank line: clear the waiting line it explains."""
    if _bank_line_of(session, org_id, data.payout_id) is not None:
        return 0
    waiting = session.scalars(
        select(CashLine)
        .join(CashImport, CashImport.id == CashLine.import_id)
        .where(
            CashLine.org_id == org_id,
            CashLine.status == CashLineStatus.EXCEPTION,
            CashLine.amount_minor == data.amount_minor,
            CashLine.currency == data.currency,
            CashImport.kind != KIND,
        )
        .order_by(CashLine.booked_on, CashLine.id)
    ).all()
    lines = [(row, _bank_line(row)) for row in waiting]
    lines = [(r, ln) for r, ln in lines if _looks_like_payout(ln)]
    if not lines:
        return 0
    scratch = service.ImportReport(0, KIND, "", None, 0, 0)
    keep = clear_payout_lines(session, org_id, lines, scratch, actor=actor, now=now)
    return len(lines) - len(keep)


# --- the webhook's side of a PaymentIntent ------------------------------------------------------


def _intent_lines(
    session: Session, org_id: int, intent_id: str, *statuses: CashLineStatus
) -> list[CashLine]:
    return list(
        session.scalars(
            select(CashLine)
            .join(CashImport, CashImport.id == CashLine.import_id)
            .where(
                CashLine.org_id == org_id,
                CashImport.kind == KIND,
                CashLine.status.in_(statuses),
                CashLine.bank_ref.like(f"%/{intent_id}"),
            )
        )
    )


def applied_line_for_intent(session: Session, org_id: int, intent_id: str) -> CashLine | None:
    """The payout line that already applied this PaymentIntent's money (the webhook then posts
    nothing)."""
    found = _intent_lines(session, org_id, intent_id, CashLineStatus.APPLIED)
    return found[0] if found else None


def link_posted_intent(session: Session, org_id: int, intent_id: str, payment: Payment) -> int:
    """The webhook posted the intent: a payout line still waiting for it (in the queue, or parked
    as unapplied cash) is linked to that payment, never applied as well."""
    now = utcnow()
    rows = _intent_lines(
        session, org_id, intent_id, CashLineStatus.EXCEPTION, CashLineStatus.PARKED
    )
    for row in rows:
        item = _item_of(row)
        _link(row, item, payment, now, fees=False)
    audit.record_many(
        session, [_linked_row(org_id, row, _item_of(row), payment, WEBHOOK_ACTOR) for row in rows]
    )
    return len(rows)


def _item_of(row: CashLine) -> PayoutItem:
    """A stored charge line as an item (for the reasons and the audit row)."""
    txn_id, _, intent_id = (row.bank_ref or "").partition("/")
    return PayoutItem(
        txn_id=txn_id,
        category=CHARGE,
        reporting_category="charge",
        currency=row.currency,
        amount_minor=row.amount_minor,
        fee_minor=0,
        net_minor=0,
        created_on=row.booked_on,
        intent_id=intent_id or None,
    )


# --- payout webhooks ----------------------------------------------------------------------------


def handle_payout_event(
    session: Session,
    event: dict[str, Any],
    *,
    settings: Settings,
    now: datetime | None = None,
    client: stripe.StripeClient | None = None,
) -> WebhookResult:
    """Import the payout of a verified ``payout.paid`` / ``payout.reconciliation_completed`` event
    once (the caller commits). No key configured and Stripe not answering raise (the route answers
    503/502 and Stripe retries); everything else is recorded with its outcome."""
    now = now or utcnow()
    event_id = str(event["id"])[:120]
    event_type = str(event.get("type", ""))[:80]
    previous = stripe_pay.seen(session, event_id)
    if previous is not None:
        return WebhookResult(event_id, event_type, "duplicate", {"first_outcome": previous.outcome})
    po = (event.get("data") or {}).get("object") or {}
    payout_id = str(po.get("id") or "")
    detail: dict[str, Any] = {"payout_id": payout_id}
    org = _org_for_account(session, event.get("account"))
    outcome = "processed"
    if org is None:
        outcome, detail["account"] = "unknown_account", event.get("account")
    elif po.get("automatic") is False or po.get("reconciliation_status") == "not_applicable":
        outcome = "not_itemized"
    elif po.get("reconciliation_status") not in (None, "completed"):
        outcome = "awaiting_reconciliation"  # payout.reconciliation_completed follows
    else:
        try:
            report = import_from_stripe(
                session,
                org.id,
                payout_id,
                settings=settings,
                actor=WEBHOOK_ACTOR,
                now=now,
                client=client,
                source="webhook",
            )
        except PayoutNotFound as exc:
            outcome, detail["error"] = "payout_not_found", str(exc)
        except PayoutError as exc:
            outcome, detail["error"] = "not_imported", str(exc)
        else:
            detail.update(
                {
                    "import_id": report.import_id,
                    "lines_new": report.lines_new,
                    "auto_applied": report.auto_applied,
                    "exceptions": report.exceptions,
                    "cleared": report.cleared,
                    "errors": [e.message for e in report.errors],
                }
            )
    session.add(
        StripeEvent(
            org_id=org.id if org else None,
            event_id=event_id,
            event_type=event_type,
            outcome=outcome,
            detail=detail,
            received_at=now,
        )
    )
    session.flush()
    return WebhookResult(event_id, event_type, outcome, detail)


def _org_for_account(session: Session, account: Any) -> Organisation | None:
    """The organisation whose Stripe account sent the event (the platform's own: the one
    organisation without a connected account)."""
    q = select(Organisation)
    q = q.where(
        Organisation.stripe_account == str(account)
        if account
        else Organisation.stripe_account.is_(None)
    )
    found = session.scalars(q.limit(2)).all()
    return found[0] if len(found) == 1 else None
