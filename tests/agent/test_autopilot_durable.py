"""Autopilot on DBOS across processes: a pass killed half-way and started again drafts every due
invoice exactly once (the dead run's workflows are recovered, the rest is enqueued again; the
ledger's unique run key is the last word)."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from agent.autopilot import run_autopilot
from agent.offline import offline_function
from memory.config import Settings
from memory.models import Draft
from tests.agent.factories import NOW, due_ledger
from tests.benchmarks.bench_autopilot import AS_OF, build_ledger
from tools.outreach.due import DueItem

REPO = Path(__file__).resolve().parents[2]
N = 300


def _count(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as s:
        total = int(s.scalar(select(func.count()).select_from(Draft)) or 0)
        keys = int(s.scalar(select(func.count(func.distinct(Draft.run_key)))) or 0)
    return total, keys


def test_a_pass_killed_half_way_and_started_again_drafts_each_invoice_once(
    db_url: str, tmp_path: Path
) -> None:
    _, built = build_ledger(db_url, N)
    sessions: sessionmaker[Session] = built  # type: ignore[assignment]
    env = dict(os.environ)
    env.update(
        PLIXO_DATABASE_URL=db_url,
        PLIXO_DATA_DIR=str(tmp_path / "data"),
        PLIXO_WORKER_STALE_S="1",
        PLIXO_WORKER_POLL_S="0.05",
        PLIXO_DOMAIN_RECHECK_CRON="",  # no scheduled workflows in these processes (see outbox)
        PLIXO_NOTIFICATION_SWEEP_CRON="",
        PLIXO_MAILBOX_SYNC_CRON="",
        PYTHONPATH=str(REPO),
    )
    env.pop("PLIXO_DBOS_SYSTEM_DATABASE_URL", None)
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
    time.sleep(1.5)  # the killed run's heartbeat goes stale: the next run recovers its workflows
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=300)
    assert second.returncode == 0, second.stderr.decode()[-3000:]
    summary = json.loads(second.stdout)
    total, distinct = _count(sessions)
    assert total == distinct == N  # every due invoice drafted, none twice
    assert summary["due"] == N and summary["errors"] == 0
    assert summary["skipped_existing"] >= half


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
