"""Never-twice delivery: racing approvals, racing workers, retries, refusals, a killed worker.

Everything is real: the ledger (SQLite, or PostgreSQL with PLIXO_TEST_POSTGRES_URL), DBOS (its
system database launched once for the test process), an aiosmtpd server on loopback, threads for
the races, and worker subprocesses killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import NullPool, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from memory import durable
from memory.config import Settings
from memory.db import make_engine, session_factory
from memory.models import (
    Activity,
    AuditEvent,
    Contact,
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
from tools.delivery import flow as delivery_flow
from tools.delivery import outbox
from tools.delivery.smtp import DeliveryError
from tools.drafts import service as drafts

POSTGRES = os.environ.get("PLIXO_TEST_POSTGRES_URL")
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def smtp() -> Iterator[tuple[int, SmtpSink]]:
    controller, sink = start_smtp()
    yield controller.port, sink
    controller.stop()


@pytest.fixture
def seeded(session: Session, org: Organisation, tmp_path: Path) -> Seeded:
    return seed_review(session, org, settings_for(str(tmp_path)), drafts=3)


def _smtp_settings(base: Settings, port: int) -> Settings:
    return base.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port})


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


def _deliver(sessions: sessionmaker[Session], settings: Settings) -> dict[str, int]:
    """Run every queued delivery in this process (the test process is a worker) and wait."""
    durable.set_ledger(sessions, settings)
    return dict(delivery_flow.drain(sessions, timeout_s=60))


# --- races --------------------------------------------------------------------------------------


def _fifty_concurrent_approvals(
    db_url: str, seeded: Seeded, tmp_path: Path, port: int, sink: SmtpSink, settings: Settings
) -> None:
    n = 50
    # one connection per racer, as fifty API requests would hold (the default pool is smaller)
    engine = make_engine(db_url, pool_size=n + 5, max_overflow=0)
    sessions = session_factory(engine)
    draft = seeded.drafts[0]
    org_id, draft_id, version = seeded.org.id, draft.id, draft.version
    user_id = seeded.users[Persona.COLLECTOR].id
    review_settings = settings_for(str(tmp_path))
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
                    settings=review_settings,
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

    # three workers race to hand it over, outside any workflow: one attempt wins
    sender = outbox.smtp_sender(_smtp_settings(settings, port))
    with sessions() as s:
        row_id = s.scalars(select(OutboxMessage.id)).one()
    results: list[str] = []

    def work(i: int) -> None:
        results.append(
            outbox.hand_off(sessions, row_id, sender, executor=f"w{i}", is_live=lambda _e: True)
        )

    workers = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=60)
    assert results.count(outbox.SENT) == 1, results
    assert set(results) <= {outbox.SENT, outbox.SKIP_HELD, outbox.SKIP_DONE}
    # and the workflows started for it afterwards find nothing left to send
    assert _deliver(sessions, _smtp_settings(settings, port)) == {}
    with sessions() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.draft_id == draft_id)).all()
        assert len(rows) == 1 and rows[0].status is OutboxStatus.SENT
        assert s.get(Draft, draft_id).status is DraftStatus.SENT  # type: ignore[union-attr]
        approvals = s.scalar(select(func.count()).where(AuditEvent.action == "draft.approved"))
        assert approvals == 1
    assert sink.message_ids() == [rows[0].message_id]
    engine.dispose()


def test_fifty_concurrent_approvals_send_exactly_one_message(
    db_url: str,
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
    worker_id: str,
    durable_settings: Settings,
) -> None:
    _fifty_concurrent_approvals(db_url, seeded, tmp_path, *smtp, durable_settings)


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES, reason="set PLIXO_TEST_POSTGRES_URL to run on PostgreSQL")
def test_fifty_concurrent_approvals_on_postgresql(
    db_url: str,
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
    worker_id: str,
    durable_settings: Settings,
) -> None:
    assert db_url.startswith("postgresql")
    _fifty_concurrent_approvals(db_url, seeded, tmp_path, *smtp, durable_settings)


def test_a_live_holder_is_never_overtaken_and_a_dead_one_leaves_it_uncertain(
    sessions: sessionmaker[Session], seeded: Seeded, tmp_path: Path
) -> None:
    with sessions() as s:
        for d in seeded.drafts[:2]:
            _approve(s, seeded, s.get(Draft, d.id), tmp_path)  # type: ignore[arg-type]
        first, second = s.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id)).all()
    with sessions() as a:
        held = outbox.begin_attempt(a, first, executor="a")
    assert isinstance(held, outbox.Attempt)
    with sessions() as b:  # a is alive: b leaves it alone
        assert outbox.begin_attempt(b, first, executor="b", is_live=lambda e: e == "a") == (
            outbox.SKIP_HELD
        )
    with sessions() as b:  # a is presumed dead: the message may have left, so it is not resent
        assert outbox.begin_attempt(b, first, executor="b") == outbox.SKIP_UNCERTAIN
        row = b.get(OutboxMessage, first)
        assert row is not None and row.status is OutboxStatus.UNCERTAIN
        assert row.message_id in (row.last_error or "")
        assert b.scalar(select(func.count()).where(AuditEvent.action == "outbox.uncertain")) == 1
    with sessions() as b:  # found again: still nothing to send
        assert outbox.begin_attempt(b, first, executor="b") == outbox.SKIP_DONE
    # a was only slow and the relay took it: its outcome is still recorded, once
    with sessions() as a:
        assert outbox.mark_sent(a, held.message, worker="a") is True
        row = a.get(OutboxMessage, first)
        assert row is not None and row.status is OutboxStatus.SENT and row.attempts == 1
    # the other row is untouched by all this
    with sessions() as s:
        assert s.get(OutboxMessage, second).status is OutboxStatus.QUEUED  # type: ignore[union-attr]


def test_maintenance_and_cron_pause_hold_everything(
    sessions: sessionmaker[Session], seeded: Seeded, tmp_path: Path
) -> None:
    sent: list[str] = []

    def sender(msg: outbox.ClaimedMessage) -> None:
        sent.append(msg.message_id)

    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
        row_id = s.scalars(select(OutboxMessage.id)).one()
        s.get(Organisation, seeded.org.id).maintenance = True  # type: ignore[union-attr]
        s.commit()
    assert outbox.hand_off(sessions, row_id, sender, executor="w") == outbox.SKIP_PAUSED
    with sessions() as s:
        org = s.get(Organisation, seeded.org.id)
        assert org is not None
        org.maintenance, org.cron_paused = False, True
        s.commit()
    assert outbox.hand_off(sessions, row_id, sender, executor="w") == outbox.SKIP_PAUSED
    assert delivery_flow.pending(sessions) == 0  # a paused organisation is not waited for
    with sessions() as s:
        s.get(Organisation, seeded.org.id).cron_paused = False  # type: ignore[union-attr]
        s.commit()
    assert delivery_flow.pending(sessions) == 1
    assert outbox.hand_off(sessions, row_id, sender, executor="w") == outbox.SENT
    assert len(sent) == 1


def test_transient_failures_retry_then_fail_for_good(
    sessions: sessionmaker[Session],
    seeded: Seeded,
    tmp_path: Path,
    worker_id: str,
    durable_settings: Settings,
) -> None:
    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
    calls: list[int] = []

    def flaky(_settings: Settings) -> outbox.Sender:
        def send(msg: outbox.ClaimedMessage) -> None:
            calls.append(msg.attempts)
            raise DeliveryError(f"421 try later ({len(calls)})", permanent=False)

        return send

    with delivery_flow.use_sender(flaky):
        outcomes = _deliver(sessions, durable_settings)  # 3 attempts, durable back-off between
    assert outcomes == {outbox.FAILED: 1}
    assert calls == [0, 1, 2]  # attempts recorded before each hand-off, one per temporary error
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.FAILED and row.attempts == 3
        assert row.last_error == "421 try later (3)"
        d = s.get(Draft, seeded.drafts[0].id)
        assert d is not None and d.status is DraftStatus.FAILED
        assert d.hold_reason == "421 try later (3)"


def test_a_temporary_error_then_success_sends_once(
    sessions: sessionmaker[Session],
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
    worker_id: str,
    durable_settings: Settings,
) -> None:
    port, sink = smtp
    settings = _smtp_settings(durable_settings, port)
    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
    tries: list[int] = []

    def once_refused(cfg: Settings) -> outbox.Sender:
        real = outbox.smtp_sender(cfg)

        def send(msg: outbox.ClaimedMessage) -> None:
            tries.append(1)
            if len(tries) == 1:
                raise DeliveryError("Cannot deliver: connection refused", permanent=False)
            real(msg)

        return send

    with delivery_flow.use_sender(once_refused):
        assert _deliver(sessions, settings) == {outbox.SENT: 1}
    assert len(tries) == 2 and len(sink.received) == 1
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.SENT and row.attempts == 2 and row.last_error is None


def test_permanent_failure_fails_at_once_with_the_reason_and_flags_the_contact(
    sessions: sessionmaker[Session],
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
    worker_id: str,
    durable_settings: Settings,
) -> None:
    port, sink = smtp
    with sessions() as s:
        d = s.get(Draft, seeded.drafts[0].id)
        assert d is not None
        sink.refuse.add(str(d.recipient))
        _approve(s, seeded, d, tmp_path)
    assert _deliver(sessions, _smtp_settings(durable_settings, port)) == {outbox.FAILED: 1}
    with sessions() as s:
        d = s.get(Draft, seeded.drafts[0].id)
        assert d is not None and d.status is DraftStatus.FAILED
        assert "550" in (d.hold_reason or "") and "no such mailbox" in (d.hold_reason or "")
        contact = s.get(Contact, d.contact_id)
        assert contact is not None and contact.bounced is True
        row = s.scalars(select(OutboxMessage)).one()
        assert row.attempts == 1
    assert sink.received == []


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
    sessions: sessionmaker[Session],
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
    worker_id: str,
    durable_settings: Settings,
) -> None:
    port, sink = smtp
    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
    assert _deliver(sessions, _smtp_settings(durable_settings, port)) == {outbox.SENT: 1}
    with sessions() as s:
        acts = s.scalars(select(Activity).where(Activity.draft_id == seeded.drafts[0].id)).all()
        assert len(acts) == 1 and acts[0].direction == "out"
    assert len(sink.received) == 1
    # started again (another worker, a second dispatch): nothing more is sent
    assert _deliver(sessions, _smtp_settings(durable_settings, port)) == {}
    assert len(sink.received) == 1


# --- a worker killed at the worst moments -------------------------------------------------------

_DOOMED_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from api import worker
    from memory.config import get_settings
    from memory.db import make_engine, session_factory
    from tools.delivery import flow as delivery_flow
    from tools.delivery import outbox
    from tools.delivery.smtp import DeliveryError

    marker, mode = Path(sys.argv[1]), sys.argv[2]

    def factory(settings):
        real = outbox.smtp_sender(settings)

        def send(msg):
            if mode == "after_send":
                real(msg)  # the relay accepted it; we die before recording that
            marker.write_text(str(msg.id))
            if mode == "temporary_error":
                raise DeliveryError("451 try again later", permanent=False)
            time.sleep(600)

        return send

    settings = get_settings()
    sessions = session_factory(make_engine(settings.resolved_database_url))
    with delivery_flow.use_sender(factory):
        worker.run_worker(settings, sessions)
    """
)


class _ConnectionPeak:
    """Samples, in a thread, the most connections other processes hold to this database."""

    def __init__(self, db_url: str) -> None:
        self._engine = make_engine(db_url, poolclass=NullPool)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.workers = 0

    def _sample(self) -> None:
        pids = text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        with self._engine.connect() as conn:
            own = set(conn.execute(pids).scalars())  # the test's own pool, open before
            while not self._stop.wait(0.1):
                now = set(conn.execute(pids).scalars())
                self.workers = max(self.workers, len(now - own))
                conn.rollback()

    def __enter__(self) -> _ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._engine.dispose()


def _env(db_url: str, port: int, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PLIXO_DATABASE_URL=db_url,
        PLIXO_DATA_DIR=str(tmp_path / "data"),
        PLIXO_SMTP_HOST="127.0.0.1",
        PLIXO_SMTP_PORT=str(port),
        PLIXO_SMTP_FROM="ar@acme.test",
        PLIXO_WORKER_POLL_S="0.05",
        PLIXO_WORKER_STALE_S="1",
        # No scheduled workflows in these workers (as in-process tests): a cron firing while a
        # `--once` worker shuts down held its exit past the test's timeout (seen once in CI).
        PLIXO_DOMAIN_RECHECK_CRON="",
        PLIXO_NOTIFICATION_SWEEP_CRON="",
        PLIXO_MAILBOX_SYNC_CRON="",
        PYTHONPATH=str(REPO),
    )
    env.update(extra)  # a test's own settings win over these
    env.pop("PLIXO_DBOS_SYSTEM_DATABASE_URL", None)
    return env


def _start_doomed(mode: str, marker: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _DOOMED_WORKER, str(marker), mode],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # A guard against a hang, not a timing check: a worker on a loaded machine (two suites on two
    # cores) can take over a minute to start, launch DBOS and claim the message.
    deadline = time.monotonic() + 180
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "worker exited")
        if time.monotonic() >= deadline:
            _kill(proc)  # never left running (and polling) after the test gives up
            raise AssertionError("the worker never reached the hand-off")
        time.sleep(0.05)
    return proc


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _run_worker_cli(env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "api.cli.worker", "--once", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()
    result: dict[str, object] = json.loads(out.stdout)
    return result


def _resolve(sessions: sessionmaker[Session], seeded: Seeded, action: str) -> None:
    with sessions() as s:
        row_id = s.scalars(select(OutboxMessage.id)).one()
        manager = s.get(User, seeded.users[Persona.COLLECTIONS_MANAGER].id)
        collector = s.get(User, seeded.users[Persona.COLLECTOR].id)
        assert manager is not None and collector is not None
        with pytest.raises(outbox.OutboxPermissionError):
            outbox.resolve(s, seeded.org.id, row_id, user=collector, action=action)
        outbox.resolve(s, seeded.org.id, row_id, user=manager, action=action)
        s.commit()


def test_killed_mid_hand_off_is_uncertain_not_resent_and_a_person_resends_it(
    db_url: str,
    sessions: sessionmaker[Session],
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
) -> None:
    port, sink = smtp
    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
    env = _env(db_url, port, tmp_path)
    proc = _start_doomed("before_send", tmp_path / "claimed", env)
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.CLAIMED and row.claimed_by
    _kill(proc)
    result = _run_worker_cli(env)  # recovers the dead worker's workflow once its heartbeat is stale
    assert result["recovered_from"]
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.UNCERTAIN and row.attempts == 0
        assert s.get(Draft, seeded.drafts[0].id).status is DraftStatus.QUEUED  # type: ignore[union-attr]
    assert sink.received == []  # the dead worker never reached the relay, and nobody resent
    assert _run_worker_cli(env)["dispatched"] == 0
    _resolve(sessions, seeded, "resend")
    _run_worker_cli(env)
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.SENT and row.delivery_round == 1
        assert s.get(Draft, seeded.drafts[0].id).status is DraftStatus.SENT  # type: ignore[union-attr]
        actions = s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
        assert "outbox.uncertain" in actions and "outbox.resend" in actions
    assert sink.message_ids() == [row.message_id]


def test_killed_after_the_relay_accepted_is_confirmed_by_a_person_not_sent_again(
    db_url: str,
    sessions: sessionmaker[Session],
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
) -> None:
    """The window SMTP cannot close: the relay has the message and the worker died before
    recording it. It is never sent twice: it waits, uncertain, with its Message-ID, and a person
    who finds it in the relay's log confirms it; the ledger then shows one touch."""
    port, sink = smtp
    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
    env = _env(db_url, port, tmp_path)
    _kill(_start_doomed("after_send", tmp_path / "sent", env))
    _run_worker_cli(env)
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.UNCERTAIN
    assert sink.message_ids() == [row.message_id]
    _resolve(sessions, seeded, "confirm_sent")
    _run_worker_cli(env)
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.SENT
        touches = s.scalar(select(func.count()).select_from(Activity))
        assert s.get(Draft, seeded.drafts[0].id).status is DraftStatus.SENT  # type: ignore[union-attr]
    assert sink.message_ids() == [row.message_id]
    assert touches == 1


def test_a_crash_outside_the_hand_off_resumes_and_costs_no_retry(
    db_url: str,
    sessions: sessionmaker[Session],
    seeded: Seeded,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
) -> None:
    """Killed during the back-off after a temporary error: the restarted worker finishes the
    durable sleep and hands it over; with a budget of two hand-offs it is still delivered."""
    port, sink = smtp
    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
    env = _env(
        db_url, port, tmp_path, PLIXO_DELIVERY_BACKOFF_S="[2.0]", PLIXO_DELIVERY_MAX_ATTEMPTS="2"
    )
    proc = _start_doomed("temporary_error", tmp_path / "failed-once", env)
    deadline = time.monotonic() + 30
    while True:  # the temporary error is recorded, the workflow sleeps: kill it there
        with sessions() as s:
            row = s.scalars(select(OutboxMessage)).one()
            if row.status is OutboxStatus.QUEUED and row.attempts == 1:
                break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _kill(proc)
    _run_worker_cli(env)
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.SENT and row.attempts == 2
    assert sink.message_ids() == [row.message_id]


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES, reason="set PLIXO_TEST_POSTGRES_URL to run on PostgreSQL")
def test_two_worker_processes_on_postgresql_deliver_500_messages_once_each(
    db_url: str,
    sessions: sessionmaker[Session],
    org: Organisation,
    tmp_path: Path,
    smtp: tuple[int, SmtpSink],
) -> None:
    port, sink = smtp
    with sessions() as s:
        for i in range(500):
            outbox.enqueue_email(
                s,
                org.id,
                to=f"payer{i}@x.test",
                subject=f"Reminder {i}",
                body="Due.",
                idempotency_key=f"two-workers:{i}",
            )
        s.commit()
    # Two live workers: a heartbeat 1 s late (one tick dispatching hundreds of workflows on a
    # loaded CI machine) would have the other presume it dead and take its workflows over, which
    # the kill tests above cover; here both stay alive, so they get a realistic 5 s.
    env = _env(db_url, port, tmp_path, PLIXO_WORKER_STALE_S="5")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "api.cli.worker", "--once", "--json"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    with _ConnectionPeak(db_url) as peak:
        outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1].decode()[-2000:] for o in outs]
    # Each worker stays within its budget (ledger pool + DBOS pool + listener), so processes
    # sharing one PostgreSQL can be counted against max_connections; the test's own pool aside.
    budget = Settings(database_url=db_url).worker_connection_budget
    assert 0 < peak.workers <= 2 * budget, (peak.workers, budget)
    with sessions() as s:
        ids = s.scalars(select(OutboxMessage.message_id)).all()
        statuses = set(s.scalars(select(OutboxMessage.status)).all())
    received = sink.message_ids()
    assert sorted(received) == sorted(ids) and len(set(received)) == 500
    assert statuses == {OutboxStatus.SENT}


def test_a_quiet_hours_deferral_is_a_durable_sleep_then_the_guardrails_again(
    sessions: sessionmaker[Session],
    seeded: Seeded,
    worker_id: str,
    durable_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import UTC, datetime, timedelta

    from dbos import DBOS

    asked: list[datetime] = []

    def decide_again(session: Session, draft: Draft, now: datetime, settings: Settings) -> dict:
        asked.append(now)
        return {"outcome": "allow", "reasons": []}

    monkeypatch.setattr(drafts, "_decide_again", decide_again)
    not_before = datetime.now(UTC) + timedelta(seconds=12)
    with sessions() as s:
        d = s.get(Draft, seeded.drafts[0].id)
        assert d is not None
        d.status = DraftStatus.APPROVED
        d.decision = {"outcome": "defer", "not_before": not_before.isoformat(), "reasons": []}
        s.commit()
    durable.set_ledger(sessions, durable_settings)
    (wid,) = delivery_flow.dispatch(sessions)
    assert wid.startswith("release:")
    assert delivery_flow.dispatch(sessions) == []  # started once, however often workers look
    handle = DBOS.retrieve_workflow(wid)
    assert handle.get_result() == "queued"
    assert asked and asked[0] >= not_before  # asked again only once the deferral had passed
    steps = [st["function_name"] for st in DBOS.list_workflow_steps(wid)]
    assert "DBOS.sleep" in steps
    with sessions() as s:
        d = s.get(Draft, seeded.drafts[0].id)
        assert d is not None and d.status is DraftStatus.QUEUED
        assert s.scalars(select(OutboxMessage.draft_id)).all() == [d.id]


def test_worker_status_lists_what_waits_and_only_a_permitted_person_cancels(
    sessions: sessionmaker[Session],
    seeded: Seeded,
    tmp_path: Path,
    worker_id: str,
    durable_settings: Settings,
) -> None:
    from dbos import DBOS

    from api import worker as runtime

    with sessions() as s:
        _approve(s, seeded, s.get(Draft, seeded.drafts[0].id), tmp_path)  # type: ignore[arg-type]
        s.get(Organisation, seeded.org.id).maintenance = True  # type: ignore[union-attr]
        s.commit()
    durable.set_ledger(sessions, durable_settings)
    (wid,) = delivery_flow.dispatch(sessions)  # held by maintenance: sleeps, in flight
    deadline = time.monotonic() + 60
    while DBOS.retrieve_workflow(wid).get_status().status != "PENDING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    data = runtime.status(sessions, durable_settings, DBOS)
    mine = data["organisations"][seeded.org.slug]
    assert [f["workflow_id"] for f in mine["in_flight"]] == [wid]
    assert {q["name"] for q in data["queues"]} >= {delivery_flow.DELIVERY_QUEUE}
    collector = seeded.users[Persona.COLLECTOR]
    with pytest.raises(runtime.OperationRefused, match="may not"):
        runtime.act_on_workflow(
            sessions, wid, action="cancel", user_email=collector.email, dbos=DBOS
        )
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    assert (
        runtime.act_on_workflow(sessions, wid, action="cancel", user_email=manager.email, dbos=DBOS)
        == "cancelled"
    )
    assert DBOS.retrieve_workflow(wid).get_status().status == "CANCELLED"
    with sessions() as s:
        assert s.scalar(select(func.count()).where(AuditEvent.action == "workflow.cancel")) == 1
    assert (
        runtime.act_on_workflow(sessions, wid, action="retry", user_email=manager.email, dbos=DBOS)
        == "resumed"
    )
    DBOS.cancel_workflow(wid)  # do not leave it sleeping in the shared test process
