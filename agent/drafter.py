"""The drafter: one grounded, policy-checked outreach draft for an invoice or a customer.

The flow (``Drafter.draft``):

1. the task is read from the ledger into a case file (``agent.casefile.build_task``);
2. the model writes from the case file in its prompt (one request for a typical draft; read-only
   tools stay available for what the case file lacks) and submits a typed ``DraftOutput``;
3. the agent's ``@output_validator`` grounds it: every amount, date, invoice number and link is
   read back out of the text and compared with the ledger; the language, recipient and channel
   are checked too. Any problem goes back to the model **once** (``ModelRetry``);
4. a second grounding mismatch blocks the draft with the reasons; a second wrong language,
   recipient or channel holds it for a human (``held``); so does any model failure (timeout,
   invalid output, unknown tool, a tool refusing an out-of-scope request, the token budget);
5. the guardrails decide on ``send_draft`` with facts from the ledger and from grounding (Shadow
   Mode, quiet hours, caps, disputes, promises, content);
6. the draft is stored with its decision, model, prompt version, tokens and latency through
   ``tools.drafts.service.store_new_draft`` (held drafts with the hold reason), in the caller's
   transaction.

Nothing here sends anything: at best a draft is ``approved`` by the rules, and delivery is the
outbox's job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, TypeVar, cast

from pydantic_ai import Agent, ModelRetry, RunContext, ToolOutput
from pydantic_ai.models import Model
from pydantic_ai.usage import RunUsage, UsageLimits
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from agent import tracing
from agent.casefile import (
    SMS_MAX_CHARS,
    CaseFile,
    DraftTask,
    TaskError,
    book_for,
    build_task,
    case_book,
    render,
    template_name,
)
from agent.deps import AgentDeps
from agent.models import build_model, model_name_of
from agent.pricing import price_for
from agent.schemas import DRAFT_TOOL, OFFLINE_MODEL_NAME, DraftOutput, DraftResult, MoneyOut, Usage
from agent.tools import READ_TOOLS
from memory.bulk import insert_rows
from memory.models import (
    Cadence,
    CadenceStep,
    Channel,
    Draft,
    DraftCost,
    DraftKind,
    DraftPersona,
    DraftStatus,
    User,
)
from policies.engine import PolicyEngine
from policies.engine import engine_for as policy_engine_for
from policies.facts import PromiseFacts
from policies.types import ActionType
from prompts.registry import Prompt, load
from tools.drafts import lifecycle
from tools.drafts.service import status_for_decision, store_new_draft, supersede_older
from tools.grounding.comparison import DeclaredFacts, GroundingReport, ground_text
from tools.grounding.extraction import detect_language
from tools.grounding.guardrail_facts import (
    OrgSwitches,
    OutreachContext,
    outreach_context,
    send_draft_facts,
)
from tools.grounding.truth import LedgerTruth, ledger_truth
from tools.kit import audit
from tools.ledger.policy_overrides import policy_set_for

T = TypeVar("T")
MAX_HOLD_CHARS = 1_000
USAGE_LIMITS = UsageLimits(request_limit=8, tool_calls_limit=40)
GROUNDING_RETRIES = 1  # a draft that fails its checks is sent back once
RETRY_INTRO = (
    "The checks found these problems in your draft. Fix exactly these, keep everything else, and "
    "call submit_draft again:"
)


class DraftingError(ValueError):
    """The task cannot be drafted at all (bad ids, nothing to chase); nothing was stored."""


def _draft_output(
    tool: str = DRAFT_TOOL, out: type[DraftOutput] = DraftOutput
) -> ToolOutput[DraftOutput]:
    return ToolOutput(
        out,
        name=tool,
        description="Submit the message and the facts it states (checked against the ledger).",
    )


#: The drafter agent, defined once (no model bound: the model is chosen per run, lazily). Its
#: instructions and its grounding check read the run's ``AgentDeps.draft`` (a ``DraftRun``).
#: The read-only tools are the agent's own (``tools=``), not a toolset beside its (empty) own
#: one: the model is offered the same tools, and each step walks one toolset fewer (about 12%
#: fewer calls per agent run, measured with the offline model).
DRAFTER: Agent[AgentDeps, DraftOutput] = Agent(
    None,
    deps_type=AgentDeps,
    output_type=_draft_output(),
    tools=list(READ_TOOLS),
    retries=2,
    name="plixo-drafter",
)


def drafter_agent() -> Agent[AgentDeps, DraftOutput]:
    """The drafter agent (kept for callers that ask for it by function)."""
    return DRAFTER


def _configure_tracing(settings: Any) -> None:
    """Turn tracing on once per process when ``PLIXO_OTEL_ENDPOINT`` is set (off by default)."""
    if not _TRACING["configured"]:
        _TRACING["configured"] = True
        tracing.configure_from_settings(settings)


_TRACING = {"configured": False}


def usage_limits(settings: Any) -> UsageLimits:
    """Requests, tool calls and a token budget per draft (``PLIXO_DRAFT_TOKEN_BUDGET``)."""
    budget = int(getattr(settings, "draft_token_budget", 24_000))
    return UsageLimits(request_limit=8, tool_calls_limit=40, total_tokens_limit=budget)


# --- checks --------------------------------------------------------------------------------------


@dataclass
class Checked:
    """What the checks found in one submitted draft."""

    report: GroundingReport
    hold_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.hold_problems

    def feedback(self) -> str:
        lines = [f"- {m.message}" for m in self.report.mismatches] + [
            f"- {p}" for p in self.hold_problems
        ]
        return RETRY_INTRO + "\n" + "\n".join(lines)


def check_output(
    out: DraftOutput,
    task: DraftTask,
    truth: LedgerTruth,
    *,
    as_of: date,
) -> Checked:
    """Ground a submitted draft and check its language, recipient and channel."""
    case = task.case
    declared = DeclaredFacts(
        invoice_numbers=list(out.invoice_numbers),
        amounts=[(m.amount_minor, m.currency) for m in out.amounts],
        dates=list(out.dates),
        pay_link=out.pay_link,
    )
    report = ground_text(
        f"{out.subject}\n\n{out.body}",
        truth,
        language=case.language,
        as_of=as_of,
        declared=declared,
    )
    problems: list[str] = []
    if out.language != case.language:
        problems.append(
            f"the draft must be written in {case.language!r}, not {out.language!r}"
            + (
                ""
                if book_for(case.language, case.template_version).language == case.language
                else f" (no {case.language!r} templates: a person must write this one)"
            )
        )
    else:
        seen = detect_language(out.body)
        if seen is not None and seen != case.language:
            problems.append(f"the text reads as {seen!r} but must be in {case.language!r}")
    if case.recipient and out.recipient.strip().lower() != case.recipient.strip().lower():
        problems.append(f"the recipient must be {case.recipient}, not {out.recipient}")
    if out.channel != case.channel:
        problems.append(f"the channel must be {case.channel.value}, not {out.channel.value}")
    if out.channel is Channel.SMS and len(out.body) > SMS_MAX_CHARS:
        problems.append(
            f"an SMS must be at most {SMS_MAX_CHARS} characters, this one has {len(out.body)}: "
            "keep the invoice number, the amount and the pay link, drop the rest"
        )
    return Checked(report=report, hold_problems=problems)


def reminded_promise(case: CaseFile) -> PromiseFacts | None:
    """The open promise a promise reminder is about (the guardrails' ``about_promise``)."""
    promise = case.promise
    if case.template != "promise_reminder" or promise is None or promise.status != "open":
        return None
    if not promise.invoice_numbers:
        return None
    return PromiseFacts.model_validate(
        {
            "promised_date": promise.date,
            "status": "open",
            "invoice_numbers": promise.invoice_numbers,
        }
    )


@dataclass
class DraftRun:
    """One draft in flight: what the instructions say and what each submission is checked on."""

    task: DraftTask
    truth: LedgerTruth
    instructions: str
    checks: list[Checked] = field(default_factory=list)


@DRAFTER.instructions
async def _instructions(ctx: RunContext[AgentDeps]) -> str:
    """The step's versioned prompt with its template filled from the case file (async: a plain
    function would be run in a worker thread per draft, a thread hop for a string lookup)."""
    run = ctx.deps.draft
    return run.instructions if isinstance(run, DraftRun) else ""


@DRAFTER.output_validator
async def _grounded(ctx: RunContext[AgentDeps], out: DraftOutput) -> DraftOutput:
    """Ground the submitted draft; send the problems back once (``ModelRetry``).

    Async although it never awaits: the checks are CPU only (the ledger's truth was read
    before the run), and a plain function would be sent to a worker thread for every draft,
    a thread hop and a GIL hand-over per draft for nothing.

    A second submission is accepted as it is: its grounding mismatches then block it through the
    guardrails (``content.*_mismatch``), and a wrong language, recipient or channel holds it for a
    person, with the reasons, so a model that cannot get it right never loops.
    """
    run = ctx.deps.draft
    if not isinstance(run, DraftRun):
        return out
    with tracing.span("plixo.grounding", attempt=len(run.checks) + 1) as span:
        checked = check_output(out, run.task, run.truth, as_of=ctx.deps.as_of)
        span.set_attribute("mismatches", len(checked.report.mismatches))
        span.set_attribute("hold_problems", len(checked.hold_problems))
        span.set_attribute("ok", checked.ok)
    run.checks.append(checked)
    if checked.ok or len(run.checks) > GROUNDING_RETRIES:
        return out
    raise ModelRetry(checked.feedback())


# --- the drafter ---------------------------------------------------------------------------------


@dataclass
class Composed:
    """A draft written, checked and decided, not yet stored (``Drafter.store`` does that)."""

    draft: Draft
    task: DraftTask
    out: DraftOutput | None
    usage: RunUsage
    attempts: int
    first_mismatches: int
    decision: dict[str, Any] = field(default_factory=dict)
    grounding_blocked: bool = False
    hold: str | None = None


@dataclass
class Prepared:
    """Ledger facts around a task that Autopilot can preload in bulk (else read one by one)."""

    truth: LedgerTruth | None = None
    context: OutreachContext | None = None
    details: dict[str, dict[str, Any]] = field(default_factory=dict)


def _scoped_deps(deps: AgentDeps, task: DraftTask, prepared: Prepared | None) -> AgentDeps:
    """The caller's dependencies narrowed to the task's customer, with the invoice details
    Autopilot preloaded for it: the read-only tools then refuse any other customer, and answer
    from the batch's bulk reads instead of a query each."""
    return AgentDeps(
        session=deps.session,
        org_id=deps.org_id,
        settings=deps.settings,
        as_of=deps.as_of,
        recall=deps.recall,
        now=deps.now,
        customer_id=task.customer_id,
        pay_links=deps.pay_links,
        prefetched=prepared.details if prepared else {},
    )


class Drafter:
    """Drafts with one model and one policy engine; reusable across many tasks (Autopilot)."""

    def __init__(
        self,
        settings: Any,
        *,
        model: Model | None = None,
        shadow: bool | None = None,
        actor: User | str = "co-pilot",
        prompt: Prompt | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.model = model if model is not None else build_model(settings)
        self.model_name = model_name_of(self.model)
        self.offline = self.model_name == OFFLINE_MODEL_NAME  # a label only: same prompts
        self.shadow = shadow
        self.actor = actor
        self.prompt = prompt or load("drafter")
        self.agent = DRAFTER
        _configure_tracing(settings)
        self.usage_limits = usage_limits(settings)
        retries = max(0, int(getattr(settings, "model_retries", 2)))
        per_call = float(getattr(settings, "model_timeout_s", 30.0))
        self.timeout_s = timeout_s or per_call * (retries + 1) * 2 + 5

    # -- prompting --

    def instructions(self, task: DraftTask) -> str:
        case = task.case
        book = case_book(case)
        name = template_name(case, book)
        subject, body, _ = render(case)
        return self.prompt.render(
            template=name, language=case.language, skeleton_subject=subject, skeleton_body=body
        )

    @staticmethod
    def user_prompt(task: DraftTask) -> str:
        return (
            task.case.to_prompt()
            + "\n\nWrite this message in the case file's language and submit it with "
            + "submit_draft."
        )

    # -- the whole flow --

    async def draft(
        self,
        deps: AgentDeps,
        task: DraftTask,
        *,
        persona: DraftPersona,
        kind: DraftKind,
        prepared: Prepared | None = None,
        switches: OrgSwitches | None = None,
        engine: PolicyEngine | None = None,
    ) -> DraftResult:
        """Write, check, decide and store one draft (flushed, not committed)."""
        composed = await self.compose(
            deps, task, persona=persona, kind=kind, prepared=prepared, switches=switches,
            engine=engine,
        )  # fmt: skip
        return self.store(deps.session, composed)

    async def compose(
        self,
        deps: AgentDeps,
        task: DraftTask,
        *,
        persona: DraftPersona,
        kind: DraftKind,
        prepared: Prepared | None = None,
        switches: OrgSwitches | None = None,
        engine: PolicyEngine | None = None,
    ) -> Composed:
        """``_compose`` traced: the draft, its case file, model requests, grounding, each rule
        that fired and the decision (spans only when tracing is on; no content, no address)."""
        case = task.case
        with tracing.span(
            "plixo.draft", org_id=task.org_id, customer_id=task.customer_id,
            template=case.template, language=case.language, model=self.model_name,
            prompt_version=self.prompt.version_id,
        ):  # fmt: skip
            with tracing.span(
                "plixo.case_file", invoices=len(case.invoices), channel=case.channel.value,
                promises=len(case.promises), days_past_due=max(
                    (i.days_past_due for i in case.invoices), default=0
                ),
            ):  # fmt: skip
                pass
            composed = await self._compose(
                deps, task, persona=persona, kind=kind, prepared=prepared, switches=switches,
                engine=engine,
            )  # fmt: skip
            for reason in composed.decision.get("reasons", []):
                with tracing.span(
                    "plixo.rule", rule_id=str(reason.get("rule_id", "")),
                    outcome=str(reason.get("outcome", "")),
                ):  # fmt: skip
                    pass
            with tracing.span(
                "plixo.decision",
                outcome=str(composed.decision.get("outcome") or ("held" if composed.hold else "")),
                attempts=composed.attempts, requests=composed.usage.requests,
                input_tokens=composed.usage.input_tokens,
                output_tokens=composed.usage.output_tokens,
            ):  # fmt: skip
                pass
            return composed

    async def _compose(
        self,
        deps: AgentDeps,
        task: DraftTask,
        *,
        persona: DraftPersona,
        kind: DraftKind,
        prepared: Prepared | None = None,
        switches: OrgSwitches | None = None,
        engine: PolicyEngine | None = None,
    ) -> Composed:
        """Write, check and decide one draft, reading the ledger only (nothing is written).

        Autopilot composes a whole batch concurrently and then stores it in one short write
        transaction, so several worker processes never hold the database's write lock while a
        model thinks.
        """
        session = deps.session
        task = self._at_prompt_version(task)
        case = task.case
        scoped = _scoped_deps(deps, task, prepared)
        started = time.perf_counter()
        usage = RunUsage()
        hold: str | None = None
        out: DraftOutput | None = None
        checked: Checked | None = None
        truth = (prepared.truth if prepared else None) or ledger_truth(
            session,
            deps.org_id,
            task.customer_id,
            as_of=deps.as_of,
            links=task.pay_links,
            locale=case.locale,
        )
        run = DraftRun(task=task, truth=truth, instructions=self.instructions(task))
        scoped.draft = run
        try:  # one run: the case file is in the prompt, the validator sends problems back once
            result = await self.agent.run(
                self.user_prompt(task),
                deps=scoped,
                model=self.model,
                usage_limits=self.usage_limits,
                timeout=self.timeout_s,
            )
            out, usage = result.output, result.usage
            checked = run.checks[-1] if run.checks else None
        except Exception as exc:  # any model or tool failure: held for a human, run continues
            hold = hold_reason_for(exc)
        attempts = len(run.checks)
        first_mismatches = len(run.checks[0].report.mismatches) if run.checks else 0
        latency_ms = int((time.perf_counter() - started) * 1000)
        if hold is None and checked is not None and checked.hold_problems:
            hold = "The draft failed its checks twice: " + "; ".join(checked.hold_problems)
        if hold is not None or out is None or checked is None:
            return self._held(
                task, persona, kind, usage, latency_ms, attempts, first_mismatches,
                hold or "the model returned nothing",
            )  # fmt: skip
        report = checked.report
        decision = self._decide(
            deps, task, out, report, truth, prepared=prepared, switches=switches, engine=engine
        )
        draft = self._draft_row(task, persona, kind, out, report, usage, latency_ms, attempts)
        draft.grounding = {
            **report.as_dict(),
            "attempts": attempts,
            "first_attempt_mismatches": first_mismatches,
            "model_requests": usage.requests,
        }
        return Composed(
            draft, task, out, usage, attempts, first_mismatches,
            decision=decision, grounding_blocked=not report.ok,
        )  # fmt: skip

    def _at_prompt_version(self, task: DraftTask) -> DraftTask:
        """The task with its case file on this drafter's prompt version (e.g. the evals'
        offline@v1): the templates the case file names must be the ones the prompt was written
        for. The same task when it already is (the usual case: no copy)."""
        if task.case.template_version == self.prompt.version:
            return task
        return replace(
            task, case=task.case.model_copy(update={"template_version": self.prompt.version})
        )

    def _held(
        self,
        task: DraftTask,
        persona: DraftPersona,
        kind: DraftKind,
        usage: RunUsage,
        latency_ms: int,
        attempts: int,
        first_mismatches: int,
        hold: str,
    ) -> Composed:
        """A draft held for a human with ``hold``, its reason: the model failed, returned
        nothing, or its second submission still broke a language, recipient or channel check.

        Why no decision: there is no grounded text for the guardrails to decide on; the row keeps
        the attempts and requests so the review panel shows what the model tried.
        """
        draft = self._draft_row(task, persona, kind, None, None, usage, latency_ms, attempts)
        draft.grounding = {
            "attempts": attempts,
            "first_attempt_mismatches": first_mismatches,
            "model_requests": usage.requests,
        }
        return Composed(draft, task, None, usage, attempts, first_mismatches, hold=hold)

    def _decide(
        self,
        deps: AgentDeps,
        task: DraftTask,
        out: DraftOutput,
        report: GroundingReport,
        truth: LedgerTruth,
        *,
        prepared: Prepared | None,
        switches: OrgSwitches | None,
        engine: PolicyEngine | None,
    ) -> dict[str, Any]:
        """The guardrails' decision on sending the grounded draft (``send_draft``): Shadow Mode,
        quiet hours, caps, disputes, promises-to-pay and the grounding report's content checks.

        Why the fallbacks: Autopilot preloads the outreach context and shares one policy engine
        per pass (``prepared``, ``engine``); a single draft reads them here, from the ledger.
        """
        case = task.case
        now = deps.moment()
        context = (prepared.context if prepared else None) or outreach_context(
            deps.session,
            deps.org_id,
            customer_id=task.customer_id,
            contact_id=task.contact_id,
            invoice_ids=task.invoice_ids,
            channel=case.channel.value,
            now=now,
            switches=switches,
        )
        facts = send_draft_facts(
            context,
            body=f"{out.subject}\n\n{out.body}",
            report=report,
            truth=truth,
            pay_link=case.pay_link,
            now=now,
            shadow=self.shadow,
            about_promise=reminded_promise(case),
        )
        engine = engine or policy_engine_for(policy_set_for(deps.session, deps.org_id))
        return engine.decide(ActionType.SEND_DRAFT, facts).as_dict()

    def store(self, session: Session, composed: Composed) -> DraftResult:
        """Persist a composed draft (``store_new_draft``, or held) and audit it; flushed."""
        if composed.hold is not None:
            store_held_draft(session, composed.draft, reason=composed.hold, actor=self.actor)
        else:
            store_new_draft(
                session,
                composed.draft,
                decision=composed.decision,
                actor=self.actor,
                grounding_blocked=composed.grounding_blocked,
            )
        session.add(cost_row(composed.draft, composed.usage))
        return _result(
            composed.draft,
            composed.task,
            composed.out,
            composed.usage,
            composed.attempts,
            composed.first_mismatches,
            self.prompt,
        )

    def store_many(self, session: Session, batch: Sequence[Composed]) -> list[DraftResult]:
        """Persist a batch of composed drafts in a few statements (the drafts, then their cost
        rows and their audit events each in one INSERT) instead of a flush per draft; flushed,
        not committed.

        Same rows as ``store`` one by one (``tools.drafts.service.store_new_draft`` for decided
        drafts,
        ``store_held_draft`` for held ones): the first state from the decision
        (``status_for_decision``), and one ``draft.created`` event each.
        """
        for c in batch:
            d = c.draft
            if c.hold is not None:
                lifecycle.begin(d, DraftStatus.HELD)
                d.hold_reason = c.hold[:MAX_HOLD_CHARS]
                d.decision = {}
                d.decision_outcome = None
            else:
                d.decision = c.decision
                d.decision_outcome = str(c.decision.get("outcome"))
                lifecycle.begin(
                    d,
                    status_for_decision(d.decision_outcome, grounding_blocked=c.grounding_blocked),
                )
        session.add_all([c.draft for c in batch])
        session.flush()  # the drafts' ids, for their cost rows and events (plain INSERTs)
        insert_rows(  # one statement, the same for every batch (memory.bulk)
            session,
            cast(Table, DraftCost.__table__),
            [{"draft_id": c.draft.id, **cost_columns(c.draft, c.usage)} for c in batch],
        )
        audit.record_many(
            session,
            [
                lifecycle.created_row(
                    c.draft,
                    actor=self.actor,
                    detail={"hold_reason": c.draft.hold_reason, "run_key": c.draft.run_key}
                    if c.hold is not None
                    else {"outcome": c.draft.decision_outcome, "run_key": c.draft.run_key},
                )
                for c in batch
            ],
        )
        supersede_older(session, [c.draft for c in batch], actor=self.actor)
        session.flush()
        return [
            _result(c.draft, c.task, c.out, c.usage, c.attempts, c.first_mismatches, self.prompt)
            for c in batch
        ]

    def _draft_row(
        self,
        task: DraftTask,
        persona: DraftPersona,
        kind: DraftKind,
        out: DraftOutput | None,
        report: GroundingReport | None,
        usage: RunUsage,
        latency_ms: int,
        attempts: int,
    ) -> Draft:
        case = task.case
        stated: dict[str, Any] = {
            "invoice_numbers": report.stated.invoice_numbers if report else [],
            "amounts": [
                {"amount_minor": m.amount_minor, "currency": m.currency}
                for m in (out.amounts if out else [])
            ],
            "dates": [d.isoformat() for d in report.stated.dates] if report else [],
            "links": report.stated.links if report else [],
            "pay_link": case.pay_link,
            "template": case.template,
            "step_date": case.step_date.isoformat() if case.step_date else None,
            "instructions": [],
        }
        if case.final_notice_invoices:  # a revision writes the final-notice wording again
            stated["final_notice_invoices"] = list(case.final_notice_invoices)
        if task.reviewer_notes:  # the reviewer's, shown in the inspector (never sent)
            stated["reviewer_notes"] = list(task.reviewer_notes)
        return Draft(
            org_id=task.org_id,
            customer_id=task.customer_id,
            invoice_id=task.primary_invoice_id,
            contact_id=task.contact_id,
            cadence_step_id=task.step_id,
            segment_id=task.segment_id,
            run_key=task.run_key,
            kind=kind,
            persona=persona,
            channel=case.channel,
            recipient=case.recipient,
            subject=(out.subject if out else "")[:300],
            body=out.body if out else "",
            language=out.language if out else case.language,
            tone=(out.tone if out else case.tone)[:32],
            stated_facts=stated,
            model_name=self.model_name,
            prompt_version=self.prompt.version_id,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            latency_ms=latency_ms,
        )


def cost_row(draft: Draft, usage: RunUsage) -> DraftCost:
    """The draft's model usage and, for a model in LiteLLM's price table, its cost."""
    return DraftCost(draft=draft, **cost_columns(draft, usage))


def cost_columns(draft: Draft, usage: RunUsage) -> dict[str, Any]:
    """``cost_row``'s columns but the draft's id (``store_many`` inserts a batch's at once)."""
    price = price_for(draft.model_name)
    return {
        "org_id": draft.org_id,
        "model_name": (draft.model_name or "unknown")[:120],
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_micro_usd": price.cost_micro_usd(usage.input_tokens, usage.output_tokens)
        if price
        else None,
        "priced_as": price.priced_as if price else None,
    }


def add_revision_cost(
    session: Session, draft: Draft, usage: RunUsage, model_name: str
) -> DraftCost:
    """Add a co-pilot revision's model usage to the draft's cost record (created if the draft
    has none): what a draft cost includes the rewrites an operator asked for.

    The revision is priced by its own model. The total keeps a cost only while every part of it
    has one: a draft or revision whose model the price table does not know leaves the cost
    unknown (None), never a partial sum passed off as the whole.
    """
    row = session.get(DraftCost, draft.id)
    if row is None:
        row = DraftCost(
            draft_id=draft.id,
            org_id=draft.org_id,
            model_name=(model_name or "unknown")[:120],
            requests=0,
            input_tokens=0,
            output_tokens=0,
            cost_micro_usd=0,
        )
        session.add(row)
    price = price_for(model_name)
    spent = usage.input_tokens + usage.output_tokens
    row.requests = (row.requests or 0) + usage.requests
    row.input_tokens = (row.input_tokens or 0) + usage.input_tokens
    row.output_tokens = (row.output_tokens or 0) + usage.output_tokens
    if price is not None and row.cost_micro_usd is not None:
        row.cost_micro_usd += price.cost_micro_usd(usage.input_tokens, usage.output_tokens)
        row.priced_as = row.priced_as or price.priced_as
    elif spent or usage.requests:
        row.cost_micro_usd = None
    if row.cost_micro_usd is None:
        row.priced_as = None
    return row


def store_held_draft(session: Session, draft: Draft, *, reason: str, actor: User | str) -> Draft:
    """Persist a draft the co-pilot could not write, ``held`` for a human, and audit it.

    Held drafts carry no policy decision (there is no text to decide on); a person writes or
    edits the text, and the edit is re-checked like any other.
    """
    lifecycle.begin(draft, DraftStatus.HELD)
    draft.hold_reason = reason[:MAX_HOLD_CHARS]
    draft.decision = {}
    draft.decision_outcome = None
    session.add(draft)
    session.flush()
    lifecycle.record_created(
        session,
        draft,
        actor=actor,
        detail={"hold_reason": draft.hold_reason, "run_key": draft.run_key},
    )
    return draft


def hold_reason_for(exc: BaseException) -> str:
    """A one-line reason a person can act on, from whatever the model or a tool raised."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        text = f"{text} ({type(cause).__name__}: {str(cause).strip().splitlines()[0]})"
    if isinstance(exc, TimeoutError) or "Timed" in name or "Timeout" in name:
        lead = "The model timed out"
    elif "UsageLimit" in name:
        lead = "The model needed too many steps"
    elif "ContentFilter" in name:  # a refusal (OpenAI's ``refusal``) or a provider's filter
        lead = "The model refused"
    elif "IncompleteToolCall" in name:  # finish_reason "length" mid-answer, retries used up
        lead = "The model's answer was cut off at its token limit"
    elif "UnexpectedModelBehavior" in name or "ToolRetry" in name:
        lead = "The model's answer was unusable"
    elif "OutOfScope" in name or "NotInOrganisation" in name:
        lead = "A tool refused an out-of-scope request"
    else:
        lead = "The model failed"
    return f"{lead}: {name}: {text}"[:MAX_HOLD_CHARS]


def _result(
    draft: Draft,
    task: DraftTask,
    out: DraftOutput | None,
    usage: RunUsage,
    attempts: int,
    first_mismatches: int,
    prompt: Prompt,
) -> DraftResult:
    return DraftResult(
        draft_id=draft.id,
        run_key=draft.run_key,
        status=draft.status,
        decision_outcome=draft.decision_outcome,
        hold_reason=draft.hold_reason,
        channel=draft.channel,
        recipient=draft.recipient,
        subject=draft.subject,
        body=draft.body,
        invoice_numbers=list(out.invoice_numbers) if out else [],
        amounts=[MoneyOut(amount_minor=m.amount_minor, currency=m.currency) for m in out.amounts]
        if out
        else [],
        dates=list(out.dates) if out else [],
        pay_link=out.pay_link if out else None,
        language=draft.language,
        tone=draft.tone,
        persona=draft.persona,
        template=task.case.template,
        grounding=dict(draft.grounding or {}),
        decision=dict(draft.decision or {}),
        grounding_attempts=attempts,
        first_attempt_mismatches=first_mismatches,
        model_name=draft.model_name or "",
        prompt_version=prompt.version_id,
        usage=Usage(
            requests=usage.requests,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        ),
        latency_ms=draft.latency_ms,
    )


# --- the public entry points ---------------------------------------------------------------------


def _load_step(session: Session, org_id: int, step: CadenceStep | int) -> CadenceStep:
    if isinstance(step, CadenceStep):
        obj: CadenceStep | None = step
    else:
        obj = session.get(CadenceStep, step)
    if obj is None:
        raise DraftingError(f"cadence step {step} does not exist")
    cadence = session.get(Cadence, obj.cadence_id)
    if cadence is None or cadence.org_id != org_id:
        raise DraftingError(f"cadence step {obj.id} does not exist in this organisation")
    return obj


async def adraft_outreach(
    deps: AgentDeps,
    *,
    invoice_id: int | None = None,
    customer_id: int | None = None,
    step: CadenceStep | int | None = None,
    nudge: str | None = None,
    persona: DraftPersona | str = DraftPersona.AUTOPILOT,
    run_key: str | None = None,
    contact_id: int | None = None,
    kind: DraftKind | None = None,
    model: Model | None = None,
    shadow: bool | None = None,
    actor: User | str = "co-pilot",
    drafter: Drafter | None = None,
) -> DraftResult:
    """Async ``draft_outreach`` (for callers already in an event loop)."""
    session = deps.session
    persona = DraftPersona(persona)
    if run_key:
        existing = session.scalars(
            select(Draft).where(Draft.org_id == deps.org_id, Draft.run_key == run_key)
        ).first()
        if existing is not None:
            return existing_result(existing)
    step_obj = _load_step(session, deps.org_id, step) if step is not None else None
    if nudge is not None and persona is DraftPersona.AUTOPILOT:
        persona = DraftPersona.CSM_NUDGE if "csm" in nudge.lower() else DraftPersona.SALES_NUDGE
    template = (
        step_obj.template
        if step_obj is not None
        else nudge
        if nudge is not None
        else "generic_reminder"
    )
    if kind is None:
        kind = (
            DraftKind.CADENCE
            if step_obj is not None
            else DraftKind.NUDGE
            if nudge is not None
            else DraftKind.MANUAL
        )
    try:
        task = build_task(
            session,
            deps.org_id,
            deps.settings,
            as_of=deps.as_of,
            customer_id=customer_id,
            invoice_ids=[invoice_id] if invoice_id is not None else [],
            contact_id=contact_id,
            persona=persona,
            kind=kind,
            template=template,
            tone=step_obj.tone if step_obj is not None else ("warm" if nudge else "friendly"),
            channel=step_obj.channel if step_obj is not None else Channel.EMAIL,
            step_id=step_obj.id if step_obj is not None else None,
            run_key=run_key,
            pay_links=deps.pay_links,
        )
    except TaskError as exc:
        raise DraftingError(str(exc)) from exc
    drafter = drafter or Drafter(deps.settings, model=model, shadow=shadow, actor=actor)
    return await drafter.draft(deps, task, persona=persona, kind=kind)


def draft_outreach(
    deps: AgentDeps,
    *,
    invoice_id: int | None = None,
    customer_id: int | None = None,
    step: CadenceStep | int | None = None,
    nudge: str | None = None,
    persona: DraftPersona | str = DraftPersona.AUTOPILOT,
    run_key: str | None = None,
    contact_id: int | None = None,
    kind: DraftKind | None = None,
    model: Model | None = None,
    shadow: bool | None = None,
    actor: User | str = "co-pilot",
) -> DraftResult:
    """Draft one outreach for an invoice (or a customer's open invoices), ground it, let the
    guardrails decide, and store it in ``deps.session`` (flushed; the caller commits).

    ``step``: a cadence step (object or id) gives template, tone and channel; ``nudge``: a nudge
    template name (``sales_nudge``, ``csm_nudge``) for a Sales/CSM voice; neither: a manual
    reminder. ``persona`` changes the voice and the sender. A ``run_key`` that already has a draft
    returns that draft (no duplicate). Raises ``DraftingError`` (nothing stored) when there is
    nothing to draft, ``NotInOrganisation`` for an id of another organisation; a model failure is
    not raised but stored as a ``held`` draft with the reason.
    """
    return run_sync(
        adraft_outreach(
            deps,
            invoice_id=invoice_id,
            customer_id=customer_id,
            step=step,
            nudge=nudge,
            persona=persona,
            run_key=run_key,
            contact_id=contact_id,
            kind=kind,
            model=model,
            shadow=shadow,
            actor=actor,
        )
    )


def existing_result(draft: Draft) -> DraftResult:
    """A ``DraftResult`` for a draft that is already stored (idempotent re-runs)."""
    facts = draft.stated_facts or {}
    return DraftResult(
        draft_id=draft.id,
        run_key=draft.run_key,
        status=draft.status,
        decision_outcome=draft.decision_outcome,
        hold_reason=draft.hold_reason,
        channel=draft.channel,
        recipient=draft.recipient,
        subject=draft.subject,
        body=draft.body,
        invoice_numbers=[str(n) for n in facts.get("invoice_numbers", [])],
        amounts=[MoneyOut.model_validate(a) for a in facts.get("amounts", [])],
        dates=[date.fromisoformat(str(d)) for d in facts.get("dates", [])],
        pay_link=facts.get("pay_link"),
        language=draft.language,
        tone=draft.tone,
        persona=draft.persona,
        template=str(facts.get("template", "")),
        grounding=dict(draft.grounding or {}),
        decision=dict(draft.decision or {}),
        model_name=draft.model_name or "",
        prompt_version=draft.prompt_version or "",
        usage=Usage(input_tokens=draft.input_tokens, output_tokens=draft.output_tokens),
        latency_ms=draft.latency_ms,
    )


def run_sync(coro: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop
    (e.g. a sync FastAPI route): then in a worker thread, with the caller blocked meanwhile."""

    async def _wrap() -> T:
        return await coro

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _new_loop_run(_wrap())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: _new_loop_run(_wrap())).result()


def _new_loop_run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (it comes with uvicorn): cheaper loops."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
