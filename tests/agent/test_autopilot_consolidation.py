"""Consolidated outreach in Autopilot: one statement-style draft per customer and contact per pass,
its totals per currency grounded, each invoice's step covered once (also on the days after), and
the e-mail delivered through a real SMTP server (aiosmtpd) with the PDF statement attached, whose
figures are the ledger's."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import timedelta
from email.message import Message
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent.autopilot import run_autopilot
from agent.service import revise_draft
from memory import durable
from memory.config import Settings
from memory.models import (
    CadenceStepMode,
    Draft,
    DraftStatus,
    Invoice,
    Persona,
    PolicySetVersion,
)
from tests.agent.factories import AS_OF, NOW, Builder
from tests.agent.models_for_tests import tampering
from tests.api.smtp_server import SmtpSink, start_smtp
from tests.tools.outreach.test_consolidation import _book
from tools.delivery import flow as delivery_flow
from tools.delivery import outbox
from tools.drafts import service as drafts
from tools.kit.formatting import format_amount
from tools.ledger.statement import unavailable
from tools.outreach.consolidation import group_due, payer_lines
from tools.outreach.due import select_due

EUR_TOTAL = 400_000 + 150_000 + 75_050
USD_TOTAL = 990_000 + 12_345 + 500_000


def _plain(text: str) -> str:
    return text.replace("\xa0", " ").replace("\u202f", " ")


def _run(sessions: sessionmaker[Session], org_id: int, settings: Settings, days: int = 0) -> object:
    return run_autopilot(
        sessions, org_id, as_of=AS_OF + timedelta(days=days), shadow=True, settings=settings,
        now=NOW + timedelta(days=days),
    )  # fmt: skip


def _group_draft(session: Session, org_id: int, customer_id: int) -> Draft:
    [draft] = session.scalars(
        select(Draft).where(Draft.org_id == org_id, Draft.customer_id == customer_id)
    ).all()
    return draft


def test_one_draft_per_customer_with_totals_per_currency_and_no_second_chase(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    b, customer_id, ids = _book(session)
    [group], _ = group_due(session, b.org.id, select_due(session, b.org.id, AS_OF).items, AS_OF)
    summary = _run(sessions, b.org.id, settings)
    assert summary.drafted == 2 and summary.errors == 0  # type: ignore[attr-defined]
    assert summary.grounding_mismatches == 0  # type: ignore[attr-defined]
    draft = _group_draft(session, b.org.id, customer_id)
    assert draft.run_key and draft.run_key.startswith(f"group:{customer_id}:")
    assert draft.status is DraftStatus.PENDING_REVIEW and draft.grounding["ok"] is True
    # C-101 reached its final notice: the message speaks as one, about C-101 only
    assert draft.stated_facts["template"] == "final_notice_statement"
    assert draft.stated_facts["final_notice_invoices"] == ["C-101"]
    assert draft.tone == "firm" and draft.subject.startswith("Final notice: ")
    body = _plain(draft.body)
    numbers = ["C-101", "C-102", "C-103", "C-201", "C-202", "C-203"]
    for number in numbers:
        assert number in body
    assert "C-204" not in body  # in dispute: the dispute workflow owns it
    assert "This is our final reminder about invoice C-101, which remains unpaid" in body
    assert "Without a payment or a reply, we will need to review the terms" in body
    # the listing is the group's, under its aging-bucket headings with subtotals and totals
    assert _plain("\n".join(payer_lines(group))) in body
    assert f"Subtotal EUR: {_plain(format_amount(150_000 + 75_050, 'EUR'))}" in body
    assert f"Total EUR: {_plain(format_amount(EUR_TOTAL, 'EUR'))}" in body
    assert f"Total USD: {_plain(format_amount(USD_TOTAL, 'USD'))}" in body
    # oldest bucket first, the one coming due closes the listing
    marks = [
        "Overdue 31-60 days:", "- Invoice C-101", "Overdue 1-30 days:", "- Invoice C-201",
        "Coming due:", "- Invoice C-203",
    ]  # fmt: skip
    assert [body.index(m) for m in marks] == sorted(body.index(m) for m in marks)
    # what the reviewer should know is stored with the draft, in words, and never in the text
    assert draft.stated_facts["reviewer_notes"] == group.reviewer_notes()
    assert draft.stated_facts["reviewer_notes"][0] == (
        "C-204 is left out: in dispute (pricing, open)."
    )
    assert "dispute" not in body.lower() and "left out" not in body
    assert len(set(re.findall(r"https?://\S+", body))) == 1  # one pay link for all of them
    assert draft.invoice_id == ids["EUR-60"] and draft.cadence_step_id is not None
    # Fabrikam's single due invoice keeps its own message.
    fab = session.scalars(select(Draft).where(Draft.invoice_id == ids["fabrikam"])).one()
    assert fab.run_key and not fab.run_key.startswith("group:")

    again = _run(sessions, b.org.id, settings)
    # already written: counted once per message, as drafted (the group and Fabrikam's)
    assert again.drafted == 0 and again.skipped_existing == 2  # type: ignore[attr-defined]
    # The next day the same steps are still inside the catch-up window: covered, not re-sent.
    next_day = _run(sessions, b.org.id, settings, days=1)
    assert next_day.drafted == 0  # type: ignore[attr-defined]
    session.expire_all()
    assert len(session.scalars(select(Draft).where(Draft.org_id == b.org.id)).all()) == 2


def test_a_revision_keeps_the_final_notice_the_headings_and_the_reviewer_notes(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    b, customer_id, _ = _book(session)
    user = b.user(Persona.COLLECTOR, "Sam Okafor")
    session.commit()
    _run(sessions, b.org.id, settings)
    draft = _group_draft(session, b.org.id, customer_id)
    notes = list(draft.stated_facts["reviewer_notes"])
    german = revise_draft(session, b.org.id, draft.id, "in German", user, settings, now=NOW)
    session.commit()
    body = _plain(german.body)
    assert german.language == "de" and german.grounding["ok"], german.grounding
    assert german.subject.startswith("Letzte Erinnerung: ")
    assert "dies ist unsere letzte Erinnerung an die Rechnung C-101" in body
    assert body.index("Überfällig seit 31-60 Tagen:") < body.index("Demnächst fällig:")
    assert f"Zwischensumme EUR: {_plain(format_amount(225_050, 'EUR', 'de_DE'))}" in body
    assert f"Summe USD: {_plain(format_amount(USD_TOTAL, 'USD', 'de_DE'))}" in body
    assert german.stated_facts["reviewer_notes"] == notes and "C-204" not in body
    shorter = revise_draft(session, b.org.id, draft.id, "shorter", user, settings, now=NOW)
    session.commit()
    short = _plain(shorter.body)
    assert shorter.grounding["ok"], shorter.grounding
    assert len(short) < len(body) and "letzte Erinnerung an die Rechnung C-101" in short
    assert "Überfällig seit 1-30 Tagen:" in short and "Summe EUR" in short


def test_the_model_is_told_the_headings_and_a_wrong_subtotal_is_sent_back(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    b, customer_id, _ = _book(session)
    subtotal = _plain(format_amount(150_000 + 75_050, "EUR"))

    def wrong_subtotal(args: dict[str, Any]) -> dict[str, Any]:
        if "Subtotal EUR" in _plain(args["body"]):
            args["body"] = _plain(args["body"]).replace(subtotal, "€2,205.50")
        return args

    model, seen = tampering(wrong_subtotal, times=1)  # the group's first text only
    summary = run_autopilot(
        sessions, b.org.id, as_of=AS_OF, shadow=True, settings=settings, now=NOW, model=model
    )
    assert summary.errors == 0 and summary.grounding_mismatches == 0
    assert summary.grounding_retries >= 1  # the group's first text was sent back once
    draft = _group_draft(session, b.org.id, customer_id)
    assert draft.grounding["ok"] and subtotal in _plain(draft.body) and "2,205.50" not in draft.body
    told = "\n".join(
        [str(getattr(m, "instructions", "") or "") for msgs in seen for m in msgs]
        + [str(getattr(p, "content", "")) for msgs in seen for m in msgs for p in m.parts]
    )
    assert "Overdue 31-60 days:" in told and "Coming due:" in told  # the skeleton's headings
    assert "final reminder about invoice C-101" in told
    assert "'€2,205.50'" in told and "not in the ledger" in told
    # the reviewer's notes are never in what the model reads
    assert "C-204" not in told and "left out" not in told


def test_a_step_in_shadow_mode_keeps_the_whole_group_in_review(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    b = Builder.new_org(session, shadow=False)
    cadence = b.cadence()
    segment = b.segment("SMB", cadence=cadence, shadow=False, autopilot=True)
    customer = b.customer("Northwind Foods Inc.", segment=segment)
    b.contact(customer, "Dana Smith", email="dana@northwind.example")
    b.invoice(customer, number="N-60", amount_minor=60_000, days_overdue=60)  # final notice
    b.invoice(customer, number="N-3", amount_minor=3_000, days_overdue=3)  # friendly reminder
    friendly = next(s for s in cadence.steps if s.template == "friendly_reminder")
    session.add(CadenceStepMode(step_id=friendly.id, org_id=b.org.id, mode="shadow"))
    session.commit()
    summary = run_autopilot(sessions, b.org.id, as_of=AS_OF, settings=settings, now=NOW)
    assert summary.drafted == 1 and summary.errors == 0
    draft = _group_draft(session, b.org.id, customer.id)
    # the group speaks at N-60's final notice, but N-3's step is in Shadow Mode: a person reviews
    assert draft.stated_facts["template"] == "final_notice_statement"
    assert draft.cadence_step_id != friendly.id
    assert draft.decision_outcome == "needs_approval"
    assert draft.status is DraftStatus.PENDING_REVIEW
    reason = next(r for r in draft.decision["reasons"] if r["rule_id"] == "shadow.review_required")
    assert "Shadow Mode is on for this cadence step" in reason["message"]


def test_a_segment_that_keeps_one_message_per_invoice(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    b, customer_id, _ = _book(session)
    session.add(
        PolicySetVersion(
            org_id=b.org.id, version=1, active=True,
            content={"cadence": {"one_message_per_invoice_segments": ["Mid-market"]}},
        )
    )  # fmt: skip
    session.commit()
    summary = _run(sessions, b.org.id, settings)
    assert summary.drafted == 7  # type: ignore[attr-defined]
    keys = session.scalars(select(Draft.run_key).where(Draft.customer_id == customer_id)).all()
    assert len(keys) == 6 and not any(k and k.startswith("group:") for k in keys)


def test_the_group_draft_supersedes_pending_drafts_of_every_invoice_it_names(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    b, customer_id, ids = _book(session)
    # Yesterday's single reminder for C-201 (not the group's first invoice), still waiting.
    older = Draft(
        org_id=b.org.id, customer_id=customer_id, invoice_id=ids["USD-14"], run_key="old:C-201",
        subject="Invoice C-201", body="Invoice C-201 is overdue.",
        status=DraftStatus.PENDING_REVIEW, stated_facts={"invoice_numbers": ["C-201"]},
    )  # fmt: skip
    session.add(older)
    session.commit()
    _run(sessions, b.org.id, settings)
    session.expire_all()
    group = session.scalars(select(Draft).where(Draft.run_key.like("group:%"))).one()
    assert group.invoice_id != ids["USD-14"] and "C-201" in group.stated_facts["invoice_numbers"]
    retired = session.get(Draft, older.id)
    assert retired is not None and retired.status is DraftStatus.SUPERSEDED
    assert retired.hold_reason == f"Superseded by draft {group.id}, written from newer facts."


def _headings_by_invoice(body: str) -> dict[str, str]:
    """The aging bucket each listed invoice is under in a message ("Current" when coming due)."""
    out: dict[str, str] = {}
    bucket = ""
    for line in body.splitlines():
        head = re.fullmatch(r"Overdue (\S+) days:", line)
        if head or line == "Coming due:":
            bucket = head.group(1) if head else "Current"
        elif (m := re.match(r"- Invoice (\S+):", line)) and bucket:
            out[m.group(1)] = bucket
    return out


@pytest.fixture
def smtp() -> Iterator[tuple[int, SmtpSink]]:
    controller, sink = start_smtp()
    yield controller.port, sink
    controller.stop()


def _deliver(
    sessions: sessionmaker[Session], draft_id: int, approver_id: int, settings: Settings,
    sink: SmtpSink,
) -> Message:  # fmt: skip
    with sessions() as s:
        draft = s.get(Draft, draft_id)
        approver = s.get(drafts.User, approver_id)
        assert draft is not None and approver is not None
        drafts.approve_draft(
            s, draft.org_id, draft.id, user=approver, expected_version=draft.version,
            settings=settings, now=NOW,
        )  # fmt: skip
        s.commit()
    with delivery_flow.use_sender(lambda _s: outbox.smtp_sender(settings)):
        delivery_flow.drain(sessions, timeout_s=60)
    assert len(sink.received) == 1, [r.message["Subject"] for r in sink.received]
    return sink.received[0].message


def test_the_consolidated_email_carries_the_statement_of_the_ledger(
    session: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    durable_settings: Settings,
    worker_id: str,
    smtp: tuple[int, SmtpSink],
) -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    import pdfplumber
    import time_machine

    durable.set_ledger(sessions, durable_settings)
    b, customer_id, _ = _book(session)
    approver = Builder(session, b.org).user(Persona.COLLECTOR)
    session.commit()
    mail = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp[0], "smtp_from": "ar@acme.example"}
    )
    with time_machine.travel(NOW, tick=True):
        _run(sessions, b.org.id, settings)
        draft = _group_draft(session, b.org.id, customer_id)
        sent = _deliver(sessions, draft.id, approver.id, mail, smtp[1])
    [pdf] = [p for p in sent.walk() if p.get_content_type() == "application/pdf"]
    assert str(pdf.get_filename()).startswith("statement-Contoso-Retail-Ltd-")
    body = _plain(next(p for p in sent.walk() if p.get_content_type() == "text/plain").get_payload(
        decode=True
    ).decode())  # fmt: skip
    assert f"Total EUR: {_plain(format_amount(EUR_TOTAL, 'EUR'))}" in body
    assert f"Total USD: {_plain(format_amount(USD_TOTAL, 'USD'))}" in body
    raw = pdf.get_payload(decode=True)
    assert isinstance(raw, bytes) and raw.startswith(b"%PDF-")
    with pdfplumber.open(io.BytesIO(raw)) as doc:
        text = _plain("\n".join(p.extract_text() or "" for p in doc.pages))
    session.expire_all()
    ledger = session.scalars(select(Invoice).where(Invoice.customer_id == customer_id)).all()
    for inv in ledger:  # every open item, each with its ledger balance
        assert inv.number in text
        assert _plain(format_amount(inv.balance_minor, inv.currency)) in text
    for currency in ("EUR", "USD"):
        open_total = sum(i.balance_minor for i in ledger if i.currency == currency)
        assert _plain(format_amount(open_total, currency)) in text
    # The disputed C-204 is listed as such, and what the statement asks for is the message's total.
    assert "C-204 (In dispute)" in text
    assert f"of which in dispute (USD) {_plain(format_amount(222_200, 'USD'))}" in text
    assert f"To pay (USD) {_plain(format_amount(USD_TOTAL, 'USD'))}" in text
    assert "To pay (EUR)" not in text  # nothing in dispute in euros: the open total is the ask
    [link] = set(re.findall(r"https?://\S+", body))
    assert link in text.replace("\n", "")  # the statement's pay link is the message's
    # Each invoice sits in the same aging bucket in the e-mail's headings and the statement's rows.
    heading_of = _headings_by_invoice(body)
    assert set(heading_of) == {"C-101", "C-102", "C-103", "C-201", "C-202", "C-203"}
    rows = {
        ln.split()[0]: ln for ln in text.splitlines() if ln.split()[:1] in [[n] for n in heading_of]
    }
    for number, bucket in heading_of.items():
        assert f" {bucket} " in rows[number], (number, bucket, rows[number])
    session.expire_all()
    assert session.get(Draft, draft.id).status is DraftStatus.SENT  # type: ignore[union-attr]


def test_a_pass_reads_the_organisation_itself_not_a_pass_of_the_same_number(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    """A ledger recreated at the same URL (a fresh demo, a test database) numbers its Autopilot
    runs from 1 again: a pass must not reuse the organisation's switches another pass with the
    same run number read a moment before (the org was in Shadow Mode there, not here)."""
    from agent import autopilot_batch

    b = Builder.new_org(session, shadow=True)
    session.commit()
    with sessions() as s:
        first, _ = autopilot_batch.org_reads(s, b.org.id, NOW, "1-aaaa")
    b.org.shadow_mode = False
    session.commit()
    with sessions() as s:
        again, _ = autopilot_batch.org_reads(s, b.org.id, NOW, "1-aaaa")  # the same pass: cached
        other, _ = autopilot_batch.org_reads(s, b.org.id, NOW, "1-bbbb")  # run 1 of a new ledger
    assert first.shadow_mode and again.shadow_mode and not other.shadow_mode
    seen: list[str | None] = []
    real = autopilot_batch.org_reads

    def record(s: Session, org_id: int, now: Any, pass_id: str | None, **kw: Any) -> Any:
        seen.append(pass_id)
        return real(s, org_id, now, pass_id, **kw)

    cadence = b.cadence()
    segment = b.segment("SMB", cadence=cadence, shadow=False, autopilot=True)
    customer = b.customer("Northwind Foods Inc.", segment=segment)
    b.contact(customer, "Dana Smith", email="dana@northwind.example")
    b.invoice(customer, number="N-3", amount_minor=3_000, days_overdue=3)
    session.commit()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(autopilot_batch, "org_reads", record)
        summary = run_autopilot(sessions, b.org.id, as_of=AS_OF, settings=settings, now=NOW)
    assert summary.drafted == 1 and seen
    assert all(p and p.startswith(f"{summary.run_id}-") and len(p) > 10 for p in seen), seen
