"""A worker's heartbeat beats from its own thread: a slow dispatch round (hundreds of workflows
on a loaded machine) must not let the heartbeat go stale, or a live worker would presume this
one dead and take over workflows it is still running."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api import worker
from memory.config import Settings
from memory.models import WorkerHeartbeat
from tools.delivery import flow as delivery_flow


def _seen(sessions: sessionmaker[Session], ident: str) -> list[object]:
    with sessions() as session:
        return list(
            session.scalars(
                select(WorkerHeartbeat.seen_at).where(WorkerHeartbeat.executor_id == ident)
            )
        )


def test_the_heartbeat_beats_while_a_dispatch_round_is_slow(
    durable_settings: Settings,
    sessions: sessionmaker[Session],
    worker_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = durable_settings.model_copy(update={"worker_stale_s": 0.6})  # a beat every 0.2 s
    in_round = threading.Event()
    leave_round = threading.Event()

    def slow_dispatch(_sessions: sessionmaker[Session]) -> list[str]:
        in_round.set()
        leave_round.wait(10)
        return []

    monkeypatch.setattr(delivery_flow, "dispatch", slow_dispatch)
    stop = threading.Event()
    result: list[worker.WorkerResult] = []
    runner = threading.Thread(
        target=lambda: result.append(worker.run_worker(settings, sessions, should_stop=stop.is_set))
    )
    runner.start()
    try:
        assert in_round.wait(10), "the worker never started a dispatch round"
        ident = worker_id  # DBOS is launched once per process: the worker runs as this executor
        [first] = _seen(sessions, ident)
        deadline = time.monotonic() + 5
        while _seen(sessions, ident) == [first] and time.monotonic() < deadline:
            time.sleep(0.05)
        # the round is still stuck in dispatch, and yet the heartbeat moved on
        assert not leave_round.is_set()
        [later] = _seen(sessions, ident)
        assert later > first  # type: ignore[operator]
    finally:
        stop.set()
        leave_round.set()
        runner.join(15)
    assert not runner.is_alive() and result[0].executor_id == worker_id
