"""The thin task: run plixo's own agent on a prepared scenario and translate its answer.

Drafting goes the way Autopilot goes (``agent.casefile.build_task`` then ``Drafter.draft``: the
same case file, grounding, guardrails and storage), so the evals measure the product, not a
shortcut. Triage calls ``agent.service.triage_reply``, as the inbound-reply flow does. The
agent's typed results become the evaluators' plain ``DraftView`` / ``TriageView``; nothing else
in ``evals`` knows the agent's types.

A draft the agent held because the model itself failed (timeout, connection, provider error) is a
case that did not run (``CaseNotRun``), not a bad draft: the report lists it, and a run where no
case ran says the model is unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import select

from agent.casefile import TaskError, build_task
from agent.deps import AgentDeps
from agent.drafter import Drafter
from agent.models import ModelConfigError, build_model, model_label
from agent.service import triage_reply
from evals.outputs import DraftView, ProposalView, TriageView
from evals.runner import AgentAnswer, CaseContext, CaseNotRun, ModelUnavailable
from evals.scenarios import DraftTask, TriageTask
from memory.config import Settings
from memory.models import (
    Cadence,
    CadenceStep,
    Channel,
    Contact,
    DraftKind,
    DraftPersona,
    DraftStatus,
    InstallmentStatus,
    Invoice,
    PaymentPlan,
    PlanInstallment,
    PromiseStatus,
    PromiseToPay,
    plan_invoice,
    promise_invoice,
)
from prompts.registry import PromptError, load

if TYPE_CHECKING:
    from agent.drafter import DraftResult

#: Hold reasons of the drafter that mean "the model did not answer", not "the draft was bad".
MODEL_FAILURE_PREFIXES = ("The model timed out", "The model failed")
FOLLOW_UPS = {"promise_broken", "installment_missed"}
NUDGES = {"sales_nudge", "csm_nudge"}


def split_label(label: str) -> tuple[str, str | None]:
    """``offline@v2`` -> (``offline``, ``v2``): a model and, optionally, a prompt version."""
    model, sep, version = label.rpartition("@")
    if sep and model and version[:1] == "v" and version[1:].isdigit():
        return model, version
    return label, None


@dataclass
class PlixoAgent:
    """plixo's drafter and reply triage with one model (``PLIXO_MODEL``) and prompt version."""

    settings: Settings
    prompt_version: str | None = None
    model: str = field(init=False)
    _drafter: Any = field(default=None, init=False, repr=False)
    _model_obj: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.model = model_label(self.settings)
            self._model_obj = build_model(self.settings)
        except ModelConfigError as exc:
            raise ModelUnavailable(str(exc)) from exc
        if self.prompt_version is not None:
            # The version names the drafter's prompt and templates (agents are versioned one by
            # one: drafter v2 came with triage still at v1, which triage keeps using).
            try:
                load("drafter", self.prompt_version)
            except PromptError as exc:
                raise ModelUnavailable(
                    f"prompt version {self.prompt_version!r} of the drafter: {exc}"
                ) from exc

    def _drafter_for(self, settings: Settings) -> Any:
        if self._drafter is None:
            self._drafter = Drafter(
                settings,
                model=self._model_obj,
                actor="eval",
                prompt=load("drafter", self.prompt_version),
            )
        return self._drafter

    async def answer(self, ctx: CaseContext) -> AgentAnswer:
        task = ctx.scenario.task
        if isinstance(task, TriageTask):
            return await self._triage(ctx, task)
        return await self._draft(ctx, task)

    # --- drafting ---------------------------------------------------------------------------

    async def _draft(self, ctx: CaseContext, task: DraftTask) -> AgentAnswer:
        session, prep = ctx.session, ctx.prepared
        assert prep.invoice_id is not None
        invoice_ids = [prep.invoice_id]
        promise_id = installment_id = None
        if task.step == "promise_broken":
            promise_id, related = _broken_promise(ctx, prep.invoice_id)
            invoice_ids += [i for i in related if i not in invoice_ids]
        elif task.step == "installment_missed":
            installment_id = _missed_installment(ctx, prep.invoice_id)
        step = session.scalars(
            select(CadenceStep)
            .join(Cadence, Cadence.id == CadenceStep.cadence_id)
            .where(Cadence.org_id == prep.org_id, CadenceStep.template == task.step)
        ).first()
        persona = DraftPersona(task.persona)
        kind = _draft_kind(task.step)
        contact_id = _contact_for(ctx, task)
        deps = AgentDeps(
            session=session,
            org_id=prep.org_id,
            settings=ctx.settings,
            as_of=ctx.scenario.as_of,
            now=ctx.scenario.moment,
        )
        try:
            case_task = build_task(
                session,
                prep.org_id,
                ctx.settings,
                as_of=ctx.scenario.as_of,
                invoice_ids=invoice_ids,
                contact_id=contact_id,
                persona=persona,
                kind=kind,
                template=task.step,
                tone=task.tone,
                channel=Channel(task.channel),
                step_id=step.id if step is not None else None,
                run_key=f"eval:{ctx.case}",
                promise_id=promise_id,
                installment_id=installment_id,
            )
        except TaskError as exc:
            # Nothing to draft (e.g. nothing open): the drafter's answer is "hold".
            return AgentAnswer(
                draft=DraftView(held=True, hold_reason=str(exc)), model_name=self.model
            )
        drafter = self._drafter_for(ctx.settings)
        result = await drafter.draft(deps, case_task, persona=persona, kind=kind)
        reason = result.hold_reason or ""
        if result.status == DraftStatus.HELD and reason.startswith(MODEL_FAILURE_PREFIXES):
            raise CaseNotRun(reason)
        return AgentAnswer(
            draft=_draft_view(result),
            model_name=result.model_name,
            prompt_version=result.prompt_version,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
        )

    # --- triage -----------------------------------------------------------------------------

    async def _triage(self, ctx: CaseContext, task: TriageTask) -> AgentAnswer:
        prep = ctx.prepared

        def call() -> Any:
            # triage_reply is synchronous (it runs its own event loop); a worker thread keeps the
            # other cases going meanwhile. The session is used by this one thread only.
            return triage_reply(
                ctx.session,
                prep.org_id,
                prep.customer_id,
                task.reply,
                ctx.settings,
                model=self._model_obj,
                now=ctx.scenario.moment,
            )

        result = await anyio.to_thread.run_sync(call)
        if result.held and (result.hold_reason or "").startswith(MODEL_FAILURE_PREFIXES):
            raise CaseNotRun(result.hold_reason or "the model failed")
        return AgentAnswer(
            triage=TriageView(
                classification=result.classification,
                proposals=[
                    ProposalView(
                        kind=p.kind,
                        amount_minor=p.amount.amount_minor if p.amount else None,
                        currency=p.amount.currency if p.amount else None,
                        on_date=p.on_date,
                        invoice_numbers=list(p.invoice_numbers),
                        detail=" ".join(x for x in (p.reason, p.detail) if x),
                    )
                    for p in result.proposed_changes
                ],
                rationale=result.summary,
                injection_suspected=result.injection_suspected,
            ),
            model_name=result.model_name,
            prompt_version=result.prompt_version,
        )


def _contact_for(ctx: CaseContext, task: DraftTask | TriageTask) -> int:
    email = task.from_contact if isinstance(task, TriageTask) else None
    if email:
        found = ctx.session.scalars(
            select(Contact.id).where(Contact.org_id == ctx.prepared.org_id, Contact.email == email)
        ).first()
        if found is not None:
            return int(found)
    return ctx.prepared.contact_id


def _broken_promise(ctx: CaseContext, invoice_id: int) -> tuple[int | None, list[int]]:
    """The missed (or lapsed open) promise on the invoice, and every invoice it covered."""
    session = ctx.session
    rows = session.scalars(
        select(PromiseToPay)
        .join(promise_invoice, promise_invoice.c.promise_id == PromiseToPay.id)
        .where(
            PromiseToPay.org_id == ctx.prepared.org_id,
            promise_invoice.c.invoice_id == invoice_id,
            PromiseToPay.status.in_((PromiseStatus.MISSED, PromiseStatus.OPEN)),
        )
        .order_by(PromiseToPay.promised_date.desc())
    ).all()
    if not rows:
        return None, []
    promise = rows[0]
    related = list(
        session.scalars(
            select(Invoice.id)
            .join(promise_invoice, promise_invoice.c.invoice_id == Invoice.id)
            .where(promise_invoice.c.promise_id == promise.id)
            .order_by(Invoice.due_date, Invoice.id)
        )
    )
    return promise.id, related


def _missed_installment(ctx: CaseContext, invoice_id: int) -> int | None:
    """The earliest missed installment of a plan covering the invoice."""
    return ctx.session.scalars(
        select(PlanInstallment.id)
        .join(PaymentPlan, PaymentPlan.id == PlanInstallment.plan_id)
        .join(plan_invoice, plan_invoice.c.plan_id == PaymentPlan.id)
        .where(
            PaymentPlan.org_id == ctx.prepared.org_id,
            plan_invoice.c.invoice_id == invoice_id,
            PlanInstallment.status == InstallmentStatus.MISSED,
        )
        .order_by(PlanInstallment.due_date)
    ).first()


def _draft_kind(step: str) -> DraftKind:
    """The kind of draft a cadence step makes: a nudge, a follow-up, else a cadence reminder."""
    return (
        DraftKind.NUDGE
        if step in NUDGES
        else DraftKind.FOLLOW_UP
        if step in FOLLOW_UPS
        else DraftKind.CADENCE
    )


def _draft_view(result: DraftResult) -> DraftView:
    """What the checks read of the drafter's result."""
    return DraftView(
        channel=result.channel.value,
        recipient=result.recipient,
        subject=result.subject,
        body=result.body,
        invoice_numbers=list(result.invoice_numbers),
        amounts=[(m.amount_minor, m.currency) for m in result.amounts],
        dates=list(result.dates),
        pay_link=result.pay_link,
        language=result.language,
        tone=result.tone,
        held=result.status == DraftStatus.HELD,
        hold_reason=result.hold_reason,
        decision=result.decision or None,
    )
