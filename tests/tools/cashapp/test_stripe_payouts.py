"""Stripe payouts in Cash App Assist over a real ledger: a payout explained by its balance
transactions (SDK objects built from API-shaped JSON, the SDK itself against a loopback server,
the Dashboard's itemized CSV), charges linked or decided, fees recorded, the bank's payout line
cleared, and nothing ever posted twice."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import (
    AuditEvent,
    CashImport,
    CashLine,
    CashLineStatus,
    Invoice,
    Organisation,
    Payment,
    PaymentIntentLink,
    Persona,
)
from tests.tools.cashapp_files import Entry, camt053
from tests.tools.commit_factories import NOW, TODAY, Factory
from tests.tools.stripe_payout_fixtures import (
    charge_txn,
    fee_txn,
    itemized_csv,
    payout,
    payout_txn,
    refund_txn,
    run_payout_api,
    sdk_payout,
    sdk_transactions,
    uid,
)
from tools.cashapp import applying, export, intake, parsers, service, stripe_payouts
from tools.cashapp.stripe_payouts import PayoutError, PayoutNotFound
from tools.commitments.plans import PolicyRefused
from tools.ledger import policy_overrides as policy_admin
from tools.payments import stripe_pay
from tools.payments.stripe_pay import StripeNotConfigured

ARRIVAL = TODAY - timedelta(days=1)
PAID = TODAY - timedelta(days=4)


@pytest.fixture
def f(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


def _count(session: Session, model: type, *where: Any) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _audit(session: Session, action: str) -> int:
    return _count(session, AuditEvent, AuditEvent.action == action)


def _intent(session: Session, inv: Invoice) -> PaymentIntentLink:
    """What stripe_pay.create_intent stores for an invoice (the intent itself is on Stripe)."""
    link = PaymentIntentLink(
        org_id=inv.org_id,
        customer_id=inv.customer_id,
        invoice_id=inv.id,
        intent_id=uid("pi"),
        amount_minor=inv.balance_minor,
        currency=inv.currency,
        status="requires_payment_method",
    )
    session.add(link)
    session.flush()
    return link


def _meta(org: Organisation, inv: Invoice) -> dict[str, str]:
    return {
        "plixo_org_id": str(org.id),
        "plixo_customer_id": str(inv.customer_id),
        "plixo_invoice_id": str(inv.id),
        "plixo_installment_id": "",
        "plixo_label": f"Invoice {inv.number}",
    }


def _succeeded(session: Session, link: PaymentIntentLink) -> stripe_pay.WebhookResult:
    """The payment_intent.succeeded webhook, through the real handler (verified upstream)."""
    event = {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": int((NOW - timedelta(days=4)).timestamp()),
        "data": {
            "object": {
                "id": link.intent_id,
                "object": "payment_intent",
                "amount": link.amount_minor,
                "amount_received": link.amount_minor,
                "currency": link.currency.lower(),
                "metadata": {"plixo_org_id": str(link.org_id)},
                "status": "succeeded",
            }
        },
    }
    result = stripe_pay.handle_event(session, event, now=NOW)
    session.commit()
    return result


def _auto_on(session: Session, org: Organisation) -> None:
    admin = Factory(session, org).user(Persona.CONTROLLER)
    policy_admin.update_policy(
        session,
        org.id,
        admin,
        {"cash_app": {"auto_apply": True, "max_auto_apply_minor": {"USD": 10_000_000}}},
    )
    session.commit()


def _import(
    session: Session, org: Organisation, po: dict[str, Any], txns: list[dict[str, Any]]
) -> stripe_payouts.PayoutReport:
    data = stripe_payouts.payout_from_stripe(
        sdk_payout(po), sdk_transactions([*txns, payout_txn(po)])
    )
    report = stripe_payouts.import_payouts(
        session, org.id, [data], actor="test", filename=f"Stripe payout {po['id']}", now=NOW
    )
    session.commit()
    return report


def _bank(session: Session, org: Organisation, *entries: Entry, msg: str = "STMT-1") -> Any:
    report = intake.import_cash_file(
        session, org.id, camt053(list(entries), msg_id=msg), filename="stmt.xml", actor="test",
        now=NOW,
    )  # fmt: skip
    session.commit()
    return report


def _lines(session: Session, report: Any) -> list[CashLine]:
    session.expire_all()
    return list(
        session.scalars(
            select(CashLine).where(CashLine.import_id == report.import_id).order_by(CashLine.id)
        )
    )


# --- reading: real SDK objects from API-shaped JSON ---------------------------------------------


def test_sdk_objects_become_items_with_fees_refunds_and_the_payout_left_out() -> None:
    ch = charge_txn(120_000, 3_510, PAID, intent_id="pi_A", metadata={"plixo_invoice_id": "7"})
    ch2 = charge_txn(50_000, 1_480, PAID, intent_id="pi_B")
    ref = refund_txn(5_000, PAID, charge_id=ch2["source"]["id"], intent_id="pi_B")
    radar = fee_txn(200, PAID)
    net = 120_000 - 3_510 + 50_000 - 1_480 - 5_000 - 200
    po = payout("po_1PlxAAAA", net, ARRIVAL)
    data = stripe_payouts.payout_from_stripe(
        sdk_payout(po), sdk_transactions([ch, ch2, ref, radar, payout_txn(po)])
    )
    assert [i.category for i in data.items] == ["charge", "charge", "refund", "fee"]
    first = data.items[0]
    assert (first.intent_id, first.charge_id, first.payer_name) == (
        "pi_A",
        ch["source"]["id"],
        "Hooli Inc",
    )
    assert first.metadata == {"plixo_invoice_id": "7"} and first.fee_minor == 3_510
    assert data.items[2].charge_id == ch2["source"]["id"]
    assert data.totals() == {
        "charges_minor": 170_000,
        "refunds_minor": -5_000,
        "disputes_minor": 0,
        "other_minor": 0,
        "fees_minor": 3_510 + 1_480 + 200,
        "net_minor": net,
    }
    assert data.amount_minor == net and data.complete and data.arrival_date == ARRIVAL


def test_unknown_currency_is_a_line_error_and_the_payout_is_incomplete() -> None:
    good = charge_txn(10_000, 320, PAID, intent_id="pi_C")
    bad = {**charge_txn(5_000, 0, PAID, intent_id="pi_D"), "currency": "xyz"}
    po = payout("po_1PlxBBBB", 15_000 - 320, ARRIVAL)
    data = stripe_payouts.payout_from_stripe(sdk_payout(po), sdk_transactions([good, bad]))
    assert len(data.items) == 1 and not data.complete
    (err,) = data.errors
    assert err.line_no == 2 and bad["id"] in err.message and "XYZ" in err.message


def test_stripe_amounts_follow_stripe_units_not_iso_minor_units() -> None:
    assert stripe_payouts.from_stripe_amount(1500, "JPY") == 1500  # zero-decimal both
    assert stripe_payouts.from_stripe_amount(12345, "KWD") == 12345  # three decimals both
    assert stripe_payouts.from_stripe_amount(10000, "ISK") == 100  # Stripe 2, ISO 0
    with pytest.raises(ValueError, match="not a whole amount"):
        stripe_payouts.from_stripe_amount(10050, "ISK")


# --- importing ----------------------------------------------------------------------------------


def test_webhook_posted_charge_is_linked_not_posted_again_and_fees_recorded(
    session: Session, org: Organisation, f: Factory
) -> None:
    inv = f.invoice(f.customer("Hooli Inc"), 120_000)
    link = _intent(session, inv)
    session.commit()
    assert _succeeded(session, link).outcome == "processed"
    assert _count(session, Payment) == 1
    ch = charge_txn(120_000, 3_510, PAID, intent_id=link.intent_id, metadata=_meta(org, inv))
    po = payout("po_1PlxCCCC", 116_490, ARRIVAL)

    report = _import(session, org, po, [ch])

    assert (report.lines_new, report.exceptions, report.auto_applied) == (2, 0, 0)
    charge, fees = _lines(session, report)
    assert charge.status == CashLineStatus.IGNORED and charge.decision is not None
    assert charge.decision["outcome"] == "linked" and charge.decision["kind"] == "stripe_charge"
    payment = session.scalars(select(Payment)).one()
    assert charge.decision["payment_id"] == payment.id and charge.customer_id == inv.customer_id
    assert (fees.amount_minor, fees.status, fees.decision["kind"]) == (  # type: ignore[index]
        -3_510,
        CashLineStatus.IGNORED,
        "stripe_fee",
    )
    assert report.payouts[0]["fees_minor"] == 3_510 and report.payouts[0]["charges_linked"] == 1
    assert _count(session, Payment) == 1 and inv.balance_minor == 0
    assert _audit(session, "cash.stripe_charge_linked") == 1
    assert _audit(session, "cash.stripe_fees_recorded") == 1
    assert _audit(session, "cash.stripe_payout_imported") == 1

    again = _import(session, org, po, [ch])
    assert (
        again.lines_new == 0
        and len(again.duplicates) == 1
        and "already imported" in (again.notice or "")
    )
    assert _count(session, Payment) == 1 and _count(session, CashLine) == 2


def test_unposted_charge_is_matched_by_its_intent_and_goes_through_the_decision(
    session: Session, org: Organisation, f: Factory
) -> None:
    inv = f.invoice(f.customer("Initech LLC"), 80_000)
    link = _intent(session, inv)
    session.commit()
    ch = charge_txn(80_000, 2_350, PAID, intent_id=link.intent_id, payer="Initech")
    po = payout("po_1PlxDDDD", 77_650, ARRIVAL)

    report = _import(session, org, po, [ch])  # auto-apply is off: the line waits

    assert (report.exceptions, report.auto_applied) == (1, 0)
    charge = _lines(session, report)[0]
    assert charge.status == CashLineStatus.EXCEPTION and charge.best_score == 100
    best = charge.suggestions[0]
    assert best["kind"] == "exact" and best["allocations"][0]["invoice_id"] == inv.id
    assert any(link.intent_id in r and inv.number in r for r in best["reasons"])
    assert charge.decision is not None and charge.decision["outcome"] != "allow"
    assert _count(session, Payment) == 0


def test_auto_applied_charge_then_the_late_webhook_posts_nothing(
    session: Session, org: Organisation, f: Factory
) -> None:
    _auto_on(session, org)
    inv = f.invoice(f.customer("Umbrella Corp"), 64_000)
    link = _intent(session, inv)
    session.commit()
    ch = charge_txn(64_000, 1_886, PAID, intent_id=None, metadata=_meta(org, inv))
    ch["source"]["payment_intent"] = link.intent_id
    report = _import(session, org, po := payout("po_1PlxEEEE", 62_114, ARRIVAL), [ch])
    assert report.auto_applied == 1
    assert _count(session, Payment) == 1 and session.get(Invoice, inv.id).balance_minor == 0  # type: ignore[union-attr]

    late = _succeeded(session, link)

    assert late.outcome == "already_applied" and late.detail["cash_line_id"]
    assert _count(session, Payment) == 1
    assert _import(session, org, po, [ch]).auto_applied == 0 and _count(session, Payment) == 1


def test_webhook_after_the_payout_links_the_waiting_line(
    session: Session, org: Organisation, f: Factory
) -> None:
    inv = f.invoice(f.customer("Globex"), 30_000)
    link = _intent(session, inv)
    session.commit()
    ch = charge_txn(30_000, 900, PAID, intent_id=link.intent_id)
    report = _import(session, org, payout("po_1PlxFFFF", 29_100, ARRIVAL), [ch])
    assert _lines(session, report)[0].status == CashLineStatus.EXCEPTION

    assert _succeeded(session, link).outcome == "processed"

    line = _lines(session, report)[0]
    assert line.status == CashLineStatus.IGNORED and line.decision["outcome"] == "linked"  # type: ignore[index]
    assert service.waiting_lines(session, org.id) == []
    assert _count(session, Payment) == 1


def test_webhook_after_a_parked_payout_line_links_it_too(
    session: Session, org: Organisation, f: Factory
) -> None:
    inv = f.invoice(f.customer("Globex"), 31_000)
    link = _intent(session, inv)
    session.commit()
    ch = charge_txn(31_000, 929, PAID, intent_id=link.intent_id)
    report = _import(session, org, payout("po_1PlxFFF2", 30_071, ARRIVAL), [ch])
    applying.park_line(session, org.id, _lines(session, report)[0].id, actor="test", note="later")
    session.commit()

    assert _succeeded(session, link).outcome == "processed"

    line = _lines(session, report)[0]
    assert line.status == CashLineStatus.IGNORED and line.decision["outcome"] == "linked"  # type: ignore[index]
    assert _count(session, Payment) == 1


def test_refund_and_unnamed_charge_are_reported_for_a_person(
    session: Session, org: Organisation, f: Factory
) -> None:
    cust = f.customer("Hooli Inc")
    inv = f.invoice(cust, 45_000)
    session.commit()
    ch = charge_txn(45_000, 1_335, PAID, intent_id=None, description=f"Payment {inv.number}")
    ref = refund_txn(2_000, PAID, charge_id="ch_old", intent_id="pi_old")
    report = _import(
        session, org, payout("po_1PlxGGGG", 45_000 - 1_335 - 2_000, ARRIVAL), [ch, ref]
    )
    charge, refund, _fees = _lines(session, report)
    # No intent of plixo's: the normal matcher reads the description.
    assert charge.suggestions[0]["allocations"][0]["invoice_id"] == inv.id
    assert refund.status == CashLineStatus.IGNORED and refund.amount_minor == -2_000
    assert any("Refund of" in e.message and "reopen" in e.message for e in report.errors)


def test_a_viewer_cannot_import_a_payout(session: Session, org: Organisation, f: Factory) -> None:
    viewer = f.user(Persona.VIEWER)
    session.commit()
    po = payout("po_1PlxHHHH", 1_000, ARRIVAL)
    data = stripe_payouts.payout_from_stripe(sdk_payout(po), [])
    with pytest.raises(PolicyRefused, match="apply_cash"):
        stripe_payouts.import_payouts(session, org.id, [data], actor=viewer, filename="x", now=NOW)
    session.rollback()
    assert _count(session, CashImport) == 0


# --- the bank line of the payout ----------------------------------------------------------------


def test_bank_line_naming_the_payout_is_cleared_and_reimport_applies_nothing(
    session: Session, org: Organisation, f: Factory
) -> None:
    inv = f.invoice(f.customer("Hooli Inc"), 120_000)
    link = _intent(session, inv)
    session.commit()
    _succeeded(session, link)
    ch = charge_txn(120_000, 3_510, PAID, intent_id=link.intent_id)
    radar = fee_txn(500, PAID)
    po = payout("po_1PlxJJJJ", 120_000 - 3_510 - 500, ARRIVAL)
    _import(session, org, po, [ch, radar])

    entry = Entry(ARRIVAL, "1159.90", "USD", "STRIPE PAYOUT po_1PlxJJJJ", "STRIPE", bank_ref="B1")
    stmt = _bank(session, org, entry)

    assert (stmt.cleared, stmt.exceptions, stmt.auto_applied) == (1, 0, 0)
    (line,) = _lines(session, stmt)
    assert line.status == CashLineStatus.IGNORED and line.decision["kind"] == "stripe_payout"  # type: ignore[index]
    reasons = line.suggestions[0]["reasons"]
    assert "names payout po_1PlxJJJJ" in reasons[0]
    assert any("Stripe fees $40.10" in r and "= $1,159.90" in r for r in reasons)
    assert _count(session, Payment) == 1 and service.waiting_lines(session, org.id) == []
    assert _audit(session, "cash.stripe_payout_matched") == 1

    again = _bank(session, org, entry)
    assert again.lines_new == 0 and again.cleared == 0 and _count(session, Payment) == 1


def test_export_books_stripe_fees_and_the_cleared_payout_line(
    session: Session, org: Organisation, f: Factory
) -> None:
    """The ledger of record gets the fees Stripe withheld and the bank line cleared against the
    payout, with the payout named; the charge the webhook posted is not booked again here."""
    inv = f.invoice(f.customer("Hooli Inc"), 120_000)
    link = _intent(session, inv)
    session.commit()
    _succeeded(session, link)
    ch = charge_txn(120_000, 3_510, PAID, intent_id=link.intent_id)
    po = payout("po_1PlxEXPT", 120_000 - 3_510 - 500, ARRIVAL)
    _import(session, org, po, [ch, fee_txn(500, PAID)])
    entry = Entry(ARRIVAL, "1159.90", "USD", "STRIPE PAYOUT po_1PlxEXPT", "STRIPE", bank_ref="B1")
    _bank(session, org, entry)

    controller = f.user(Persona.CONTROLLER)
    data = export.applied_cash(session, org.id, TODAY.strftime("%Y-%m"), actor=controller)
    rows = sorted(
        (r["kind"], r["amount_minor"], r["amount"], r["payout_id"], r["customer_name"])
        for r in data["rows"]
    )
    assert rows == [
        ("payout_cleared", 115_990, "1159.90", "po_1PlxEXPT", None),
        ("stripe_fee", 500, "5.00", "po_1PlxEXPT", None),  # Radar, a fee transaction of its own
        ("stripe_fee", 3_510, "35.10", "po_1PlxEXPT", None),  # withheld from the charge
    ]
    assert data["totals"] == {
        "USD": {
            "applied_minor": 0,
            "unapplied_minor": 0,
            "stripe_fees_minor": 4_010,
            "cleared_minor": 115_990,
        }
    }
    cleared = next(r for r in data["rows"] if r["kind"] == "payout_cleared")
    assert cleared["bank_ref"].startswith("B1") and cleared["statement"] == "STMT-1"
    text = export.to_csv(data)
    assert text.splitlines()[0].endswith(",payout_id")
    assert "payout_cleared" in text and ",po_1PlxEXPT" in text
    # another month exports none of it
    assert export.applied_cash(session, org.id, "2026-01", actor=controller)["rows"] == []


def test_statement_first_then_payout_clears_the_waiting_line(
    session: Session, org: Organisation, f: Factory
) -> None:
    inv = f.invoice(f.customer("Hooli Inc"), 20_000)
    session.commit()
    stmt = _bank(session, org, Entry(ARRIVAL, "194.00", "USD", "STRIPE TRANSFER", bank_ref="B2"))
    assert stmt.cleared == 0 and stmt.exceptions == 1
    assert any("looks like a Stripe payout" in e.message for e in stmt.errors)

    ch = charge_txn(20_000, 600, PAID, intent_id=None, description=f"{inv.number}")
    report = _import(session, org, payout("po_1PlxKKKK", 19_400, ARRIVAL), [ch])

    assert report.cleared == 1 and report.payouts[0]["bank_line_id"] == _lines(session, stmt)[0].id
    assert _lines(session, stmt)[0].status == CashLineStatus.IGNORED
    # The charge itself waits for a person (auto-apply is off); the bank line does not.
    assert [ln.reference for ln in service.waiting_lines(session, org.id)] == [inv.number]


def test_bank_line_of_another_amount_or_two_fitting_payouts_waits(
    session: Session, org: Organisation, f: Factory
) -> None:
    f.invoice(f.customer(), 10_000)
    session.commit()
    for po_id in ("po_1PlxLLL1", "po_1PlxLLL2"):
        _import(
            session,
            org,
            payout(po_id, 9_700, ARRIVAL),
            [charge_txn(10_000, 300, PAID, intent_id=None)],
        )
    stmt = _bank(
        session,
        org,
        Entry(ARRIVAL, "97.00", "USD", "STRIPE", bank_ref="C1"),
        Entry(ARRIVAL, "90.00", "USD", "STRIPE po_1PlxLLL1", bank_ref="C2"),
        msg="STMT-2",
    )
    assert stmt.cleared == 0
    msgs = " ".join(e.message for e in stmt.errors)
    assert "po_1PlxLLL1, po_1PlxLLL2 all fit" in msgs and "but is $90.00" in msgs


# --- the Dashboard export -----------------------------------------------------------------------


def test_itemized_csv_is_recognised_imported_once_and_errors_per_row(
    session: Session, org: Organisation, f: Factory
) -> None:
    inv = f.invoice(f.customer("Hooli Inc"), 120_000)
    link = _intent(session, inv)
    session.commit()
    _succeeded(session, link)
    ch = charge_txn(120_000, 3_510, PAID, intent_id=link.intent_id, metadata=_meta(org, inv))
    radar = fee_txn(500, PAID)
    bad = {**fee_txn(100, PAID), "currency": "zzz"}
    rows = [("po_1PlxMMMM", ARRIVAL, t) for t in (ch, radar, bad)]
    data = itemized_csv(rows)
    assert parsers.detect_kind(data) == parsers.STRIPE_PAYOUT

    report = intake.import_cash_file(
        session, org.id, data, filename="payouts.csv", actor="test", now=NOW
    )
    session.commit()

    assert report.kind == "stripe_payout" and report.lines_new == 3  # charge, Radar, fees
    assert any("Row 4" in e.message and "ZZZ" in e.message for e in report.errors)
    figures = report.payouts[0]  # type: ignore[attr-defined]
    assert (figures["amount_minor"], figures["fees_minor"], figures["complete"]) == (
        120_000 - 3_510 - 500,
        4_010,
        False,
    )
    assert figures["charges_linked"] == 1 and _count(session, Payment) == 1
    # An incomplete payout does not clear a bank line: a person looks first.
    stmt = _bank(
        session, org, Entry(ARRIVAL, "1159.90", "USD", "STRIPE po_1PlxMMMM", bank_ref="D1")
    )
    assert stmt.cleared == 0 and any(
        "not every balance transaction" in e.message for e in stmt.errors
    )

    again = intake.import_cash_file(
        session, org.id, data, filename="payouts.csv", actor="test", now=NOW
    )
    assert again.lines_new == 0 and len(again.duplicates) == 2 and again.auto_applied == 0


def test_csv_without_the_required_columns_is_refused_whole(
    session: Session, org: Organisation
) -> None:
    data = b"automatic_payout_id,balance_transaction_id,gross\npo_1PlxNNNN,txn_1,1.00\n"
    with pytest.raises(PayoutError, match="currency, fee, net"):
        intake.import_cash_file(session, org.id, data, filename="p.csv", actor="test", now=NOW)


# --- the organisation's Stripe account through the SDK (loopback) -------------------------------


def _settings(url: str | None, key: str | None = "sk_test_plixo_payouts") -> Settings:
    return Settings(stripe_api_key=key, stripe_api_base=url)


def test_fetch_pages_through_every_transaction_with_the_connected_account(
    session: Session, org: Organisation, f: Factory
) -> None:
    org.stripe_account = "acct_1PlxConnected"
    inv = f.invoice(f.customer("Hooli Inc"), 120_000)
    session.commit()
    txns = [charge_txn(10_000, 300, PAID, intent_id=None) for _ in range(4)] + [fee_txn(100, PAID)]
    po = payout("po_1PlxPPPP", 4 * 9_700 - 100, ARRIVAL)
    with run_payout_api() as api:
        api.add(po, txns)
        report = stripe_payouts.import_from_stripe(
            session, org.id, po["id"], settings=_settings(api.url), actor="test", now=NOW
        )
        session.commit()
        pages = [r for r in api.requests if r["path"] == "/v1/balance_transactions"]
    assert len(pages) == 3  # 6 transactions, 2 a page: auto-pagination
    assert all(r["account"] == "acct_1PlxConnected" for r in api.requests)
    assert all(r["query"]["payout"] == [po["id"]] for r in pages)
    assert all(r["query"]["expand[0]"] == ["data.source"] for r in pages)
    assert [r["query"].get("starting_after") for r in pages] == [
        None,
        [txns[1]["id"]],
        [txns[3]["id"]],
    ]
    assert report.lines_new == 6 and report.payouts[0]["complete"]  # 4 charges, Radar, fees
    assert inv.balance_minor == 120_000


def test_fetch_errors_say_what_to_do(session: Session, org: Organisation) -> None:
    with pytest.raises(StripeNotConfigured, match="PLIXO_STRIPE_API_KEY"):
        stripe_payouts.import_from_stripe(
            session, org.id, "po_1PlxQQQQ", settings=_settings(None, None), actor="test"
        )
    with run_payout_api() as api:
        api.add(
            payout(
                "po_1PlxManual",
                500,
                ARRIVAL,
                automatic=False,
                reconciliation_status="not_applicable",
            ),
            [],
        )
        api.add(payout("po_1PlxBusy", 500, ARRIVAL, reconciliation_status="in_progress"), [])
        settings = _settings(api.url)
        with pytest.raises(PayoutNotFound, match="no payout po_1PlxMissing"):
            stripe_payouts.import_from_stripe(
                session, org.id, "po_1PlxMissing", settings=settings, actor="test"
            )
        with pytest.raises(PayoutError, match="manual payout"):
            stripe_payouts.import_from_stripe(
                session, org.id, "po_1PlxManual", settings=settings, actor="test"
            )
        with pytest.raises(PayoutError, match="still reconciling"):
            stripe_payouts.import_from_stripe(
                session, org.id, "po_1PlxBusy", settings=settings, actor="test"
            )
        with pytest.raises(PayoutError, match="not a Stripe payout id"):
            stripe_payouts.import_from_stripe(
                session, org.id, "../v1/customers", settings=settings, actor="test"
            )
    assert _count(session, CashImport) == 0
