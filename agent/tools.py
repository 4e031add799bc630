"""The tools the co-pilot's agents may call: read-only, organisation- and customer-scoped.

Every tool is ``async`` on purpose: pydantic-ai runs plain functions in worker threads, and a
SQLAlchemy session must not be used from several threads while Autopilot drafts concurrently.
The queries are short and local, so running them on the event loop is the cheaper choice.

Nothing here writes to the ledger or sends anything; a tool asked about another organisation's
records raises ``NotInOrganisation``, one asked about another customer than the task's raises
``OutOfScope``. Both end the run, and the item is held for a human with the reason.
Payer-written text in a result is fenced (``agent.safety.fence``).
"""

from __future__ import annotations

from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.toolsets import FunctionToolset

from agent.deps import AgentDeps
from agent.safety import fence
from tools.insights import account360 as a360


def _dump(model: Any) -> Any:
    if isinstance(model, list):
        return [_dump(m) for m in model]
    return model.model_dump(mode="json")


def detail_payload(detail: a360.InvoiceDetail) -> dict[str, Any]:
    """What ``invoice_detail`` returns for an invoice (payer text fenced), for prefetching."""
    return _fence_notes(detail.model_dump(mode="json"))


def _fence_notes(data: dict[str, Any]) -> dict[str, Any]:
    for note in data.get("notes", []):
        if note.get("untrusted"):
            note["body"] = fence(note["body"], source=note.get("source") or "payer")
    for dispute in data.get("open_disputes", []) + data.get("disputes", []):
        if dispute.get("description"):
            dispute["description"] = fence(dispute["description"], source="dispute")
    return data


def _invoice(ctx: RunContext[AgentDeps], invoice_number: str) -> Any:
    inv = a360.find_invoice(ctx.deps.session, ctx.deps.org_id, invoice_number)
    ctx.deps.check_customer(inv.customer_id)
    return inv


async def account_360(ctx: RunContext[AgentDeps], customer_id: int) -> dict[str, Any]:
    """Account 360 of a customer: open invoices with aging, balances by aging bucket, promises,
    payment plans, open disputes with SLA timers, recent activity and notes."""
    ctx.deps.check_customer(customer_id)
    view = a360.account_360(
        ctx.deps.session,
        ctx.deps.org_id,
        customer_id,
        as_of=ctx.deps.as_of,
        settings=ctx.deps.settings,
        now=ctx.deps.moment(),
    )
    return _fence_notes(view.model_dump(mode="json"))


async def invoice_detail(ctx: RunContext[AgentDeps], invoice_number: str) -> dict[str, Any]:
    """One invoice by number: amounts (minor units), dates, aging, the promises and plans that
    cover it, its disputes, payments received and its pay link."""
    # Autopilot reads its batch's invoices in bulk; the answer is the same, the scope check too.
    cached = ctx.deps.prefetched.get(invoice_number.strip())
    if cached is not None:
        ctx.deps.check_customer(int(cached["customer_id"]))
        return cached
    inv = _invoice(ctx, invoice_number)
    detail = a360.invoice_detail(
        ctx.deps.session,
        ctx.deps.org_id,
        inv.id,
        as_of=ctx.deps.as_of,
        settings=ctx.deps.settings,
        issued_link=ctx.deps.pay_links.get(inv.number),
        now=ctx.deps.moment(),
    )
    return _fence_notes(detail.model_dump(mode="json"))


async def promise_history(ctx: RunContext[AgentDeps], customer_id: int) -> list[dict[str, Any]]:
    """The customer's promises-to-pay, newest first (kept, missed, open, lapsed)."""
    ctx.deps.check_customer(customer_id)
    return list(
        _dump(
            a360.promise_history(
                ctx.deps.session, ctx.deps.org_id, customer_id, as_of=ctx.deps.as_of
            )
        )
    )


async def plan_history(ctx: RunContext[AgentDeps], customer_id: int) -> list[dict[str, Any]]:
    """The customer's payment plans with their installments (paid, due, missed)."""
    ctx.deps.check_customer(customer_id)
    return list(
        _dump(
            a360.plan_history(ctx.deps.session, ctx.deps.org_id, customer_id, as_of=ctx.deps.as_of)
        )
    )


async def dispute_status(
    ctx: RunContext[AgentDeps], customer_id: int, invoice_number: str | None = None
) -> list[dict[str, Any]]:
    """Disputes of the customer (or of one of its invoices): status, reason, SLA timer."""
    ctx.deps.check_customer(customer_id)
    invoice_id = None
    if invoice_number:
        inv = _invoice(ctx, invoice_number)
        if inv.customer_id != customer_id:
            raise a360.NotInOrganisation(f"invoice {invoice_number!r} is not this customer's")
        invoice_id = inv.id
    rows = a360.dispute_status(
        ctx.deps.session,
        ctx.deps.org_id,
        customer_id=customer_id,
        invoice_id=invoice_id,
        now=ctx.deps.moment(),
    )
    return [_fence_notes({"disputes": [r.model_dump(mode="json")]})["disputes"][0] for r in rows]


async def pay_link(ctx: RunContext[AgentDeps], invoice_number: str) -> str:
    """The link the payer uses to pay this invoice (state it exactly as returned)."""
    inv = _invoice(ctx, invoice_number)
    return a360.pay_link(
        ctx.deps.settings,
        a360.org_slug(ctx.deps.session, ctx.deps.org_id),
        inv.number,
        issued_url=ctx.deps.pay_links.get(inv.number),
    )


async def recall_notes(
    ctx: RunContext[AgentDeps], query: str, customer_id: int, k: int = 5
) -> list[dict[str, Any]]:
    """Earlier notes, payer replies and outreach about this customer closest to ``query``."""
    ctx.deps.check_customer(customer_id)
    a360.get_customer(ctx.deps.session, ctx.deps.org_id, customer_id)
    if ctx.deps.recall is None:
        return []
    hits = ctx.deps.recall.query(
        ctx.deps.org_id, query[:500], customer_id=customer_id, k=max(1, min(k, 10))
    )
    out = []
    for hit in hits:
        data = hit.model_dump(mode="json")
        if hit.untrusted:
            data["text"] = fence(hit.text, source=hit.source or "payer")
        out.append(data)
    return out


READ_TOOLS: tuple[Any, ...] = (
    account_360,
    invoice_detail,
    promise_history,
    plan_history,
    dispute_status,
    pay_link,
    recall_notes,
)


def read_toolset() -> FunctionToolset[AgentDeps]:
    """A fresh toolset with every read-only tool (one per agent)."""
    return FunctionToolset[AgentDeps](list(READ_TOOLS))
