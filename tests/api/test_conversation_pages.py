"""The conversation in the panel: a mailbox reply beside its draft and on Account 360, and the
person's step that accepts its proposal (no IMAP server needed: the message is filed directly)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.mailbox_sync import reply_triage
from memory.config import Settings
from memory.models import Draft, OutboxMessage, Persona, PromiseToPay
from tests.api.factories import NOW, Seeded
from tests.api.review_fixtures import app, client, csrf_of, login, seeded, settings  # noqa: F401
from tests.tools import mail_samples as samples
from tools.drafts import service as drafts
from tools.replies import mailbox
from tools.replies.mail_reading import read_mail


def _reply(session: Session, seeded: Seeded, settings: Settings, body: str) -> int:  # noqa: F811
    """Approve draft 0 (its thread opens), then file the payer's answer to it."""
    draft = session.get(Draft, seeded.drafts[0].id)
    assert draft is not None
    drafts.approve_draft(
        session, seeded.org.id, draft.id, user=seeded.users[Persona.COLLECTOR],
        expected_version=draft.version, settings=settings, now=NOW,
    )  # fmt: skip
    sent = session.scalars(select(OutboxMessage).where(OutboxMessage.draft_id == draft.id)).one()
    mail = read_mail(
        samples.outlook_reply(
            sender=str(seeded.customers[0].contacts[0].email), to="ar@acme.test",
            in_reply_to=sent.message_id, body=body,
        )
    )  # fmt: skip
    stored = mailbox.file_message(
        session, seeded.org.id, settings, mail, mailbox="test", uidvalidity=1, uid=1,
        triage=reply_triage(settings, NOW), now=NOW, result=mailbox.SyncResult(mailbox="test"),
    )  # fmt: skip
    session.commit()
    return stored.id


def test_reply_shows_beside_the_draft_and_its_promise_is_accepted_by_a_person(
    client: TestClient,  # noqa: F811
    session: Session,
    seeded: Seeded,  # noqa: F811
    settings: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    on = (NOW + timedelta(days=10)).date()
    _reply(session, seeded, settings, f"We will pay $1,200.00 on {on.strftime('%d %B %Y')}.")
    login(client, seeded, Persona.COLLECTOR)
    page = client.get(f"/drafts/{seeded.drafts[0].id}")
    assert page.status_code == 200
    assert 'data-testid="conversation-out"' in page.text
    assert 'data-testid="conversation-in"' in page.text
    flat = " ".join(page.text.split())
    written = f"{on:%a}, {on:%b} {on.day}, {on.year}"  # the reader's locale, not {on.isoformat()}
    assert f"Proposed: log a promise-to-pay · $1,200.00 · on {written} · INV-" in flat
    german = client.get(f"/drafts/{seeded.drafts[0].id}", headers={"Accept-Language": "de-DE"})
    assert f"· on Fr., {on.day}. Okt. {on.year} ·" in " ".join(german.text.split())
    account = client.get(f"/accounts/{seeded.customers[0].id}")
    assert "We will pay $1,200.00" in account.text
    action = account.text.split('action="/inbound/')[1].split('"')[0]
    r = client.post(
        f"/inbound/{action}",
        data={"csrf": csrf_of(account.text), "back": f"/accounts/{seeded.customers[0].id}"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    session.expire_all()
    [promise] = session.scalars(select(PromiseToPay)).all()
    assert promise.amount_minor == 120_000 and promise.promised_date == on
    assert "Promise logged." in client.get(r.headers["location"]).text


def test_a_viewer_sees_the_conversation_but_cannot_accept(
    client: TestClient,  # noqa: F811
    session: Session,
    seeded: Seeded,  # noqa: F811
    settings: Settings,  # noqa: F811
) -> None:
    on = (NOW + timedelta(days=10)).date()
    inbound = _reply(session, seeded, settings, f"We will pay $1,200.00 on {on.isoformat()}.")
    login(client, seeded, Persona.VIEWER)
    page = client.get(f"/accounts/{seeded.customers[0].id}")
    assert "We will pay $1,200.00" in page.text and "/proposals/0/accept" not in page.text
    r = client.post(
        f"/inbound/{inbound}/proposals/0/accept",
        data={"csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert session.scalars(select(PromiseToPay)).all() == []


def _pdf_text(data: bytes) -> str:
    import io

    import pdfplumber

    with pdfplumber.open(io.BytesIO(data)) as doc:
        return "\n".join(p.extract_text() or "" for p in doc.pages)


def test_statement_downloads_from_account_360_and_the_mini_portal(
    client: TestClient,  # noqa: F811
    session: Session,
    seeded: Seeded,  # noqa: F811
) -> None:
    from tools.ledger import statement
    from tools.portal import access as portal

    if statement.unavailable():
        pytest.skip(str(statement.unavailable()))
    customer = seeded.customers[0]
    login(client, seeded, Persona.COLLECTOR)
    page = client.get(f"/accounts/{customer.id}")
    assert f'href="/accounts/{customer.id}/statement.pdf"' in page.text
    r = client.get(f"/accounts/{customer.id}/statement.pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    text = _pdf_text(r.content)
    assert seeded.invoices[0].number in text and customer.name in text
    assert seeded.invoices[1].number not in text  # another customer's invoice
    assert client.get("/accounts/999999/statement.pdf").status_code == 404
    client.cookies.clear()
    raw = portal.issue_token(
        session, seeded.org.id, customer.id, actor="t", base_url="http://testserver"
    ).raw
    session.commit()
    home = client.get(f"/portal/{raw}")
    assert f'href="/portal/{raw}/statement.pdf"' in home.text
    r = client.get(f"/portal/{raw}/statement.pdf")
    assert r.status_code == 200 and seeded.invoices[0].number in _pdf_text(r.content)
    assert client.get(f"/portal/{raw[:-2]}xx/statement.pdf").status_code == 404
