"""The payers' replies read from the mailbox with the agent's reply triage: by ``plixo mailbox
sync`` and, every few minutes, by the worker on a DBOS schedule.

Why here (the agent layer): a reply goes to the agent's reply triage, which tools may not import;
:func:`sync_configured` is the one home of "sync the configured mailbox" for the command and the
schedule alike. Why scheduled: replies arrive while nobody runs the command, and a promise or a
dispute waiting in the mailbox is invisible on Today's Focus until someone does. Every few minutes
(``mailbox_sync_cron``) one workflow syncs the mailbox; there is no schedule when no mailbox is
configured (``PLIXO_IMAP_HOST``) or the cron is empty. It is safe anywhere and any number of
times: every worker applies the same schedule at launch (DBOS replaces it atomically, and one
scheduled time runs once whatever the number of workers), and a sync that overlaps another (a
long one, a person's ``plixo mailbox sync``) stores each message once (``tools.replies.mailbox``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from dbos import DBOS
from sqlalchemy.orm import Session

from agent.service import triage_reply
from memory import clock, durable
from memory.config import Settings
from tools.replies import mailbox

log = logging.getLogger("plixo.mailbox")

SCHEDULE_NAME = "plixo.mailbox.sync"


def reply_triage(settings: Settings, now: datetime) -> mailbox.Triage:
    """The agent's reply triage for the sync: it proposes, never writes; a failure holds the
    reply for a person (``held``) instead of stopping the sync."""

    def triage(session: Session, org_id: int, customer_id: int, text: str) -> dict[str, Any]:
        result = triage_reply(session, org_id, customer_id, text, settings, now=now)
        data: dict[str, Any] = result.model_dump(mode="json")
        data["acceptable"] = [
            {"customer_id": customer_id, **change.model_dump(mode="json")}
            for change in result.proposed_changes
        ]
        return data

    return triage


def sync_configured(
    session: Session, settings: Settings, *, org: str | None = None, now: datetime | None = None
) -> mailbox.SyncResult:
    """Read the configured mailbox into its organisation, replies triaged by the agent.
    Raises ``tools.replies.mailbox.MailboxError`` (what to check) when it cannot be read."""
    now = now or clock.now()
    return mailbox.sync_configured(
        session, settings, org=org, triage=reply_triage(settings, now), now=now
    )


@DBOS.step(name="plixo.mailbox.sync_configured", retries_allowed=True, max_attempts=3)
def _sync_step() -> dict[str, Any]:
    """One sync; its counts, or the reason the mailbox could not be read (the next scheduled
    time tries again, so an unreachable server is logged, not retried here)."""
    settings = durable.ledger_settings()
    with durable.ledger_sessions()() as session:
        try:
            result = sync_configured(session, settings)
        except mailbox.MailboxError as exc:
            log.warning("scheduled mailbox sync: %s", exc)
            return {"error": str(exc)}
    if result.stored or result.errors:
        log.info(
            "scheduled mailbox sync: %s stored, %s already read, %s error(s)",
            result.stored, result.duplicates, len(result.errors),
        )  # fmt: skip
    return {
        "fetched": result.fetched,
        "stored": result.stored,
        "duplicates": result.duplicates,
        "kinds": result.kinds,
        "errors": result.errors,
    }


@DBOS.workflow(name="plixo.mailbox.sync_scheduled")
def sync_scheduled(scheduled_at: datetime, _context: Any) -> None:
    """The configured mailbox, read once (one step, which logs its counts: a crash re-runs it,
    and Message-IDs keep the messages it had already stored from being stored again)."""
    _sync_step()


def apply_schedule(settings: Settings) -> None:
    """Create (or replace) the schedule from ``settings.mailbox_sync_cron`` (by default every
    two minutes), or remove it when that is empty or no mailbox is configured; runs right after
    DBOS launches."""
    if not settings.mailbox_sync_cron or not mailbox.configured(settings):
        DBOS.delete_schedule(SCHEDULE_NAME)
        return
    DBOS.apply_schedules(
        [
            {
                "schedule_name": SCHEDULE_NAME,
                "workflow_fn": sync_scheduled,
                "schedule": settings.mailbox_sync_cron,
                "queue_name": durable.SCHEDULE_QUEUE,  # long-running workers only
            }
        ]
    )


durable.on_launch(apply_schedule)
