"""Autopilot on DBOS across processes: a pass killed half-way and started again drafts every due
invoice exactly once (the dead run's workflows are recovered, the rest is enqueued again; the
ledger's unique run key is the last word)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from memory.models import Draft
from tests.benchmarks.bench_autopilot import AS_OF, build_ledger

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
    cmd = [sys.executable, "-c", "from api.cli import main; main()", "autopilot", "run",
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
