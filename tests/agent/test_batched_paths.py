"""The batched paths Autopilot takes for speed give the same answers as the one-by-one paths:
bulk invoice details, prefetched tool answers (still scope-checked), batch storage, the string
search for known invoice numbers, the garbage-collector setting a run borrows, and a real-model
chunk's reads in larger batches than its writes."""

from __future__ import annotations

import asyncio
import gc
import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_ai import RunContext
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RunUsage
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent import autopilot_batch, tools
from agent.autopilot_batch import AutopilotSummary, draft_items, prepare
from agent.casefile import build_task
from agent.deps import AgentDeps, OutOfScope
from agent.drafter import Drafter, Prepared, run_sync
from memory.config import Settings
from memory.models import AuditEvent, Draft, DraftKind, DraftPersona
from tests.agent.factories import AS_OF, NOW, Ledger, due_ledger, small_ledger
from tools.grounding.extraction import _occurrences
from tools.grounding.guardrail_facts import OrgSwitches
from tools.insights import account360 as a360
from tools.kit.gc_pauses import fewer_gc_pauses
from tools.outreach.due import select_due


def test_bulk_invoice_details_equal_the_one_by_one_answer(
    session: Session, ledger: Ledger, settings: Settings
) -> None:
    b, c = ledger.b, ledger.customer
    plain = b.invoice(c, number="INV-3001", amount_minor=40_000, days_overdue=20)
    promised = b.invoice(c, number="INV-3002", amount_minor=50_000, days_overdue=5)
    b.promise(c, [promised], amount_minor=50_000, promised=AS_OF + timedelta(days=3))
    paid_part = b.invoice(c, number="INV-3003", amount_minor=60_000, balance_minor=20_000)
    b.payment(paid_part, 40_000, AS_OF - timedelta(days=2))
    disputed = b.invoice(c, number="INV-3004", amount_minor=70_000)
    b.dispute(disputed, description="wrong quantity")
    session.commit()
    ids = [ledger.invoice.id, plain.id, promised.id, paid_part.id, disputed.id]
    bulk = a360.invoice_details(
        session, ledger.org.id, ids, as_of=AS_OF, settings=settings, now=NOW
    )
    for inv_id in ids:
        one = a360.invoice_detail(
            session, ledger.org.id, inv_id, as_of=AS_OF, settings=settings, now=NOW
        )
        assert bulk[inv_id] == one, inv_id
    other = small_ledger(session)
    assert a360.invoice_details(
        session, ledger.org.id, [other.invoice.id], as_of=AS_OF, settings=settings
    ) == {}  # fmt: skip


def test_internal_notes_newest_first_payer_notes_never(session: Session, ledger: Ledger) -> None:
    c = ledger.customer
    for k in range(7):
        note = ledger.b.note(c, f"internal {k}")
        note.created_at = NOW - timedelta(days=10 - k)
    ledger.b.note(c, "from the portal", source="portal")
    session.commit()
    bodies = a360.internal_note_bodies(session, ledger.org.id, [c.id])[c.id]
    assert bodies == ["internal 6", "internal 5", "internal 4", "internal 3", "internal 2"]
    assert a360.internal_note_bodies(session, ledger.org.id + 999, [c.id]) == {}


def _ctx(deps: AgentDeps) -> RunContext[AgentDeps]:
    return RunContext(deps=deps, model=TestModel(), usage=RunUsage())


def test_a_prefetched_answer_is_still_scope_checked(
    session: Session, ledger: Ledger, settings: Settings
) -> None:
    neighbour = ledger.b.customer("Neighbour Inc.")
    theirs = ledger.b.invoice(neighbour, number="INV-8888")
    session.commit()
    details = a360.invoice_details(
        session, ledger.org.id, [ledger.invoice.id, theirs.id], as_of=AS_OF, settings=settings
    )
    prefetched = {d.invoice.number: tools.detail_payload(d) for d in details.values()}
    deps = AgentDeps(
        session=session, org_id=ledger.org.id, settings=settings, as_of=AS_OF, now=NOW,
        customer_id=ledger.customer.id, prefetched=prefetched,
    )  # fmt: skip
    ours = asyncio.run(tools.invoice_detail(_ctx(deps), "INV-1042"))
    direct = AgentDeps(
        session=session, org_id=ledger.org.id, settings=settings, as_of=AS_OF, now=NOW,
        customer_id=ledger.customer.id,
    )  # fmt: skip
    assert ours == asyncio.run(tools.invoice_detail(_ctx(direct), "INV-1042"))
    with pytest.raises(OutOfScope):
        asyncio.run(tools.invoice_detail(_ctx(deps), "INV-8888"))


def test_store_many_writes_what_store_writes(session: Session, settings: Settings) -> None:
    """Two identical ledgers: one draft stored alone, one in a batch; same rows, same audit."""
    rows = []
    for batched in (False, True):
        led = small_ledger(session)
        session.commit()
        drafter = Drafter(settings, shadow=True, actor="Autopilot")
        deps = AgentDeps(
            session=session, org_id=led.org.id, settings=settings, as_of=AS_OF, now=NOW
        )
        task = build_task(
            session, led.org.id, settings, as_of=AS_OF, invoice_ids=[led.invoice.id],
            template="friendly_reminder", run_key="k",
        )  # fmt: skip
        composed = asyncio.run(
            drafter.compose(deps, task, persona=DraftPersona.AUTOPILOT, kind=DraftKind.CADENCE)
        )
        if batched:
            [result] = drafter.store_many(session, [composed])
        else:
            result = drafter.store(session, composed)
        session.commit()
        draft = session.get(Draft, result.draft_id)
        event = session.scalars(
            select(AuditEvent).where(
                AuditEvent.org_id == led.org.id, AuditEvent.subject_id == result.draft_id
            )
        ).one()
        assert draft is not None
        rows.append(
            (
                draft.status,
                draft.decision_outcome,
                draft.body.replace(led.org.slug, "SLUG"),
                draft.hold_reason,
                event.action,
                event.actor,
                event.from_state,
                event.to_state,
                sorted(event.detail),
                result.status,
                result.decision_outcome,
            )  # fmt: skip
        )
    assert rows[0] == rows[1]


@given(
    text=st.text(alphabet="INV-0123456789 .,/_#abcX\n", max_size=60),
    token=st.sampled_from(["INV-1042", "1042", "X1", "INV-10"]),
)
@settings(max_examples=400, deadline=None)
def test_known_number_search_matches_the_regex_it_replaced(text: str, token: str) -> None:
    rx = re.compile(rf"(?<![\w.,-]){re.escape(token)}(?![\w-]|[.,]\d)")
    assert list(_occurrences(text, token)) == [m.span() for m in rx.finditer(text)]


def test_a_run_borrows_the_gc_setting_and_gives_it_back() -> None:
    before = gc.get_threshold()
    with fewer_gc_pauses():
        inside = gc.get_threshold()
        with fewer_gc_pauses():  # a second run in another thread of the same process
            assert gc.get_threshold() == inside
        assert gc.get_threshold() == inside
    assert inside[0] >= 10_000 and gc.get_threshold() == before


def test_prepare_builds_every_task_with_its_prefetched_invoices(
    session: Session, ledger: Ledger, settings: Settings
) -> None:
    ledger.b.note(ledger.customer, "AP books against PO 55123.")
    session.commit()
    items = select_due(session, ledger.org.id, AS_OF).items
    batch = prepare(
        session, ledger.org.id, settings, items, as_of=AS_OF, now=NOW,
        switches=OrgSwitches.load(session, ledger.org.id, NOW),
        summary=AutopilotSummary(
            org_id=ledger.org.id, as_of=AS_OF, shadow=True, model_name="x", offline_model=True
        ),
    )  # fmt: skip
    [(item, task)] = batch.tasks
    prepared: Prepared = batch.prepared[item.run_key]
    assert set(prepared.details) == {"INV-1042"}
    assert task.case.po_reference == "55123"
    assert prepared.truth is not None and prepared.context is not None


def test_a_chunk_reads_its_items_in_larger_batches_than_it_stores(
    session: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``draft_items`` with ``read_size`` (a real model's chunk): the first items alone, so the
    first request leaves at once, then ``read_size`` at a time beside the drafts in flight; the
    drafts are still stored ``batch_size`` at a time, and every item is drafted once."""
    b = due_ledger(session, [f"INV-6{n:03d}" for n in range(7)], name="Batch")
    items = select_due(session, b.org.id, AS_OF).items
    assert len(items) == 7
    read: list[int] = []
    stored: list[int] = []
    real_prepare, real_store = autopilot_batch.prepare, Drafter.store_many

    def counting_prepare(*args: object, **kwargs: object) -> object:
        read.append(len(args[3]))  # type: ignore[arg-type]
        return real_prepare(*args, **kwargs)  # type: ignore[arg-type]

    def counting_store(self: Drafter, s: Session, batch: list[object]) -> object:
        stored.append(len(batch))
        return real_store(self, s, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(autopilot_batch, "prepare", counting_prepare)
    monkeypatch.setattr(Drafter, "store_many", counting_store)
    summary = AutopilotSummary(
        org_id=b.org.id, as_of=AS_OF, shadow=True, model_name="x", offline_model=True
    )
    run_sync(
        draft_items(
            sessions, b.org.id, items, as_of=AS_OF, now=NOW, settings=settings,
            drafter=Drafter(settings, shadow=True, actor="Autopilot"), summary=summary,
            concurrency=2, batch_size=2, progress=None, first_batch=2, read_size=4,
        )
    )  # fmt: skip
    assert read == [2, 4, 1]
    assert stored == [2, 2, 2, 1]
    assert summary.drafted == 7 and summary.errors == 0
