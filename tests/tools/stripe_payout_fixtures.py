"""Stripe payouts as Stripe's API and Dashboard give them, for the Cash App Assist tests.

localstripe has no payouts or balance transactions, and no test reaches the network, so:

* the JSON builders below write objects shaped like Stripe's API responses (``payout``,
  ``balance_transaction`` with an expanded ``source``: a charge, a refund, nothing for a fee),
  turned into real SDK objects with ``StripeObject.construct_from`` where a test needs them;
* :class:`PayoutApi` serves those objects over HTTP on 127.0.0.1 the way Stripe's API does
  (``GET /v1/payouts/{id}``, ``GET /v1/balance_transactions?payout=...`` in pages with
  ``has_more`` / ``starting_after``, Stripe's error body for an unknown id), so the official SDK's
  own request, pagination and error paths run for real against it;
* :func:`itemized_csv` writes an "Itemized payout reconciliation" export as the Dashboard does
  (major-unit decimals, ``payment_metadata[...]`` columns).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import stripe

_seq = itertools.count(1)


def _ts(day: date) -> int:
    return int(datetime.combine(day, time(12, 0), UTC).timestamp())


def uid(prefix: str) -> str:
    return f"{prefix}_1Plx{next(_seq):06d}Tst"


def payout(
    payout_id: str,
    amount: int,
    arrival: date,
    *,
    currency: str = "usd",
    automatic: bool = True,
    reconciliation_status: str = "completed",
    status: str = "paid",
) -> dict[str, Any]:
    return {
        "id": payout_id,
        "object": "payout",
        "amount": amount,
        "arrival_date": _ts(arrival),
        "automatic": automatic,
        "balance_transaction": uid("txn"),
        "created": _ts(arrival) - 2 * 86400,
        "currency": currency,
        "description": "STRIPE PAYOUT",
        "destination": "ba_1PlxBankAcct",
        "failure_code": None,
        "livemode": False,
        "metadata": {},
        "method": "standard",
        "reconciliation_status": reconciliation_status,
        "source_type": "card",
        "statement_descriptor": None,
        "status": status,
        "type": "bank_account",
    }


def charge_txn(
    amount: int,
    fee: int,
    day: date,
    *,
    intent_id: str | None,
    currency: str = "usd",
    metadata: dict[str, str] | None = None,
    payer: str = "Hooli Inc",
    description: str = "",
    charge_currency: str | None = None,
    charge_amount: int | None = None,
) -> dict[str, Any]:
    charge_id = uid("ch")
    return {
        "id": uid("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": _ts(day) + 2 * 86400,
        "created": _ts(day),
        "currency": currency,
        "description": description or None,
        "exchange_rate": None,
        "fee": fee,
        "fee_details": [
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": "Stripe processing fees",
                "type": "stripe_fee",
            }
        ],
        "net": amount - fee,
        "reporting_category": "charge",
        "source": {
            "id": charge_id,
            "object": "charge",
            "amount": charge_amount if charge_amount is not None else amount,
            "amount_captured": charge_amount if charge_amount is not None else amount,
            "amount_refunded": 0,
            "balance_transaction": None,
            "billing_details": {"address": None, "email": None, "name": payer, "phone": None},
            "captured": True,
            "created": _ts(day),
            "currency": charge_currency or currency,
            "description": description or None,
            "metadata": metadata or {},
            "paid": True,
            "payment_intent": intent_id,
            "status": "succeeded",
        },
        "status": "available",
        "type": "charge",
    }


def refund_txn(amount: int, day: date, *, charge_id: str, intent_id: str) -> dict[str, Any]:
    return {
        "id": uid("txn"),
        "object": "balance_transaction",
        "amount": -amount,
        "available_on": _ts(day),
        "created": _ts(day),
        "currency": "usd",
        "description": "REFUND FOR CHARGE",
        "fee": 0,
        "fee_details": [],
        "net": -amount,
        "reporting_category": "refund",
        "source": {
            "id": uid("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge_id,
            "currency": "usd",
            "payment_intent": intent_id,
            "status": "succeeded",
        },
        "status": "available",
        "type": "refund",
    }


def fee_txn(amount: int, day: date, description: str = "Radar (2026-03)") -> dict[str, Any]:
    return {
        "id": uid("txn"),
        "object": "balance_transaction",
        "amount": -amount,
        "available_on": _ts(day),
        "created": _ts(day),
        "currency": "usd",
        "description": description,
        "fee": 0,
        "fee_details": [],
        "net": -amount,
        "reporting_category": "fee",
        "source": None,
        "status": "available",
        "type": "stripe_fee",
    }


def payout_txn(po: dict[str, Any]) -> dict[str, Any]:
    """The payout's own balance transaction, which Stripe lists with the others."""
    return {
        "id": po["balance_transaction"],
        "object": "balance_transaction",
        "amount": -po["amount"],
        "available_on": po["arrival_date"],
        "created": po["created"],
        "currency": po["currency"],
        "description": "STRIPE PAYOUT",
        "fee": 0,
        "fee_details": [],
        "net": -po["amount"],
        "reporting_category": "payout",
        "source": dict(po),
        "status": "available",
        "type": "payout",
    }


def sdk_payout(po: dict[str, Any]) -> stripe.Payout:
    return stripe.Payout.construct_from(po, "sk_test_fixture")


def sdk_transactions(txns: list[dict[str, Any]]) -> list[stripe.BalanceTransaction]:
    listing = stripe.ListObject.construct_from(
        {"object": "list", "url": "/v1/balance_transactions", "has_more": False, "data": txns},
        "sk_test_fixture",
    )
    return list(listing.auto_paging_iter())


# --- the Dashboard's itemized payout reconciliation export --------------------------------------

CSV_COLUMNS = [
    "automatic_payout_id",
    "automatic_payout_effective_at",
    "balance_transaction_id",
    "created_utc",
    "created",
    "available_on_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "description",
    "customer_facing_amount",
    "customer_facing_currency",
    "customer_name",
    "charge_id",
    "payment_intent_id",
    "payment_metadata[plixo_invoice_id]",
    "payment_metadata[plixo_org_id]",
]


def _major(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100}.{abs(minor) % 100:02d}"


def itemized_csv(rows: list[tuple[str, date, dict[str, Any]]]) -> bytes:
    """(payout id, arrival date, balance transaction JSON) per row, as the Dashboard writes them."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for po_id, arrival, txn in rows:
        src = txn.get("source") or {}
        meta = src.get("metadata") or {}
        created = datetime.fromtimestamp(txn["created"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        w.writerow(
            [
                po_id,
                f"{arrival.isoformat()} 00:00:00",
                txn["id"],
                created,
                created,
                created,
                txn["currency"],
                _major(txn["amount"]),
                _major(txn["fee"]),
                _major(txn["net"]),
                txn["reporting_category"],
                src.get("id", ""),
                txn.get("description") or "",
                _major(src["amount"]) if src.get("object") == "charge" else "",
                src.get("currency", "") if src.get("object") == "charge" else "",
                (src.get("billing_details") or {}).get("name", ""),
                src.get("id", "") if src.get("object") == "charge" else src.get("charge", ""),
                src.get("payment_intent") or "",
                meta.get("plixo_invoice_id", ""),
                meta.get("plixo_org_id", ""),
            ]
        )
    return out.getvalue().encode()


# --- Stripe's payout endpoints on loopback -------------------------------------------------------


@dataclass
class PayoutApi:
    """A loopback HTTP server answering the two payout endpoints as Stripe's API does."""

    url: str = ""
    page_size: int = 2
    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    transactions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def add(self, po: dict[str, Any], txns: list[dict[str, Any]]) -> None:
        self.payouts[po["id"]] = po
        self.transactions[po["id"]] = [*txns, payout_txn(po)]

    def answer(self, path: str, query: dict[str, list[str]], headers: Any) -> tuple[int, Any]:
        self.requests.append(
            {"path": path, "query": query, "account": headers.get("Stripe-Account")}
        )
        if not (headers.get("Authorization") or "").startswith("Bearer sk_"):
            return 401, _error("invalid_request_error", None, "You did not provide an API key.")
        if path.startswith("/v1/payouts/"):
            po_id = path.rsplit("/", 1)[1]
            if po_id not in self.payouts:
                return 404, _error(
                    "invalid_request_error", "resource_missing", f"No such payout: '{po_id}'"
                )
            return 200, self.payouts[po_id]
        if path == "/v1/balance_transactions":
            po_id = query.get("payout", [""])[0]
            if po_id not in self.transactions:
                return 404, _error(
                    "invalid_request_error", "resource_missing", f"No such payout: '{po_id}'"
                )
            rows = self.transactions[po_id]
            after = query.get("starting_after", [None])[0]
            start = next((i + 1 for i, t in enumerate(rows) if t["id"] == after), 0)
            size = min(int(query.get("limit", ["10"])[0]), self.page_size)
            page = rows[start : start + size]
            has_more = start + size < len(rows)
            return 200, {
                "object": "list",
                "url": "/v1/balance_transactions",
                "has_more": has_more,
                "data": page,
            }
        return 404, _error("invalid_request_error", None, f"Unrecognized request URL ({path}).")


def _error(kind: str, code: str | None, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "code": code, "message": message}}


@contextmanager
def run_payout_api() -> Iterator[PayoutApi]:
    api = PayoutApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            parsed = urlparse(self.path)
            status, body = api.answer(parsed.path, parse_qs(parsed.query), self.headers)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", f"req_{next(_seq)}")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
