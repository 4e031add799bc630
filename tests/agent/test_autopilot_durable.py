"""Autopilot on DBOS across processes: a pass killed half-way and started again drafts every due
invoice exactly once (the dead run's workflows are recovered, the rest is enqueued again; the
ledger's unique run key is the last word)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from agent.autopilot import run_autopilot
from agent.offline import offline_function
from memory.config import Settings
from memory.models import Draft
from tests.agent.factories import NOW, due_ledger
from tests.benchmarks.bench_autopilot import AS_OF, build_ledger
from tools.outreach.consolidation import consolidate
from tools.outreach.due import DueItem, select_due

REPO = Path(__file__).resolve().parents[2]
N = 300


def _count(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as s:
        total = int(s.scalar(select(func.count()).select_from(Draft)) or 0)
        keys = int(s.scalar(select(func.count(func.distinct(Draft.run_key)))) or 0)
    return total, keys


_STOPPABLE = pytest.mark.skipif(
    not os.environ.get("PLIXO_TEST_POSTGRES_URL"), reason="needs a database server to stop"
)


@contextlib.contextmanager
def _refused(db_url: str) -> Iterator[None]:
    """PostgreSQL drops every connection to this test's database and refuses new ones until
    the block ends (an outage the processes cannot tell from a server restart)."""
    name = make_url(db_url).database
    admin = create_engine(make_url(db_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": name},
            )
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def _pass_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a ``plixo autopilot run`` on this test's ledger and data directory."""
    env = dict(os.environ)
    env.update(
        PLIXO_DATABASE_URL=db_url,
        PLIXO_DATA_DIR=str(tmp_path / "data"),
        PLIXO_DOMAIN_RECHECK_CRON="",  # no scheduled workflows in these processes (see outbox)
        PLIXO_NOTIFICATION_SWEEP_CRON="",
        PLIXO_MAILBOX_SYNC_CRON="",
        PYTHONPATH=str(REPO),
    )
    env.pop("PLIXO_DBOS_SYSTEM_DATABASE_URL", None)
    return env


@pytest.mark.parametrize(
    ("stale_s", "restart_after_s"),
    [("1", 1.5), ("5", 0.0)],  # started again at once: its heartbeat goes stale while it waits
    ids=["after-the-heartbeat-is-stale", "at-once"],
)
def test_a_pass_killed_half_way_and_started_again_drafts_each_invoice_once(
    db_url: str, tmp_path: Path, stale_s: str, restart_after_s: float
) -> None:
    """The second run adopts the chunks the killed one left and waits for them; started at
    once, it recovers them itself when the killed run's heartbeat goes stale (no worker runs)."""
    _, built = build_ledger(db_url, N)
    sessions: sessionmaker[Session] = built  # type: ignore[assignment]
    env = _pass_env(db_url, tmp_path) | {
        "PLIXO_WORKER_STALE_S": stale_s,
        "PLIXO_WORKER_POLL_S": "0.05",
    }
    cmd = [sys.executable, "-c", "from api.cli.main import main; main()", "autopilot", "run",
           "--json", "--as-of", AS_OF.isoformat()]  # fmt: skip
    first = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while _count(sessions)[0] < N // 3:
        assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
        assert time.monotonic() < deadline, "the first pass never got going"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    half, _ = _count(sessions)
    assert N // 3 <= half < N, half
    time.sleep(restart_after_s)
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=180)
    assert second.returncode == 0, second.stderr.decode()[-3000:]
    summary = json.loads(second.stdout)
    total, distinct = _count(sessions)
    assert total == distinct == N  # every due invoice drafted, none twice
    assert summary["due"] == N and summary["errors"] == 0
    assert summary["drafted"] + summary["skipped_existing"] == N
    assert summary["skipped_existing"] >= half


@_STOPPABLE
def test_a_pass_carries_on_when_postgresql_comes_back_after_an_outage(
    db_url: str, tmp_path: Path
) -> None:
    """PostgreSQL refuses every connection for 20 s half-way through a pass (longer than a
    chunk step's five attempts last): the pass pauses, says so once, and when the database is
    back drafts every due invoice once, with no error; one run, nothing to start again."""
    n = 1_000
    _, built = build_ledger(db_url, n)
    sessions: sessionmaker[Session] = built  # type: ignore[assignment]
    cmd = [sys.executable, "-c", "from api.cli.main import main; main()", "autopilot", "run",
           "--json", "--as-of", AS_OF.isoformat()]  # fmt: skip
    run = subprocess.Popen(
        cmd, cwd=REPO, env=_pass_env(db_url, tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while _count(sessions)[0] < n // 4:
        assert run.poll() is None, run.stderr.read().decode() if run.stderr else ""
        assert time.monotonic() < deadline, "the pass never got going"
        time.sleep(0.02)
    sessions.kw["bind"].dispose()
    with _refused(db_url):
        time.sleep(20)
        assert run.poll() is None  # it waits for the database instead of ending
    out, err = run.communicate(timeout=300)
    said = err.decode()
    assert run.returncode == 0, said[-3000:]
    summary = json.loads(out)
    assert summary["due"] == n and summary["errors"] == 0, summary["error_samples"]
    assert _count(sessions) == (n, n)  # every due invoice drafted, none twice
    assert said.count("cannot reach the ledger") == 1  # once per outage, not every beat
    assert said.count("reached the ledger again") == 1


@_STOPPABLE
def test_a_chunk_cut_off_from_postgresql_waits_and_carries_on(
    db_url: str, settings: Settings
) -> None:
    """The chunk itself, in this process: the database refuses connections while it drafts,
    and it waits, then stores every item once (before, its first failed write ended it)."""
    from agent import autopilot_flow
    from memory import durable

    n = 600
    org_id, built = build_ledger(db_url, n)
    sessions: sessionmaker[Session] = built  # type: ignore[assignment]
    autopilot_flow.ensure_launched(settings, sessions)
    with sessions() as s:
        due = consolidate(s, org_id, select_due(s, org_id, AS_OF), AS_OF)
    args = {"as_of": AS_OF.isoformat(), "now": NOW.isoformat(), "shadow": True,
            "concurrency": 8, "batch_size": 25, "model_ref": None, "pass_id": None}  # fmt: skip
    durable_was = durable.ledger_sessions()
    part = _cut_off_midway(
        db_url,
        sessions,
        n,
        lambda: autopilot_flow._draft(org_id, [i.to_dict() for i in due.items], args),
    )
    assert durable.ledger_sessions() is durable_was
    assert part["errors"] == 0
    assert part["drafted"] + part["skipped_existing"] == n
    assert _count(sessions) == (n, n)


@_STOPPABLE
def test_a_real_model_pass_cut_off_from_postgresql_waits_and_carries_on(
    db_url: str, settings: Settings
) -> None:
    """The same with a real model's chunks (their requests DBOS steps at reserved ids): the
    pass waits out the outage and stores every item once, with no error."""
    from agent import autopilot_flow

    n = 300
    org_id, built = build_ledger(db_url, n)
    sessions: sessionmaker[Session] = built  # type: ignore[assignment]

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await asyncio.sleep(0.02)  # a model that takes a moment: the chunks are mid-way
        return await offline_function(messages, info)

    autopilot_flow.ensure_launched(settings, sessions)
    model = FunctionModel(answer, model_name="a-moment")
    summary = _cut_off_midway(
        db_url,
        sessions,
        n,
        lambda: run_autopilot(
            sessions, org_id, as_of=AS_OF, settings=settings, now=NOW, model=model
        ),
    )
    assert summary.errors == 0, summary.error_samples
    assert summary.drafted + summary.skipped_existing == n
    assert _count(sessions) == (n, n)


def _cut_off_midway(
    db_url: str, sessions: sessionmaker[Session], n: int, work: Callable[[], Any]
) -> Any:
    """``work()`` in a thread, with PostgreSQL refusing connections for 3 s once a quarter of
    the ``n`` drafts are stored; what it returned (it must still be running during the outage,
    waiting, and must not raise)."""
    done: list[Any] = []

    def run() -> None:
        try:
            done.append(work())
        except Exception as exc:  # reported by the test
            done.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    while _count(sessions)[0] < n // 4:
        assert worker.is_alive(), done
        time.sleep(0.01)
    with _refused(db_url):
        time.sleep(3)
        assert worker.is_alive(), done  # waiting, not ended
    worker.join(timeout=180)
    assert len(done) == 1 and not isinstance(done[0], Exception), done
    return done[0]


def test_a_replayed_chunk_gives_each_item_its_own_model_answer_and_pays_none_twice(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    """A real-model chunk drafts its items one after the other, each model request a DBOS step
    at step ids reserved per item. Run again from its checkpoints (as after a crash) with the
    first items already stored and the last one not: the last item gets its own recorded answer
    and the model is not asked again."""
    from dbos import DBOS

    from agent import autopilot_flow
    from memory import durable

    numbers = [f"INV-7{n:03d}" for n in range(3)]
    b = due_ledger(session, numbers, name="Replay")
    calls: Counter[str] = Counter()
    thresholds: list[int] = []

    async def counting(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        """The offline answer, marked with the item it answers (its output tokens, which the
        draft keeps): 1000 + the invoice's index."""
        text = str(messages)
        asked = [n for n, number in enumerate(numbers) if number in text]
        calls.update(numbers[n] for n in asked)
        thresholds.append(gc.get_threshold()[0])  # the chunk drafts with fewer GC pauses
        answer = await offline_function(messages, info)
        usage = RequestUsage(input_tokens=answer.usage.input_tokens, output_tokens=1000 + asked[0])
        return replace(answer, usage=usage)

    one_lane = settings.model_copy(update={"autopilot_concurrency": 1})  # one chunk of three
    autopilot_flow.ensure_launched(one_lane, sessions)
    autopilot_flow.register_queues(one_lane)
    try:
        summary = run_autopilot(
            sessions, b.org.id, as_of=AS_OF, settings=one_lane, now=NOW,
            model=FunctionModel(counting, model_name="counting"),
        )  # fmt: skip
    finally:
        autopilot_flow.register_queues(settings)
    assert summary.drafted == 3 and summary.errors == 0
    assert calls == dict.fromkeys(numbers, 1)
    assert len(thresholds) == 3 and min(thresholds) >= 10_000  # tools.kit.gc_pauses
    key = durable.ledger_key(session)
    chunks = [
        w
        for w in DBOS.list_workflows(name="plixo.autopilot.model_chunk", load_input=True)
        if f":{key}:{b.org.id}:" in w.workflow_id
    ]
    assert len(chunks) == 1 and chunks[0].status == "SUCCESS"
    items = chunks[0].input["args"][2]
    last = DueItem.from_dict(items[-1]).run_key
    draft = session.scalars(select(Draft).where(Draft.run_key == last)).one()
    number = next(n for n in numbers if n in draft.body)
    assert draft.output_tokens == 1000 + numbers.index(number)
    draft.run_key = f"{last}:set-aside"  # the last item is not stored yet, the others are
    session.commit()

    fork = DBOS.fork_workflow(chunks[0].workflow_id, 10_000)  # every checkpoint replayed
    part = fork.get_result()
    assert part["drafted"] == 1 and part["errors"] == 0
    session.expire_all()
    again = session.scalars(select(Draft).where(Draft.run_key == last)).one()
    assert number in again.body
    assert again.output_tokens == 1000 + numbers.index(number)  # its own answer, replayed
    assert calls == dict.fromkeys(numbers, 1)  # no model request paid twice


def test_a_pass_adopts_the_unfinished_chunk_an_earlier_run_left_and_drafts_the_rest(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    """An earlier run of the same pass left a chunk behind, not finished (here: enqueued with a
    delay). The next run selects what is not stored yet, so its chunks would differ from that
    one; it adopts the chunk instead and waits for it, so every item is in one workflow only
    (drafted once: with a real model, paid once) and the summary counts all of them."""
    from dbos import DBOS, SetEnqueueOptions, SetWorkflowID

    from agent import autopilot_flow
    from memory import durable

    b = due_ledger(session, [f"INV-6{n:03d}" for n in range(6)], name="Adopt")
    autopilot_flow.ensure_launched(settings, sessions)
    items = consolidate(session, b.org.id, select_due(session, b.org.id, AS_OF), AS_OF).items
    assert len(items) == 6
    key = durable.ledger_key(session)
    left = autopilot_flow._key(key, b.org.id, items[:4], AS_OF)
    args = {"as_of": AS_OF.isoformat(), "now": NOW.isoformat(), "shadow": True,
            "concurrency": 4, "batch_size": 2, "model_ref": None, "pass_id": None}  # fmt: skip
    with (
        SetEnqueueOptions(queue_partition_key=str(b.org.id), delay_seconds=1.5),
        SetWorkflowID(left),
    ):
        DBOS.enqueue_workflow(
            autopilot_flow.CHUNK_QUEUE, autopilot_flow.draft_chunk, key, b.org.id,
            [i.to_dict() for i in items[:4]], args,
        )  # fmt: skip
    summary = run_autopilot(sessions, b.org.id, as_of=AS_OF, settings=settings, now=NOW)
    assert summary.drafted == 6 and summary.skipped_existing == 0 and summary.errors == 0
    held: Counter[str] = Counter()
    for w in DBOS.list_workflows(
        workflow_id_prefix=f"autopilot:{key}:{b.org.id}:", load_input=True
    ):
        assert w.status == "SUCCESS", w.workflow_id
        held.update(DueItem.from_dict(d).run_key for d in w.input["args"][2])  # type: ignore[index]
    assert held == Counter({i.run_key: 1 for i in items})  # each item in one workflow only
    assert _count(sessions) == (6, 6)
