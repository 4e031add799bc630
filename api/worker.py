"""The worker runtime: launch DBOS with plixo's workflows, keep the heartbeat, recover the dead.

``plixo worker`` runs ``run_worker``; ``plixo autopilot run`` calls ``start`` to work embedded
(the CLI process is then one more worker until it exits). Any number of workers, on any number of
machines sharing the PostgreSQL ledger, share the queues.

Why heartbeats: DBOS recovers a workflow for the executor that ran it; a worker that dies and is
never restarted (a machine gone) would strand its workflows. Every worker beats every few seconds
into ``worker_heartbeat``; one not seen for ``PLIXO_WORKER_STALE_S`` is presumed dead and live
workers hand its pending workflows back to their queues (idempotent: DBOS re-enqueues a workflow
only while it is still pending on the dead executor), then forget it. A presumed-dead worker that
was only slow cannot send twice: the hand-off step commits its attempt first and a live holder is
never overtaken (``tools.delivery.outbox``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from memory import durable
from memory.config import Settings
from memory.db import LedgerUnavailable
from memory.models import Organisation, OutboxMessage, OutboxStatus, User
from policies.access import allowed
from tools.kit import audit

log = logging.getLogger("plixo.worker")


def start(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    kind: str = "worker",
    schedules: bool = True,
) -> str:
    """Register every workflow, launch DBOS (once per process), beat once; the executor id.

    ``schedules=False`` (``plixo worker --once``): the process takes deliveries only, and never
    runs a scheduled workflow (the sending-domain re-check, the notification sweep, the mailbox
    sync) nor an Autopilot chunk: either, picked up while it exits, held its exit. Long-running
    workers run them."""
    # lazy: importing these registers DBOS workflows, queues, schedules (a worker only, pre-launch)
    import agent.autopilot_flow  # noqa: F401 - registers the Autopilot workflows and queues
    import agent.mailbox_sync  # noqa: F401 - the payers' replies, read every few minutes
    import tools.delivery.domain_schedule  # noqa: F401 - the daily sending-domain re-check
    import tools.delivery.flow  # noqa: F401 - registers the delivery workflows and queues
    import tools.inbox.notification_schedule  # noqa: F401 - breached SLAs and missed promises
    from tools.delivery.flow import DEFERRED_QUEUE, DELIVERY_QUEUE

    listen = None if schedules else [DELIVERY_QUEUE, DEFERRED_QUEUE]
    if schedules:  # it takes Autopilot chunks: ready to draft before it takes the first
        agent.autopilot_flow.warm_up(settings)
    ident = durable.launch(settings, sessions, kind=kind, listen=listen)
    if schedules:  # launched earlier in this process for a narrower job (tests): work it all
        durable.listen_to_all()
    with sessions() as session:
        durable.beat(session, ident, kind=kind)
    return ident


#: How long a ``--once`` worker waits, once nothing is left to dispatch, for the workflows it is
#: still running to finish (a durable sleep until quiet hours end is not waited for).
ONCE_GRACE_S = 30.0


def _drained(
    settings: Settings, sessions: sessionmaker[Session], ident: str, result: WorkerResult
) -> bool:
    """Nothing left to dispatch, and this worker's own workflows done (or the grace is over).

    Why wait: a worker that shut DBOS down with a delivery step still running left its heartbeat
    to go stale; a live worker then took the workflow over while the step retried in a process
    without DBOS, and the exit hung. Finishing its own steps first lets it leave cleanly."""
    # lazy: importing it registers DBOS workflows (in a worker only; start() imports it first)
    from tools.delivery import flow as delivery_flow

    if delivery_flow.pending(sessions) != 0:
        result.drained_at = None
        return False
    now = time.monotonic()
    if result.drained_at is None:
        result.drained_at = now
    return held(settings, ident) == 0 or now - result.drained_at > ONCE_GRACE_S


def held(settings: Settings, ident: str) -> int:
    """Workflows still marked as running on executor ``ident`` (read from the system database,
    with a client once DBOS is down in this process)."""
    status = ["PENDING"]
    if durable.is_launched():
        from dbos import DBOS

        return len(DBOS.list_workflows(executor_id=ident, status=status, load_input=False))
    dbos = client(settings)
    try:
        return len(dbos.list_workflows(executor_id=ident, status=status, load_input=False))
    finally:
        dbos.destroy()


def recover_dead(settings: Settings, sessions: sessionmaker[Session], ident: str) -> list[str]:
    """Hand the pending workflows of workers not seen for a while back to their queues."""
    return durable.recover_dead(sessions, settings.worker_stale_s, mine=ident)


@dataclass
class WorkerResult:
    executor_id: str = ""
    dispatched: int = 0
    recovered_from: list[str] = field(default_factory=list)
    drained_at: float | None = None  # when a ``--once`` worker first found nothing to dispatch
    ticks: int = 0


def tick(
    settings: Settings, sessions: sessionmaker[Session], ident: str, into: WorkerResult
) -> None:
    """One round: recovery of the dead, dispatch of new deliveries (the heartbeat beats from its
    own thread, ``durable.Heartbeat``)."""
    # lazy: importing it registers DBOS workflows (in a worker only; start() imports it first)
    from tools.delivery import flow as delivery_flow

    into.recovered_from += recover_dead(settings, sessions, ident)
    into.dispatched += len(delivery_flow.dispatch(sessions))
    into.ticks += 1


def run_worker(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    once: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    timeout_s: float = 600.0,
    exiting: bool = False,
) -> WorkerResult:
    """Work until stopped; with ``once``, until nothing deliverable is left (or ``timeout_s``).

    ``exiting`` (the CLI: the process ends after this): DBOS is shut down before the heartbeat is
    removed, so nothing new is picked up while the process exits, and the heartbeat is removed
    only if no workflow is left marked as running here; otherwise it goes stale and a live worker
    recovers those workflows (a removed heartbeat would have stranded them)."""
    # lazy: importing it registers DBOS workflows (in a worker only; start() imports it first)
    from tools.delivery import flow as delivery_flow

    ident = start(settings, sessions, schedules=not once)
    result = WorkerResult(executor_id=ident)
    deadline = time.monotonic() + timeout_s
    interval = max(settings.worker_poll_s, 0.05)
    beat_every = min(5.0, settings.worker_stale_s / 3)
    heart = durable.Heartbeat(sessions, ident, every_s=beat_every, kind="worker")
    last = 0.0
    try:
        while not should_stop():
            if time.monotonic() - last >= beat_every or once:
                tick(settings, sessions, ident, result)
                last = time.monotonic()
            else:
                result.dispatched += len(delivery_flow.dispatch(sessions))
            if once and (
                _drained(settings, sessions, ident, result) or time.monotonic() > deadline
            ):
                break
            time.sleep(interval)
    finally:
        left = 0
        if exiting:
            durable.shutdown()  # still beating meanwhile: its steps may still be finishing
            try:
                left = held(settings, ident)
            except LedgerUnavailable:
                left = 1  # cannot tell: let the heartbeat go stale, recovery is idempotent
        heart.stop()
        if left:
            log.warning(
                "%s stops holding %d workflow(s): a live worker will recover them", ident, left
            )
        else:
            with sessions() as session:
                durable.forget(session, ident)
    return result


# --- status and operations ---------------------------------------------------------------------


def _org_of_outbox(session: Session, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.execute(
        select(OutboxMessage.id, OutboxMessage.org_id).where(OutboxMessage.id.in_(ids))
    ).all()
    return {r.id: r.org_id for r in rows}


def _org_of(workflow_id: str, outbox_orgs: dict[int, int]) -> int | None:
    parts = workflow_id.split(":")
    if parts[0] == "deliver" and len(parts) >= 3 and parts[2].isdigit():
        return outbox_orgs.get(int(parts[2]))
    if parts[0] in ("autopilot", "autopilot-pass") and len(parts) >= 3 and parts[2].isdigit():
        return int(parts[2])
    return None


def client(settings: Settings) -> Any:
    """A DBOS client on the system database: reads and acts on workflows without executing any
    (``--status``, ``--retry``, ``--cancel`` never pick up work)."""
    from dbos import DBOSClient

    try:
        return DBOSClient(system_database_url=durable.system_database_url(settings))
    except Exception as exc:
        raise LedgerUnavailable(
            f"Cannot reach the DBOS system database: {exc}. Check PLIXO_DATABASE_URL."
        ) from exc


def _unfinished_workflows(dbos: Any, ledger_key: str) -> list[Any]:
    """This ledger's workflows that are waiting, running or failed (newest first, at most
    5,000): workflow ids name their ledger, as several ledgers may share a system database."""
    flows = dbos.list_workflows(
        status=[
            "PENDING",
            "ENQUEUED",
            "DELAYED",
            "ERROR",
            "CANCELLED",
            "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
        ],
        load_input=False,
        load_output=False,
        limit=5000,
        sort_desc=True,
    )
    key = ledger_key
    return [f for f in flows if f":{key}:" in f":{f.workflow_id}:" or key in f.workflow_id]


def status(sessions: sessionmaker[Session], settings: Settings, dbos: Any) -> dict[str, Any]:
    """Queues, live workers, in-flight and failed workflows per organisation, and the messages
    waiting for a person (uncertain or failed)."""
    DBOS = dbos  # noqa: N806 - a DBOSClient has the same methods as DBOS

    with sessions() as session:
        key = durable.ledger_key(session)
        live = durable.live_executors(session, settings.worker_stale_s)
        slugs = {o.id: o.slug for o in session.scalars(select(Organisation))}
        waiting = session.execute(
            select(
                OutboxMessage.id,
                OutboxMessage.org_id,
                OutboxMessage.status,
                OutboxMessage.message_id,
                OutboxMessage.last_error,
            ).where(OutboxMessage.status.in_((OutboxStatus.UNCERTAIN, OutboxStatus.FAILED)))
        ).all()
        flows = _unfinished_workflows(DBOS, key)
        outbox_ids = [
            int(p[2])
            for p in (f.workflow_id.split(":") for f in flows)
            if p[0] == "deliver" and len(p) > 2 and p[2].isdigit()
        ]
        orgs_of = _org_of_outbox(session, outbox_ids)
    per_org: dict[str, dict[str, Any]] = {}

    def bucket(org_id: int | None) -> dict[str, Any]:
        name = slugs.get(org_id, "unknown") if org_id is not None else "unknown"
        return per_org.setdefault(
            name, {"in_flight": [], "failed": [], "uncertain": [], "failed_messages": []}
        )

    for f in flows:
        entry = {
            "workflow_id": f.workflow_id,
            "name": f.name,
            "status": f.status,
            "queue": f.queue_name,
            "executor": f.executor_id,
        }
        kind = (
            "failed"
            if f.status in ("ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "CANCELLED")
            else "in_flight"
        )
        bucket(_org_of(f.workflow_id, orgs_of))[kind].append(entry)
    for m in waiting:
        b = bucket(m.org_id)
        item = {"outbox_id": m.id, "message_id": m.message_id, "reason": m.last_error}
        (b["uncertain"] if m.status == OutboxStatus.UNCERTAIN else b["failed_messages"]).append(
            item
        )
    queues = []
    for q in DBOS.list_queues():
        queues.append({"name": q.name, "worker_concurrency": q.worker_concurrency})
    return {
        "ledger": key,
        "queues": sorted(queues, key=lambda q: str(q["name"])),
        "workers": [
            {
                "executor_id": w.executor_id,
                "host": w.host,
                "pid": w.pid,
                "kind": w.kind,
                "seen_at": w.seen_at.isoformat(),
            }  # fmt: skip
            for w in live
        ],
        "organisations": per_org,
    }


class OperationRefused(Exception):
    """A retry or cancel the caller may not do, or that does not apply; says why."""


def act_on_workflow(
    sessions: sessionmaker[Session], workflow_id: str, *, action: str, user_email: str, dbos: Any
) -> str:
    """Retry (resume a cancelled one, fork a failed one from the start) or cancel a workflow of
    this ledger, as a person holding ``manage_delivery``; audited in that person's organisation."""
    with sessions() as session:
        key = durable.ledger_key(session)
        user = session.scalar(select(User).where(User.email == user_email))
        if user is None or not user.active:
            raise OperationRefused(f"No active user {user_email!r}.")
        if not allowed(user.role.value, "manage_delivery"):
            raise OperationRefused(f"{user.role.value} may not retry or cancel workflows.")
        if key not in workflow_id:
            raise OperationRefused(f"Workflow {workflow_id} does not belong to this ledger.")
        found = dbos.list_workflows(workflow_ids=[workflow_id], load_input=False)
        if not found:
            raise OperationRefused(f"No workflow {workflow_id}.")
        wf = found[0]
        org_id = _org_of(workflow_id, _org_of_outbox(session, _outbox_ids([workflow_id])))
        if org_id is not None and org_id != user.org_id:
            raise OperationRefused(f"Workflow {workflow_id} belongs to another organisation.")
        if action == "cancel":
            dbos.cancel_workflow(workflow_id)
            outcome = "cancelled"
        elif action == "retry":
            if wf.status == "CANCELLED":
                dbos.resume_workflow(workflow_id)
                outcome = "resumed"
            elif wf.status in ("ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"):
                outcome = f"forked as {dbos.fork_workflow(workflow_id, 1).get_workflow_id()}"
            else:
                raise OperationRefused(f"Workflow {workflow_id} is {wf.status}: nothing to retry.")
        else:
            raise OperationRefused(f"Unknown action {action!r}: use retry or cancel.")
        audit.record(
            session,
            org_id or user.org_id,
            actor=user,
            action=f"workflow.{action}",
            subject_type="workflow",
            subject_id=None,
            from_state=str(wf.status),
            detail={"workflow_id": workflow_id, "outcome": outcome},
        )
        session.commit()
    return outcome


def _outbox_ids(workflow_ids: list[str]) -> list[int]:
    out = []
    for wid in workflow_ids:
        p = wid.split(":")
        if p[0] == "deliver" and len(p) > 2 and p[2].isdigit():
            out.append(int(p[2]))
    return out
