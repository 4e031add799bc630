"""Re-checking a stored draft: its current text grounded against the ledger of the day, and the
guardrails asked.

Why apart: an edit, a revision, an approval, the send-time check and the policy dry run all start
from a stored ``Draft`` row (not from the drafter's fresh output) and must get the same answer;
this is the one place that turns a draft row into its truth, its grounding report and its facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory import business_day
from memory.config import Settings, get_settings
from memory.models import Customer, Draft, Invoice, Organisation
from policies.engine import engine_for as policy_engine_for
from policies.facts import SendDraftFacts
from policies.types import ActionType
from tools.grounding.comparison import GroundingReport, ground_text
from tools.grounding.guardrail_facts import (
    is_dispute_correspondence,
    outreach_context,
    send_draft_facts,
)
from tools.grounding.truth import ledger_truth
from tools.insights.account360 import pay_link
from tools.kit.formatting import locale_for
from tools.ledger.policy_overrides import policy_set_for


@dataclass
class DraftCheck:
    """Grounding and the guardrails on a draft's current text (what an edit or approval needs).

    Same fields as ``tools.drafts.service.Recheck``: ``Recheck(**vars(check))``.
    """

    decision: dict[str, Any]
    grounding: dict[str, Any] = field(default_factory=dict)
    grounding_blocked: bool = False

    @property
    def outcome(self) -> str:
        return str(self.decision.get("outcome"))


def draft_pay_link(session: Session, draft: Draft, settings: Settings) -> str | None:
    """The pay link a stored draft may state: the one it was written with, else the stable one."""
    stated = (draft.stated_facts or {}).get("pay_link")
    if isinstance(stated, str) and stated:
        return stated
    if draft.invoice_id is None:
        return None
    inv = session.get(Invoice, draft.invoice_id)
    org = session.get(Organisation, draft.org_id)
    if inv is None or org is None:
        return None
    return pay_link(settings, org.slug, inv.number)


def recheck_draft(
    session: Session,
    draft: Draft,
    now: datetime,
    *,
    settings: Settings | None = None,
    shadow: bool | None = None,
    approved_by_roles: Sequence[str] = (),
    as_of: date | None = None,
) -> DraftCheck:
    """Ground the draft's current subject and body against the ledger and ask the guardrails.

    This is the re-check an edit, a revision or an approval needs (the ledger may have moved since
    the draft was written). "Today" (``as_of`` by default) is the organisation's business date at
    ``now`` (``memory.clock``), never the customer's or the contact's: their time zone only sets
    quiet hours and send windows, which the guardrails read from the contact facts.

    Grounding mismatches are returned with ``grounding_blocked=True``; the
    decision then also blocks, because the engine sees the same mismatches as facts.
    """
    facts, report = draft_send_facts(
        session,
        draft,
        now,
        settings=settings,
        shadow=shadow,
        approved_by_roles=approved_by_roles,
        as_of=as_of,
    )
    decision = policy_engine_for(policy_set_for(session, draft.org_id)).decide(
        ActionType.SEND_DRAFT, facts
    )
    return DraftCheck(
        decision=decision.as_dict(),
        grounding=report.as_dict(),
        grounding_blocked=not report.ok,
    )


def draft_send_facts(
    session: Session,
    draft: Draft,
    now: datetime,
    *,
    settings: Settings | None = None,
    shadow: bool | None = None,
    approved_by_roles: Sequence[str] = (),
    as_of: date | None = None,
) -> tuple[SendDraftFacts, GroundingReport]:
    """The ``send_draft`` facts of a draft's current text at ``now`` (and its grounding), so a
    caller can put them to any policy set (the policy dry run replays them under a proposal)."""
    settings = settings or get_settings()
    org_id = draft.org_id
    customer = session.get(Customer, draft.customer_id)
    if customer is None or customer.org_id != org_id:
        raise LookupError(f"draft {draft.id} points at a customer outside its organisation")
    day = as_of or business_day.org_business_date(session, org_id, now)
    link = draft_pay_link(session, draft, settings)
    language = draft.language or customer.language or "en"
    truth = ledger_truth(
        session,
        org_id,
        customer.id,
        as_of=day,
        links=[link] if link else [],
        locale=locale_for(language, customer.country_code),
    )
    text = f"{draft.subject}\n\n{draft.body}"
    report = ground_text(text, truth, language=language, as_of=day)
    invoice_ids = [draft.invoice_id] if draft.invoice_id else []
    stated_ids = session.scalars(
        select(Invoice.id).where(
            Invoice.org_id == org_id,
            Invoice.customer_id == customer.id,
            Invoice.number.in_(report.stated.invoice_numbers),
        )
    ).all()
    invoice_ids = sorted(set(invoice_ids) | set(stated_ids))
    ctx = outreach_context(
        session,
        org_id,
        customer_id=customer.id,
        contact_id=draft.contact_id,
        invoice_ids=invoice_ids,
        channel=draft.channel.value,
        now=now,
    )
    facts = send_draft_facts(
        ctx,
        body=text,
        report=report,
        truth=truth,
        pay_link=link,
        now=now,
        shadow=shadow,
        approved_by_roles=approved_by_roles,
        dispute_correspondence=is_dispute_correspondence(draft),
    )
    return facts, report
