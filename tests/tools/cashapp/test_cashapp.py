"""Cash App Assist over a real ledger: import, matching, auto-apply, apply/split/park/undo, export.

Every file is written as a bank writes it (tests/tools/cashapp_files.py) and read through the real
parsers; payments go through tools/payments/posting.py; decisions come from the real policy engine.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import (
    AuditEvent,
    CashLine,
    CashLineStatus,
    InstallmentStatus,
    InvoiceStatus,
    Organisation,
    Payment,
    PaymentPlan,
    Persona,
    PlanInstallment,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
    plan_invoice,
)
from tests.tools.cashapp_files import Entry, bai2, camt053, mt940, pdf
from tests.tools.commit_factories import NOW, TODAY, Factory
from tools.cashapp import applying, export, intake, parsers, service
from tools.cashapp.parsers import CashFileError
from tools.cashapp.schemas import Allocation, Suggestion
from tools.commitments.plans import PolicyRefused
from tools.commitments.promises import CommitmentError, Conflict
from tools.ledger import policy_overrides as policy_admin

BOOKED = TODAY - timedelta(days=1)
IBAN = "DE44500105175407324931"


@pytest.fixture
def f(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


def _money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def _import(
    session: Session, org: Organisation, data: bytes, actor: object = "test"
) -> service.ImportReport:
    report = intake.import_cash_file(
        session,
        org.id,
        data,
        filename="stmt.xml",
        actor=actor,
        now=NOW,  # type: ignore[arg-type]
    )
    session.commit()
    return report


def _line(session: Session, report: service.ImportReport, line_no: int) -> CashLine:
    return session.scalars(
        select(CashLine).where(CashLine.import_id == report.import_id, CashLine.line_no == line_no)
    ).one()


def _best(line: CashLine) -> Suggestion:
    return Suggestion.from_dict(line.suggestions[0])


def _payments(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Payment)) or 0)


def _auto_on(session: Session, org: Organisation, **extra: object) -> None:
    admin = Factory(session, org).user(Persona.CONTROLLER)
    policy_admin.update_policy(
        session,
        org.id,
        admin,
        {"cash_app": {"auto_apply": True, "max_auto_apply_minor": {"USD": 10_000_000}, **extra}},
    )
    session.commit()


# --- parsers ------------------------------------------------------------------------------------


def test_every_format_reads_credits_and_refuses_three_decimals_per_line() -> None:
    entries = [
        Entry(BOOKED, "1234.50", "USD", "INV-00042", "Acme Inc", IBAN, "R1"),
        Entry(BOOKED, "10.005", "USD", "fee", bank_ref="R2"),
        Entry(BOOKED, "99.00", "USD", "rent", bank_ref="R3", credit=False),
    ]
    for writer in (camt053, mt940):
        parsed = parsers.parse(writer(entries))
        assert [ln.amount_minor for ln in parsed.lines] == [123450]
        assert "INV-00042" in parsed.lines[0].reference
        assert parsed.skipped_debits == 1
        assert (
            len(parsed.errors) == 1 and "more than 2 decimals for USD" in parsed.errors[0].message
        )
    parsed = parsers.parse(bai2([entries[0], entries[2]]))
    assert parsed.kind == "bai2" and [ln.amount_minor for ln in parsed.lines] == [123450]
    camt = parsers.parse(camt053(entries))
    assert camt.lines[0].payer_iban == IBAN and camt.lines[0].payer_name == "Acme Inc"


def test_csv_needs_a_declared_mapping_and_reports_bad_rows() -> None:
    good = (
        b"date,amount,currency,payer,iban,reference,bank_ref\n"
        b"2026-03-09,120.00,USD,Acme,,INV-1,B1\n"
        b"2026-03-09,1.001,USD,Acme,,INV-1,B2\n"
        b"2026-03-09,5.00,XXQ,Acme,,INV-1,B3\n"
        b"2026-03-09,,USD,Acme,,INV-1,B4\n"
    )
    parsed = parsers.parse(good)
    assert [ln.amount_minor for ln in parsed.lines] == [12000]
    messages = [e.message for e in parsed.errors]
    assert [e.line_no for e in parsed.errors] == [3, 4, 5]
    assert "more than 2 decimals" in messages[0] and "unknown currency" in messages[1]
    assert "amount is empty" in messages[2]
    with pytest.raises(CashFileError, match="No declared remittance mapping"):
        parsers.parse(b"when,how much,who\n2026-03-09,1.00,x\n")


def test_wrong_formats_are_refused_as_a_whole() -> None:
    with pytest.raises(CashFileError, match="not a CAMT.053"):
        parsers.parse(b"<?xml version='1.0'?><Invoice><Id>1</Id></Invoice>")
    with pytest.raises(CashFileError, match="not UTF-8"):
        parsers.parse(b"\xff\xfe\x00\x01garbage\x00")
    with pytest.raises(CashFileError, match="cannot be read"):
        parsers.parse(b"<Document><BkToCstmrStmt><Stmt><Ntry>", kind="camt053")


def test_remittance_email_and_pdf_text() -> None:
    body = (
        b"Hello,\nPayer: Acme Inc\nPayment date: 2026-03-09\nTotal: USD 1,200.00\n"
        b"Invoices: INV-00042 800.00, INV-00043 400.00\n"
    )
    parsed = parsers.parse(body)
    assert parsed.kind == "email"
    assert parsed.lines[0].amount_minor == 120000 and parsed.lines[0].payer_name == "Acme Inc"
    missing = parsers.parse(b"Hello, we paid you last week.\n")
    assert missing.lines == [] and "no 'Total: USD 1234.56' line" in missing.errors[0].message
    assert "no 'Payment date: YYYY-MM-DD' line" in missing.errors[0].message


# --- import and idempotency --------------------------------------------------------------------


def test_reimporting_the_same_statement_applies_nothing(
    session: Session, org: Organisation, f: Factory
) -> None:
    _auto_on(session, org)
    cust = f.customer("Acme Inc")
    inv = f.invoice(cust, 150_000)
    data = camt053([Entry(BOOKED, "1500.00", "USD", f"Payment {inv.number}", "Acme Inc")])
    first = _import(session, org, data)
    assert first.lines_new == 1 and first.auto_applied == 1
    session.refresh(inv)
    assert inv.status == InvoiceStatus.PAID and _payments(session) == 1
    again = _import(session, org, data)
    assert again.lines_new == 0 and again.auto_applied == 0
    assert len(again.duplicates) == 1 and "already imported" in again.duplicates[0].message
    assert again.notice and "already imported" in again.notice
    assert _payments(session) == 1
    # the same statement re-sent as a new file (another message id, same bank refs): skipped too
    resent = camt053(
        [Entry(BOOKED, "1500.00", "USD", f"Payment {inv.number}", "Acme Inc", bank_ref="STMT-1-1")],
        msg_id="STMT-1-RESENT",
    )
    assert _import(session, org, resent).lines_new == 0 and _payments(session) == 1


def test_auto_apply_is_off_by_default_every_line_waits(
    session: Session, org: Organisation, f: Factory
) -> None:
    cust = f.customer("Acme Inc")
    inv = f.invoice(cust, 150_000)
    report = _import(
        session, org, camt053([Entry(BOOKED, "1500.00", "USD", inv.number, "Acme Inc")])
    )
    assert report.auto_applied == 0 and report.exceptions == 1 and _payments(session) == 0
    line = _line(session, report, 1)
    assert line.status == CashLineStatus.EXCEPTION
    assert "cash.auto_apply_off" in [r["rule_id"] for r in line.decision["reasons"]]
    assert _best(line).allocations == [Allocation(inv.id, 150_000)]


def test_currency_with_no_open_invoice_is_a_line_error_and_waits(
    session: Session, org: Organisation, f: Factory
) -> None:
    _auto_on(session, org)
    cust = f.customer("Acme Inc")
    f.invoice(cust, 150_000)
    report = _import(session, org, camt053([Entry(BOOKED, "1500.00", "CHF", "INV", "Acme Inc")]))
    assert report.auto_applied == 0 and _payments(session) == 0
    assert "no open invoice is in CHF" in report.errors[0].message


# --- matching ---------------------------------------------------------------------------------


def test_references_with_typos_missing_zeros_and_prefixes(
    session: Session, org: Organisation, f: Factory
) -> None:
    cust = f.customer("Globex Corporation")
    inv = f.invoice(cust, 98_765)
    inv.number = "INV-0104217"
    f.invoice(cust, 12_345).number = "INV-0104218"  # a neighbour the typo must not pick
    session.commit()
    digits = inv.number.split("-")[1]
    typo = digits[:-2] + digits[-1] + digits[-2]  # last two digits swapped
    entries = [
        Entry(BOOKED, _money(98_765), "USD", f"RE {digits.lstrip('0')}", bank_ref="A"),
        Entry(BOOKED, _money(98_765), "USD", f"invoice {typo}", "Globex Corp", bank_ref="B"),
        Entry(BOOKED, _money(98_765), "USD", "", "GLOBEX CORPORATION", bank_ref="C"),
    ]
    report = _import(session, org, camt053(entries))
    for no in (1, 2, 3):
        best = _best(_line(session, report, no))
        assert best.allocations == [Allocation(inv.id, 98_765)], no
        assert best.kind == "exact"
    assert any("prefix/zeros" in r for r in _best(_line(session, report, 1)).reasons)
    assert any("one typo" in r for r in _best(_line(session, report, 2)).reasons)
    assert any("payer name matches" in r for r in _best(_line(session, report, 3)).reasons)


def test_one_to_many_short_pay_and_over_payment_are_explained(
    session: Session, org: Organisation, f: Factory
) -> None:
    cust = f.customer("Initech LLC")
    a, b = f.invoice(cust, 40_000), f.invoice(cust, 60_000)
    c = f.invoice(cust, 200_000)
    d = f.invoice(cust, 50_000)
    entries = [
        Entry(BOOKED, "1000.00", "USD", f"{a.number} {b.number}", bank_ref="A"),
        Entry(BOOKED, "1960.00", "USD", c.number, bank_ref="B"),  # 2 % discount taken
        Entry(BOOKED, "1985.00", "USD", c.number, bank_ref="C"),  # 15.00 fee
        Entry(BOOKED, "600.00", "USD", d.number, bank_ref="D"),  # 100.00 over
    ]
    report = _import(session, org, camt053(entries))
    bundle = _best(_line(session, report, 1))
    assert bundle.kind == "one_to_many"
    assert {x.invoice_id for x in bundle.allocations} == {a.id, b.id}
    disc = _best(_line(session, report, 2))
    assert disc.kind == "short_pay" and disc.difference_kind == "discount"
    assert disc.allocations == [Allocation(c.id, 196_000, "discount", 4_000)]
    fee = _best(_line(session, report, 3))
    assert fee.difference_kind == "bank_fee" and "bank fee" in " ".join(fee.reasons)
    over = _best(_line(session, report, 4))
    assert over.kind == "over_payment" and over.allocations[-1] == Allocation(None, 10_000)


def test_an_iban_known_for_another_customer_sinks_the_match(
    session: Session, org: Organisation, f: Factory
) -> None:
    _auto_on(session, org)
    mine, other = f.customer("Umbrella plc"), f.customer("Wayne Enterprises")
    inv = f.invoice(mine, 70_000)
    clerk = f.user(Persona.COLLECTOR)
    # a Collector confirms a line from Wayne's IBAN: plixo learns it
    first = _import(
        session, org, camt053([Entry(BOOKED, "1.00", "USD", "", "Wayne", IBAN, bank_ref="W")])
    )
    applying.apply_line(
        session,
        org.id,
        _line(session, first, 1).id,
        actor=clerk,
        suggestion=Suggestion(other.id, "on_account", 30, ["confirmed"], [Allocation(None, 100)]),
        now=NOW,
    )
    session.commit()
    report = _import(
        session,
        org,
        camt053([Entry(BOOKED, "700.00", "USD", inv.number, "Wayne", IBAN, bank_ref="X")]),
    )
    assert report.auto_applied == 0
    best = _best(_line(session, report, 1))
    assert best.score < 60 and "payer IBAN belongs to another customer" in best.reasons


# --- applying by people -------------------------------------------------------------------------


def test_collector_accepts_one_to_many_promise_kept_plan_advanced_audited(
    session: Session, org: Organisation, f: Factory
) -> None:
    cust = f.customer("Acme Inc")
    a, b = f.invoice(cust, 40_000), f.invoice(cust, 60_000)
    promise = PromiseToPay(
        org_id=org.id,
        customer_id=cust.id,
        amount_minor=100_000,
        currency="USD",
        promised_date=TODAY,
        invoices=[a, b],
    )
    plan = PaymentPlan(
        org_id=org.id,
        customer_id=cust.id,
        total_minor=60_000,
        currency="USD",
        status=PlanStatus.ACTIVE,
        invoices=[b],
    )
    plan.installments = [PlanInstallment(seq=1, due_date=TODAY, amount_minor=60_000)]
    session.add_all([promise, plan])
    session.commit()
    report = _import(
        session, org, camt053([Entry(BOOKED, "1000.00", "USD", f"{a.number}/{b.number}")])
    )
    line = _line(session, report, 1)
    clerk = f.user(Persona.COLLECTOR)
    applying.apply_line(session, org.id, line.id, actor=clerk, suggestion=_best(line), now=NOW)
    session.commit()
    for inv in (a, b, promise, plan):
        session.refresh(inv)
    assert a.status == b.status == InvoiceStatus.PAID and _payments(session) == 2
    assert promise.status == PromiseStatus.KEPT
    assert plan.installments[0].status == InstallmentStatus.PAID
    assert plan.status == PlanStatus.COMPLETED
    actions = set(session.scalars(select(AuditEvent.action)))
    assert {"cash.applied", "payment.posted", "promise.kept"} <= actions
    with pytest.raises(Conflict, match="already applied"):
        applying.apply_line(session, org.id, line.id, actor=clerk, suggestion=_best(line), now=NOW)
    # undo puts everything back, the promise and the plan included
    applying.undo_line(session, org.id, line.id, actor=clerk, now=NOW)
    session.commit()
    for inv in (a, b, promise, plan):
        session.refresh(inv)
    assert (a.balance_minor, b.balance_minor) == (40_000, 60_000) and a.status == InvoiceStatus.OPEN
    assert promise.status == PromiseStatus.OPEN and plan.status == PlanStatus.ACTIVE
    assert plan.installments[0].paid_minor == 0 and _payments(session) == 0
    assert session.scalar(select(plan_invoice.c.plan_id)) == plan.id


def test_split_short_pay_with_discount_then_close_the_period(
    session: Session, org: Organisation, f: Factory
) -> None:
    cust = f.customer("Initech LLC")
    inv = f.invoice(cust, 200_000)
    report = _import(session, org, camt053([Entry(BOOKED, "1960.00", "USD", inv.number)]))
    line = _line(session, report, 1)
    clerk = f.user(Persona.COLLECTOR)
    split = Suggestion(
        cust.id, "short_pay", 80, ["split"], [Allocation(inv.id, 196_000, "discount", 4_000)]
    )
    applying.apply_line(session, org.id, line.id, actor=clerk, suggestion=split, now=NOW)
    session.commit()
    session.refresh(inv)
    assert inv.balance_minor == 0 and inv.status == InvoiceStatus.PAID
    assert session.scalar(
        select(func.count()).where(AuditEvent.action == "cash.discount_written_off")
    )
    controller = f.user(Persona.CONTROLLER)
    data = export.applied_cash(session, org.id, BOOKED.strftime("%Y-%m"), actor=controller)
    row = data["rows"][0]
    assert (row["invoice_number"], row["amount"], row["adjustment_kind"], row["adjustment"]) == (
        inv.number,
        "1960.00",
        "discount",
        "40.00",
    )
    assert data["totals"] == {
        "USD": {
            "applied_minor": 196_000,
            "unapplied_minor": 0,
            "stripe_fees_minor": 0,
            "cleared_minor": 0,
        }
    }
    assert export.to_csv(data).splitlines()[0] == ",".join(export.COLUMNS)
    with pytest.raises(PolicyRefused, match="close_cash_period"):
        applying.close_period(session, org.id, BOOKED.strftime("%Y-%m"), actor=clerk)
    applying.close_period(session, org.id, BOOKED.strftime("%Y-%m"), actor=controller, now=NOW)
    session.commit()
    with pytest.raises(Conflict, match="closed"):
        applying.undo_line(session, org.id, line.id, actor=clerk, now=NOW)


def test_a_discount_beyond_the_guardrails_writes_nothing(
    session: Session, org: Organisation, f: Factory
) -> None:
    cust = f.customer("Initech LLC")
    inv = f.invoice(cust, 200_000)
    report = _import(session, org, camt053([Entry(BOOKED, "1500.00", "USD", inv.number)]))
    line = _line(session, report, 1)
    split = Suggestion(
        cust.id, "short_pay", 80, [], [Allocation(inv.id, 150_000, "discount", 50_000)]
    )
    with pytest.raises(PolicyRefused, match="discount"):
        applying.apply_line(
            session, org.id, line.id, actor=f.user(Persona.COLLECTOR), suggestion=split, now=NOW
        )
    session.rollback()
    session.refresh(inv)
    assert inv.balance_minor == 200_000 and _payments(session) == 0
    assert _line(session, report, 1).status == CashLineStatus.EXCEPTION


def test_bad_allocations_and_roles_are_refused_before_anything_is_written(
    session: Session, org: Organisation, f: Factory
) -> None:
    cust, other = f.customer("Acme Inc"), f.customer("Other Inc")
    inv, theirs = f.invoice(cust, 100_000), f.invoice(other, 100_000)
    eur = f.invoice(cust, 100_000, currency="EUR")
    report = _import(session, org, camt53 := camt053([Entry(BOOKED, "1000.00", "USD", "?")]))
    assert camt53
    line_id = _line(session, report, 1).id
    clerk = f.user(Persona.COLLECTOR)
    cases = [
        (Suggestion(cust.id, "exact", 0, [], [Allocation(inv.id, 90_000)]), "add up to"),
        (Suggestion(cust.id, "exact", 0, [], [Allocation(theirs.id, 100_000)]), "another customer"),
        (Suggestion(cust.id, "exact", 0, [], [Allocation(eur.id, 100_000)]), "in EUR"),
    ]
    for suggestion, message in cases:
        with pytest.raises(CommitmentError, match=message):
            applying.apply_line(
                session, org.id, line_id, actor=clerk, suggestion=suggestion, now=NOW
            )
    with pytest.raises(PolicyRefused, match="apply_cash"):
        applying.apply_line(
            session,
            org.id,
            line_id,
            actor=f.user(Persona.SALES),
            suggestion=Suggestion(cust.id, "exact", 0, [], [Allocation(inv.id, 100_000)]),
            now=NOW,
        )
    assert _payments(session) == 0


def test_park_unknown_line_then_export_shows_unapplied_cash(
    session: Session, org: Organisation, f: Factory
) -> None:
    report = _import(session, org, camt053([Entry(BOOKED, "321.00", "USD", "no idea", "Stranger")]))
    line = _line(session, report, 1)
    assert line.suggestions == [] and line.best_score == 0
    clerk = f.user(Persona.COLLECTOR)
    with pytest.raises(CommitmentError, match="why"):
        applying.park_line(session, org.id, line.id, actor=clerk, note=" ")
    applying.park_line(session, org.id, line.id, actor=clerk, note="unknown payer", now=NOW)
    session.commit()
    with pytest.raises(PolicyRefused, match="export"):
        export.applied_cash(session, org.id, BOOKED.strftime("%Y-%m"), actor=clerk)
    controller = f.user(Persona.CONTROLLER)
    rows = export.applied_cash(session, org.id, BOOKED.strftime("%Y-%m"), actor=controller)["rows"]
    assert [(r["kind"], r["amount_minor"]) for r in rows] == [("unapplied", 32_100)]
    applying.undo_line(session, org.id, line.id, actor=clerk, now=NOW)
    assert line.status == CashLineStatus.EXCEPTION


def test_auto_apply_respects_confidence_and_kind(
    session: Session, org: Organisation, f: Factory
) -> None:
    _auto_on(session, org)
    cust = f.customer("Acme Inc")
    exact, short = f.invoice(cust, 100_000), f.invoice(cust, 200_000)
    typo_only = f.invoice(f.customer("Hooli"), 55_500)
    digits = typo_only.number.split("-")[1]
    entries = [
        Entry(BOOKED, "1000.00", "USD", exact.number, bank_ref="1"),
        Entry(BOOKED, "1960.00", "USD", short.number, bank_ref="2"),
        Entry(BOOKED, "555.00", "USD", digits[:-1] + "9", bank_ref="3"),
    ]
    report = _import(session, org, camt053(entries))
    assert report.auto_applied == 1
    assert _line(session, report, 1).status == CashLineStatus.APPLIED
    assert _line(session, report, 2).status == CashLineStatus.EXCEPTION
    assert "cash.kind_needs_review" in str(_line(session, report, 2).decision)
    assert _line(session, report, 3).status == CashLineStatus.EXCEPTION
    session.refresh(short)
    assert short.balance_minor == 200_000


def _write_offs(session: Session) -> list[AuditEvent]:
    return list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action.like("cash.%_written_off"))
            .order_by(AuditEvent.id)
        )
    )


def test_short_pays_wait_while_the_write_off_rule_is_off(
    session: Session, org: Organisation, f: Factory
) -> None:
    _auto_on(session, org, auto_apply_kinds=["exact", "short_pay"], min_confidence=90)
    cust = f.customer("Acme Inc")
    inv = f.invoice(cust, 100_000)
    report = _import(
        session, org, camt053([Entry(BOOKED, "980.00", "USD", inv.number, "Acme Inc")])
    )
    line = _line(session, report, 1)
    assert _best(line).allocations == [Allocation(inv.id, 98_000, "discount", 2_000)]
    assert report.auto_applied == 0 and line.status == CashLineStatus.EXCEPTION
    assert "cash.auto_write_off_off" in [r["rule_id"] for r in line.decision["reasons"]]
    assert _payments(session) == 0 and _write_offs(session) == []


def test_the_write_off_rule_applies_explained_short_pays_audited_by_the_rule(
    session: Session, org: Organisation, f: Factory
) -> None:
    """A 2 % discount taken and a $12.50 bank fee, within the seed caps ($25.00, 2 %): applied
    with no person, the difference written off, the audit naming the Controller's rule."""
    _auto_on(session, org, auto_write_off=True)
    cust = f.customer("Acme Inc")
    disc, fee = f.invoice(cust, 100_000), f.invoice(cust, 150_000)
    entries = [
        Entry(BOOKED, "980.00", "USD", disc.number, "Acme Inc", bank_ref="1"),
        Entry(BOOKED, "1487.50", "USD", fee.number, "Acme Inc", bank_ref="2"),
    ]
    report = _import(session, org, camt053(entries))
    assert report.auto_applied == 2 and report.exceptions == 0
    for no, inv in ((1, disc), (2, fee)):
        line = _line(session, report, no)
        assert line.status == CashLineStatus.APPLIED
        assert line.applied_by == applying.AUTO_ACTOR
        assert [r["rule_id"] for r in line.decision["reasons"]] == ["cash.short_pay_write_off"]
        session.refresh(inv)
        assert inv.balance_minor == 0 and inv.status == InvoiceStatus.PAID
    rows = _write_offs(session)
    assert [(r.action, r.subject_id, r.detail["amount_minor"]) for r in rows] == [
        ("cash.discount_written_off", disc.id, 2_000),
        ("cash.bank_fee_written_off", fee.id, 1_250),
    ]
    for row in rows:
        assert row.actor_user_id is None
        assert row.actor == f"{applying.AUTO_ACTOR} under rule cash.short_pay_write_off"
        assert row.detail["approved_by_rule"] == "cash.short_pay_write_off"
        assert row.detail["decision"]["outcome"] == "allow"
    clerk = f.user(Persona.COLLECTOR)  # undo puts the written-off difference back too
    applying.undo_line(session, org.id, _line(session, report, 1).id, actor=clerk, now=NOW)
    session.refresh(disc)
    assert disc.balance_minor == 100_000 and disc.status == InvoiceStatus.OPEN


def test_the_write_off_rule_leaves_what_it_does_not_cover_to_people(
    session: Session, org: Organisation, f: Factory
) -> None:
    """Over the cap, in a currency without one, a partial payment, an unrelated line: waiting."""
    _auto_on(session, org, auto_write_off=True, max_auto_apply_minor={"EUR": 10_000_000})
    cust = f.customer("Acme Inc")
    big = f.invoice(cust, 200_000)  # 2 % is $40.00: above the $25.00 cap
    eur = f.invoice(cust, 100_000, currency="EUR")
    half = f.invoice(cust, 80_000)
    entries = [
        Entry(BOOKED, "1960.00", "USD", big.number, "Acme Inc", bank_ref="1"),
        Entry(BOOKED, "980.00", "EUR", eur.number, "Acme Inc", bank_ref="2"),
        Entry(BOOKED, "400.00", "USD", half.number, "Acme Inc", bank_ref="3"),
        Entry(BOOKED, "12.34", "USD", "Interest credit", "Own account", bank_ref="4"),
    ]
    report = _import(session, org, camt053(entries))
    assert report.auto_applied == 0 and report.exceptions == 4
    rules = {no: str(_line(session, report, no).decision) for no in (1, 2, 3)}
    assert "cash.write_off_needs_review" in rules[1] and "cash.write_off_needs_review" in rules[2]
    assert _best(_line(session, report, 2)).difference_kind == "discount"
    assert "cash.kind_needs_review" in rules[3] and "write_off" not in rules[3]
    assert _line(session, report, 4).suggestions == []
    assert _payments(session) == 0 and _write_offs(session) == []
    for inv in (big, eur, half):
        session.refresh(inv)
        assert inv.balance_minor == inv.amount_minor


def test_the_over_payment_rule_keeps_a_small_surplus_on_account(
    session: Session, org: Organisation, f: Factory
) -> None:
    """$20.00 over a $1,000.00 invoice (2 %, the seed cap $25.00): applied alone, the invoice
    paid and the surplus a payment on account; $40.00 over $1,000.00 waits."""
    _auto_on(session, org, auto_over_payment=True)
    cust = f.customer("Acme Inc")
    small, big = f.invoice(cust, 100_000), f.invoice(cust, 100_000)
    entries = [
        Entry(BOOKED, "1020.00", "USD", small.number, "Acme Inc", bank_ref="1"),
        Entry(BOOKED, "1040.00", "USD", big.number, "Acme Inc", bank_ref="2"),
    ]
    report = _import(session, org, camt053(entries))
    assert report.auto_applied == 1 and report.exceptions == 1
    applied, waiting = _line(session, report, 1), _line(session, report, 2)
    assert applied.status == CashLineStatus.APPLIED
    assert [r["rule_id"] for r in applied.decision["reasons"]] == ["cash.over_payment_on_account"]
    session.refresh(small)
    assert small.balance_minor == 0 and small.status == InvoiceStatus.PAID
    on_account = session.scalars(select(Payment).where(Payment.invoice_id.is_(None))).all()
    assert [(p.amount_minor, p.customer_id) for p in on_account] == [(2_000, cust.id)]
    assert waiting.status == CashLineStatus.EXCEPTION
    assert "cash.over_payment_needs_review" in str(waiting.decision)
    assert _write_offs(session) == []


def test_plixo_alone_never_writes_off_without_the_rule(
    session: Session, org: Organisation, f: Factory
) -> None:
    """Posting as auto-apply with a decision in which the rule did not fire refuses the write-off
    (where the write happens), whatever the importer was told."""
    cust = f.customer("Acme Inc")
    inv = f.invoice(cust, 100_000)
    report = _import(
        session, org, camt053([Entry(BOOKED, "980.00", "USD", inv.number, "Acme Inc")])
    )
    line = _line(session, report, 1)
    forged = {"outcome": "allow", "reasons": [{"rule_id": "cash.auto_apply"}]}
    with pytest.raises(PolicyRefused, match="write-off rule"):
        applying.apply_line(
            session, org.id, line.id, actor=applying.AUTO_ACTOR, suggestion=_best(line),
            now=NOW, auto_decision=forged,
        )  # fmt: skip
    session.refresh(inv)
    assert inv.balance_minor == 100_000 and _payments(session) == 0


def test_remittance_advice_pdf_is_read_with_pdfplumber() -> None:
    advice = pdf(
        [
            "REMITTANCE ADVICE",
            "Payer: Initech LLC",
            "Payment date: 2026-03-09",
            "Total: USD 2,450.10",
            "INV-0104217 1,450.10",
            "INV-0104218 1,000.00",
        ]
    )
    parsed = parsers.parse(advice)
    assert parsed.kind == "pdf" and parsed.errors == []
    line = parsed.lines[0]
    assert (line.amount_minor, line.currency, line.payer_name) == (245_010, "USD", "Initech LLC")
    assert "INV-0104217" in line.reference and "INV-0104218" in line.reference
    with pytest.raises(CashFileError, match="PDF cannot be read"):
        parsers.parse(b"%PDF-1.4\nnot really a pdf")
