"""The daily re-check of every organisation's sending domain, as a DBOS scheduled workflow.

Why scheduled: a domain verified once can break any day (a DNS provider migration drops the DKIM
record, someone adds a second SPF record), and Autopilot must stop sending from it when it does.
The schedule fires every hour (``domain_recheck_cron``) and
:func:`tools.delivery.sending_domain.recheck_if_due` checks a domain only when its last check is a
day old, so a worker that was down at the usual hour still
re-checks within the hour it comes back; every worker applies the same schedule at launch (DBOS
replaces it atomically, and one scheduled time runs once whatever the number of workers). A
failing check pauses Autopilot with the reason, audited, as a check by a person does.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from dbos import DBOS
from sqlalchemy import select

from memory import clock, durable
from memory.config import Settings
from memory.models import SendingDomain
from tools.delivery.sending_domain import recheck_if_due

log = logging.getLogger("plixo.domain")

SCHEDULE_NAME = "plixo.sending_domain.daily_recheck"


@DBOS.step(name="plixo.sending_domain.recheck_one", retries_allowed=True, max_attempts=3)
def _recheck_one(org_id: int) -> str:
    """Re-check one organisation's domain if due; ``ok``, ``failed: ...`` or ``not due``."""
    settings = durable.ledger_settings()
    with durable.ledger_sessions()() as session:
        result = recheck_if_due(
            session, org_id, nameserver=settings.dns_nameserver, now=clock.now()
        )
        session.commit()
    if result is None:
        return "not due"
    if not result.ok:
        log.warning("sending domain of organisation %s failed its daily check", org_id)
        return "failed: " + "; ".join(result.reasons)
    return "ok"


@DBOS.step(name="plixo.sending_domain.list")
def _organisations_with_a_domain() -> list[int]:
    with durable.ledger_sessions()() as session:
        return list(session.scalars(select(SendingDomain.org_id).order_by(SendingDomain.org_id)))


@DBOS.workflow(name="plixo.sending_domain.recheck_all")
def recheck_all(scheduled_at: datetime, _context: Any) -> None:
    """Every organisation's domain whose last check is a day old, one step each (a crash resumes
    after the organisations already checked)."""
    for org_id in _organisations_with_a_domain():
        _recheck_one(org_id)


def apply_schedule(settings: Settings) -> None:
    """Create (or replace) the schedule from ``settings.domain_recheck_cron`` (by default minute
    7 of every hour), or remove it when that is empty; runs right after DBOS launches."""
    if not settings.domain_recheck_cron:
        DBOS.delete_schedule(SCHEDULE_NAME)
        return
    DBOS.apply_schedules(
        [
            {
                "schedule_name": SCHEDULE_NAME,
                "workflow_fn": recheck_all,
                "schedule": settings.domain_recheck_cron,
                "queue_name": durable.SCHEDULE_QUEUE,  # long-running workers only
            }
        ]
    )


durable.on_launch(apply_schedule)
