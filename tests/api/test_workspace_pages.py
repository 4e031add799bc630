"""The collector's workspace pages through the app (TestClient): the disputes workspace, the
composer, the account timeline, the scheduled view and the inbox, with the tools behind them."""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures by name

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import (
    Activity,
    Approval,
    Dispute,
    DisputeStatus,
    Draft,
    DraftStatus,
    Invoice,
    Notification,
    OutboxMessage,
    Persona,
)
from tests.api.factories import NOW, Seeded
from tests.api.review_fixtures import app, client, csrf_of, login, seeded, settings  # noqa: F401
from tools.commitments import disputes

RAW = re.compile(
    r"\b(pending_review|escalated_legal|awaiting_customer|resolved_credit|follow_up|"
    r"needs_approval|shadow\.review_required|quiet_hours\.\w+|dispute\.\w+)\b|\[&#39;|\[\""
)


def visible(html: str) -> str:
    """The text a person reads: no tags, attributes, scripts or styles."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", html)


def assert_words(html: str) -> None:
    found = RAW.findall(visible(html))
    assert not found, f"raw identifiers on the page: {found}"


def _dispute(session: Session, seeded: Seeded, i: int = 0) -> Dispute:
    d = disputes.open_dispute(
        session, seeded.org.id, invoice_id=seeded.invoices[i].id, reason="pricing",
        actor=seeded.users[Persona.COLLECTOR], description="Price differs from the quote",
        now=NOW - timedelta(days=3),
    )  # fmt: skip
    session.commit()
    return d


def test_dispute_queue_panel_escalation_evidence_and_credit(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    d = _dispute(session, seeded)
    login(client, seeded, Persona.COLLECTOR)
    page = client.get("/disputes")
    assert page.status_code == 200, page.text
    assert 'data-testid="breach-flag"' in page.text  # 72 hours open against a 48-hour SLA
    assert "Price or rate differs" in page.text
    assert_words(page.text)
    panel = client.get(f"/disputes/{d.id}")
    assert panel.status_code == 200
    assert_words(panel.text)
    assert "Opened Oct 4, 2025, 2:00" in panel.text  # the reader's locale, the org's clock
    german = client.get(f"/disputes/{d.id}", headers={"Accept-Language": "de-DE"}).text
    assert "Opened 04.10.2025, 14:00" in german
    assert (
        "due 06.10.2025, 14:00" in client.get("/disputes", headers={"Accept-Language": "de"}).text
    )
    assert_words(german)
    r = client.post(
        f"/disputes/{d.id}/status",
        data={"csrf": csrf_of(panel.text), "to": "escalated_legal", "note": "Contract question"},
    )
    assert r.status_code == 200 and "Escalated to Legal" in r.text, r.text
    session.expire_all()
    assert session.get(Dispute, d.id).status == DisputeStatus.ESCALATED_LEGAL
    legal = seeded.users[Persona.LEGAL]
    told = session.scalars(select(Notification).where(Notification.user_id == legal.id)).all()
    assert [n.kind for n in told] == ["escalation"]
    # Legal: the Legal view lists it; evidence; back to investigating with the finding
    client.cookies.clear()
    login(client, seeded, Persona.LEGAL)
    view = client.get("/disputes")
    assert f'data-dispute-id="{d.id}"' in view.text and "Disputes with Legal" in view.text
    panel = client.get(f"/disputes/{d.id}")
    assert 'data-testid="credit-form"' not in panel.text  # Legal may not grant credits
    r = client.post(
        f"/disputes/{d.id}/evidence",
        data={"csrf": csrf_of(panel.text), "slot": "contract"},
        files={"file": ("contract.pdf", b"%PDF-1.4 quote says 1,000.00", "application/pdf")},
    )
    assert r.status_code == 200 and "contract.pdf attached as contract or order" in r.text
    bad = client.post(
        f"/disputes/{d.id}/evidence",
        data={"csrf": csrf_of(r.text), "slot": "contract"},
        files={"file": ("x.exe", b"MZ\x00\x01", "application/octet-stream")},
    )
    assert "That file type is not accepted" in bad.text
    session.expire_all()
    assert len(session.get(Dispute, d.id).evidence) == 1
    # a credit within the Collector's limit is granted now and resolves the dispute
    client.cookies.clear()
    login(client, seeded, Persona.COLLECTOR)
    panel = client.get(f"/disputes/{d.id}")
    r = client.post(
        f"/disputes/{d.id}/credit",
        data={"csrf": csrf_of(panel.text), "amount": "200.00", "note": "Quote price"},
    )
    assert "Credit of $200.00 granted" in r.text, r.text
    session.expire_all()
    inv = session.get(Invoice, seeded.invoices[0].id)
    assert inv.balance_minor == 120_000 - 20_000 and not inv.disputed
    assert session.get(Dispute, d.id).status == DisputeStatus.RESOLVED_CREDIT
    assert_words(r.text)


def test_credit_above_the_limit_waits_and_the_approver_is_notified(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    d = _dispute(session, seeded)
    login(client, seeded, Persona.COLLECTOR)
    panel = client.get(f"/disputes/{d.id}")
    r = client.post(
        f"/disputes/{d.id}/credit", data={"csrf": csrf_of(panel.text), "amount": "1,100.00"}
    )
    session.expire_all()
    dispute = session.get(Dispute, d.id)
    outcome = dispute.status
    if outcome == DisputeStatus.RESOLVED_CREDIT:  # the policy let the Collector grant it
        raise AssertionError(f"expected the credit to wait for approval: {r.text[:500]}")
    assert "waits for an approver" in r.text
    controller = seeded.users[Persona.CONTROLLER]
    told = session.scalars(select(Notification).where(Notification.user_id == controller.id)).all()
    assert [n.kind for n in told] == ["approval"]
    client.cookies.clear()
    login(client, seeded, Persona.CONTROLLER)
    panel = client.get(f"/disputes/{d.id}")
    assert 'data-testid="approve-credit"' in panel.text
    r = client.post(f"/disputes/{d.id}/credit/approve", data={"csrf": csrf_of(panel.text)})
    assert "Credit approved" in r.text
    session.expire_all()
    assert session.get(Dispute, d.id).status == DisputeStatus.RESOLVED_CREDIT


def test_rejecting_needs_a_reason_and_unknown_status_is_refused(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    d = _dispute(session, seeded)
    login(client, seeded, Persona.COLLECTOR)
    csrf = csrf_of(client.get(f"/disputes/{d.id}").text)
    r = client.post(f"/disputes/{d.id}/status", data={"csrf": csrf, "to": "rejected"})
    assert "Say why the dispute is rejected" in r.text
    r = client.post(f"/disputes/{d.id}/status", data={"csrf": csrf, "to": "nonsense"})
    assert "Choose a status from the list" in r.text
    session.expire_all()
    assert session.get(Dispute, d.id).status == DisputeStatus.OPEN
    client.cookies.clear()
    login(client, seeded, Persona.SALES)
    r = client.post(f"/disputes/{d.id}/status", data={"csrf": csrf, "to": "investigating"})
    assert r.status_code in (403, 200) and "investigating" not in str(
        session.get(Dispute, d.id).status
    )


def test_composer_message_is_grounded_decided_and_approved_into_the_outbox(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    customer, invoice = seeded.customers[1], seeded.invoices[1]
    login(client, seeded, Persona.COLLECTOR)
    page = client.get(f"/compose?customer_id={customer.id}")
    assert page.status_code == 200, page.text
    assert_words(page.text)
    body = re.search(r'data-testid="compose-body">(.*?)</textarea>', page.text, re.S).group(1)
    assert invoice.number in body and "/pay/" in body
    body = body.replace("&#10;", "\n").replace("&#39;", "'").replace("&amp;", "&")
    body = body.replace("\n\n\n\n", "\n\nAs discussed on the phone, here is the link again.\n\n")
    r = client.post(
        "/compose",
        data={"csrf": csrf_of(page.text), "customer_id": customer.id, "invoice_id": invoice.id,
              "subject": f"Invoice {invoice.number}", "body": body},
    )  # fmt: skip
    assert r.status_code == 200 and "/drafts/" in str(r.url), r.text[:400]
    draft = session.scalars(select(Draft).where(Draft.kind == "manual")).one()
    assert draft.status == DraftStatus.PENDING_REVIEW, draft.decision
    assert draft.created_by_user_id == seeded.users[Persona.COLLECTOR].id
    # a wrong amount is caught by grounding like any draft's
    bad = client.post(
        "/compose",
        data={"csrf": csrf_of(page.text), "customer_id": customer.id, "invoice_id": invoice.id,
              "subject": "Invoice", "body": body + "\nThe amount is $9,999.00."},
    )  # fmt: skip
    assert "blocked" in bad.text.lower()
    approve = client.post(
        f"/drafts/{draft.id}/approve",
        data={"csrf": csrf_of(r.text), "version": draft.version},
    )
    assert "queued for delivery" in approve.text, approve.text[:500]
    session.expire_all()
    assert session.scalars(select(OutboxMessage).where(OutboxMessage.draft_id == draft.id)).one()


def test_composer_refuses_without_text_and_for_foreign_customers(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    login(client, seeded, Persona.COLLECTOR)
    page = client.get(f"/compose?customer_id={seeded.customers[0].id}")
    r = client.post(
        "/compose",
        data={"csrf": csrf_of(page.text), "customer_id": seeded.customers[0].id,
              "subject": " ", "body": "x"},
    )  # fmt: skip
    assert "Write a subject and a message" in r.text
    assert client.get("/compose?customer_id=999999").status_code == 404
    client.cookies.clear()
    login(client, seeded, Persona.VIEWER)
    assert client.get(f"/compose?customer_id={seeded.customers[0].id}").status_code == 403


def test_log_a_call_and_an_outside_email_on_the_timeline(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    customer = seeded.customers[0]
    login(client, seeded, Persona.COLLECTOR)
    page = client.get(f"/accounts/{customer.id}/activity")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    r = client.post(
        f"/accounts/{customer.id}/activity",
        data={"csrf": csrf, "kind": "call", "direction": "out",
              "summary": "Spoke with AP: payment run on Friday", "minutes_ago": "60"},
    )  # fmt: skip
    assert "Call logged" in r.text and "Spoke with AP" in r.text
    r = client.post(
        f"/accounts/{customer.id}/activity",
        data={"csrf": csrf, "kind": "email", "direction": "in", "summary": "Remittance advice"},
    )
    assert "Outside e-mail logged" in r.text
    r = client.post(
        f"/accounts/{customer.id}/activity",
        data={"csrf": csrf, "kind": "email", "summary": "  "},
    )
    assert "Say in a line what was said" in r.text
    rows = session.scalars(select(Activity).where(Activity.customer_id == customer.id)).all()
    kinds = sorted((a.kind.value, a.direction) for a in rows)
    assert kinds == [("call", "out"), ("email", "in")]
    call = next(a for a in rows if a.kind.value == "call")
    assert call.occurred_at == NOW - timedelta(minutes=60)
    assert call.user_id == seeded.users[Persona.COLLECTOR].id
    assert_words(r.text)


def test_mention_reaches_the_inbox_and_header_count(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    handle = manager.email.split("@")[0]
    login(client, seeded, Persona.COLLECTOR)
    page = client.get(f"/accounts/{seeded.customers[0].id}")
    client.post(
        f"/customers/{seeded.customers[0].id}/notes",
        data={"csrf": csrf_of(page.text), "body": f"@{handle} can you call them?"},
    )
    client.cookies.clear()
    login(client, seeded, Persona.COLLECTIONS_MANAGER)
    home = client.get("/inbox")
    assert re.search(r'data-testid="inbox-count"[^>]*>Inbox <span class="badge warn">1<', home.text)
    assert "Collector User mentioned you on Customer 001 Ltd" in home.text
    assert "1 unread notification" in home.text
    item = session.scalars(select(Notification).where(Notification.user_id == manager.id)).one()
    r = client.post(f"/inbox/{item.id}/open", data={"csrf": csrf_of(home.text)})
    assert str(r.url).endswith(f"/accounts/{seeded.customers[0].id}")
    session.expire_all()
    assert session.get(Notification, item.id).read_at is not None
    # the author is not notified of their own mention; nobody else sees the item
    assert (
        session.scalars(select(Notification).where(Notification.user_id != manager.id)).all() == []
    )


def test_email_preference_sends_notifications_through_the_outbox(
    client: TestClient, session: Session, seeded: Seeded
) -> None:
    login(client, seeded, Persona.COLLECTIONS_MANAGER)
    page = client.get("/inbox")
    r = client.post("/inbox/preferences", data={"csrf": csrf_of(page.text), "email": "on"})
    assert "by e-mail" in r.text
    client.cookies.clear()
    login(client, seeded, Persona.COLLECTOR)
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    page = client.get(f"/accounts/{seeded.customers[0].id}")
    client.post(
        f"/customers/{seeded.customers[0].id}/notes",
        data={"csrf": csrf_of(page.text), "body": f"@{manager.email.split('@')[0]} look"},
    )
    session.expire_all()
    mail = session.scalars(
        select(OutboxMessage).where(OutboxMessage.recipient == manager.email)
    ).one()
    assert "mentioned you" in mail.subject and mail.draft_id is None


def test_scheduled_view_lists_a_deferred_message_with_its_approver(
    client: TestClient, session: Session, seeded: Seeded, settings: Settings, app
) -> None:
    from tools.drafts import service as drafts

    night = NOW.replace(hour=3)  # 23:00 the evening before in New York: quiet hours
    draft = seeded.drafts[2]
    drafts.approve_draft(
        session, seeded.org.id, draft.id, user=seeded.users[Persona.COLLECTOR],
        expected_version=draft.version, settings=settings, now=night,
    )  # fmt: skip
    session.commit()
    assert draft.status == DraftStatus.APPROVED
    login(client, seeded, Persona.VIEWER)
    page = client.get("/scheduled")
    assert f'data-draft-id="{draft.id}"' in page.text
    assert "Collector User" in page.text and "Quiet hours" in page.text
    assert "1 message waiting" in page.text
    assert_words(page.text)
    goes_out = re.compile(r'data-testid="scheduled-row".*?<td>([^<]+)</td>', re.S)
    english = goes_out.search(page.text)
    assert english and re.fullmatch(
        r"[A-Z][a-z]{2} \d{1,2}, 2025, \d{1,2}:\d{2}:\d{2}\s[AP]M", english.group(1).strip()
    ), english
    german = goes_out.search(client.get("/scheduled", headers={"Accept-Language": "de-DE"}).text)
    assert german and re.fullmatch(
        r"\d{2}\.\d{2}\.2025, \d{2}:\d{2}:\d{2}", german.group(1).strip()
    ), german
    assert session.scalars(select(Approval).where(Approval.subject_id == draft.id)).one()
    drafts.release_deferred(session, now=NOW + timedelta(days=1), settings=settings)
    session.commit()
    page = client.get("/scheduled")
    assert f'data-draft-id="{draft.id}"' not in page.text
    assert "No approved message is waiting" in page.text


def test_reply_in_a_thread_and_a_dispute_reply_template(
    client: TestClient, session: Session, seeded: Seeded, settings: Settings
) -> None:
    from tests.api.test_conversation_pages import _reply

    inbound = _reply(session, seeded, settings, "Can you send me the invoice again?")
    customer = seeded.customers[0]
    login(client, seeded, Persona.COLLECTOR)
    account = client.get(f"/accounts/{customer.id}")
    assert f'href="/compose?reply_to={inbound}"' in account.text
    page = client.get(f"/compose?reply_to={inbound}")
    assert page.status_code == 200 and 'data-testid="replying-to"' in page.text
    assert "Can you send me the invoice again?" in page.text
    subject = re.search(r'name="subject" value="([^"]*)"', page.text).group(1)
    assert subject.lower().startswith("re: ") and subject.lower().count("re:") == 1
    assert_words(page.text)
    # a dispute's reply template fills the composer with the dispute's facts
    d = disputes.open_dispute(
        session, seeded.org.id, invoice_id=seeded.invoices[1].id, reason="not_received",
        actor=seeded.users[Persona.COLLECTOR], now=NOW,
    )  # fmt: skip
    session.commit()
    other = seeded.customers[1]
    page = client.get(
        f"/compose?customer_id={other.id}&dispute_id={d.id}&template=request_information"
    )
    assert page.status_code == 200
    assert f"Invoice {seeded.invoices[1].number}: information we need" in page.text
    assert "could you send us the documents" in page.text
    wrong = client.get(f"/compose?customer_id={customer.id}&dispute_id={d.id}&template=acknowledge")
    assert wrong.status_code == 404  # another customer's dispute
    unknown = client.get(f"/compose?customer_id={other.id}&dispute_id={d.id}&template=threaten")
    assert unknown.status_code == 404
