"""Engine and session handling for the ledger, with errors an operator can act on."""

from __future__ import annotations

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
        if db and db != ":memory:":
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


def check_connection(engine: Engine) -> None:
    """Fail early with a message naming the URL (without password) and the fix."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
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
