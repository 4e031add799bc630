"""Autopilot runs: draft every due cadence step and follow-up, let the guardrails decide, store.

``run_autopilot`` selects the due items (``tools.outreach.due``), drafts them with bounded
concurrency through one ``Drafter`` (one model, one policy engine), stores each draft with its
decision, and records an ``AutopilotRun`` with the summary.

Idempotent: every item has a ``run_key`` (``{invoice_id}:{step}:{step date}``) that is unique per
organisation in the ledger. Items already drafted are skipped before drafting, drafts are committed
in batches, and a run stopped half-way (Ctrl-C, a crash) keeps the batches it committed; running
again drafts only the rest. Two runs racing on the same items cannot both store a draft: the
unique key refuses the second, which is counted as skipped.

A model failure never stops the run: that item is held for a human with the reason and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from pydantic_ai.models import Model
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from agent import autopilot_flow
from agent.autopilot_batch import (
    ACTOR,
    BATCH,
    AutopilotSummary,
    Progress,
    merge_part,
    record_error,
    sweep_commitments,
    warm_org_reads,
)
from agent.drafter import Drafter, run_sync
from agent.models import model_label
from memory import business_day, clock, durable
from memory.config import Settings
from memory.models import (
    AutopilotRun,
    Organisation,
)
from tools.insights import account360 as a360
from tools.outreach.consolidation import consolidate
from tools.outreach.due import (
    DueItem,
    select_due,
)

log = logging.getLogger(__name__)


async def arun_autopilot(
    sessions: sessionmaker[Session],
    org_id: int,
    *,
    as_of: date,
    segment: str | None = None,
    shadow: bool | None = None,
    settings: Settings,
    progress: Progress | None = None,
    limit: int | None = None,
    model: Model | None = None,
    concurrency: int | None = None,
    now: datetime | None = None,
    batch_size: int = BATCH,
) -> AutopilotSummary:
    """Async ``run_autopilot``."""
    started = time.perf_counter()
    if now is None:
        now = _moment_of_run(sessions, org_id, as_of)
    drafter = Drafter(settings, model=model, shadow=True if shadow else None, actor=ACTOR)
    summary = AutopilotSummary(
        org_id=org_id,
        as_of=as_of,
        segment=segment,
        shadow=bool(shadow),
        model_name=drafter.model_name if model is not None else model_label(settings),
        offline_model=drafter.offline,
        prompt_version=drafter.prompt.version_id,
    )
    opened = _select_and_open_run(sessions, org_id, as_of, now, segment, shadow, limit, summary)
    if opened is None:
        return summary
    run_id, items = opened
    tick = _progress_ticker(progress, len(items))
    args = _pass_args(
        run_id, as_of=as_of, now=now, shadow=shadow, model=model, batch_size=batch_size,
        concurrency=max(1, int(concurrency or settings.model_concurrency)),
    )  # fmt: skip
    try:
        await asyncio.to_thread(
            _through_queues, sessions, org_id, items, args, settings, summary, tick,
            per_item=not drafter.offline,
        )  # fmt: skip
    except BaseException:
        summary.interrupted = True
        _finish(sessions, run_id, summary, started)
        raise
    _finish(sessions, run_id, summary, started)
    return summary


def _moment_of_run(sessions: sessionmaker[Session], org_id: int, as_of: date) -> datetime:
    """The moment the guardrails decide "as if now" on the run's date.

    Why not simply now: a run for today uses this moment, a run for another date (a demo, a
    catch-up) the same time of day on that date, never a moment after this one
    (``memory.clock.moment_on``), in the organisation's time zone.
    """
    with sessions() as session:
        return clock.moment_on(as_of, business_day.org_zone(session, org_id))


def _select_and_open_run(
    sessions: sessionmaker[Session],
    org_id: int,
    as_of: date,
    now: datetime,
    segment: str | None,
    shadow: bool | None,
    limit: int | None,
    summary: AutopilotSummary,
) -> tuple[int, list[DueItem]] | None:
    """Sweep the promises-to-pay and plans, select the due cadence steps and follow-ups, and
    record the ``AutopilotRun``; the run's id and the items to draft (promise reminders first),
    or None when the organisation's switches pause passes (``summary.paused`` says which).

    Commitments first: a promise or installment missed since the last run re-enters the
    cadence in this one (the selector reads the statuses the sweeps write).
    """
    with sessions() as session:
        org_row = session.get(Organisation, org_id)
        if org_row is None:
            raise a360.NotInOrganisation(f"organisation {org_id} does not exist")
        if org_row.cron_paused or org_row.maintenance:  # onboarding: the switches pause passes
            summary.paused = "cron pause" if org_row.cron_paused else "maintenance"
            return None
        reminder_items, reminder_excluded = sweep_commitments(
            session, org_id, as_of, now, segment, summary
        )
        session.commit()
        selection = select_due(session, org_id, as_of, segment=segment, limit=limit)
        # One message per customer and contact for the cadence steps due together (issue 18).
        selection = consolidate(session, org_id, selection, as_of)
        run = AutopilotRun(
            org_id=org_id,
            as_of=as_of,
            segment=segment,
            shadow=bool(shadow),
            model_name=summary.model_name,
            started_at=clock.now(),
            summary={},
        )
        session.add(run)
        session.commit()
        run_id = run.id
    summary.run_id = run_id
    summary.skipped_existing = selection.existing
    summary.excluded = dict(selection.excluded)
    for reason, n in reminder_excluded.items():
        summary.excluded[reason] = summary.excluded.get(reason, 0) + n
    items = reminder_items + selection.items
    if limit is not None:
        items = items[: max(0, limit)]
    summary.due = len(items) + selection.existing
    return run_id, items


def _progress_ticker(progress: Progress | None, total: int) -> Callable[[int], None]:
    """Report ``progress(0, total)`` now, and return what counts finished drafts into it.

    Why a running count: the pass's workflows report drafts as they finish, a few at a time,
    and the caller's bar wants ``(done, total)``, never past the total.
    """
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(min(done, total), total)

    if progress:
        progress(0, total)
    return tick


def _pass_args(
    run_id: int,
    *,
    as_of: date,
    now: datetime,
    shadow: bool | None,
    model: Model | None,
    concurrency: int,
    batch_size: int,
) -> dict[str, Any]:
    """The pass's arguments as its DBOS workflows receive them (JSON-safe: a worker in another
    process reads them; a model given in code is lent by reference, ``lend_model``)."""
    return {
        "as_of": as_of.isoformat(),
        "now": now.isoformat(),
        "shadow": bool(shadow),
        "concurrency": concurrency,
        "batch_size": batch_size,
        "model_ref": autopilot_flow.lend_model(model) if model is not None else None,
        # The run's id and a token of this pass: a ledger recreated at the same URL (a fresh
        # demo, a test database) numbers its runs from 1 again, and must not reuse a cached read.
        "pass_id": f"{run_id}-{secrets.token_hex(6)}",
    }


def _through_queues(
    sessions: sessionmaker[Session],
    org_id: int,
    items: list[DueItem],
    args: dict[str, Any],
    settings: Settings,
    summary: AutopilotSummary,
    tick: Callable[[int], None],
    *,
    per_item: bool,
) -> None:
    """Enqueue the items as DBOS workflows and wait for them (``agent.autopilot_flow``).

    Embedded: this process launches DBOS if no command did, and so works its own queue (and so
    does every ``plixo worker`` sharing the system database). It beats while it waits, so a
    worker can recover what it held should it die.
    """

    if not items:
        return
    ident = autopilot_flow.ensure_launched(settings, sessions)
    heart = durable.Heartbeat(sessions, ident, every_s=min(5.0, settings.worker_stale_s / 3))
    flows: list[tuple[str, int]] = []
    try:
        # the first chunks start while the rest are enqueued: their reads are warmed meanwhile
        warm = threading.Thread(
            target=warm_org_reads, args=(sessions, org_id, args), kwargs={"quiet": True}
        )
        warm.start()
        flows, counted = autopilot_flow.enqueue_pass(
            sessions, org_id, items, args, per_item=per_item
        )
        summary.skipped_existing -= counted  # adopted chunks count them again as they skip them
        warm.join()
        autopilot_flow.wait_for(
            flows,
            progress=tick,
            on_part=lambda part: merge_part(summary, part),
            on_error=lambda message: record_error(summary, message),
            on_poll=_between_polls(sessions, org_id, args, settings, ident),
        )
    except KeyboardInterrupt:  # stop the pass: what has not started will not (until re-run)
        autopilot_flow.cancel_unfinished([w for w, _ in flows])
        raise
    finally:
        heart.stop()


#: How often a waiting pass looks for runs that died (``_between_polls``).
RECOVER_EVERY_S = 1.0


def _between_polls(
    sessions: sessionmaker[Session],
    org_id: int,
    args: dict[str, Any],
    settings: Settings,
    ident: str,
) -> Callable[[], None]:
    """What a pass does while it waits for its workflows: keeps the organisation's reads warm,
    and every second hands the workflows of a process that died (its heartbeat stale) back to
    the queues.

    Why the second: the pass may wait for chunks a killed run left (adopted), and if it started
    before that run's heartbeat went stale, no one else would run them unless a worker is up."""
    last = time.monotonic()

    def between() -> None:
        nonlocal last
        warm_org_reads(sessions, org_id, args, quiet=True)
        if time.monotonic() - last >= RECOVER_EVERY_S:
            last = time.monotonic()
            # the ledger away: the heartbeat says so, and the next poll tries again
            with contextlib.suppress(OperationalError):
                durable.recover_dead(sessions, settings.worker_stale_s, mine=ident)

    return between


def _finish(
    sessions: sessionmaker[Session], run_id: int, summary: AutopilotSummary, started: float
) -> None:
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    elapsed = summary.elapsed_s
    summary.drafts_per_s = round(summary.drafted / elapsed, 1) if elapsed else 0.0
    with sessions() as session:
        run = session.get(AutopilotRun, run_id)
        if run is not None:
            run.summary = summary.model_dump(mode="json")
            run.finished_at = clock.now()
            session.commit()


def run_autopilot(
    sessions: sessionmaker[Session],
    org_id: int,
    *,
    as_of: date,
    segment: str | None = None,
    shadow: bool | None = None,
    settings: Settings,
    progress: Progress | None = None,
    limit: int | None = None,
    model: Model | None = None,
    concurrency: int | None = None,
    now: datetime | None = None,
    batch_size: int = BATCH,
) -> AutopilotSummary:
    """One Autopilot pass for ``org_id`` on ``as_of`` (the organisation's date).

    ``segment``: only that segment (``UnknownSegment`` if it does not exist); ``shadow=True``:
    force Shadow Mode (every draft needs a human), None: the ledger's switches; ``limit``: draft at
    most N items; ``progress(done, total)`` is called as items finish; ``model`` and
    ``concurrency`` override the settings (tests, benchmarks); ``now`` is the moment the guardrails
    decide at (default: the current time of day on ``as_of``); drafts are committed every
    ``batch_size`` items. The items are drafted by DBOS workflows (``agent.autopilot_flow``): this
    process works them embedded, and every ``plixo worker`` sharing the system database helps.
    Safe to stop and run again: committed drafts stay, the rest is drafted next time, nothing
    twice.
    """
    return run_sync(
        arun_autopilot(
            sessions,
            org_id,
            as_of=as_of,
            segment=segment,
            shadow=shadow,
            settings=settings,
            progress=progress,
            limit=limit,
            model=model,
            concurrency=concurrency,
            now=now,
            batch_size=batch_size,
        )
    )
