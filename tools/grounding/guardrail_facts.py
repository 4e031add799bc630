"""What the guardrails see: the typed ``send_draft`` facts of one outreach (the organisation's
switches, the segment, the contact on its channel, the invoices, promises and recent touches) and
of its grounded text.

Why apart: the policy engine never reads the ledger; the caller hands it typed facts. The same
builders serve the drafter (a fresh draft), Autopilot (thousands, from preloaded rows: the batch
readers here) and the review flow (``tools.grounding.recheck``: an edit or an approval re-checks
the current text), so the three can never disagree on what a draft is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory import clock
from memory.models import (
    OPEN_DISPUTE_STATUSES,
    Activity,
    Contact,
    Customer,
    Dispute,
    Draft,
    DraftKind,
    DraftPersona,
    Invoice,
    InvoiceStatus,
    Organisation,
    OrganisationProfile,
    PromiseToPay,
    Segment,
    promise_invoice,
)
from memory.money import MoneyError, exponent
from policies.facts import ContactFacts, InvoiceFacts, LedgerFacts, PromiseFacts, SendDraftFacts
from policies.facts import Money as PolicyMoney
from policies.facts import StatedFacts as PolicyStatedFacts
from tools.commitments.promises import covered_keys
from tools.grounding.comparison import GroundingReport, stated_minor
from tools.grounding.extraction import StatedAmount, normalize_link
from tools.grounding.truth import LedgerTruth
from tools.insights.readiness import data_ready

#: How far back outbound touches are read for the cadence caps (longer than any sane window).
TOUCH_LOOKBACK_DAYS = 35
UNSEGMENTED = "Unsegmented"


@dataclass(frozen=True)
class OrgSwitches:
    """The organisation-wide sending switches and readiness, read once per run."""

    shadow_mode: bool
    maintenance: bool
    cron_paused: bool
    sending_domain_verified: bool
    data_ready_score: int | None
    timezone: str
    # The organisation's country ("US", "CH-BE"): the holiday calendar of a contact whose
    # customer has no country of its own. None for an organisation without a profile.
    country: str | None = None

    @classmethod
    def load(cls, session: Session, org_id: int, now: datetime) -> OrgSwitches:
        org = session.get(Organisation, org_id)
        if org is None:
            raise LookupError(f"organisation {org_id} does not exist")
        try:
            score: int | None = data_ready(session, org_id, now).score
        except LookupError:
            score = None
        return cls(
            shadow_mode=org.shadow_mode,
            maintenance=org.maintenance,
            cron_paused=org.cron_paused,
            sending_domain_verified=org.sending_domain_verified,
            data_ready_score=score,
            timezone=org.timezone or "UTC",
            country=_org_country(session, org_id),
        )


def _org_country(session: Session, org_id: int) -> str | None:
    profile = session.get(OrganisationProfile, org_id)
    if profile is None:
        return None
    return (
        f"{profile.country_code}-{profile.subdivision}"
        if profile.subdivision
        else (profile.country_code)
    )


@dataclass(frozen=True)
class OutreachContext:
    """What ``send_draft`` facts need besides the text: who, which invoices, which switches."""

    switches: OrgSwitches
    segment_name: str
    segment_shadow_mode: bool
    autopilot_enabled: bool
    channel: str
    contact: ContactFacts
    invoices: tuple[InvoiceFacts, ...]
    promises: tuple[PromiseFacts, ...]
    touches: tuple[datetime, ...]
    # The cadence step's own mode is Shadow Mode (``CadenceStepMode``): Autopilot only drafts it.
    step_shadow_mode: bool = False


def _valid_zone(*names: str | None) -> str:
    for name in names:
        if not name:
            continue
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return name
    return "UTC"


def contact_facts(
    contact: Contact | None,
    channel: str,
    *,
    fallback_timezone: str = "UTC",
    country: str | None = None,
) -> ContactFacts:
    """The contact as the guardrails see it on ``channel``.

    E-mail and portal use the e-mail flags; SMS the SMS flags; a call counts as consented when the
    contact has a phone number and has not opted out of SMS (the ledger keeps no separate flag);
    Slack messages go to colleagues, never to payers. No contact at all is not consented.
    ``country`` (the customer's, else the organisation's) picks the contact's holiday calendar.
    """
    if contact is None:
        return ContactFacts(
            timezone=_valid_zone(fallback_timezone),
            opted_out=False,
            bounced=False,
            consent=False,
            country=country or None,
        )
    tz = _valid_zone(contact.timezone, fallback_timezone)
    if channel in ("email", "portal"):
        return ContactFacts(
            timezone=tz,
            opted_out=contact.opted_out_email,
            bounced=contact.bounced,
            consent=contact.consent_email and bool(contact.email),
            country=country or None,
        )
    if channel == "sms":
        return ContactFacts(
            timezone=tz,
            opted_out=contact.opted_out_sms,
            bounced=False,
            consent=contact.consent_sms and bool(contact.phone),
            country=country or None,
        )
    if channel == "call":
        return ContactFacts(
            timezone=tz,
            opted_out=contact.opted_out_sms,
            bounced=False,
            consent=bool(contact.phone),
            country=country or None,
        )
    return ContactFacts(
        timezone=tz, opted_out=False, bounced=False, consent=True, country=country or None
    )


def promise_facts_by_customer(
    session: Session, org_id: int, customer_ids: Sequence[int]
) -> dict[int, list[PromiseFacts]]:
    """Every promise of these customers with its invoice numbers (the engine picks what pauses)."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(
            PromiseToPay.id,
            PromiseToPay.customer_id,
            PromiseToPay.promised_date,
            PromiseToPay.status,
            PromiseToPay.grace_days,
            PromiseToPay.amount_minor,
            Invoice.number,
            Invoice.due_date,
            Invoice.id,
            Invoice.balance_minor,
            Invoice.status,
        )
        .join(promise_invoice, promise_invoice.c.promise_id == PromiseToPay.id)
        .join(Invoice, Invoice.id == promise_invoice.c.invoice_id)
        .where(PromiseToPay.org_id == org_id, PromiseToPay.customer_id.in_(ids))
        .order_by(PromiseToPay.id, Invoice.number)
    ).all()
    grouped: dict[int, tuple[int, date, str, int, int, list[tuple[str, date, int, int]]]] = {}
    for pid, cid, pdate, status, grace, amount, number, due, inv_id, balance, inv_status in rows:
        label = str(getattr(status, "value", status))
        entry = grouped.setdefault(pid, (cid, pdate, label, grace, amount, []))
        open_balance = balance if inv_status == InvoiceStatus.OPEN else 0
        entry[5].append((number, due, inv_id, open_balance))
    out: dict[int, list[PromiseFacts]] = {}
    for cid, pdate, state, grace, amount, links in grouped.values():
        # An open promise pauses only what its amount covers; a decided one names every link.
        nums = sorted(covered_keys(amount, links)) if state == "open" else [n for n, *_ in links]
        out.setdefault(cid, []).append(
            PromiseFacts.model_validate(
                {
                    "promised_date": pdate,
                    "status": state,
                    "invoice_numbers": nums,
                    "grace_days": grace,
                }
            )
        )
    return out


def touches_by_contact(
    session: Session, org_id: int, contact_ids: Sequence[int], now: datetime
) -> dict[int, list[datetime]]:
    """Recent outbound touches per contact (any channel, any sender) for the cadence caps."""
    ids = sorted({c for c in contact_ids if c is not None})
    if not ids:
        return {}
    since = now - timedelta(days=TOUCH_LOOKBACK_DAYS)
    out: dict[int, list[datetime]] = {}
    for cid, at in session.execute(
        select(Activity.contact_id, Activity.occurred_at).where(
            Activity.org_id == org_id,
            Activity.contact_id.in_(ids),
            Activity.direction == "out",
            Activity.occurred_at >= since,
            Activity.occurred_at <= now,
        )
    ):
        if cid is not None:
            out.setdefault(cid, []).append(at)
    return out


def disputed_invoice_ids(session: Session, org_id: int, invoice_ids: Sequence[int]) -> set[int]:
    """Invoices flagged disputed or with a dispute still open (either one stops dunning)."""
    ids = sorted(set(invoice_ids))
    if not ids:
        return set()
    flagged = set(
        session.scalars(
            select(Invoice.id).where(
                Invoice.org_id == org_id, Invoice.id.in_(ids), Invoice.disputed.is_(True)
            )
        )
    )
    flagged |= set(
        session.scalars(
            select(Dispute.invoice_id).where(
                Dispute.org_id == org_id,
                Dispute.invoice_id.in_(ids),
                Dispute.status.in_(OPEN_DISPUTE_STATUSES),
            )
        )
    )
    return flagged


def outreach_context(
    session: Session,
    org_id: int,
    *,
    customer_id: int,
    contact_id: int | None,
    invoice_ids: Sequence[int],
    channel: str,
    now: datetime,
    switches: OrgSwitches | None = None,
) -> OutreachContext:
    """The facts around one outreach, read from the ledger (one draft; Autopilot preloads)."""
    customer = session.get(Customer, customer_id)
    if customer is None or customer.org_id != org_id:
        raise LookupError(f"customer {customer_id} is not in organisation {org_id}")
    switches = switches or OrgSwitches.load(session, org_id, now)
    segment = session.get(Segment, customer.segment_id) if customer.segment_id else None
    contact = session.get(Contact, contact_id) if contact_id else None
    if contact is not None and contact.org_id != org_id:
        raise LookupError(f"contact {contact_id} is not in organisation {org_id}")
    invoices = (
        session.scalars(
            select(Invoice).where(Invoice.org_id == org_id, Invoice.id.in_(list(invoice_ids)))
        ).all()
        if invoice_ids
        else []
    )
    disputed = disputed_invoice_ids(session, org_id, [i.id for i in invoices])
    touches = (
        touches_by_contact(session, org_id, [contact.id], now).get(contact.id, [])
        if contact
        else []
    )
    return OutreachContext(
        switches=switches,
        segment_name=segment.name if segment else UNSEGMENTED,
        segment_shadow_mode=segment.shadow_mode if segment else switches.shadow_mode,
        autopilot_enabled=segment.autopilot_enabled if segment else False,
        channel=channel,
        contact=contact_facts(
            contact,
            channel,
            fallback_timezone=customer.timezone or switches.timezone,
            country=customer.country_code or switches.country,
        ),
        invoices=tuple(InvoiceFacts(number=i.number, disputed=i.id in disputed) for i in invoices),
        promises=tuple(
            promise_facts_by_customer(session, org_id, [customer_id]).get(customer_id, [])
        ),
        touches=tuple(touches),
    )


def _money_of(amount: StatedAmount, truth: LedgerTruth) -> PolicyMoney:
    backed = stated_minor(amount, truth)
    if backed is not None:
        return PolicyMoney(amount_minor=backed[0], currency=backed[1])
    # Not in the ledger: pass it on as written so the engine sees (and blocks) the mismatch.
    cur = (amount.currencies or truth.currencies or ["XXX"])[0]
    value = Decimal(amount.value)
    try:
        minor = int(value.scaleb(exponent(cur)).to_integral_value())
    except MoneyError:
        minor = int(value.scaleb(2).to_integral_value())
    return PolicyMoney(amount_minor=minor, currency=cur)


def send_draft_facts(
    ctx: OutreachContext,
    *,
    body: str,
    report: GroundingReport,
    truth: LedgerTruth,
    pay_link: str | None,
    now: datetime,
    shadow: bool | None = None,
    approved_by_roles: Sequence[str] = (),
    about_promise: PromiseFacts | None = None,
    dispute_correspondence: bool = False,
) -> SendDraftFacts:
    """The ``send_draft`` facts for a text: the ledger's side, and what the text states.

    ``shadow=True`` forces Shadow Mode (``plixo autopilot run --shadow``); None reads the ledger.
    ``about_promise``: the open promise a reminder is about; the guardrails then let that one
    promise's pause through (``promise.open``) and check the promise is really open.
    ``dispute_correspondence``: a reply written from the dispute panel (its own guardrails).
    """
    allowed_link = normalize_link(pay_link) if pay_link else None
    stated_links = report.stated.links
    stated_link = (
        allowed_link
        if allowed_link and allowed_link in stated_links
        else (stated_links[0] if stated_links else None)
    )
    truth = truth.with_named_totals(report.stated.invoice_numbers)
    amounts = [m for a in report.stated.amounts for m in [_money_of(a, truth)]]
    ledger_amounts = [
        PolicyMoney(amount_minor=v, currency=cur) for cur, vs in truth.amounts.items() for v in vs
    ]
    return SendDraftFacts(
        now=now,
        business_date=clock.business_date(ctx.switches.timezone, now),
        channel=ctx.channel,  # type: ignore[arg-type]
        maintenance=ctx.switches.maintenance,
        cron_paused=ctx.switches.cron_paused,
        contact=ctx.contact,
        invoices=list(ctx.invoices),
        promises=list(ctx.promises),
        touches=list(ctx.touches),
        segment=ctx.segment_name[:200] or UNSEGMENTED,
        org_shadow_mode=True if shadow else ctx.switches.shadow_mode,
        segment_shadow_mode=True if shadow else ctx.segment_shadow_mode,
        step_shadow_mode=ctx.step_shadow_mode,
        autopilot_enabled=ctx.autopilot_enabled,
        data_ready_score=ctx.switches.data_ready_score,
        sending_domain_verified=ctx.switches.sending_domain_verified,
        approved_by_roles=list(approved_by_roles),
        content=PolicyStatedFacts(
            body=body,
            invoice_numbers=[n for n in report.stated.invoice_numbers if n.strip()],
            amounts=amounts,
            dates=list(report.stated.dates),
            pay_link=stated_link,
        ),
        ledger=LedgerFacts(
            invoice_numbers=[n for n in truth.invoice_numbers if n.strip()],
            amounts=ledger_amounts,
            dates=list(truth.dates),
            pay_link=allowed_link,
        ),
        about_promise=about_promise,
        dispute_correspondence=dispute_correspondence,
    )


def is_dispute_correspondence(draft: Draft) -> bool:
    """Whether the draft is a reply a person wrote from the dispute panel: a person's own message
    (never Autopilot's) that the dispute reply path marked with its dispute."""
    dispute_id = (draft.stated_facts or {}).get("dispute_id")
    return (
        draft.kind == DraftKind.MANUAL
        and draft.persona == DraftPersona.COLLECTOR
        and isinstance(dispute_id, int)
        and dispute_id > 0
    )
