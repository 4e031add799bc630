"""Dispute reply templates in the dispute panel (TestClient): a template fills the reply form with
the dispute's facts, the reply is dispute correspondence (no pay link, the disputed invoice named),
decided like any draft, approved and queued in the outbox; dunning wording or a pay link in it is
refused, and the generic composer cannot send about a disputed invoice."""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures by name

from __future__ import annotations

import html
import re
from datetime import UTC, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory import business_day
from memory.models import (
    Customer,
    Dispute,
    DisputeStatus,
    Draft,
    DraftStatus,
    Invoice,
    OutboxMessage,
    Persona,
)
from tests.api.factories import NOW, Seeded
from tests.api.review_fixtures import app, client, csrf_of, login, seeded, settings  # noqa: F401
from tests.api.test_workspace_pages import assert_words
from tools.commitments import disputes
from tools.kit.formatting import format_amount, format_day, locale_for


def _open(session: Session, seeded: Seeded) -> Dispute:
    d = disputes.open_dispute(
        session, seeded.org.id, invoice_id=seeded.invoices[1].id, reason="pricing",
        actor=seeded.users[Persona.COLLECTOR], description="Price differs from the quote",
        now=NOW - timedelta(hours=2),
    )  # fmt: skip
    session.commit()
    return d


def _form(page: str) -> tuple[str, str]:
    subject = re.search(r'data-testid="reply-subject"', page) and re.search(
        r'name="subject" value="([^"]*)"', page
    )
    body = re.search(r'data-testid="reply-body">(.*?)</textarea>', page, re.S)
    assert subject and body, page[:400]
    return html.unescape(subject.group(1)), html.unescape(body.group(1))


def _drafts(session: Session) -> list[Draft]:
    session.expire_all()
    return list(session.scalars(select(Draft).where(Draft.kind == "manual").order_by(Draft.id)))


def test_a_reply_template_for_an_open_dispute_is_prefilled_checked_approved_and_queued(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    d = _open(session, seeded)
    invoice = session.get(Invoice, d.invoice_id)
    customer = session.get(Customer, d.customer_id)
    login(client, seeded, Persona.COLLECTOR)
    panel = client.get(f"/disputes/{d.id}")
    assert 'data-testid="reply-template-acknowledge"' in panel.text
    assert 'data-testid="reply-template-request_information"' in panel.text
    assert 'data-testid="reply-template-rejected"' not in panel.text  # not for an open dispute
    page = client.get(f"/disputes/{d.id}?template=acknowledge")
    assert page.status_code == 200
    assert_words(page.text)
    subject, body = _form(page.text)
    locale = locale_for(customer.language, customer.country_code)
    assert invoice.number in subject and invoice.number in body
    assert format_amount(invoice.amount_minor, invoice.currency, locale) in body
    assert "Your query is open" in body
    due = d.sla_due_at if d.sla_due_at.tzinfo else d.sla_due_at.replace(tzinfo=UTC)
    sla = format_day(business_day.org_business_date(session, seeded.org.id, due), locale)
    assert f"by {sla}" in body
    assert "/pay/" not in body and "http" not in body
    # the person edits it, then it is checked like any draft
    body = body.replace("look into it.", "look into it with our billing team.")
    r = client.post(
        f"/disputes/{d.id}/reply",
        data={"csrf": csrf_of(page.text), "subject": subject, "body": body},
    )
    assert r.status_code == 200 and "/drafts/" in str(r.url), r.text[:400]
    (draft,) = _drafts(session)
    assert draft.status == DraftStatus.PENDING_REVIEW, draft.decision
    assert draft.invoice_id == invoice.id and draft.stated_facts["dispute_id"] == d.id
    assert draft.stated_facts["pay_link"] is None
    rules = {x["rule_id"] for x in draft.decision["reasons"]}
    assert "dispute.correspondence" in rules and "dispute.correspondence_review" in rules
    assert not rules & {"dispute.no_dunning", "content.missing_pay_link"}
    assert "billing team" in draft.body
    approve = client.post(
        f"/drafts/{draft.id}/approve", data={"csrf": csrf_of(r.text), "version": draft.version}
    )
    assert "queued for delivery" in approve.text, approve.text[:500]
    session.expire_all()
    assert session.get(Draft, draft.id).status == DraftStatus.QUEUED
    queued = session.scalars(select(OutboxMessage).where(OutboxMessage.draft_id == draft.id)).one()
    assert invoice.number in queued.subject
    assert session.get(Dispute, d.id).status in disputes.ACTIVE  # the dispute itself is unchanged


def test_dunning_wording_or_a_pay_link_in_a_dispute_reply_is_refused(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    d = _open(session, seeded)
    login(client, seeded, Persona.COLLECTOR)
    page = client.get(f"/disputes/{d.id}?template=request_information")
    subject, body = _form(page.text)
    r = client.post(
        f"/disputes/{d.id}/reply",
        data={"csrf": csrf_of(page.text), "subject": subject,
              "body": body + "\n\nIn the meantime please pay the invoice."},
    )  # fmt: skip
    assert "Dispute reply asks for payment" in r.text
    first = _drafts(session)[-1]
    assert first.status == DraftStatus.BLOCKED
    # the generic composer's start carries the pay link: pasted into a dispute reply, refused
    start = client.get(f"/compose?customer_id={d.customer_id}&invoice_id={d.invoice_id}")
    link = re.search(r"https?://\S+/pay/\S+", html.unescape(start.text)).group(0)
    r = client.post(
        f"/disputes/{d.id}/reply",
        data={"csrf": csrf_of(page.text), "subject": subject, "body": f"{body}\n\n{link}"},
    )
    assert "Dispute reply carries a pay link" in r.text
    assert _drafts(session)[-1].status == DraftStatus.BLOCKED


def test_the_generic_composer_still_cannot_write_about_a_disputed_invoice(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    d = _open(session, seeded)
    login(client, seeded, Persona.COLLECTOR)
    page = client.get(f"/compose?customer_id={d.customer_id}&invoice_id={d.invoice_id}")
    body = html.unescape(
        re.search(r'data-testid="compose-body">(.*?)</textarea>', page.text, re.S).group(1)
    )
    r = client.post(
        "/compose",
        data={"csrf": csrf_of(page.text), "customer_id": d.customer_id,
              "invoice_id": d.invoice_id, "subject": "Invoice", "body": body},
    )  # fmt: skip
    assert "Invoice in dispute: no dunning" in r.text
    (draft,) = _drafts(session)
    assert draft.status == DraftStatus.BLOCKED and "dispute_id" not in draft.stated_facts
    # a dispute template asked of the composer lands in the dispute panel's reply form
    moved = client.get(
        f"/compose?customer_id={d.customer_id}&dispute_id={d.id}&template=acknowledge",
        follow_redirects=False,
    )
    assert moved.status_code == 303
    assert moved.headers["location"] == f"/disputes/{d.id}?template=acknowledge#reply"


def test_a_viewer_sees_no_reply_form_and_cannot_post_one(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    d = _open(session, seeded)
    login(client, seeded, Persona.VIEWER)
    panel = client.get(f"/disputes/{d.id}?template=acknowledge")
    assert panel.status_code == 200 and 'data-testid="reply-form"' not in panel.text
    r = client.post(
        f"/disputes/{d.id}/reply",
        data={"csrf": csrf_of(panel.text), "subject": "Hi", "body": "Hello"},
    )
    assert r.status_code == 403
    assert _drafts(session) == []


def test_a_credit_issued_reply_on_a_fully_credited_invoice_is_queued_and_still_true_at_send(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    from tools.delivery.send_check import recheck_before_send

    d = _open(session, seeded)
    invoice = session.get(Invoice, d.invoice_id)
    outcome = disputes.propose_credit(
        session, seeded.org.id, d.id, amount_minor=invoice.balance_minor,
        actor=seeded.users[Persona.CONTROLLER], note="Quoted price honoured", now=NOW,
    )  # fmt: skip
    session.commit()
    assert outcome.granted
    session.expire_all()
    assert session.get(Invoice, invoice.id).balance_minor == 0
    login(client, seeded, Persona.COLLECTOR)
    panel = client.get(f"/disputes/{d.id}")
    assert 'data-testid="reply-template-credit_granted"' in panel.text
    assert 'data-testid="reply-template-acknowledge"' not in panel.text  # the dispute is closed
    page = client.get(f"/disputes/{d.id}?template=credit_granted")
    subject, body = _form(page.text)
    assert "settled in full" in body and "resolved with a credit" in body
    r = client.post(
        f"/disputes/{d.id}/reply",
        data={"csrf": csrf_of(page.text), "subject": subject, "body": body},
    )
    (draft,) = _drafts(session)
    assert draft.status == DraftStatus.PENDING_REVIEW, draft.decision
    approve = client.post(
        f"/drafts/{draft.id}/approve", data={"csrf": csrf_of(r.text), "version": draft.version}
    )
    assert "queued for delivery" in approve.text, approve.text[:500]
    session.expire_all()
    draft = session.get(Draft, draft.id)
    assert draft.status == DraftStatus.QUEUED
    check = recheck_before_send(session, draft, NOW)
    assert check.ok, check.reasons  # it chases nothing: a settled invoice is no reason to hold it


def test_a_rejection_reply_gives_the_reason_recorded_when_the_dispute_was_rejected(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    d = _open(session, seeded)
    disputes.change_status(
        session, seeded.org.id, d.id, DisputeStatus.REJECTED,
        actor=seeded.users[Persona.COLLECTOR], note="the quote you sent expired in June",
        now=NOW,
    )  # fmt: skip
    session.commit()
    login(client, seeded, Persona.COLLECTOR)
    page = client.get(f"/disputes/{d.id}?template=rejected")
    assert_words(page.text)
    subject, body = _form(page.text)
    assert "for this reason: the quote you sent expired in June" in body
    assert "outcome of your query" in subject
    r = client.post(
        f"/disputes/{d.id}/reply",
        data={"csrf": csrf_of(page.text), "subject": subject, "body": body},
    )
    assert r.status_code == 200
    (draft,) = _drafts(session)
    # the invoice is no longer disputed: no dispute rule, no pay link needed for the reply
    assert draft.status == DraftStatus.PENDING_REVIEW, draft.decision
    rules = {x["rule_id"] for x in draft.decision["reasons"]}
    assert "dispute.correspondence_review" in rules and "content.missing_pay_link" not in rules
    # an unknown or unfitting template leaves the form empty rather than inventing text
    other = client.get(f"/disputes/{d.id}?template=acknowledge")
    assert _form(other.text) == ("", "")
