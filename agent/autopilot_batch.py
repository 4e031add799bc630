"""Autopilot's drafting of a batch of due items: prepare their case files in bulk, draft them
with bounded concurrency through one ``Drafter``, count the results into the pass's summary.

Why apart from ``agent.autopilot`` (the pass: select, enqueue, wait, finish): the DBOS workflows
(``agent.autopilot_flow``) run this part in whichever worker takes a chunk, and the pass module
imports those workflows; with the drafting here, imports go one way, pass -> workflows ->
drafting, with none inside a function.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from agent.casefile import DraftTask, TaskError, build_task
from agent.deps import AgentDeps
from agent.drafter import Composed, Drafter, Prepared
from agent.schemas import DraftResult
from agent.tools import detail_payload
from memory.config import Settings
from memory.models import (
    Contact,
    Customer,
    DraftPersona,
    Invoice,
    Organisation,
    Segment,
)
from policies.engine import PolicyEngine
from policies.engine import engine_for as policy_engine_for
from policies.facts import InvoiceFacts as PolicyInvoice
from policies.facts import PromiseFacts
from tools.admin.segments import step_modes
from tools.commitments.plans import evaluate_plans
from tools.commitments.promises import due_reminders, evaluate_promises
from tools.grounding.guardrail_facts import (
    UNSEGMENTED,
    OrgSwitches,
    OutreachContext,
    contact_facts,
    disputed_invoice_ids,
    promise_facts_by_customer,
    touches_by_contact,
)
from tools.grounding.truth import LedgerTruth, ledger_truths
from tools.insights import account360 as a360
from tools.ledger.policy_overrides import policy_set_for
from tools.outreach.due import (
    DueItem,
    existing_run_keys,
    promise_reminder_items,
)

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
BATCH = 200
ACTOR = "Autopilot"


class AutopilotSummary(BaseModel):
    """What one Autopilot run did; ``model_dump()`` is what the CLI prints with ``--json``."""

    run_id: int | None = None
    org_id: int
    as_of: date
    segment: str | None = None
    shadow: bool = Field(description="Shadow Mode forced for this run (--shadow).")
    model_name: str
    offline_model: bool
    prompt_version: str = ""
    due: int = Field(default=0, description="Due items, including those drafted by an earlier run.")
    drafted: int = 0
    skipped_existing: int = 0
    excluded: dict[str, int] = Field(
        default_factory=dict, description="Due steps not chased, by reason (disputed, ...)."
    )
    by_outcome: dict[str, int] = Field(default_factory=dict)
    by_reason: dict[str, int] = Field(default_factory=dict)
    held: int = 0
    held_reasons: dict[str, int] = Field(default_factory=dict)
    grounding_mismatches: int = Field(
        default=0, description="Drafts still mismatching the ledger after the retry (blocked)."
    )
    grounding_retries: int = Field(default=0, description="Drafts sent back once and fixed.")
    errors: int = 0
    paused: str | None = Field(default=None, description="Why nothing ran (cron pause...).")
    error_samples: list[str] = Field(default_factory=list)
    promises_kept: int = Field(default=0, description="Open promises the sweep found paid.")
    promises_missed: int = Field(default=0, description="Open promises past date plus grace.")
    installments_missed: int = Field(default=0, description="Plan installments marked missed.")
    plans_defaulted: int = 0
    promise_reminders: int = Field(
        default=0, description="Reminders due for open promises (drafted with the other items)."
    )
    notes: list[str] = Field(default_factory=list)
    worker_cpu_s: float = Field(
        default=0.0,
        description="CPU seconds the drafting workflows spent (their threads, any process).",
    )
    input_tokens: int = 0
    output_tokens: int = 0
    elapsed_s: float = 0.0
    drafts_per_s: float = 0.0
    interrupted: bool = False


@dataclass
class _Batch:
    tasks: list[tuple[DueItem, DraftTask]]
    prepared: dict[str, Prepared]


def prepare(
    session: Session,
    org_id: int,
    settings: Settings,
    items: list[DueItem],
    *,
    as_of: date,
    now: datetime,
    switches: OrgSwitches,
    summary: AutopilotSummary,
) -> _Batch:
    """Build the tasks of a batch and preload their ledger facts in a few bulk queries."""
    # Load the batch's rows once and hold them (``rows``, until the batch is built): build_task's
    # lookups then hit the session's identity map (which keeps only weak references: rows nobody
    # holds are loaded again).
    rows = _load_batch_rows(session, org_id, items)
    tasks = _build_tasks(session, org_id, settings, items, rows, as_of=as_of, summary=summary)
    if not tasks:
        return _Batch([], {})
    facts = _read_grounding_facts(session, org_id, settings, tasks, rows, as_of=as_of, now=now)
    return _Batch(tasks, _prepared_by_run_key(tasks, rows, facts, switches))


@dataclass
class _BatchRows:
    """A batch's invoices, customers and contacts (one query each), its organisation and its
    customers' internal notes.

    Why a holder: ``prepare`` keeps it until the batch is built, so ``build_task``'s lookups of
    these rows hit the session's identity map (weak references only: rows nobody holds are
    loaded again, one query each).
    """

    invoices: dict[int, Invoice]
    customers: dict[int, Customer]
    contacts: dict[int, Contact]
    org: Organisation | None
    notes: dict[int, list[str]]


def _load_batch_rows(session: Session, org_id: int, items: list[DueItem]) -> _BatchRows:
    """Read the rows every item of the batch needs, in one query per table (``_BatchRows``)."""
    inv_ids = sorted({i for item in items for i in item.invoice_ids})
    cust_ids = sorted({item.customer_id for item in items})
    invoice_rows = {
        inv.id: inv
        for inv in session.scalars(
            select(Invoice).where(Invoice.org_id == org_id, Invoice.id.in_(inv_ids))
        )
    }
    cust_rows = {
        c.id: c
        for c in session.scalars(
            select(Customer).where(Customer.org_id == org_id, Customer.id.in_(cust_ids))
        )
    }
    contacts = {
        c.id: c
        for c in session.scalars(
            select(Contact).where(
                Contact.org_id == org_id, Contact.id.in_(sorted({i.contact_id for i in items}))
            )
        )
    }
    org = session.get(Organisation, org_id)
    notes = a360.internal_note_bodies(session, org_id, cust_ids)
    return _BatchRows(invoice_rows, cust_rows, contacts, org, notes)


def _build_tasks(
    session: Session,
    org_id: int,
    settings: Settings,
    items: list[DueItem],
    rows: _BatchRows,
    *,
    as_of: date,
    summary: AutopilotSummary,
) -> list[tuple[DueItem, DraftTask]]:
    """The case file of every due item (``build_task``), in the items' order.

    Why an item that fails is counted and skipped: a cadence step or nudge the ledger cannot
    describe (an invoice gone, a customer moved) must not stop the Autopilot run for the others.
    """
    tasks: list[tuple[DueItem, DraftTask]] = []
    for item in items:
        try:
            task = build_task(
                session,
                org_id,
                settings,
                as_of=as_of,
                invoice_ids=item.invoice_ids,
                contact_id=item.contact_id,
                persona=DraftPersona.AUTOPILOT,
                kind=item.kind,
                template=item.template,
                tone=item.tone,
                channel=item.channel,
                step_id=item.step_id,
                step_date=item.step_date,
                run_key=item.run_key,
                promise_id=item.promise_id,
                installment_id=item.installment_id,
                note_bodies=rows.notes.get(item.customer_id, []),
                final_notice_numbers=[
                    rows.invoices[i].number for i in item.final_notice_ids if i in rows.invoices
                ],
                reviewer_notes=item.reviewer_notes,
            )
        except (TaskError, a360.NotInOrganisation) as exc:
            record_error(summary, f"{item.run_key}: {exc}")
            continue
        tasks.append((item, task))
    return tasks


@dataclass
class _GroundingFacts:
    """The ledger facts a batch's drafts are grounded and decided on, read in bulk: each
    customer's ledger truth, each invoice's detail, number and dispute, the promises-to-pay
    and recent touches, the segments and the cadence steps set to Shadow Mode on their own."""

    truths: dict[int, LedgerTruth]
    details: dict[int, dict[str, Any]]
    numbers: dict[int, str]
    disputed: set[int]
    promises: dict[int, list[PromiseFacts]]
    touches: dict[int, list[datetime]]
    segments: dict[int, Segment]
    shadow_steps: set[int]


def _read_grounding_facts(
    session: Session,
    org_id: int,
    settings: Settings,
    tasks: list[tuple[DueItem, DraftTask]],
    rows: _BatchRows,
    *,
    as_of: date,
    now: datetime,
) -> _GroundingFacts:
    """Read the grounding and guardrail facts of the whole batch in a few queries.

    Why in bulk: read per draft, these queries cost more than the offline model's draft itself
    (the Autopilot goal is >= 200 drafts/s); the drafter takes them from ``Prepared`` instead.
    """
    customers = sorted({t.customer_id for _, t in tasks})
    links: dict[int, list[str]] = {}
    for _, t in tasks:
        links.setdefault(t.customer_id, []).extend(t.pay_links)
    truths = ledger_truths(
        session,
        org_id,
        customers,
        as_of=as_of,
        links=links,
        locales={t.customer_id: t.case.locale for _, t in tasks},
    )
    contact_ids = sorted({t.contact_id for _, t in tasks if t.contact_id is not None})
    all_invoices = sorted({i for _, t in tasks for i in t.invoice_ids})
    details = {
        inv_id: detail_payload(d)
        for inv_id, d in a360.invoice_details(
            session, org_id, all_invoices, as_of=as_of, settings=settings, now=now
        ).items()
    }
    numbers = {i: rows.invoices[i].number for i in all_invoices if i in rows.invoices}
    disputed = disputed_invoice_ids(session, org_id, all_invoices)
    promises = promise_facts_by_customer(session, org_id, customers)
    touches = touches_by_contact(session, org_id, contact_ids, now)
    segments = {s.id: s for s in session.scalars(select(Segment).where(Segment.org_id == org_id))}
    # A step set to Shadow Mode on its own is drafted for review whatever its segment says.
    shadow_steps = {sid for sid, mode in step_modes(session, org_id).items() if mode == "shadow"}
    return _GroundingFacts(
        truths, details, numbers, disputed, promises, touches, segments, shadow_steps
    )


def _prepared_by_run_key(
    tasks: list[tuple[DueItem, DraftTask]],
    rows: _BatchRows,
    facts: _GroundingFacts,
    switches: OrgSwitches,
) -> dict[str, Prepared]:
    """Each item's ``Prepared``: its customer's ledger truth, its invoices' details and the
    outreach context the guardrails decide on (segment, Shadow Mode, contact, disputes,
    promises-to-pay, touches), built from the batch's bulk reads with no query of its own."""
    numbers, details, segments = facts.numbers, facts.details, facts.segments
    disputed, promises, touches = facts.disputed, facts.promises, facts.touches
    shadow_steps = facts.shadow_steps
    prepared: dict[str, Prepared] = {}
    for item, task in tasks:
        customer = rows.customers[task.customer_id]
        seg = segments.get(customer.segment_id) if customer.segment_id else None
        contact = rows.contacts.get(task.contact_id) if task.contact_id else None
        ctx = OutreachContext(
            switches=switches,
            segment_name=seg.name if seg else UNSEGMENTED,
            segment_shadow_mode=seg.shadow_mode if seg else switches.shadow_mode,
            autopilot_enabled=seg.autopilot_enabled if seg else False,
            channel=task.case.channel.value,
            contact=contact_facts(
                contact,
                task.case.channel.value,
                fallback_timezone=customer.timezone or switches.timezone,
                country=customer.country_code or switches.country,
            ),
            invoices=tuple(
                PolicyInvoice(number=numbers[i], disputed=i in disputed) for i in task.invoice_ids
            ),
            promises=tuple(promises.get(task.customer_id, [])),
            touches=tuple(touches.get(task.contact_id, []) if task.contact_id else []),
            # a consolidated message is in review when any of its invoices' steps is
            step_shadow_mode=not shadow_steps.isdisjoint({item.step_id, *item.member_step_ids}),
        )
        prepared[item.run_key] = Prepared(
            truth=facts.truths[task.customer_id],
            context=ctx,
            details={numbers[i]: details[i] for i in task.invoice_ids if i in details},
        )
    return prepared


def sweep_commitments(
    session: Session,
    org_id: int,
    as_of: date,
    now: datetime,
    segment: str | None,
    summary: AutopilotSummary,
) -> tuple[list[DueItem], Counter[str]]:
    """Mark missed promises and installments (``tools.commitments.promises.evaluate_promises``,
    ``tools.commitments.plans.evaluate_plans``), then return the promise reminders due today as
    items.

    The sweeps are the ledger's own bookkeeping (idempotent, audited, organisation-wide); they
    run before selection so today's follow-ups see today's statuses. Reminders are drafted once
    per promise (``promise-reminder:{id}`` run keys); the guardrails let a reminder through its own
    promise's pause (``about_promise``) and keep every other check.
    """
    promises_sweep = evaluate_promises(session, org_id, now=now, actor=ACTOR)
    plans_sweep = evaluate_plans(session, org_id, now=now, actor=ACTOR)
    summary.promises_kept = len(promises_sweep.kept)
    summary.promises_missed = len(promises_sweep.missed)
    summary.installments_missed = len(plans_sweep.missed_installments)
    summary.plans_defaulted = len(plans_sweep.defaulted_plans)
    reminders = due_reminders(session, org_id, now=now)
    if not reminders:
        return [], Counter()
    items, excluded = promise_reminder_items(session, org_id, reminders, as_of, segment=segment)
    summary.promise_reminders = len(items)
    return items, excluded


def _detach(session: Session, composed: Composed) -> None:
    """Undo a failed batch insert for one draft (the savepoint's rollback made it transient
    again), so it can be stored alone, or skipped, with a fresh id."""
    if composed.draft in session:
        session.expunge(composed.draft)
    composed.draft.id = None  # type: ignore[assignment]


def record_error(summary: AutopilotSummary, message: str) -> None:
    summary.errors += 1
    if len(summary.error_samples) < 10:
        summary.error_samples.append(message[:300])


def _count(summary: AutopilotSummary, result: DraftResult) -> None:
    summary.drafted += 1
    summary.input_tokens += result.usage.input_tokens
    summary.output_tokens += result.usage.output_tokens
    if result.status.value == "held":
        summary.held += 1
        key = (result.hold_reason or "held").split(":")[0][:80]
        summary.held_reasons[key] = summary.held_reasons.get(key, 0) + 1
        summary.by_outcome["held"] = summary.by_outcome.get("held", 0) + 1
        return
    outcome = result.decision_outcome or "unknown"
    summary.by_outcome[outcome] = summary.by_outcome.get(outcome, 0) + 1
    for reason in result.decision.get("reasons", []):
        rid = str(reason.get("rule_id"))
        summary.by_reason[rid] = summary.by_reason.get(rid, 0) + 1
    if not result.grounding.get("ok", True):
        summary.grounding_mismatches += 1
    elif result.first_attempt_mismatches:
        summary.grounding_retries += 1


def merge_part(into: AutopilotSummary, part: dict[str, object]) -> None:
    """Add a worker's counters to the run's summary."""
    for key in ("drafted", "skipped_existing", "held", "grounding_mismatches",
                "grounding_retries", "errors", "input_tokens", "output_tokens"):  # fmt: skip
        setattr(into, key, getattr(into, key) + int(part.get(key, 0)))  # type: ignore[call-overload]
    into.worker_cpu_s = round(into.worker_cpu_s + float(part.get("worker_cpu_s", 0.0)), 3)  # type: ignore[arg-type]
    for key in ("by_outcome", "by_reason", "held_reasons"):
        target: dict[str, int] = getattr(into, key)
        for k, v in dict(part.get(key, {})).items():  # type: ignore[call-overload]
            target[k] = target.get(k, 0) + int(v)
    for sample in list(part.get("error_samples", [])):  # type: ignore[call-overload]
        if len(into.error_samples) < 10:
            into.error_samples.append(str(sample))


#: How long a process reuses a pass's organisation-wide reads (``org_reads``).
ORG_READS_TTL_S = 2.0
_org_reads_cache: dict[tuple[str, int, str], tuple[float, OrgSwitches, PolicyEngine]] = {}
_org_reads_lock = threading.Lock()
#: One reader per pass and organisation at a time (``org_reads``).
_org_readers: dict[tuple[str, int, str], threading.Lock] = {}


def org_reads(
    session: Session,
    org_id: int,
    now: datetime,
    pass_id: str | None,
    *,
    max_age: float = ORG_READS_TTL_S,
) -> tuple[OrgSwitches, PolicyEngine]:
    """The organisation's switches (with its Data-Ready score) and policy engine for a pass,
    read at most once every ``ORG_READS_TTL_S`` per process and pass.

    Why: both are organisation-wide (Data-Ready counts over the whole ledger), and with a real
    model a pass runs one workflow per item: read per item they cost more CPU than the draft
    itself, and more as the ledger grows. A chunk of the offline path reads them once per chunk
    anyway; here a switch turned during a pass applies to the items started after at most
    ``ORG_READS_TTL_S``, as it would from the next chunk. No pass id (a caller outside a pass):
    read now.

    One chunk reads at a time; the others starting with it wait and take its result. Sixteen
    real-model chunks start together, and each compiled the organisation's policy engine (0.7 s
    of CPU in a fresh process) at once: 1.9 s each before its first model request.
    """
    if pass_id is None:
        return _read_org(session, org_id, now)
    key = (str(session.get_bind().engine.url), org_id, pass_id)
    with _org_reads_lock:
        reader = _org_readers.setdefault(key, threading.Lock())
    with reader:
        with _org_reads_lock:
            hit = _org_reads_cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < max_age:
            return hit[1], hit[2]
        switches, engine = _read_org(session, org_id, now)
        with _org_reads_lock:
            if len(_org_reads_cache) > 256:
                _org_reads_cache.clear()
                _org_readers.clear()
            _org_reads_cache[key] = (time.monotonic(), switches, engine)
    return switches, engine


def _read_org(session: Session, org_id: int, now: datetime) -> tuple[OrgSwitches, PolicyEngine]:
    return OrgSwitches.load(session, org_id, now), policy_engine_for(
        policy_set_for(session, org_id)
    )


async def _prepare_aside(
    sessions: sessionmaker[Session],
    org_id: int,
    settings: Settings,
    items: list[DueItem],
    *,
    as_of: date,
    now: datetime,
    switches: OrgSwitches,
    summary: AutopilotSummary,
) -> _Batch:
    """``prepare`` in a thread, on a session of its own, while the drafts already started run
    on the event loop: a real model's chunk then keeps its request going instead of waiting
    (100-300 ms a batch) for the next batch's reads. What it builds is plain data (case files,
    ledger facts), nothing bound to that session."""
    scratch = AutopilotSummary.model_construct(errors=0, error_samples=[])

    def read_batch() -> _Batch:
        with sessions() as own:
            return prepare(
                own, org_id, settings, items, as_of=as_of, now=now, switches=switches,
                summary=scratch,
            )  # fmt: skip

    batch = await asyncio.to_thread(read_batch)
    summary.errors += scratch.errors - len(scratch.error_samples)
    for message in scratch.error_samples:
        record_error(summary, message)
    return batch


def _batches(n: int, size: int, first: int | None) -> list[tuple[int, int]]:
    """Bounds of the batches ``draft_items`` prepares: ``first`` items, then ``size`` each."""
    head = min(n, first) if first else 0
    return ([(0, head)] if head else []) + [
        (start, min(n, start + size)) for start in range(head, n, max(1, size))
    ]


async def draft_items(
    sessions: sessionmaker[Session],
    org_id: int,
    items: list[DueItem],
    *,
    as_of: date,
    now: datetime,
    settings: Settings,
    drafter: Drafter,
    summary: AutopilotSummary,
    concurrency: int,
    batch_size: int,
    progress: Callable[[int], None] | None,
    pass_id: str | None = None,
    first_batch: int | None = None,
    read_size: int | None = None,
) -> None:
    """Draft ``items`` through a pipeline: up to ``concurrency`` compositions in flight (reads
    only), and every ``batch_size`` finished drafts stored and committed in one short write.
    ``first_batch``: prepare only that many items before the first drafts start, and the next
    batches beside the drafts in flight (``_prepare_aside``): a real model's chunk sends its
    first request at once and never pauses its requests for the reads. ``read_size``: items
    prepared together (default ``batch_size``); a real model's chunk reads more at once than
    it stores, since each read costs about ten queries whatever its size.

    The pipeline never waits for a whole batch before starting the next items, so a slow model
    keeps all ``concurrency`` slots busy. Counts go into ``summary`` only for committed drafts, so
    an interrupted run's summary matches the ledger. ``context``: where the organisation's
    switches and policy engine come from (default: loaded here; one-item workflows share them).
    """
    with sessions() as session:
        switches, engine = org_reads(session, org_id, now, pass_id)
        pipeline = _DraftPipeline(
            session=session,
            org_id=org_id,
            drafter=drafter,
            deps=AgentDeps(session=session, org_id=org_id, settings=settings, as_of=as_of, now=now),
            switches=switches,
            engine=engine,
            summary=summary,
            batch_size=batch_size,
            progress=progress,
            sem=asyncio.Semaphore(max(1, concurrency)),
        )
        try:
            for start, end in _batches(len(items), read_size or batch_size, first_batch):
                if start and first_batch:  # drafts are in flight: read beside them
                    batch = await _prepare_aside(
                        sessions, org_id, settings, items[start:end], as_of=as_of,
                        now=now, switches=switches, summary=summary,
                    )  # fmt: skip
                else:
                    batch = prepare(
                        session, org_id, settings, items[start:end], as_of=as_of,
                        now=now, switches=switches, summary=summary,
                    )  # fmt: skip
                for item, task in batch.tasks:
                    await pipeline.sem.acquire()
                    pipeline.start(item, task, batch.prepared[item.run_key])
            await pipeline.drain()
        finally:
            pipeline.cancel_running()


@dataclass
class _DraftPipeline:
    """``draft_items``' drafts in flight and finished, on its one session.

    Why a pipeline: up to ``sem``'s drafts compose at once (reads only), and every
    ``batch_size`` finished ones are stored in one short write, so a slow model keeps every slot
    busy and no worker holds the database's write lock while a model thinks.
    """

    session: Session
    org_id: int
    drafter: Drafter
    deps: AgentDeps
    switches: OrgSwitches
    engine: PolicyEngine
    summary: AutopilotSummary
    batch_size: int
    progress: Callable[[int], None] | None
    sem: asyncio.Semaphore
    finished: list[Composed | str] = field(default_factory=list)
    running: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self, item: DueItem, task: DraftTask, prep: Prepared) -> None:
        """Start one draft in the slot just acquired (``sem``), first storing the batches
        already finished.

        Why it looks at the finished tasks: a Ctrl-C or a cancellation in one of them must stop
        the run now, not after every item was started. Not a coroutine: the caller awaits the
        slot, and a draft costs no extra coroutine frame.
        """
        self.flush_finished()
        t = asyncio.create_task(self.compose(item, task, prep))
        self.running.add(t)
        t.add_done_callback(self.running.discard)
        _raise_interruption({x for x in list(self.running) if x.done()})

    async def compose(self, item: DueItem, task: DraftTask, prep: Prepared) -> None:
        """Compose one draft into ``finished`` (a ``Composed``, or the error's message), and
        free its slot.

        Why an error is a message: a bug or a ledger problem on one item must not stop the
        Autopilot run; it is counted when its batch is stored.
        """
        try:
            self.finished.append(
                await self.drafter.compose(
                    self.deps,
                    task,
                    persona=DraftPersona.AUTOPILOT,
                    kind=item.kind,
                    prepared=prep,
                    switches=self.switches,
                    engine=self.engine,
                )
            )
        except Exception as exc:  # a bug or a ledger problem on one item: keep going
            self.finished.append(f"{item.run_key}: {type(exc).__name__}: {exc}")
        finally:
            self.sem.release()
            if self.progress:
                self.progress(1)

    async def drain(self) -> None:
        """Wait for the drafts still in flight, storing each full batch as it finishes, then the
        rest: every composed draft is stored before the run ends."""
        while self.running:
            done, _ = await asyncio.wait(set(self.running), return_when=asyncio.FIRST_COMPLETED)
            _raise_interruption(done)
            self.flush_finished()
        self.flush_finished(force=True)

    def cancel_running(self) -> None:
        """Cancel the drafts still in flight (the run is stopping: they will not be stored)."""
        for t in self.running:
            t.cancel()

    def flush_finished(self, force: bool = False) -> None:
        """Store the finished drafts ``batch_size`` at a time (``force``: the rest too), so a
        write transaction is short and an interrupted run keeps what it committed."""
        finished, batch_size = self.finished, self.batch_size
        while len(finished) >= batch_size or (force and finished):
            chunk = finished[:batch_size]
            del finished[:batch_size]
            self.store(chunk)

    def store(self, outcomes: list[Composed | str]) -> None:
        """Write finished drafts (synchronous: no other task runs meanwhile) and commit.

        Why the run keys are checked first, and again through the unique key: a draft stored by
        an earlier run is skipped, and so is one another run stored a moment ago; counts go into
        the summary only for committed drafts, so an interrupted run's summary matches the ledger.
        """
        session, summary = self.session, self.summary
        composed = [o for o in outcomes if not isinstance(o, str)]
        taken = existing_run_keys(
            session, self.org_id, [c.task.run_key for c in composed if c.task.run_key]
        )
        fresh = [c for c in composed if c.task.run_key not in taken]
        skipped = len(composed) - len(fresh)
        results: list[DraftResult] = []
        try:
            with session.begin_nested():
                results = self.drafter.store_many(session, fresh)
        except IntegrityError:  # another run stored some of these run keys a moment ago
            for c in fresh:
                _detach(session, c)
            for outcome in fresh:
                try:
                    with session.begin_nested():
                        results.append(self.drafter.store(session, outcome))
                except IntegrityError:
                    skipped += 1
        session.commit()
        summary.skipped_existing += skipped
        for message in (o for o in outcomes if isinstance(o, str)):
            record_error(summary, message)
        for result in results:
            _count(summary, result)


def _raise_interruption(done: set[asyncio.Task[None]]) -> None:
    """Re-raise what stopped a finished draft task. Only ``BaseException``s get there (Ctrl-C,
    cancellation): ``_DraftPipeline.compose`` turns every ``Exception`` into a message."""
    for t in done:
        exc = t.exception() if not t.cancelled() else None
        if exc is not None:  # only BaseExceptions reach here (Ctrl-C, cancellation)
            raise exc


def warm_org_reads(
    sessions: sessionmaker[Session], org_id: int, args: dict[str, Any], *, quiet: bool = False
) -> None:
    """Keep the pass's organisation-wide reads (``org_reads``) fresh in this process while it
    waits: it works the pass's workflows too (embedded), and its chunks then start drafting at
    once. The first read compiles the policy engine (0.7 s of CPU in a fresh process) while the
    queue dispatches the first chunks; later ones renew the reads before they expire, so a wave
    of chunks starting together does not wait for one of them to read again. ``quiet``: a
    renewal the ledger refuses (away for a moment) is left to the chunks, which read it
    themselves when it expires; the wait's own polling says whether the database is gone."""
    fresh_for = ORG_READS_TTL_S * 0.75
    pass_id = args.get("pass_id")
    if pass_id is not None and org_reads_age(org_id, pass_id) < fresh_for:
        return
    try:
        with sessions() as session:
            now = datetime.fromisoformat(args["now"])
            org_reads(session, org_id, now, pass_id, max_age=fresh_for)
    except OperationalError:
        if not quiet:
            raise
        log.warning("renewing the organisation's reads for pass %s failed", pass_id)


def org_reads_age(org_id: int, pass_id: str) -> float:
    """Seconds since this process last read the pass's organisation-wide reads (any ledger)."""
    with _org_reads_lock:
        stamps = [v[0] for k, v in _org_reads_cache.items() if k[1:] == (org_id, pass_id)]
    return time.monotonic() - max(stamps) if stamps else float("inf")
