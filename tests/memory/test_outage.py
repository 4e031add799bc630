"""A ledger that goes away and comes back: ``wait_for_ledger`` pauses while it is away, says so
once (naming the URL without its password), and tells the caller whether there was an outage
at all (an error on a reachable ledger is not one, and must not be retried forever); and
what DBOS says meanwhile stays readable."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from memory.db import make_engine, wait_for_ledger


def test_a_reachable_ledger_answers_at_once_and_is_not_an_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.db"
    make_engine(f"sqlite:///{path}").dispose()  # creates the file
    engine = make_engine(f"sqlite:///{path}")
    with caplog.at_level(logging.WARNING, logger="plixo.db"):
        assert wait_for_ledger(engine, poll_s=0.05) is False
    assert not caplog.records
    engine.dispose()


def test_an_outage_pauses_until_the_ledger_is_back_and_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.db"
    seed = make_engine(f"sqlite:///{path}")
    with seed.begin() as conn:
        conn.execute(text("CREATE TABLE kept (n INTEGER)"))
        conn.execute(text("INSERT INTO kept VALUES (7)"))
    seed.dispose()
    away = tmp_path / "away.db"
    path.rename(away)
    # read-write, never created: while the file is away, every connection fails as an
    # unreachable server's does
    engine = make_engine(f"sqlite:///file:{path}?mode=rw&uri=true")

    def come_back() -> None:
        time.sleep(0.6)
        away.rename(path)

    threading.Thread(target=come_back).start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="plixo.db"):
        assert wait_for_ledger(engine, poll_s=0.05) is True
    assert time.monotonic() - started >= 0.5  # it waited for the file, polling many times
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said  # once when it went away, once when it came back
    assert said[0].startswith("Cannot reach the ledger at sqlite:///") and "Ctrl-C" in said[0]
    assert "reachable again" in said[1]
    with engine.connect() as conn:  # what was stored is there
        assert conn.execute(text("SELECT n FROM kept")).scalar_one() == 7
    engine.dispose()


def test_dbos_repeated_warnings_pass_once_a_minute_with_a_count() -> None:
    """While the database is away DBOS warns from the same places on every poll: each place
    speaks once per minute, then with how many it held back; errors always pass."""
    from memory.durable import QuietRepeats

    now = [0.0]
    quiet = QuietRepeats(every_s=60.0, clock=lambda: now[0])

    def warn(line: int, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("dbos", level, "_queue.py", line, "queue %s: %s", ("q", "x"), None)

    assert quiet.filter(warn(715))
    passed = [quiet.filter(warn(715)) for _ in range(50)]
    assert not any(passed)
    assert quiet.filter(warn(848))  # another place speaks for itself
    assert quiet.filter(warn(715, logging.ERROR))  # errors always pass
    now[0] = 61.0
    later = warn(715)
    assert quiet.filter(later)
    assert later.getMessage() == "queue q: x (50 more like this held back)"
    again = warn(715)
    now[0] = 130.0
    assert quiet.filter(again) and again.getMessage() == "queue q: x"  # none held since
