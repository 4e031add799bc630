"""The worker reads the mailbox on its own: the DBOS schedule of ``agent.mailbox_sync``, against
the real Dovecot of the mailbox tests, with this test process as the worker.

A reply appended to the mailbox is stored, threaded to the reminder and triaged without anyone
running ``plixo mailbox sync``; running the schedule again changes nothing; no mailbox (or no
cron) means no schedule; and two syncs racing over the same messages store each one once.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dbos import DBOS
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from agent import mailbox_sync
from memory import durable
from memory.config import Settings, get_settings
from memory.models import Activity, InboundMessage, MailboxCursor, MailThread, Organisation
from tests.api.factories import Seeded
from tests.api.smtp_server import SmtpSink
from tests.dovecot_server import Dovecot
from tests.tools import mail_samples as samples
from tests.tools.replies.test_mailbox import (  # noqa: F401 - fixtures
    _append,
    _durable_delivery,
    _send_reminder,
    _state,
    dovecot,
    env,
    seeded,
    smtp,
)
from tools.replies import mailbox

CRON = "0 */2 * * * *"


def _worker_settings(durable_settings: Settings, **extra: Any) -> Settings:
    """The worker's settings with the test's mailbox (``env``) and a mailbox cron."""
    configured = get_settings()
    return durable_settings.model_copy(
        update={
            "secret_key": configured.secret_key,
            "smtp_from": configured.smtp_from,
            "imap_host": configured.imap_host,
            "imap_port": configured.imap_port,
            "imap_ssl": configured.imap_ssl,
            "imap_username": configured.imap_username,
            "imap_password": configured.imap_password,
            "mailbox_sync_cron": CRON,
            **extra,
        }
    )


def test_the_worker_schedule_reads_a_reply_without_the_command(
    env: Dovecot,  # noqa: F811
    seeded: Seeded,  # noqa: F811
    sessions: sessionmaker[Session],
    session: Session,
    smtp: tuple[int, SmtpSink],  # noqa: F811
    tmp_path: Path,
    worker_id: str,
    durable_settings: Settings,
) -> None:
    sent = _send_reminder(sessions, seeded, smtp[1], tmp_path)
    pay_on = date.today() + timedelta(days=12)
    _append(
        env,
        samples.outlook_reply(
            sender=f"Maria Keller <{seeded.customers[0].contacts[0].email}>",
            to=str(sent["Reply-To"]),
            in_reply_to=str(sent["Message-ID"]),
            body=f"Hello,\n\nWe will pay $1,200.00 on {pay_on.strftime('%d %B %Y')}.",
        ),
    )
    settings = _worker_settings(durable_settings)
    durable.set_ledger(sessions, settings)
    mailbox_sync.apply_schedule(settings)  # DBOS launched once per test process
    schedule = DBOS.get_schedule(mailbox_sync.SCHEDULE_NAME)
    assert schedule is not None and schedule["schedule"] == CRON
    try:
        DBOS.trigger_schedule(mailbox_sync.SCHEDULE_NAME).get_result()
        stored = session.scalars(select(InboundMessage)).one()
        thread = session.scalars(select(MailThread)).one()
        assert stored.kind == "reply" and stored.thread_id == thread.id
        assert stored.draft_id == seeded.drafts[0].id
        assert stored.customer_id == seeded.customers[0].id
        assert stored.triage is not None and stored.triage["classification"] == "promise"
        [proposal] = stored.triage["acceptable"]
        assert proposal["amount"] == {"amount_minor": 120_000, "currency": "USD"}
        assert proposal["on_date"] == pay_on.isoformat()
        before = _state(session, seeded.org.id)
        mailbox_sync.sync_scheduled(datetime.now(UTC), None)  # the workflow, called directly
        assert _state(session, seeded.org.id) == before
    finally:
        mailbox_sync.apply_schedule(durable_settings)  # no cron: the schedule is removed
    assert DBOS.get_schedule(mailbox_sync.SCHEDULE_NAME) is None


def test_no_mailbox_or_no_cron_means_no_schedule(
    worker_id: str, durable_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    assert mailbox_sync.apply_schedule in durable._hooks  # the worker applies it at launch
    with_mailbox = {"imap_host": "127.0.0.1", "imap_username": "ar"}
    try:
        for update in (
            {"mailbox_sync_cron": CRON, "imap_host": None, "imap_username": None},
            {"mailbox_sync_cron": "", **with_mailbox},
            {"mailbox_sync_cron": None, **with_mailbox},
        ):
            mailbox_sync.apply_schedule(durable_settings.model_copy(update=update))
            assert DBOS.get_schedule(mailbox_sync.SCHEDULE_NAME) is None, update
        mailbox_sync.apply_schedule(
            durable_settings.model_copy(update={"mailbox_sync_cron": CRON, **with_mailbox})
        )
        assert DBOS.get_schedule(mailbox_sync.SCHEDULE_NAME) is not None
    finally:
        mailbox_sync.apply_schedule(durable_settings)
    assert DBOS.get_schedule(mailbox_sync.SCHEDULE_NAME) is None


def test_several_organisations_need_the_mailbox_org(
    session: Session, org: Organisation, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = Organisation(name="Other Ltd", slug="other-ltd")
    session.add(other)
    session.commit()
    settings = Settings(imap_host="127.0.0.1", imap_username="ar")
    with pytest.raises(mailbox.MailboxError, match="PLIXO_IMAP_ORG"):
        mailbox.mailbox_org(session, settings)
    assert mailbox.mailbox_org(session, settings.model_copy(update={"imap_org": "other-ltd"})) == (
        other.id
    )
    assert mailbox.mailbox_org(session, settings, org.slug) == org.id  # --org wins
    with pytest.raises(mailbox.MailboxError, match="No organisation 'nope'"):
        mailbox.mailbox_org(session, settings, "nope")


def test_two_syncs_racing_store_each_message_once(
    env: Dovecot,  # noqa: F811
    seeded: Seeded,  # noqa: F811
    sessions: sessionmaker[Session],
    session: Session,
) -> None:
    """Both syncs read and triage the first message before either writes it (a barrier in the
    triage): one stores it, the other finds its Message-ID taken and counts it as read."""
    replies = [
        samples.outlook_reply(
            sender=str(customer.contacts[0].email),
            to="ar@acme.test",
            in_reply_to=None,
            body=f"Could you send a copy of invoice {invoice.number}?",
            message_id=f"<race-{i}@payer.test>",
        )
        for i, (customer, invoice) in enumerate(
            zip(seeded.customers, seeded.invoices, strict=False)
        )
    ]
    _append(env, *replies)
    settings = get_settings()
    barrier = threading.Barrier(2, timeout=20)
    waited = threading.local()
    real = mailbox_sync.reply_triage(settings, datetime.now(UTC))

    def triage(s: Session, org_id: int, customer_id: int, text: str) -> dict[str, Any] | None:
        if not getattr(waited, "done", False):
            waited.done = True
            barrier.wait()
        return real(s, org_id, customer_id, text)

    results: list[mailbox.SyncResult] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with sessions() as s:
                results.append(mailbox.sync_configured(s, settings, triage=triage))
        except BaseException as exc:  # reported below, with the other thread's result
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures
    assert len(results) == 2 and [r.errors for r in results] == [[], []]
    n = len(replies)
    assert sum(r.stored for r in results) == n
    assert sum(r.duplicates for r in results) == n  # each message read by both, stored once
    session.expire_all()
    count = session.scalar(select(func.count()).select_from(InboundMessage))
    assert count == n
    ids = session.scalars(select(InboundMessage.message_id)).all()
    assert sorted(ids) == [f"<race-{i}@payer.test>" for i in range(n)]
    inbound = select(func.count()).select_from(Activity).where(Activity.direction == "in")
    assert session.scalar(inbound) == n
    assert session.scalars(select(MailboxCursor.last_uid)).all() == [n]
