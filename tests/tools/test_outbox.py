"""Exactly-once delivery: racing approvals, racing workers, leases, retries, a killed worker.

Everything is real: the ledger (SQLite, or PostgreSQL with PLIXO_TEST_POSTGRES_URL), an aiosmtpd
server on loopback, threads for the races, and a worker subprocess killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from memory.config import Settings
from memory.db import make_engine, session_factory
from memory.models import (
    Activity,
    AuditEvent,
    Draft,
    DraftStatus,
    Organisation,
    OutboxMessage,
    OutboxStatus,
    Persona,
    User,
)
from tests.api.factories import NOW, Seeded, seed_review, settings_for
from tests.api.smtp_server import SmtpSink, start_smtp
from tools import drafts, outbox
from tools.delivery import DeliveryError

POSTGRES = os.environ.get("PLIXO_TEST_POSTGRES_URL")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def smtp() -> Iterator[tuple[int, SmtpSink]]:
    controller, sink = start_smtp()
    yield controller.port, sink
    controller.stop()


@pytest.fixture
def seeded(session: Session, org: Organisation, tmp_path: Path) -> Seeded:
    return seed_review(session, org, settings_for(str(tmp_path)), drafts=3)


def _smtp_settings(port: int) -> Settings:
    return Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_from="ar@acme.test")


def _approve(session: Session, seeded: Seeded, draft: Draft, tmp_path: Path) -> None:
    drafts.approve_draft(
        session,
        seeded.org.id,
        draft.id,
        user=seeded.users[Persona.COLLECTOR],
        expected_version=draft.version,
        settings=settings_for(str(tmp_path)),
        now=NOW,
    )
    session.commit()


# --- races --------------------------------------------------------------------------------------


def _fifty_concurrent_approvals(
    db_url: str, seeded: Seeded, tmp_path: Path, port: int, sink: SmtpSink
) -> None:
    n = 50
    # one connection per racer, as fifty API requests would hold (the default pool is smaller)
    engine = make_engine(db_url, pool_size=n + 5, max_overflow=0)
    sessions = session_factory(engine)
    draft = seeded.drafts[0]
    org_id, draft_id, version = seeded.org.id, draft.id, draft.version
    user_id = seeded.users[Persona.COLLECTOR].id
    settings = settings_for(str(tmp_path))
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def approve() -> None:
        with sessions() as s:
            user = s.get(User, user_id)
            assert user is not None
            barrier.wait(timeout=60)
            try:
                d = drafts.approve_draft(
                    s,
                    org_id,
                    draft_id,
                    user=user,
                    expected_version=version,
                    settings=settings,
                    now=NOW,
                )
                drafts.commit_or_conflict(s, d)
                result = "approved"
            except (drafts.StaleDraft, drafts.InvalidTransition) as exc:
                s.rollback()
                result = type(exc).__name__
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=approve) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == n, "a thread hung or crashed"
    assert outcomes.count("approved") == 1, outcomes
    assert set(outcomes) <= {"approved", "StaleDraft", "InvalidTransition"}

    # three workers race to deliver it
    sender = outbox.smtp_sender(_smtp_settings(port))
    results: list[outbox.WorkResult] = []

    def work(i: int) -> None:
        results.append(outbox.deliver_batch(sessions, sender, worker=f"w{i}", limit=5))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=60)
    assert sum(r.sent for r in results) == 1
    with sessions() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.draft_id == draft_id)).all()
        assert len(rows) == 1 and rows[0].status is OutboxStatus.SENT
        assert s.get(Draft, draft_id).status is DraftStatus.SENT  # type: ignore[union-attr]
        approvals = s.scalar(select(func.count()).where(AuditEvent.action == "draft.approved"))
        assert approvals == 1
    assert sink.message_ids() == [rows[0].message_id]
    engine.dispose()


def test_fifty_concurrent_approvals_send_exactly_one_message(
    db_url: str, seeded: Seeded, tmp_path: Path, smtp: tuple[int, SmtpSink]
) -> None:
    _fifty_concurrent_approvals(db_url, seeded, tmp_path, *smtp)


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES, reason="set PLIXO_TEST_POSTGRES_URL to run on PostgreSQL")
def test_fifty_concurrent_approvals_on_postgresql(
    db_url: str, seeded: Seeded, tmp_path: Path, smtp: tuple[int, SmtpSink]
) -> None:
    assert db_url.startswith("postgresql")
    _fifty_concurrent_approvals(db_url, seeded, tmp_path, *smtp)


def test_claims_are_exclusive_and_leases_expire(
    sessions: sessionmaker[Session], seeded: Seeded, tmp_path: Path
) -> None:
    with sessions() as s:
        for d in seeded.drafts:
            _approve(s, seeded, s.get(Draft, d.id), tmp_path)  # type: ignore[arg-type]
    t0 = datetime.now(UTC)
    with sessions() as a, sessions() as b:
        first = outbox.claim(a, worker="a", limit=2, lease_s=60, now=t0)
        second = outbox.claim(b, worker="b", limit=10, lease_s=60, now=t0)
    assert len(first) == 2 and len(second) == 1
    assert not {m.id for m in first} & {m.id for m in second}
    with sessions() as c:
        assert outbox.claim(c, worker="c", lease_s=60, now=t0 + timedelta(seconds=59)) == []
        stolen = outbox.claim(c, worker="c", lease_s=60, now=t0 + timedelta(seconds=61))
    assert sorted(m.id for m in stolen) == sorted(m.id for m in first + second)
    # the original holders lost their leases: their mark_sent changes nothing
    with sessions() as a:
        assert outbox.mark_sent(a, first[0], worker="a") is False
    with sessions() as c:
        assert outbox.mark_sent(c, stolen[0], worker="c") is True
        row = c.get(OutboxMessage, stolen[0].id)
        assert row is not None and row.status is OutboxStatus.SENT and row.attempts == 2


def test_maintenance_and_cron_pause_hold_everything(
    sessions: sessionmaker[Session], seeded: Seeded, tmp_path: Path
) -> None:
    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
        s.get(Organisation, seeded.org.id).maintenance = True  # type: ignore[union-attr]
        s.commit()
    with sessions() as s:
        assert outbox.claim(s, worker="w") == []
        org = s.get(Organisation, seeded.org.id)
        assert org is not None
        org.maintenance, org.cron_paused = False, True
        s.commit()
    with sessions() as s:
        assert outbox.claim(s, worker="w") == []
        s.get(Organisation, seeded.org.id).cron_paused = False  # type: ignore[union-attr]
        s.commit()
    with sessions() as s:
        assert len(outbox.claim(s, worker="w")) == 1


def test_transient_failures_retry_then_fail_for_good(
    sessions: sessionmaker[Session], seeded: Seeded, tmp_path: Path
) -> None:
    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
    calls: list[int] = []

    def flaky(msg: outbox.ClaimedMessage) -> None:
        calls.append(msg.attempts)
        raise DeliveryError("421 try later", permanent=False)

    r1 = outbox.deliver_batch(sessions, flaky, worker="w", lease_s=60, max_attempts=2)
    assert (r1.claimed, r1.retried, r1.failed) == (1, 1, 0)
    # back-off: not claimable until the back-off (30 s for the first retry) has passed
    assert outbox.deliver_batch(sessions, flaky, worker="w", lease_s=60).claimed == 0
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.CLAIMED and row.last_error == "421 try later"
        later = datetime.now(UTC) + timedelta(seconds=31)
        again = outbox.claim(s, worker="w", lease_s=60, now=later)
    assert len(again) == 1 and again[0].attempts == 2
    with sessions() as s:
        status = outbox.mark_failed(
            s, again[0], worker="w", error="421 still", permanent=False, max_attempts=2
        )
        assert status is OutboxStatus.FAILED
        d = s.get(Draft, seeded.drafts[0].id)
        assert d is not None and d.status is DraftStatus.FAILED and d.hold_reason == "421 still"


def test_permanent_failure_fails_at_once(
    sessions: sessionmaker[Session], seeded: Seeded, tmp_path: Path, smtp: tuple[int, SmtpSink]
) -> None:
    port, sink = smtp
    with sessions() as s:
        d = s.get(Draft, seeded.drafts[0].id)
        assert d is not None
        sink.refuse.add(str(d.recipient))
        _approve(s, seeded, d, tmp_path)
    r = outbox.deliver_batch(sessions, outbox.smtp_sender(_smtp_settings(port)), worker="w")
    assert (r.sent, r.failed) == (0, 1)
    with sessions() as s:
        assert s.get(Draft, seeded.drafts[0].id).status is DraftStatus.FAILED  # type: ignore[union-attr]


def test_enqueue_email_is_idempotent_per_key(session: Session, seeded: Seeded) -> None:
    a = outbox.enqueue_email(
        session,
        seeded.org.id,
        to="payer@x.test",
        subject="Receipt",
        body="Thanks",
        idempotency_key="receipt:pi_123",
    )
    b = outbox.enqueue_email(
        session,
        seeded.org.id,
        to="payer@x.test",
        subject="Receipt",
        body="Thanks",
        idempotency_key="receipt:pi_123",
    )
    session.commit()
    assert a.id == b.id
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1
    with pytest.raises(outbox.OutboxError):
        outbox.enqueue_email(
            session, seeded.org.id, to="nope", subject="s", body="b", idempotency_key="k"
        )


def test_sent_draft_records_the_touch(
    sessions: sessionmaker[Session], seeded: Seeded, tmp_path: Path, smtp: tuple[int, SmtpSink]
) -> None:
    port, sink = smtp
    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
    outbox.run_worker(sessions, outbox.smtp_sender(_smtp_settings(port)), once=True)
    with sessions() as s:
        acts = s.scalars(select(Activity).where(Activity.draft_id == seeded.drafts[0].id)).all()
        assert len(acts) == 1 and acts[0].direction == "out"
    assert len(sink.received) == 1


# --- a worker killed between "claimed" and "sent" -------------------------------------------------

_HANGING_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from memory.config import get_settings
    from memory.db import make_engine, session_factory
    from tools import outbox

    marker, mode = Path(sys.argv[1]), sys.argv[2]
    settings = get_settings()
    real = outbox.smtp_sender(settings)

    def sender(msg):
        if mode == "after_send":
            real(msg)  # the relay accepted it; we die before mark_sent
        marker.write_text(str(msg.id))
        time.sleep(600)

    sessions = session_factory(make_engine(settings.resolved_database_url))
    outbox.deliver_batch(sessions, sender, worker="doomed", lease_s=float(sys.argv[3]))
    """
)


def _env(db_url: str, port: int, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PLIXO_DATABASE_URL=db_url,
        PLIXO_DATA_DIR=str(tmp_path / "data"),
        PLIXO_SMTP_HOST="127.0.0.1",
        PLIXO_SMTP_PORT=str(port),
        PLIXO_SMTP_FROM="ar@acme.test",
        PYTHONPATH=str(REPO),
    )
    return env


def _start_doomed(
    mode: str, marker: Path, env: dict[str, str], lease: float
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HANGING_WORKER, str(marker), mode, str(lease)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "worker exited")
        assert time.monotonic() < deadline, "the worker never claimed the message"
        time.sleep(0.05)
    return proc


def _run_worker_cli(env: dict[str, str], lease: float) -> dict[str, object]:
    import json

    out = subprocess.run(
        [sys.executable, "-m", "api.cli_outbox", "work", "--once", "--json", "--lease", str(lease)],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_killed_worker_neither_loses_nor_doubles(
    db_url: str,
    sessions: sessionmaker[Session],
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
) -> None:
    port, sink = smtp
    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
    env, lease = _env(db_url, port, tmp_path), 3.0
    proc = _start_doomed("before_send", tmp_path / "claimed", env, lease)
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.CLAIMED and row.claimed_by.startswith("doomed:")  # type: ignore[union-attr]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    claimed_at = row.claimed_at
    assert claimed_at is not None

    # restarted at once: the dead worker's lease still holds, so nothing is sent twice
    first = _run_worker_cli(env, lease)
    if datetime.now(UTC) < claimed_at + timedelta(seconds=lease):
        assert first["sent"] == 0
    # after the lease expires, the restarted worker delivers it, exactly once
    wait = (claimed_at + timedelta(seconds=lease) - datetime.now(UTC)).total_seconds()
    time.sleep(max(0.0, wait) + 0.2)
    second = _run_worker_cli(env, lease)
    third = _run_worker_cli(env, lease)
    assert int(first["sent"]) + int(second["sent"]) == 1  # type: ignore[call-overload]
    assert third["sent"] == 0
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.SENT and row.attempts == 2
        assert s.get(Draft, seeded.drafts[0].id).status is DraftStatus.SENT  # type: ignore[union-attr]
    assert sink.message_ids() == [row.message_id]


def test_crash_after_the_relay_accepted_resends_with_the_same_message_id(
    db_url: str,
    sessions: sessionmaker[Session],
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
) -> None:
    """The one window SMTP cannot close: the relay accepted the message and the worker died
    before recording it. Nothing is lost; the resend carries the *same* Message-ID (recorded on
    the outbox row), so the receiving system can recognise the copy. The ledger still shows one
    sent message and one touch."""
    port, sink = smtp
    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
    env, lease = _env(db_url, port, tmp_path), 1.0
    proc = _start_doomed("after_send", tmp_path / "sent", env, lease)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(lease + 0.2)
    assert _run_worker_cli(env, lease)["sent"] == 1
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.SENT
        touches = s.scalar(select(func.count()).select_from(Activity))
    ids = sink.message_ids()
    assert set(ids) == {row.message_id}
    assert touches == 1
