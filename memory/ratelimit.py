"""A ``limits`` storage in the ledger: counters every server worker and process shares.

``limits`` ships in-memory, Redis, Memcached, MongoDB and etcd storages. In-memory counts per
process (``plixo serve --workers 4`` would allow four times the guesses, and a restart forgets
them); the default install has no Redis or Memcached, but it always has the ledger (SQLite or
PostgreSQL). So the counters live in ``rate_counter``, and each hit is ONE upsert that resets an
expired window and adds the cost in the same statement, returning the new count: two workers
hitting the same key at once serialise on the row, and neither can read a stale count.
"""

from __future__ import annotations

import time
from typing import Any

from limits.storage import Storage
from sqlalchemy import Engine, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from memory.models import RateCounter


class LedgerStorage(Storage):
    """Fixed-window counters in the ``rate_counter`` table (use with FixedWindowRateLimiter)."""

    STORAGE_SCHEME = None  # built with an engine, never from a URI

    def __init__(self, engine: Engine, clock: Any = time.time) -> None:
        super().__init__(wrap_exceptions=False)
        self.engine = engine
        self.clock = clock

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    def _insert(self) -> Any:
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(RateCounter)
        if self.engine.dialect.name == "sqlite":
            return sqlite.insert(RateCounter)
        raise NotImplementedError(  # pragma: no cover - plixo supports these two
            f"The log-in limiter needs SQLite or PostgreSQL, not {self.engine.dialect.name}."
        )

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = float(self.clock())
        table = RateCounter.__table__
        ins = self._insert().values(key=key, count=amount, expires_at=now + expiry)
        expired = table.c.expires_at <= now
        stmt = ins.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "count": case((expired, amount), else_=table.c.count + amount),
                "expires_at": case((expired, now + expiry), else_=table.c.expires_at),
            },
        ).returning(table.c.count)
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).scalar_one())

    def get(self, key: str) -> int:
        now = float(self.clock())
        with self.engine.connect() as conn:
            row = conn.execute(
                select(RateCounter.count).where(
                    RateCounter.key == key, RateCounter.expires_at > now
                )
            ).first()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(RateCounter.expires_at).where(RateCounter.key == key)
            ).scalar()
        return float(value) if value is not None else float(self.clock())

    def check(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with self.engine.begin() as conn:
            return conn.execute(delete(RateCounter)).rowcount

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(RateCounter).where(RateCounter.key == key))

    def prune(self) -> int:
        """Drop expired windows (the table stays as small as the keys being limited now)."""
        now = float(self.clock())
        with self.engine.begin() as conn:
            return conn.execute(delete(RateCounter).where(RateCounter.expires_at <= now)).rowcount
