"""Scheduled (cron) workflows run on long-running workers only: a ``plixo worker --once`` and an
embedded ``plixo autopilot run`` never pick one up, so none can hold their exit (a notification
sweep that fired while a ``--once`` worker shut down held it past a test's timeout in CI).

Each process here runs in a subprocess on its own SQLite system database, with the notification
sweep firing every second."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from dbos import DBOSClient

from memory import durable

REPO = Path(__file__).resolve().parents[2]
SWEEP = "plixo.notifications.sweep_all"

# Launches DBOS as `plixo worker --once` or `plixo autopilot run` do, lets the schedule fire for a
# few seconds, prints the executor id.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    from memory.config import get_settings
    from memory.db import make_engine, session_factory
    from memory import durable
    settings = get_settings()
    sessions = session_factory(make_engine(settings.resolved_database_url))
    if sys.argv[1] == "once":
        from api import worker
        ident = worker.start(settings, sessions, schedules=False)
    elif sys.argv[1] == "embedded":
        import tools.inbox.notification_schedule  # applies the schedule, as a worker sharing it did
        from agent import autopilot_flow
        ident = autopilot_flow.ensure_launched(settings, sessions)
    else:
        from api import worker
        ident = worker.start(settings, sessions)
    time.sleep(5)
    durable.shutdown()
    print(ident)
    """
)


def _run(mode: str, db_url: str, tmp_path: Path) -> tuple[str, str]:
    system = f"sqlite:///{tmp_path / f'dbos-{mode}.sqlite'}"
    env = dict(os.environ)
    env.update(
        PLIXO_DATABASE_URL=db_url,
        PLIXO_DATA_DIR=str(tmp_path / "data"),
        PLIXO_DBOS_SYSTEM_DATABASE_URL=system,
        PLIXO_NOTIFICATION_SWEEP_CRON="* * * * * *",
        PLIXO_DOMAIN_RECHECK_CRON="",
        PLIXO_MAILBOX_SYNC_CRON="",
        PYTHONPATH=str(REPO),
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode().strip().splitlines()[-1], system


def _sweeps(system: str) -> list[tuple[str, str | None, str | None]]:
    client = DBOSClient(system_database_url=system)
    try:
        flows = client.list_workflows(name=SWEEP, load_input=False, load_output=False)
        return [(f.status, f.executor_id, f.queue_name) for f in flows]
    finally:
        client.destroy()


def test_a_once_worker_and_an_embedded_run_never_run_a_scheduled_workflow(
    db_url: str, tmp_path: Path
) -> None:
    for mode in ("once", "embedded"):
        ident, system = _run(mode, db_url, tmp_path)
        sweeps = _sweeps(system)
        assert sweeps, f"{mode}: the schedule never fired"  # the window was long enough
        for status, executor, queue in sweeps:
            assert queue == durable.SCHEDULE_QUEUE
            assert status == "ENQUEUED", (mode, status)  # waiting for a long-running worker
            assert executor != ident


def test_a_long_running_worker_runs_the_schedule(db_url: str, tmp_path: Path) -> None:
    ident, system = _run("worker", db_url, tmp_path)
    ran = [s for s in _sweeps(system) if s[0] == "SUCCESS"]
    assert ran and all(executor == ident for _, executor, _ in ran)
