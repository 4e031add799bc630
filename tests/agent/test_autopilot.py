"""Autopilot runs: what is due, drafts with decisions, counted summaries, and no duplicates when
a run is repeated, interrupted or races another run."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, FunctionModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from agent.autopilot import arun_autopilot, run_autopilot
from agent.drafter import run_sync
from agent.offline import offline_function
from memory.config import Settings
from memory.models import (
    AutopilotRun,
    Channel,
    Draft,
    DraftKind,
    DraftStatus,
    PlanStatus,
    PolicySetVersion,
    PromiseStatus,
)
from tests.agent.factories import AS_OF, NOW, Builder, Ledger, due_ledger, small_ledger
from tools.outreach import due as sel
from tools.outreach.due import UnknownSegment, select_due


def _busy_ledger(session: Session) -> tuple[Ledger, dict[str, Any]]:
    """One org: six customers; what is due on AS_OF, and what must not be chased."""
    led = small_ledger(session)  # INV-1042: 3 days past due -> friendly_reminder
    b, seg = led.b, led.segment
    made: dict[str, Any] = {}

    def customer(name: str, **kw: Any) -> Any:
        c = b.customer(name, segment=seg, **kw)
        b.contact(c, f"{name} AP")
        return c

    c2 = customer("Second Reminder Co")
    made["second"] = b.invoice(c2, number="INV-2014", days_overdue=14)
    made["pre_due"] = b.invoice(c2, number="INV-2000", due=AS_OF + timedelta(days=3))
    made["stale"] = b.invoice(c2, number="INV-2010", days_overdue=10)  # step +3 was 7 days ago
    made["between"] = b.invoice(c2, number="INV-2020", days_overdue=20)  # +14 six days ago: due
    c3 = customer("Disputed Co")
    made["disputed"] = b.invoice(c3, number="INV-3003", days_overdue=3)
    b.dispute(made["disputed"])
    c4 = customer("Promised Co")
    made["promised"] = b.invoice(c4, number="INV-4003", days_overdue=3)
    # promised beyond the reminder lead time: paused, and no promise reminder due either
    b.promise(c4, [made["promised"]], amount_minor=1, promised=AS_OF + timedelta(days=5))
    c5 = customer("Broken Promise Co")
    made["broken"] = b.invoice(c5, number="INV-5001", days_overdue=30)  # +30 step today too
    made["broken_promise"] = b.promise(
        c5, [made["broken"]], amount_minor=125_000, promised=AS_OF - timedelta(days=4)
    )  # deadline AS_OF-1: follow-up due today
    c6 = customer("Plan Co")
    made["planned"] = b.invoice(c6, number="INV-6001", days_overdue=30)
    made["plan"] = b.plan(
        c6,
        [made["planned"]],
        [(AS_OF - timedelta(days=4), 60_000, 0), (AS_OF + timedelta(days=26), 65_000, 0)],
        status=PlanStatus.ACTIVE,
    )
    c7 = b.customer("Unreachable Co", segment=seg)
    b.contact(c7, "Gone", opted_out=True)
    made["unreachable"] = b.invoice(c7, number="INV-7003", days_overdue=3)
    c8 = b.customer("No Segment Co")
    b.contact(c8, "Someone")
    made["unsegmented"] = b.invoice(c8, number="INV-8003", days_overdue=3)
    # These tests are about selection and run mechanics item by item: the segment keeps one
    # message per invoice (consolidated outreach: tests/agent/test_autopilot_consolidation.py).
    session.add(
        PolicySetVersion(
            org_id=led.org.id,
            version=1,
            content={"cadence": {"one_message_per_invoice_segments": [seg.name]}},
            active=True,
        )
    )
    session.commit()
    return led, made


def test_selection_rules(session: Session) -> None:
    led, made = _busy_ledger(session)
    selection = select_due(session, led.org.id, AS_OF)
    by_invoice = {i.invoice_id: i for i in selection.items}
    expected_cadence = {
        led.invoice.id: "friendly_reminder",
        made["second"].id: "second_reminder",
        made["pre_due"].id: "pre_due_courtesy",
        made["between"].id: "second_reminder",
    }
    for invoice_id, template in expected_cadence.items():
        assert by_invoice[invoice_id].template == template
        assert by_invoice[invoice_id].kind is DraftKind.CADENCE
    broken = by_invoice[made["broken"].id]
    assert broken.kind is DraftKind.FOLLOW_UP and broken.template == "promise_broken"
    assert broken.run_key == (
        f"{made['broken'].id}:promise-{made['broken_promise'].id}:{AS_OF.isoformat()}"
    )
    planned = by_invoice[made["planned"].id]
    assert planned.template == "installment_missed" and planned.tone == "firm"
    for name in ("stale", "disputed", "promised", "unreachable", "unsegmented"):
        assert made[name].id not in by_invoice, name
    assert selection.excluded == {
        "disputed": 1,
        "promise_open": 1,
        "in_payment_plan": 1,
        "follow_up_first": 1,
        "no_reachable_contact": 1,
    }
    assert len(selection.items) == 6
    step = by_invoice[led.invoice.id]
    assert (
        step.run_key == f"{led.invoice.id}:{step.step_id}:{(AS_OF - timedelta(days=0)).isoformat()}"
    )


def test_segment_filter_and_unknown_segment(session: Session) -> None:
    led, _ = _busy_ledger(session)
    other_seg = led.b.segment("Enterprise", cadence=led.cadence)
    c = led.b.customer("Big Co", segment=other_seg)
    led.b.contact(c, "Big AP")
    big = led.b.invoice(c, number="INV-9003", days_overdue=3)
    session.commit()
    only = select_due(session, led.org.id, AS_OF, segment="Enterprise")
    assert [i.invoice_id for i in only.items] == [big.id]
    with pytest.raises(UnknownSegment, match="Enterprise, SMB"):
        select_due(session, led.org.id, AS_OF, segment="Nope")


def test_run_drafts_everything_due_and_rerun_duplicates_nothing(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    led, made = _busy_ledger(session)
    ticks: list[tuple[int, int]] = []
    summary = run_autopilot(
        sessions, led.org.id, as_of=AS_OF, shadow=True, settings=settings, now=NOW,
        progress=lambda d, t: ticks.append((d, t)),
    )  # fmt: skip
    assert summary.drafted == 6 and summary.due == 6 and summary.skipped_existing == 0
    assert summary.by_outcome == {"needs_approval": 6}
    assert summary.by_reason["shadow.review_required"] == 6
    assert summary.grounding_mismatches == 0 and summary.held == 0 and summary.errors == 0
    assert summary.excluded["disputed"] == 1 and summary.model_name == "plixo-offline-v1"
    assert summary.offline_model and summary.prompt_version == "drafter/v2"
    assert ticks[0] == (0, 6) and ticks[-1] == (6, 6)
    drafts = session.scalars(select(Draft).where(Draft.org_id == led.org.id)).all()
    assert len(drafts) == 6 and all(d.status is DraftStatus.PENDING_REVIEW for d in drafts)
    assert all(d.run_key and d.model_name == "plixo-offline-v1" for d in drafts)
    follow = [d for d in drafts if d.kind is DraftKind.FOLLOW_UP]
    assert {d.stated_facts["template"] for d in follow} == {"promise_broken", "installment_missed"}
    broken = next(d for d in follow if d.stated_facts["template"] == "promise_broken")
    assert "$1,250.00" in broken.body and "October 17, 2025" in broken.body

    again = run_autopilot(
        sessions, led.org.id, as_of=AS_OF, shadow=True, settings=settings, now=NOW
    )
    assert again.drafted == 0 and again.skipped_existing == 6 and again.due == 6
    assert session.scalar(select(func.count()).select_from(Draft)) == 6
    runs = session.scalars(select(AutopilotRun).order_by(AutopilotRun.id)).all()
    assert [r.summary["drafted"] for r in runs] == [6, 0]
    assert all(r.finished_at is not None and r.shadow for r in runs)


def test_limit_then_the_rest(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    led, _ = _busy_ledger(session)
    first = run_autopilot(sessions, led.org.id, as_of=AS_OF, settings=settings, now=NOW, limit=2)
    rest = run_autopilot(sessions, led.org.id, as_of=AS_OF, settings=settings, now=NOW)
    assert (first.drafted, rest.drafted, rest.skipped_existing) == (2, 4, 2)


def test_an_interrupted_run_keeps_committed_batches_and_resumes(
    session: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C after the first chunk: the pass stops (workflows not started are cancelled, a
    running one finishes its chunk), its summary says so, and the same command drafts the rest,
    resuming the cancelled chunks by their ids; nothing twice."""
    from agent import autopilot_flow
    from agent.autopilot_flow import ensure_launched

    led, _ = _busy_ledger(session)

    def stop_after_the_first_chunk(done: int, total: int) -> None:
        if done >= 2:
            raise KeyboardInterrupt

    one_at_a_time = settings.model_copy(update={"autopilot_concurrency": 1})
    real_draft = autopilot_flow._draft

    def slow_draft(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)  # long enough for Ctrl-C to land while the next chunk waits
        return real_draft(*args, **kwargs)

    monkeypatch.setattr(autopilot_flow, "_draft", slow_draft)
    saved, autopilot_flow.CHUNK = autopilot_flow.CHUNK, 2
    ensure_launched(settings, sessions)
    autopilot_flow.register_queues(one_at_a_time)
    # DBOS's dispatcher reads a queue's limits once per poll, then waits its polling interval
    # (0.1 s here) and dequeues: a poll that read the old limit just before would start all three
    # chunks at once. Several intervals later every poll has read the limit of one.
    time.sleep(1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sync(
                arun_autopilot(
                    sessions, led.org.id, as_of=AS_OF, settings=one_at_a_time, now=NOW,
                    progress=stop_after_the_first_chunk, batch_size=2, concurrency=1,
                )
            )  # fmt: skip
        run = session.scalars(select(AutopilotRun)).one()
        assert run.summary["interrupted"] and run.summary["drafted"] == 2
        time.sleep(2.5)  # a chunk already running when Ctrl-C came finishes meanwhile
        kept = int(session.scalar(select(func.count()).select_from(Draft)) or 0)
        assert 2 <= kept < 6
        rest = run_autopilot(sessions, led.org.id, as_of=AS_OF, settings=settings, now=NOW)
    finally:
        autopilot_flow.CHUNK = saved
        autopilot_flow.register_queues(settings)
    assert rest.drafted == 6 - kept and rest.skipped_existing == kept
    keys = session.scalars(select(Draft.run_key)).all()
    assert len(keys) == len(set(keys)) == 6


@pytest.mark.parametrize("precheck", [True, False])
def test_a_racing_run_cannot_store_the_same_run_key(
    session: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    precheck: bool,
) -> None:
    """Another run stores a draft for an item after selection: it is skipped, never doubled
    (found by the pre-check, or refused by the unique key when the pre-check misses it)."""
    led, _ = _busy_ledger(session)
    if not precheck:
        monkeypatch.setattr("agent.autopilot_batch.existing_run_keys", lambda *a, **k: set())
    target = select_due(session, led.org.id, AS_OF).items[0]

    def race(done: int, total: int) -> None:
        if done == 0:
            with sessions() as other:
                other.add(
                    Draft(
                        org_id=led.org.id, customer_id=target.customer_id,
                        invoice_id=target.invoice_id, run_key=target.run_key,
                        status=DraftStatus.PENDING_REVIEW, body="by another run",
                    )
                )  # fmt: skip
                other.commit()

    summary = run_autopilot(
        sessions, led.org.id, as_of=AS_OF, settings=settings, now=NOW, progress=race
    )
    assert summary.drafted == 5 and summary.skipped_existing == 1
    bodies = session.scalars(select(Draft.body).where(Draft.run_key == target.run_key)).all()
    assert bodies == ["by another run"]


def test_a_failing_item_is_held_and_the_run_goes_on(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    led, made = _busy_ledger(session)

    async def flaky(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if "INV-2014" in str(messages[0]):
            raise TimeoutError("model took too long")
        return await offline_function(messages, info)

    summary = run_autopilot(
        sessions, led.org.id, as_of=AS_OF, settings=settings, now=NOW,
        model=FunctionModel(flaky, model_name="flaky"),
    )  # fmt: skip
    assert summary.drafted == 6 and summary.held == 1
    assert summary.by_outcome == {"needs_approval": 5, "held": 1}
    assert list(summary.held_reasons) == ["The model timed out"]
    held = session.scalars(select(Draft).where(Draft.status == DraftStatus.HELD)).one()
    assert held.invoice_id == made["second"].id and "too long" in (held.hold_reason or "")


def test_call_steps_are_drafted_as_call_scripts(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    b = Builder.new_org(session)
    cadence = b.cadence(steps=[(45, Channel.CALL, "account_review_call", "professional")])
    seg = b.segment("Enterprise", cadence=cadence)
    c = b.customer("Call Me Inc.", segment=seg)
    b.contact(c, "Pat Payer", phone="+1 555 0199")
    b.invoice(c, number="INV-4545", amount_minor=900_000, days_overdue=45)
    session.commit()
    summary = run_autopilot(sessions, b.org.id, as_of=AS_OF, settings=settings, now=NOW)
    draft = session.scalars(select(Draft)).one()
    assert summary.drafted == 1 and draft.channel is Channel.CALL
    assert draft.recipient == "+1 555 0199" and draft.subject.startswith("Call Pat Payer")
    assert draft.grounding["ok"]


def test_catch_up_window(session: Session) -> None:
    led = small_ledger(session)
    assert select_due(session, led.org.id, AS_OF + timedelta(days=6)).items
    assert not select_due(session, led.org.id, AS_OF + timedelta(days=7)).items
    with pytest.raises(ValueError):
        select_due(session, led.org.id, AS_OF, catch_up_days=0)
    assert sel.CATCH_UP_DAYS == 7


def test_missed_promise_status_gets_a_follow_up(session: Session) -> None:
    led = small_ledger(session)
    led.b.promise(
        led.customer, [led.invoice], amount_minor=125_000,
        promised=AS_OF - timedelta(days=5), status=PromiseStatus.MISSED, grace_days=1,
    )  # fmt: skip
    session.commit()
    items = select_due(session, led.org.id, AS_OF).items
    assert [i.template for i in items] == ["promise_broken"]


def test_the_run_goes_through_the_dbos_queue_in_chunks(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    from dbos import DBOS

    from agent import autopilot_flow

    led, _ = _busy_ledger(session)
    saved, autopilot_flow.CHUNK = autopilot_flow.CHUNK, 2
    try:
        summary = run_autopilot(
            sessions, led.org.id, as_of=AS_OF, settings=settings, now=NOW, batch_size=2
        )
    finally:
        autopilot_flow.CHUNK = saved
    chunks = DBOS.list_workflows(
        name="plixo.autopilot.chunk", queue_name=autopilot_flow.CHUNK_QUEUE, load_input=False
    )
    from memory import durable

    key = durable.ledger_key(session)
    mine = [w for w in chunks if f":{key}:{led.org.id}:" in w.workflow_id]
    assert len(mine) == 3 and all(w.status == "SUCCESS" for w in mine)
    assert summary.drafted == 6 and summary.errors == 0
    keys = session.scalars(select(Draft.run_key)).all()
    assert len(keys) == len(set(keys)) == 6


def test_real_model_items_draft_as_many_at_once_as_the_concurrency_setting(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    """Each item workflow holds a ledger connection while its model answers: with the command's
    pool (5 + 10) only 7 drafted at once whatever PLIXO_AUTOPILOT_CONCURRENCY said."""
    import asyncio

    from agent import autopilot_flow

    b = due_ledger(session, [f"INV-9{n:03d}" for n in range(14)], name="Wide")
    wide = settings.model_copy(update={"autopilot_concurrency": 10})
    seen = {"now": 0, "max": 0}

    async def gathering(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        """Answers once 10 requests are in flight together (or after 30 s: the test fails)."""
        seen["now"] += 1
        seen["max"] = max(seen["max"], seen["now"])
        deadline = time.monotonic() + 30
        while seen["max"] < 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        seen["now"] -= 1
        return await offline_function(messages, info)

    autopilot_flow.ensure_launched(wide, sessions)
    autopilot_flow.register_queues(wide)
    try:
        summary = run_autopilot(
            sessions, b.org.id, as_of=AS_OF, settings=wide, now=NOW,
            model=FunctionModel(gathering, model_name="gathering"),
        )  # fmt: skip
    finally:
        autopilot_flow.register_queues(settings)
    assert summary.drafted == 14 and summary.errors == 0
    assert seen["max"] == 10  # never more than the setting, and no pool cap below it
