"""Engine and session handling for the ledger, with errors an operator can act on."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from memory import planner_stats as _planner_stats  # noqa: F401 - registers the commit hook
from memory import queue_version as _queue_version  # noqa: F401 - registers the commit hooks
from memory.config import get_settings

log = logging.getLogger("plixo.db")


class LedgerUnavailable(RuntimeError):
    """The database cannot be reached or is locked; the message says which URL and what to do."""


def redact_url(url: str) -> str:
    """The URL without its password, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Foreign keys are off by default in SQLite; WAL lets the API read while Autopilot writes.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (default: the configured ledger); creates the SQLite folder."""
    url = url or get_settings().resolved_database_url
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise LedgerUnavailable(
            f"PLIXO_DATABASE_URL is not a valid SQLAlchemy URL ({exc}). "
            "Use e.g. sqlite:///plixo.db or postgresql+psycopg://user@host/db."
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):  # a URI names its own file
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 5})
    elif parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # The bundled driver is psycopg 3; a bare postgresql:// URL would ask for psycopg2.
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        kwargs.setdefault("pool_pre_ping", True)
    in_memory = parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")
    if "poolclass" not in kwargs and not in_memory:  # a bounded pool (PLIXO_LEDGER_POOL_SIZE)
        settings = get_settings()
        kwargs.setdefault("pool_size", settings.ledger_pool_size)
        kwargs.setdefault("max_overflow", settings.ledger_max_overflow)
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def driver_reason(exc: BaseException) -> str:
    """The database driver's reason, its first line only: without SQLAlchemy's statement and
    parameters, so no ledger data reaches a message or a log."""
    orig = getattr(exc, "orig", None)
    return (str(orig or exc).strip().splitlines() or [type(exc).__name__])[0]


def check_connection(engine: Engine) -> None:
    """Fail early with a message naming the URL (without password) and the fix."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = driver_reason(exc)
        hint = (
            "Another plixo process may hold the SQLite file: wait for it, or point "
            "PLIXO_DATABASE_URL elsewhere."
            if "locked" in reason
            else "Check that the server is running and the URL is right (set PLIXO_DATABASE_URL)."
        )
        raise LedgerUnavailable(
            f"Cannot reach the ledger at {redact_url(engine.url.render_as_string(False))}: "
            f"{reason}. {hint}"
        ) from exc


def wait_for_ledger(engine: Engine, *, poll_s: float = 1.0) -> bool:
    """Block while the ledger cannot be reached (a restart, a failover, a network cut); whether
    it could not (False: it answered at once, so the error that brought the caller here was not
    an outage and is the caller's to handle).

    Why: long work (an Autopilot chunk) that meets an outage half-way should pause and carry on
    where it stopped, as DBOS itself does for its system database, instead of spending its
    retries in the first seconds and ending the pass with errors. Said once, not every poll."""
    waited = False
    while True:
        try:
            check_connection(engine)
            if waited:
                log.warning("The ledger is reachable again: carrying on where work stopped.")
            return waited
        except LedgerUnavailable as exc:
            if not waited:
                log.warning(
                    "%s Waiting for it to come back; what is stored stays stored (Ctrl-C stops, "
                    "and the same command resumes).",
                    exc,
                )
            waited = True
            time.sleep(poll_s)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll everything back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
