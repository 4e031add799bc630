"""Durable execution (DBOS): where its system database lives, launching it, and the ledger it uses.

Why DBOS: Autopilot passes and deliveries must survive a killed process without doing anything
twice, and must spread over any number of worker processes on any number of machines. DBOS keeps
workflows, their steps' results and its queues in a database (the *system database*), so a
restarted or different worker resumes a workflow where the dead one stopped.

The system database is a SQLite file in the data directory by default (``dbos.sqlite``: the
README's first command runs with no server), and the ledger's own PostgreSQL database when
``PLIXO_DATABASE_URL`` is PostgreSQL (DBOS keeps its tables in the ``dbos`` schema), so every
worker that shares the ledger shares the queues. ``PLIXO_DBOS_SYSTEM_DATABASE_URL`` overrides it.

Workflows reach the ledger through ``ledger_sessions()`` (set at launch; tests point it at their
own ledger) and never receive a URL as an argument: arguments are stored in the system database
and a URL may hold a password. Workflow ids start with ``ledger_key`` (a random key stored once in
the ledger), so a new ledger never collides with an earlier one's finished workflows.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from memory import clock
from memory.config import Settings, get_settings
from memory.db import LedgerUnavailable, driver_reason, redact_url
from memory.models import LedgerIdentity, WorkerHeartbeat

log = logging.getLogger("plixo.durable")

APP_NAME = "plixo"
#: One application version for every process of this release: workers, the CLI's embedded runs
#: and tests must agree, or DBOS would not recover one another's workflows.
APP_VERSION = "plixo-1"

_state_lock = threading.Lock()
_sessions: sessionmaker[Session] | None = None
_settings: Settings | None = None
_launched_url: str | None = None
_executor_id: str | None = None
_hooks: list[Callable[[Settings], None]] = []

#: The queue scheduled (cron) workflows run on: only long-running workers listen to it. A process
#: that works for a while and exits (``plixo worker --once``, an embedded ``plixo autopilot run``)
#: launches with ``schedules=False`` and never runs one: a sweep or a mailbox sync picked up while
#: it shut down held its exit (and its executor, once shut down, refused the work: "cannot
#: schedule new futures after shutdown").
SCHEDULE_QUEUE = "plixo_scheduled"


def system_database_url(settings: Settings) -> str:
    """The DBOS system database for these settings (see the module docstring)."""
    if settings.dbos_system_database_url:
        return settings.dbos_system_database_url
    ledger = make_url(settings.resolved_database_url)
    if ledger.get_backend_name() == "postgresql":
        return ledger.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    path = (settings.data_dir / "dbos.sqlite").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def new_executor_id(kind: str = "worker") -> str:
    """Unique per process: DBOS recovers a workflow for the executor id that ran it."""
    return f"{kind}:{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def on_launch(hook: Callable[[Settings], None]) -> None:
    """Run ``hook(settings)`` right after DBOS launches (queues are registered this way); at once
    when it already runs."""
    if hook not in _hooks:
        _hooks.append(hook)
        if _launched_url is not None:
            hook(ledger_settings())


class Heartbeat:
    """Beats for ``executor`` in a background thread while a command or a worker works.

    Why a thread of its own: a beat that waits for the dispatch loop goes stale whenever one
    round is slow (hundreds of workflows dispatched at once on a loaded machine), and a live
    worker then presumes this one dead and takes over workflows it is still running."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        executor: str,
        every_s: float,
        *,
        kind: str = "embedded",
    ) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sessions, executor, every_s, kind), daemon=True,
            name=f"heartbeat-{executor}",
        )  # fmt: skip
        self._thread.start()

    def _run(
        self, sessions: sessionmaker[Session], executor: str, every_s: float, kind: str
    ) -> None:
        away = False
        while not self._stop.wait(every_s):
            try:
                with sessions() as session:
                    beat(session, executor, kind=kind)
            except (OperationalError, LedgerUnavailable) as exc:  # away: beat again later
                if not away:  # once per outage (it beats several times a second)
                    log.warning(
                        "%s cannot reach the ledger (%s); its work pauses until the ledger is "
                        "back.",
                        executor,
                        driver_reason(exc),
                    )
                away = True
                continue
            if away:
                log.warning("%s reached the ledger again.", executor)
                away = False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class QuietRepeats(logging.Filter):
    """Lets the same warning (same place in the code) through once per ``every_s``, with how
    many like it were held back; errors always pass.

    Why: while the database is away, DBOS's background threads (queue dispatch, notifications,
    schedules) warn on every poll: about 5,900 lines per minute of outage, tracebacks included,
    in which the one line that says what to do is lost."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s, self.clock = every_s, clock
        self._seen: dict[tuple[str, int], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        key, now = (record.pathname, record.lineno), self.clock()
        with self._lock:
            last, held = self._seen.get(key, (float("-inf"), 0))
            if now - last < self.every_s:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} more like this held back)"
            record.args = None
        return True


def is_launched() -> bool:
    return _launched_url is not None


def executor_id() -> str:
    if _executor_id is None:
        raise RuntimeError("DBOS is not launched in this process.")
    return _executor_id


def launch(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    kind: str = "worker",
    executor: str | None = None,
    listen: list[str] | None = None,
) -> str:
    """Launch DBOS once per process (a second call only re-points the ledger) and return the
    executor id. Raises ``LedgerUnavailable`` with the URL (no password) when the system database
    cannot be reached.

    ``listen``: the queues this process takes work from (default: every queue, the scheduled
    workflows' included); a process that does not run the schedules names its work queues and
    leaves ``SCHEDULE_QUEUE`` out. Only the first launch of a process decides."""
    global _launched_url, _executor_id
    from dbos import DBOS

    set_ledger(sessions, settings)
    url = system_database_url(settings)
    with _state_lock:
        if _launched_url is not None:
            return str(_executor_id)
        ident = executor or new_executor_id(kind)
        logging.getLogger("dbos").setLevel(logging.WARNING)
        try:
            DBOS(
                config={
                    "name": APP_NAME,
                    "system_database_url": url,
                    "application_version": APP_VERSION,
                    "executor_id": ident,
                    "log_level": "WARNING",
                    "notification_listener_polling_interval_sec": 0.1,
                    "sys_db_pool_size": settings.dbos_pool_size,
                    # No ping before every checkout (DBOS's default): every queue poll and step
                    # checkpoint paid a round trip for it. A connection the server dropped fails
                    # once; DBOS retries its system-database calls on a fresh one.
                    "db_engine_kwargs": {"pool_pre_ping": False, "pool_recycle": 1800},
                }
            )
            if not any(isinstance(f, QuietRepeats) for f in logging.getLogger("dbos").filters):
                logging.getLogger("dbos").addFilter(QuietRepeats())
            if listen is not None:
                DBOS.listen_queues([q for q in listen if q != SCHEDULE_QUEUE])
            DBOS.launch()
            # Scheduled workflows are enqueued here (``schedule_queue()``), never on DBOS's
            # internal queue, which every process works whatever it listens to.
            DBOS.register_queue(
                SCHEDULE_QUEUE,
                polling_interval_sec=max(1.0, settings.worker_poll_s),
                on_conflict="always_update",
            )
            for hook in list(_hooks):
                hook(settings)
        except (OperationalError, OSError) as exc:
            _safe_destroy()
            raise LedgerUnavailable(
                f"Cannot reach the DBOS system database at {redact_url(url)}: {exc}. Check that "
                "the database is running (PLIXO_DATABASE_URL / PLIXO_DBOS_SYSTEM_DATABASE_URL)."
            ) from exc
        except Exception as exc:
            _safe_destroy()
            if "connect" in str(exc).lower() or "unable to open" in str(exc).lower():
                raise LedgerUnavailable(
                    f"Cannot reach the DBOS system database at {redact_url(url)}: {exc}."
                ) from exc
            raise
        _launched_url, _executor_id = url, ident
        return ident


def listen_to_all() -> None:
    """Take work from every queue from now on, the scheduled workflows' included: a process that
    launched embedded (tests, a command run before it) and now works as a long-running worker.
    DBOS's queue manager reads the list again every second."""
    from dbos._dbos import _get_dbos_instance

    if _launched_url is None:
        return
    dbos = _get_dbos_instance()
    if dbos._listening_queues is not None:
        dbos._listening_queues = None


def _safe_destroy() -> None:
    from dbos import DBOS

    try:
        DBOS.destroy(workflow_completion_timeout_sec=0)
    except Exception:  # already half-down: nothing more to release
        log.debug("DBOS destroy after a failed launch", exc_info=True)


def shutdown() -> None:
    """Stop DBOS in this process (workflows in flight are recovered by the next launch)."""
    global _launched_url, _executor_id
    with _state_lock:
        if _launched_url is None:
            return
        _safe_destroy()
        _launched_url = _executor_id = None


def set_ledger(sessions: sessionmaker[Session], settings: Settings | None = None) -> None:
    """Point the workflows of this process at a ledger (and the settings they send with)."""
    global _sessions, _settings
    _sessions = sessions
    if settings is not None:
        _settings = settings


def ledger_settings() -> Settings:
    """The settings the workflows of this process use (SMTP, retries, model)."""
    if _settings is None:
        return get_settings()
    return _settings


def ledger_sessions() -> sessionmaker[Session]:
    if _sessions is None:
        raise RuntimeError("No ledger: call memory.durable.launch(settings, sessions) first.")
    return _sessions


def ledger_key(session: Session) -> str:
    """This ledger's random key (created on first use, race-safe). Read every time (one small
    query): a ledger may be recreated at the same URL (a fresh demo, a test database)."""
    key = session.scalar(select(LedgerIdentity.key).order_by(LedgerIdentity.id).limit(1))
    if key is None:
        try:
            with session.begin_nested():
                session.add(LedgerIdentity(id=1, key=uuid.uuid4().hex[:16]))
            session.commit()
        except IntegrityError:
            session.rollback()
        key = session.scalar(select(LedgerIdentity.key).order_by(LedgerIdentity.id).limit(1))
    assert key is not None
    return key


# --- liveness -------------------------------------------------------------------------------


def beat(session: Session, executor: str, *, kind: str = "worker") -> None:
    """Record that ``executor`` is alive (insert on first beat)."""
    now = clock.now()
    hit = session.execute(
        update(WorkerHeartbeat).where(WorkerHeartbeat.executor_id == executor).values(seen_at=now)
    )
    if hit.rowcount == 0:  # type: ignore[attr-defined]
        session.add(
            WorkerHeartbeat(
                executor_id=executor,
                host=socket.gethostname()[:200],
                pid=os.getpid(),
                kind=kind,
                started_at=now,
                seen_at=now,
            )
        )
    session.commit()


def forget(session: Session, executor: str) -> None:
    """A worker that stops cleanly removes its heartbeat."""
    session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.executor_id == executor))
    session.commit()


def live_executors(session: Session, stale_s: float) -> list[WorkerHeartbeat]:
    limit = clock.now() - timedelta(seconds=stale_s)
    return list(
        session.scalars(
            select(WorkerHeartbeat)
            .where(WorkerHeartbeat.seen_at >= limit)
            .order_by(WorkerHeartbeat.started_at)
        )
    )


def stale_executors(session: Session, stale_s: float, *, mine: str) -> list[str]:
    """Executors not seen for ``stale_s``: presumed dead."""
    limit = clock.now() - timedelta(seconds=stale_s)
    ids = session.scalars(
        select(WorkerHeartbeat.executor_id).where(
            WorkerHeartbeat.seen_at < limit, WorkerHeartbeat.executor_id != mine
        )
    )
    return list(ids)


def bury(session: Session, executors: list[str], stale_s: float) -> None:
    """Forget dead executors once their workflows are back on their queues (still stale only:
    one that came back to life keeps its row)."""
    limit = clock.now() - timedelta(seconds=stale_s)
    for ident in executors:
        session.execute(
            delete(WorkerHeartbeat).where(
                WorkerHeartbeat.executor_id == ident, WorkerHeartbeat.seen_at < limit
            )
        )
    session.commit()


def recover_dead(sessions: sessionmaker[Session], stale_s: float, *, mine: str) -> list[str]:
    """Hand the pending workflows of executors not seen for ``stale_s`` back to their queues,
    then forget those executors. Recovery comes first and is idempotent (DBOS re-enqueues a
    workflow only while it is still pending on the dead executor), so a recoverer killed half-way
    leaves the dead executor for the next one to find, and two recoverers never run a workflow
    twice."""
    from dbos import DBOS

    with sessions() as session:
        dead = stale_executors(session, stale_s, mine=mine)
    if not dead:
        return []
    handles = DBOS._recover_pending_workflows(dead)
    if handles:
        log.warning("recovered %d workflows of stopped workers %s", len(handles), dead)
    with sessions() as session:
        bury(session, dead, stale_s)
    return dead
