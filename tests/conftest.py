"""Shared fixtures: a real, migrated ledger per test on SQLite, or on PostgreSQL when asked.

Set ``PLIXO_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) to run
the same tests against PostgreSQL: a throwaway database is created per test process and dropped
after, and tables are emptied between tests.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from psycopg.errors import DeadlockDetected, LockNotAvailable
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("PLIXO_MODEL", "offline")
# No scheduled workflow unless a test asks for one: DBOS is launched once per test process, and a
# schedule applied by the first launch (the defaults sweep notifications every five minutes)
# would fire on whichever test's ledger DBOS points at by then (a Legal inbox once counted an
# SLA breach the test never expected). Tests of the schedules set their own cron.
for _cron in (
    "PLIXO_NOTIFICATION_SWEEP_CRON",
    "PLIXO_DOMAIN_RECHECK_CRON",
    "PLIXO_MAILBOX_SYNC_CRON",
):
    os.environ.setdefault(_cron, "")

import tools.wiring  # noqa: E402, F401 - the tool domains' hooks, like every entry point
from memory import migrate  # noqa: E402
from memory.config import Settings, get_settings  # noqa: E402
from memory.db import make_engine, session_factory  # noqa: E402
from memory.models import Base, Organisation  # noqa: E402

try:  # pydantic-ai's guard: no test may call a real model.
    from pydantic_ai import models as _ai_models

    _ai_models.ALLOW_MODEL_REQUESTS = False
except ImportError:  # pragma: no cover
    pass

POSTGRES_URL = os.environ.get("PLIXO_TEST_POSTGRES_URL")

# Hypothesis: in CI every run draws the same examples (derandomized: a seed fixed per test, no
# example database), so a red build is reproducible and a green one is not luck; locally each run
# explores new examples. A test's own ``@settings`` still overrides what it names.
settings.register_profile(
    "ci", derandomize=True, database=None, print_blob=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
settings.register_profile("dev", derandomize=False)


def hypothesis_profile(environ: Mapping[str, str]) -> str:
    """The profile for this environment: ``ci`` when ``CI=true`` (as CI services set it)."""
    return "ci" if environ.get("CI", "").strip().lower() == "true" else "dev"


settings.load_profile(hypothesis_profile(os.environ))


def pytest_report_header(config: pytest.Config) -> str:
    return f"plixo ledger backend: {'postgresql' if POSTGRES_URL else 'sqlite'}"


@pytest.fixture(scope="session")
def _template_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    if POSTGRES_URL:
        return None
    path = tmp_path_factory.mktemp("ledger-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def _postgres_db() -> Iterator[str | None]:
    if not POSTGRES_URL:
        yield None
        return
    base = make_url(POSTGRES_URL)
    if base.drivername == "postgresql":
        base = base.set(drivername="postgresql+psycopg")
    name = f"plixo_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _empty_postgres(url: str, attempts: int = 5) -> None:
    """Empty every table for the next test.

    A transaction an earlier test left running in the background (a worker's heartbeat, a
    delivery finishing its last step) can deadlock with the TRUNCATE's locks; PostgreSQL then
    cancels one side (seen once in CI, at a test's setup). When it cancels ours, the other side
    finishes, and the TRUNCATE is tried again after a moment.
    """
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    engine = make_engine(url)
    try:
        for attempt in range(1, attempts + 1):
            try:
                with engine.begin() as conn:
                    conn.execute(text("SET LOCAL lock_timeout = '30s'"))
                    conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
                return
            except OperationalError as exc:
                transient = isinstance(exc.orig, (DeadlockDetected, LockNotAvailable))
                if not transient or attempt == attempts:
                    raise
                time.sleep(0.2 * attempt)
    finally:
        engine.dispose()


@pytest.fixture
def db_url(
    tmp_path: Path, _template_sqlite: Path | None, _postgres_db: str | None
) -> Iterator[str]:
    """A migrated, empty ledger for this test."""
    if _postgres_db:
        _empty_postgres(_postgres_db)
        yield _postgres_db
        return
    assert _template_sqlite is not None
    path = tmp_path / "plixo.db"
    shutil.copyfile(_template_sqlite, path)
    yield f"sqlite:///{path}"


@pytest.fixture
def data_dir(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the settings at a private data directory and this test's ledger."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("PLIXO_DATA_DIR", str(d))
    monkeypatch.setenv("PLIXO_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield d
    get_settings.cache_clear()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    s = sessions()
    yield s
    s.rollback()
    s.close()


@pytest.fixture
def org(session: Session) -> Organisation:
    """An empty organisation, committed."""
    o = Organisation(name="Acme Test Ltd", slug=f"acme-{uuid.uuid4().hex[:6]}")
    session.add(o)
    session.commit()
    return o


# --- durable execution (DBOS): launched once per test process ----------------------------------


@pytest.fixture(scope="session", autouse=True)
def _dbos_system_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One DBOS system database (SQLite) for the test process: launching DBOS costs ~1 s, so it
    is launched once and each test points it at its own ledger (workflow ids carry the ledger's
    key, so tests never see one another's workflows).

    Also the environment's, for commands run in-process (``plixo autopilot run`` launches DBOS
    embedded): on PostgreSQL their default system database would be the test process's ledger,
    the one the worker subprocesses of the outbox and Autopilot kill tests use, and the test
    process's DBOS (launched once, never moved) would then run those workers' workflows with a
    past test's settings. The subprocess helpers drop the variable, so workers keep the default.
    """
    from memory import durable

    url = f"sqlite:///{tmp_path_factory.mktemp('dbos') / 'system.sqlite'}"
    before = os.environ.get("PLIXO_DBOS_SYSTEM_DATABASE_URL")
    os.environ["PLIXO_DBOS_SYSTEM_DATABASE_URL"] = url
    get_settings.cache_clear()
    yield url
    durable.shutdown()
    if before is None:
        os.environ.pop("PLIXO_DBOS_SYSTEM_DATABASE_URL", None)
    else:
        os.environ["PLIXO_DBOS_SYSTEM_DATABASE_URL"] = before


@pytest.fixture
def durable_settings(tmp_path: Path, db_url: str, _dbos_system_url: str) -> Settings:
    """Settings for in-process workflows: fast polling and short back-offs."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        dbos_system_database_url=_dbos_system_url,
        worker_poll_s=0.05,
        delivery_backoff_s=(0.05, 0.1),
        delivery_max_attempts=3,
        smtp_from="ar@acme.test",
        domain_recheck_cron=None,  # no DNS lookup at the top of an hour; a test applies its own
        notification_sweep_cron=None,  # no sweep of a test's ledger mid-test; a test triggers it
        mailbox_sync_cron=None,  # no mailbox read mid-test; a test applies its own
    )


@pytest.fixture
def worker_id(durable_settings: Settings, sessions: sessionmaker[Session]) -> str:
    """DBOS launched in this process (once) and pointed at this test's ledger: the test process
    is a worker. Returns its executor id."""
    from api import worker

    return worker.start(durable_settings, sessions)
