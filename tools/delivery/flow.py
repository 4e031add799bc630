"""Delivery on DBOS: one durable workflow per approved message, one per deferred draft.

Why workflows: a worker can die at any instant. DBOS checkpoints each step's result in its system
database and a live worker recovers a dead one's workflows (``tools.worker``), so a delivery
resumes where it stopped: waits already slept are not slept again, and the one step that talks to
SMTP (``outbox.hand_off``) commits its attempt first, so a crash inside it makes the message
*uncertain* for a person instead of sending it twice.

* ``deliver(ledger, outbox_id, round)``: re-check hook, hand-off, and on a temporary SMTP error a
  durable back-off sleep and another hand-off, until sent, failed for good or uncertain. Its id is
  ``deliver:<ledger>:<outbox id>:<round>``: the same message is never delivered by two workflows
  (a resend by a person is a new round).
* ``release(ledger, draft_id, version)``: an approved draft deferred by quiet hours sleeps durably
  until its ``not_before``, then the guardrails are asked again (``drafts.release_one``); deferred
  again, it sleeps again.
* ``dispatch``: every worker, every poll, starts the workflows of queued rows and deferred drafts
  that have none yet. Approvals therefore never talk to DBOS: the API writes the row in the
  approval's own transaction and needs no worker to answer pages.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dbos import DBOS, SetWorkflowID
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from memory import clock, durable
from memory.config import Settings
from memory.models import Draft, DraftStatus, Organisation, OutboxMessage, OutboxStatus
from tools.delivery import outbox, send_check
from tools.delivery.sending_domain import next_send_day
from tools.drafts.service import deferred_until, release_one

log = logging.getLogger("plixo.delivery")

DELIVERY_QUEUE = "plixo_delivery"
DEFERRED_QUEUE = "plixo_deferred"
PAUSE_RECHECK_S = 60.0  # maintenance or cron pause: look again this often
SEND_AS_IS = "send"

_sender_factory: Callable[[Settings], outbox.Sender] = outbox.smtp_sender


def register_queues(settings: Settings) -> None:
    """Queues this module enqueues on (called by ``memory.durable.launch``)."""
    DBOS.register_queue(
        DELIVERY_QUEUE,
        worker_concurrency=settings.worker_concurrency,
        polling_interval_sec=settings.worker_poll_s,
        on_conflict="always_update",
    )
    # Sleeping releases hold no slot worth limiting: no concurrency cap here.
    DBOS.register_queue(
        DEFERRED_QUEUE,
        polling_interval_sec=max(settings.worker_poll_s, 1.0),
        on_conflict="always_update",
    )


durable.on_launch(register_queues)


@contextmanager
def use_sender(factory: Callable[[Settings], outbox.Sender]) -> Iterator[None]:
    """Hand messages to another transport while the block runs (tests, a dry run)."""
    global _sender_factory
    saved, _sender_factory = _sender_factory, factory
    try:
        yield
    finally:
        _sender_factory = saved


def _is_live(executor: str) -> bool:
    if executor == durable.executor_id():
        return True
    settings = durable.ledger_settings()
    with durable.ledger_sessions()() as session:
        live = durable.live_executors(session, settings.worker_stale_s)
    return any(w.executor_id == executor for w in live)


# --- the delivery workflow ---------------------------------------------------------------------

_DB_RETRY: dict[str, Any] = {
    "retries_allowed": True,
    "max_attempts": 12,
    "interval_seconds": 0.5,
    "backoff_rate": 2.0,
}


@DBOS.step(name="plixo.delivery.recheck", **_DB_RETRY)
def _recheck_before_send(outbox_id: int) -> str:
    """The send-time re-check, right before the hand-off: the draft re-grounded against the
    ledger and the send time (``send_check.withhold_if_untrue``). ``SEND_AS_IS`` hands the
    message over unchanged; otherwise the row is withdrawn and the draft held for a person with
    the reasons, and this delivery stops."""
    held = send_check.withhold_if_untrue(
        durable.ledger_sessions(),
        outbox_id,
        executor=durable.executor_id(),
        settings=durable.ledger_settings(),
    )
    return SEND_AS_IS if held is None else held


@DBOS.step(name="plixo.delivery.hand_off", **_DB_RETRY)
def _hand_off_step(outbox_id: int) -> str:
    """Record the attempt, hand the message to the relay, record the outcome (``outbox``).

    A step DBOS runs again only if this one died before returning: then ``begin_attempt`` finds
    the attempt it committed and makes the message uncertain instead of sending it again."""
    settings = durable.ledger_settings()
    return outbox.hand_off(
        durable.ledger_sessions(),
        outbox_id,
        _sender_factory(settings),
        executor=durable.executor_id(),
        max_attempts=settings.delivery_max_attempts,
        is_live=_is_live,
    )


@DBOS.workflow(name="plixo.delivery.deliver", max_recovery_attempts=1000)
def deliver(ledger: str, outbox_id: int, round_: int) -> str:
    """Deliver one outbox row; returns the final outcome (``sent``, ``failed``, ``uncertain``)."""
    backoff = durable.ledger_settings().delivery_backoff_s or (30.0,)
    retries = 0
    while True:
        verdict = _recheck_before_send(outbox_id)
        if verdict != SEND_AS_IS:
            return f"held: {verdict}"
        outcome = _hand_off_step(outbox_id)
        if outcome == outbox.RETRY:
            DBOS.sleep(backoff[min(retries, len(backoff) - 1)])
            retries += 1
            continue
        if outcome == outbox.SKIP_PAUSED:
            DBOS.sleep(PAUSE_RECHECK_S)
            continue
        if outcome == outbox.SKIP_WARMUP:  # the domain's warm-up cap: sleep until its next day
            DBOS.sleep(_seconds_to_next_send_day(outbox_id))
            continue
        return outcome


@DBOS.step(name="plixo.delivery.warmup_wait", **_DB_RETRY)
def _seconds_to_next_send_day(outbox_id: int) -> float:
    """Seconds until the organisation's next business day, when a warm-up cap starts afresh."""

    with durable.ledger_sessions()() as session:
        row = session.get(OutboxMessage, outbox_id)
        if row is None:
            return 0.0
        until = next_send_day(session, row.org_id, clock.now())
    return max(1.0, (until - clock.now()).total_seconds())


def delivery_workflow_id(ledger: str, outbox_id: int, round_: int) -> str:
    return f"deliver:{ledger}:{outbox_id}:{round_}"


# --- quiet-hours deferrals: a durable sleep, then the guardrails again ---------------------------


@DBOS.step(name="plixo.delivery.wait_for", **_DB_RETRY)
def _seconds_to_wait(draft_id: int) -> float:
    """Seconds until the draft may leave; negative when it no longer waits (not approved)."""
    with durable.ledger_sessions()() as session:
        draft = session.get(Draft, draft_id)
        if draft is None:
            return -1.0

        until = deferred_until(draft)
    if until is None:
        return -1.0
    return max(0.0, (until - clock.now()).total_seconds())


@DBOS.step(name="plixo.delivery.release", **_DB_RETRY)
def _release_step(draft_id: int) -> str:

    with durable.ledger_sessions()() as session:
        result = release_one(session, draft_id, now=clock.now(), settings=durable.ledger_settings())
        session.commit()
    return result


@DBOS.workflow(name="plixo.delivery.release", max_recovery_attempts=1000)
def release(ledger: str, draft_id: int, version: int) -> str:
    """Sleep until the draft's ``not_before``, ask the guardrails again, queue it (or not)."""
    while True:
        wait = _seconds_to_wait(draft_id)
        if wait < 0:
            return "gone"
        if wait > 0:
            DBOS.sleep(wait + 0.5)
            continue
        result = _release_step(draft_id)
        if result not in ("deferred", "waiting"):
            return result


def release_workflow_id(ledger: str, draft_id: int, version: int) -> str:
    return f"release:{ledger}:{draft_id}:{version}"


# --- dispatch ----------------------------------------------------------------------------------


def dispatch(sessions: sessionmaker[Session], *, limit: int = 2000) -> list[str]:
    """Start the workflows that queued rows and deferred drafts do not have yet; returns their ids.

    Safe to run in every worker at once: a workflow id is started once (DBOS ignores a second
    start of the same id), and ids are derived from the row, never random."""
    with sessions() as session:
        key = durable.ledger_key(session)
        rows = session.execute(
            select(OutboxMessage.id, OutboxMessage.delivery_round)
            .where(OutboxMessage.status == OutboxStatus.QUEUED)
            .order_by(OutboxMessage.id)
            .limit(limit)
        ).all()
        held = session.execute(
            select(Draft.id, Draft.version)
            .where(Draft.status == DraftStatus.APPROVED)
            .order_by(Draft.id)
            .limit(limit)
        ).all()
    wanted: dict[str, tuple[str, Any, tuple[Any, ...]]] = {}
    for r in rows:
        wid = delivery_workflow_id(key, r.id, r.delivery_round or 0)
        wanted[wid] = (DELIVERY_QUEUE, deliver, (key, r.id, r.delivery_round or 0))
    for d in held:
        wid = release_workflow_id(key, d.id, d.version)
        wanted[wid] = (DEFERRED_QUEUE, release, (key, d.id, d.version))
    fresh = [w for w in wanted if w not in _known]
    if not fresh:
        return []
    known = {
        w.workflow_id
        for w in DBOS.list_workflows(workflow_ids=fresh, load_input=False, load_output=False)
    }
    _remember(known)
    started: list[str] = []
    for wid in fresh:
        if wid in known:
            continue
        queue, fn, args = wanted[wid]
        with SetWorkflowID(wid):
            DBOS.enqueue_workflow(queue, fn, *args)
        started.append(wid)
    _remember(started)
    return started


#: Workflow ids this process knows exist (a workflow, once started, exists for good): dispatch
#: asks DBOS only about rows it has not seen, so a long queue costs one lookup per row, not one
#: per poll. Bounded; forgetting only costs a lookup.
_known: set[str] = set()
_KNOWN_MAX = 200_000


def _remember(ids: Any) -> None:
    if len(_known) > _KNOWN_MAX:
        _known.clear()
    _known.update(ids)


def drain(sessions: sessionmaker[Session], *, timeout_s: float = 120.0) -> Counter[str]:
    """Deliver everything queued now, in this process, and wait: outcomes counted (``sent``,
    ``failed``, ``uncertain``...). Needs DBOS launched here (``api.worker.start``); the CLI's
    ``--once``, the demo and tests use it. Deferred drafts still sleeping are not waited for."""
    import time

    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + timeout_s
    while True:
        ids = [w for w in dispatch(sessions) if w.startswith("deliver:")]
        if not ids:
            return outcomes
        for wid in ids:
            left = max(0.1, deadline - time.monotonic())
            handle: Any = DBOS.retrieve_workflow(wid)
            result = _result_within(handle, left)
            outcomes[str(result)] += 1
        if time.monotonic() > deadline:
            return outcomes


def _result_within(handle: Any, seconds: float) -> str:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        status = handle.get_status()
        if status.status in ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"):
            return str(handle.get_result()) if status.status == "SUCCESS" else status.status.lower()
        time.sleep(0.02)
    return "timeout"


def pending(sessions: sessionmaker[Session]) -> int:
    """Rows and deferred drafts still waiting for a worker (``--once`` waits for zero)."""
    from sqlalchemy import func

    sendable = select(Organisation.id).where(
        Organisation.maintenance.is_(False), Organisation.cron_paused.is_(False)
    )
    with sessions() as session:
        queued = session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(
                OutboxMessage.status.in_((OutboxStatus.QUEUED, OutboxStatus.CLAIMED)),
                OutboxMessage.org_id.in_(sendable),
            )
        )
    return int(queued or 0)
