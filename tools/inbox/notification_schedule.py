"""Breached dispute SLAs and missed promises reach people from the worker, on a DBOS schedule.

Why scheduled: a dispute's SLA passes and a promise is missed while nobody is looking; the inbox
page used to sweep for them when someone opened it, so a Collector who never opened the inbox
(and their e-mail or Slack) heard nothing. Every few minutes (``notification_sweep_cron``) one
workflow runs :func:`tools.inbox.notifications.sweep` for every organisation, one step each (a crash
resumes after the organisations already swept). It is safe anywhere and any number of times:
every worker applies the same schedule at launch (DBOS replaces it atomically, and one scheduled
time runs once whatever the number of workers), and each event notifies each person once
(``UNIQUE(user_id, key)``), whoever sweeps first.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from dbos import DBOS
from sqlalchemy import select

from memory import clock, durable
from memory.config import Settings
from memory.models import Organisation
from tools.inbox import notifications

log = logging.getLogger("plixo.notifications")

SCHEDULE_NAME = "plixo.notifications.sweep"


@DBOS.step(name="plixo.notifications.sweep_one", retries_allowed=True, max_attempts=3)
def _sweep_one(org_id: int) -> int:
    """Notify one organisation's breached SLAs and missed promises; how many items were new."""
    with durable.ledger_sessions()() as session:
        created = notifications.sweep(
            session, org_id, now=clock.now(), settings=durable.ledger_settings()
        )
        session.commit()
    if created:
        log.info("organisation %s: %s new notification(s) from the sweep", org_id, created)
    return created


@DBOS.step(name="plixo.notifications.organisations")
def _organisations() -> list[int]:
    with durable.ledger_sessions()() as session:
        return list(session.scalars(select(Organisation.id).order_by(Organisation.id)))


@DBOS.workflow(name="plixo.notifications.sweep_all")
def sweep_all(scheduled_at: datetime, _context: Any) -> None:
    """Every organisation, one step each (each step logs how many items were new)."""
    for org_id in _organisations():
        _sweep_one(org_id)


def apply_schedule(settings: Settings) -> None:
    """Create (or replace) the schedule from ``settings.notification_sweep_cron`` (by default
    every five minutes), or remove it when that is empty; runs right after DBOS launches."""
    if not settings.notification_sweep_cron:
        DBOS.delete_schedule(SCHEDULE_NAME)
        return
    DBOS.apply_schedules(
        [
            {
                "schedule_name": SCHEDULE_NAME,
                "workflow_fn": sweep_all,
                "schedule": settings.notification_sweep_cron,
                "queue_name": durable.SCHEDULE_QUEUE,  # long-running workers only
            }
        ]
    )


durable.on_launch(apply_schedule)
