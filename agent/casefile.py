"""The case file: what a drafting task is about, read from the ledger; and rendering a message.

A ``CaseFile`` is what the model sees (as JSON between ``<case_file>`` tags): the customer, the
contact, the invoices with every figure already formatted for the contact's locale, the pay link,
the step, the persona's sender and the language. Formatting the figures here, once, is what lets a
real model copy them exactly and lets grounding read them back.

``render`` fills the versioned templates (``prompts/drafter/v<N>.<lang>.yaml``, the version the
case file names): the offline model writes with it, and a real model receives its output as the
skeleton to adapt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import (
    Channel,
    Contact,
    Customer,
    DraftKind,
    DraftPersona,
    Invoice,
    InvoiceStatus,
    Organisation,
    PaymentPlan,
    PlanInstallment,
    PromiseToPay,
    User,
    plan_invoice,
)
from prompts.registry import (
    PromptError,
    TemplateBook,
    fill,
    latest,
    resolve_template_name,
    template_languages,
    templates,
)
from tools.commitments.promises import covered_invoices
from tools.grounding.extraction import extract_facts, invoice_shapes
from tools.insights import account360 as a360
from tools.kit.formatting import format_amount, format_day, locale_for
from tools.outreach.consolidation import (
    GROUP_FINAL_TEMPLATE,
    GROUP_TEMPLATE,
    listing_amounts,
    listing_lines,
    listing_totals,
)

MAX_CASE_INVOICES = 15
#: An SMS is at most two concatenated segments; longer texts are split or cut by carriers.
SMS_MAX_CHARS = 320
CASE_OPEN = "<case_file>"
CASE_CLOSE = "</case_file>"


class CaseInvoice(BaseModel):
    number: str
    currency: str
    amount_minor: int
    balance_minor: int
    amount_text: str
    balance_text: str
    paid_minor: int = 0
    paid_text: str | None = None
    issue_date: date
    due_date: date
    due_date_text: str
    days_past_due: int
    pay_link: str


class CaseCommitment(BaseModel):
    """A promise or an installment: an amount on a date, formatted."""

    id: int
    amount_minor: int
    currency: str
    amount_text: str
    date: date
    date_text: str
    status: str
    invoice_numbers: list[str] = Field(default_factory=list)


class CaseFile(BaseModel):
    """Everything a drafting (or revising) model needs to know about one task."""

    as_of: date
    org_name: str
    customer_id: int
    customer_name: str
    contact_id: int | None
    contact_name: str
    first_name: str
    recipient: str | None
    channel: Channel
    language: str
    locale: str
    persona: DraftPersona
    sender_name: str
    kind: DraftKind
    template: str
    tone: str
    step_date: date | None = None
    invoices: list[CaseInvoice]
    pay_link: str
    promise: CaseCommitment | None = None
    installment: CaseCommitment | None = None
    promises: list[CaseCommitment] = Field(default_factory=list)
    revision_instructions: list[str] = Field(
        default_factory=list, description="Earlier operator instructions, oldest first."
    )
    po_reference: str | None = Field(
        default=None,
        description="The purchase order the payer's AP matches payments to (an internal note).",
    )
    template_version: str = Field(
        default_factory=lambda: latest("drafter"), description="The drafter templates to fill."
    )
    final_notice_invoices: list[str] = Field(
        default_factory=list,
        description=(
            "Invoices of this message whose cadence reached its final notice: the final-notice "
            "wording is about these invoices only."
        ),
    )

    def to_prompt(self) -> str:
        return f"{CASE_OPEN}\n{self.model_dump_json(indent=1)}\n{CASE_CLOSE}"


_PARSED: dict[str, CaseFile | None] = {}


def parse_case(text: str) -> CaseFile | None:
    """The case file embedded in a prompt (the offline model reads it back), or None.

    The same prompt is read at every step of a run (the tool call, then the draft): parsed once,
    remembered for a while (case files are immutable; a revision copies them).
    """
    cached = _PARSED.get(text, _MISSING)
    if cached is not _MISSING:
        return cached  # type: ignore[return-value]
    start = text.find(CASE_OPEN)
    end = text.find(CASE_CLOSE, start + 1)
    case: CaseFile | None = None
    if start >= 0 and end >= 0:
        try:
            case = CaseFile.model_validate(json.loads(text[start + len(CASE_OPEN) : end]))
        except ValueError:
            case = None
    if len(_PARSED) >= 512:
        _PARSED.clear()
    _PARSED[text] = case
    return case


_MISSING = object()


@dataclass
class DraftTask:
    """A drafting task: the case file plus the ids plixo stores with the draft."""

    case: CaseFile
    org_id: int
    customer_id: int
    invoice_ids: list[int]
    contact_id: int | None
    segment_id: int | None
    step_id: int | None = None
    run_key: str | None = None
    promise_id: int | None = None
    installment_id: int | None = None
    pay_links: list[str] = field(default_factory=list)
    #: for the reviewer only (what a consolidated message left out and why); stored with the
    #: draft, shown in the inspector, never in the case file the model reads
    reviewer_notes: list[str] = field(default_factory=list)

    @property
    def primary_invoice_id(self) -> int | None:
        return self.invoice_ids[0] if self.invoice_ids else None


class TaskError(ValueError):
    """The task cannot be drafted (nothing open to chase, no contact); the message says why."""


# --- building a case from the ledger -----------------------------------------------------------


def _first_name(name: str) -> str:
    parts = name.strip().split()
    return parts[0] if parts else name


def _sender(session: Session, org: Organisation, customer: Customer, persona: DraftPersona) -> str:
    user_id = {
        DraftPersona.COLLECTOR: customer.collector_user_id,
        DraftPersona.SALES_NUDGE: customer.sales_user_id,
        DraftPersona.CSM_NUDGE: customer.csm_user_id,
    }.get(persona)
    if user_id is not None:
        user = session.get(User, user_id)
        if user is not None and user.org_id == org.id:
            return user.name
    return f"{org.name} Accounts Receivable"


def _commitment(
    cid: int, minor: int, currency: str, day: date, status: str, nums: list[str], locale: str
) -> CaseCommitment:
    return CaseCommitment(
        id=cid,
        amount_minor=minor,
        currency=currency,
        amount_text=format_amount(minor, currency, locale),
        date=day,
        date_text=format_day(day, locale),
        status=status,
        invoice_numbers=nums,
    )


def case_invoice(inv: Invoice, *, locale: str, as_of: date, link: str) -> CaseInvoice:
    paid = max(0, inv.amount_minor - inv.balance_minor)
    return CaseInvoice(
        number=inv.number,
        currency=inv.currency,
        amount_minor=inv.amount_minor,
        balance_minor=inv.balance_minor,
        amount_text=format_amount(inv.amount_minor, inv.currency, locale),
        balance_text=format_amount(inv.balance_minor, inv.currency, locale),
        paid_minor=paid,
        paid_text=format_amount(paid, inv.currency, locale) if paid else None,
        issue_date=inv.issue_date,
        due_date=inv.due_date,
        due_date_text=format_day(inv.due_date, locale),
        days_past_due=inv.days_past_due(as_of),
        pay_link=link,
    )


def writing_language(customer: Customer, contact: Contact | None) -> str:
    """The contact's language, else the customer's; the drafter writes in it."""
    lang = (contact.language if contact and contact.language else customer.language) or "en"
    return lang.split("-")[0].split("_")[0].lower()[:2] or "en"


def _named_invoices(
    session: Session, org_id: int, invoice_ids: Sequence[int], customer_id: int | None
) -> tuple[list[Invoice], int]:
    """The invoices a draft is about (each checked to be the organisation's), and its customer.

    One draft writes to one customer: invoices of several, or not of the customer named, are
    refused rather than mixed in one message."""
    invoices: list[Invoice] = [a360.get_invoice(session, org_id, i) for i in invoice_ids]
    if invoices:
        cust_ids = {i.customer_id for i in invoices}
        if len(cust_ids) != 1 or (customer_id is not None and customer_id not in cust_ids):
            raise TaskError("the invoices of one draft must all belong to its one customer")
        customer_id = invoices[0].customer_id
    if customer_id is None:
        raise TaskError("a draft needs an invoice_id or a customer_id")
    return invoices, customer_id


def _statement_invoices(
    session: Session, org_id: int, customer_id: int, customer: Customer
) -> list[Invoice]:
    """A statement's invoices: the customer's open, undisputed ones, oldest due first (at most
    ``MAX_CASE_INVOICES``); none is a clear error, not an empty message."""
    invoices = list(
        session.scalars(
            select(Invoice)
            .where(
                Invoice.org_id == org_id,
                Invoice.customer_id == customer_id,
                Invoice.status == InvoiceStatus.OPEN,
                Invoice.balance_minor > 0,
                Invoice.disputed.is_(False),
            )
            .order_by(Invoice.due_date, Invoice.id)
            .limit(MAX_CASE_INVOICES)
        )
    )
    if not invoices:
        raise TaskError(f"customer {customer.name} has no open, undisputed invoice to chase")
    return invoices


def _case_commitments(
    session: Session,
    org_id: int,
    customer_id: int,
    locale: str,
    *,
    as_of: date,
    promise_id: int | None,
    installment_id: int | None,
    include_promises: bool,
) -> tuple[CaseCommitment | None, CaseCommitment | None, list[CaseCommitment]]:
    """The promise-to-pay and the installment a follow-up is about (each checked to be this
    customer's), and when asked the customer's recent promises, in the case's locale."""
    promise = None
    if promise_id is not None:
        promise = _promise(session, org_id, promise_id, customer_id, locale)
    installment = None
    if installment_id is not None:
        installment = _installment(session, org_id, installment_id, customer_id, locale)
    promises: list[CaseCommitment] = []
    if include_promises:
        promises = [
            _commitment(
                p.id, p.amount_minor, p.currency, p.promised_date, p.status.value,
                p.invoice_numbers, locale,
            )
            for p in a360.promise_history(session, org_id, customer_id, as_of=as_of, limit=10)
        ]  # fmt: skip
    return promise, installment, promises


def _recipient(contact: Contact | None, channel: Channel) -> str | None:
    """Where the message goes: the phone for a call or an SMS, else the e-mail; whichever the
    contact has when the preferred one is missing."""
    recipient = None
    if contact is not None:
        recipient = contact.phone if channel in (Channel.CALL, Channel.SMS) else contact.email
        recipient = recipient or contact.email or contact.phone
    return recipient


@dataclass
class _CaseParts:
    """What a drafting task reads from the ledger, each part checked to be the organisation's and
    the customer's, before the case file is written from it."""

    org: Organisation
    customer: Customer
    invoices: list[Invoice]
    contact: Contact | None
    template: str
    language: str
    locale: str
    case_invoices: list[CaseInvoice]
    promise: CaseCommitment | None
    installment: CaseCommitment | None
    promises: list[CaseCommitment]
    note_bodies: Sequence[str]


def _read_parts(
    session: Session,
    org_id: int,
    settings: Settings,
    *,
    as_of: date,
    customer_id: int | None,
    invoice_ids: Sequence[int],
    contact_id: int | None,
    template: str,
    promise_id: int | None,
    installment_id: int | None,
    pay_links: dict[str, str] | None,
    include_promises: bool,
    note_bodies: Sequence[str] | None,
) -> _CaseParts:
    """Read the parts of one task (see ``build_task``); a statement when no invoice is named.

    A statement of several invoices reads as one: ``generic_reminder`` becomes
    ``account_statement``."""
    org = session.get(Organisation, org_id)
    if org is None:
        raise a360.NotInOrganisation(f"organisation {org_id} does not exist")
    invoices, customer_id = _named_invoices(session, org_id, invoice_ids, customer_id)
    customer = a360.get_customer(session, org_id, customer_id)
    if not invoices:
        invoices = _statement_invoices(session, org_id, customer_id, customer)
        if template == "generic_reminder" and len(invoices) > 1:
            template = "account_statement"
    contact = _contact(session, org_id, customer_id, contact_id)
    language = writing_language(customer, contact)
    locale = locale_for(language, customer.country_code)
    links = pay_links or {}
    slug = org.slug
    case_invoices = [
        case_invoice(
            inv,
            locale=locale,
            as_of=as_of,
            link=a360.pay_link(settings, slug, inv.number, issued_url=links.get(inv.number)),
        )
        for inv in invoices
    ]
    promise, installment, promises = _case_commitments(
        session,
        org_id,
        customer_id,
        locale,
        as_of=as_of,
        promise_id=promise_id,
        installment_id=installment_id,
        include_promises=include_promises,
    )
    if note_bodies is None:
        note_bodies = a360.internal_note_bodies(session, org_id, [customer.id]).get(customer.id, [])
    return _CaseParts(
        org, customer, invoices, contact, template, language, locale, case_invoices,
        promise, installment, promises, note_bodies,
    )  # fmt: skip


def _case_file(
    session: Session,
    parts: _CaseParts,
    *,
    as_of: date,
    persona: DraftPersona,
    kind: DraftKind,
    tone: str,
    channel: Channel,
    step_date: date | None,
    template_version: str | None,
    final_notice_numbers: Sequence[str],
) -> CaseFile:
    """The case file the drafter writes from: the parts read, and how to write (step, tone,
    channel, persona), with the purchase-order reference the payer's AP team matches on."""
    org, customer, contact, invoices = parts.org, parts.customer, parts.contact, parts.invoices
    case_invoices, note_bodies = parts.case_invoices, parts.note_bodies
    finals = set(final_notice_numbers)
    return CaseFile(
        as_of=as_of,
        org_name=org.name,
        customer_id=customer.id,
        customer_name=customer.name,
        contact_id=contact.id if contact else None,
        contact_name=contact.name if contact else customer.name,
        first_name=_first_name(contact.name) if contact else customer.name,
        recipient=_recipient(contact, channel),
        channel=channel,
        language=parts.language,
        locale=parts.locale,
        persona=persona,
        sender_name=_sender(session, org, customer, persona),
        kind=kind,
        template=parts.template,
        tone=tone,
        step_date=step_date,
        invoices=case_invoices,
        pay_link=case_invoices[0].pay_link,
        promise=parts.promise,
        installment=parts.installment,
        promises=parts.promises,
        po_reference=payment_reference(note_bodies, [i.number for i in invoices]),
        template_version=template_version or latest("drafter"),
        final_notice_invoices=[i.number for i in invoices if i.number in finals],
    )


def build_task(
    session: Session,
    org_id: int,
    settings: Settings,
    *,
    as_of: date,
    customer_id: int | None = None,
    invoice_ids: Sequence[int] = (),
    contact_id: int | None = None,
    persona: DraftPersona = DraftPersona.AUTOPILOT,
    kind: DraftKind = DraftKind.MANUAL,
    template: str = "generic_reminder",
    tone: str = "friendly",
    channel: Channel = Channel.EMAIL,
    step_id: int | None = None,
    step_date: date | None = None,
    run_key: str | None = None,
    promise_id: int | None = None,
    installment_id: int | None = None,
    pay_links: dict[str, str] | None = None,
    include_promises: bool = False,
    template_version: str | None = None,
    note_bodies: Sequence[str] | None = None,
    final_notice_numbers: Sequence[str] = (),
    reviewer_notes: Sequence[str] = (),
) -> DraftTask:
    """Read one drafting task from the ledger, scoped to ``org_id``.

    With ``invoice_ids`` the message is about those invoices (the first is the primary one);
    with only ``customer_id`` it covers the customer's open, undisputed invoices (a statement).
    ``note_bodies``: the customer's recent internal notes, newest first, when the caller has
    preloaded them (Autopilot, per batch); else they are read here. ``template_version``: the
    drafter templates to write with (default: the newest). ``final_notice_numbers``: of a
    consolidated message, the invoices at their final notice; ``reviewer_notes``: what the
    reviewer should read about it (never the model, never the payer).
    """
    parts = _read_parts(
        session,
        org_id,
        settings,
        as_of=as_of,
        customer_id=customer_id,
        invoice_ids=invoice_ids,
        contact_id=contact_id,
        template=template,
        promise_id=promise_id,
        installment_id=installment_id,
        pay_links=pay_links,
        include_promises=include_promises,
        note_bodies=note_bodies,
    )
    case = _case_file(
        session,
        parts,
        as_of=as_of,
        persona=persona,
        kind=kind,
        tone=tone,
        channel=channel,
        step_date=step_date,
        template_version=template_version,
        final_notice_numbers=final_notice_numbers,
    )
    customer, contact = parts.customer, parts.contact
    return DraftTask(
        case=case,
        org_id=org_id,
        customer_id=customer.id,
        invoice_ids=[i.id for i in parts.invoices],
        contact_id=contact.id if contact else None,
        segment_id=customer.segment_id,
        step_id=step_id,
        run_key=run_key,
        promise_id=promise_id,
        installment_id=installment_id,
        pay_links=[c.pay_link for c in parts.case_invoices],
        reviewer_notes=list(reviewer_notes),
    )


_PO_REFERENCE = re.compile(
    r"(?i:\bpurchase[ -]order(?:\s+(?:no\.?|number|#))?|\bbestell(?:nummer|-?nr\.?)"
    r"|\bbon de commande(?:\s+n°)?|\bnum[ée]ro de commande|\borden de compra(?:\s+n[º°.]?)?)"
    r"[\s:#]*(?P<ref>(?:[A-Z]{1,4}[ -]?)?\d[\w/-]{0,19})"
    r"|\bP\.?O\.?(?:\s*(?:[Nn]o\.?|#|:))?[\s:#-]*(?P<po>\d[\w/-]{0,19})"
)


def payment_reference(note_bodies: Sequence[str], invoice_numbers: Sequence[str]) -> str | None:
    """The purchase-order reference the payer's accounts-payable team matches payments to, from
    the newest internal note that names one ("AP matches payments to PO 7781").

    Why only this: internal notes say many things a payer must not read (risk, renewals,
    negotiations); a reference the payer itself needs on the payment is the one note fact that is
    both personal and safe to repeat. A reference that grounding would read as an amount, a date,
    an invoice number or a link is dropped: it would state a figure the ledger does not back.
    """
    shapes = invoice_shapes(invoice_numbers)
    for body in note_bodies:
        m = _PO_REFERENCE.search(body or "")
        if m is None:
            continue
        ref = (m.group("ref") or m.group("po") or "").rstrip(".,;:-/")
        if len(re.sub(r"\D", "", ref)) < 3:
            continue
        facts = extract_facts(ref, known_invoice_numbers=invoice_numbers, shapes=shapes)
        if facts.amounts or facts.dates or facts.invoice_numbers or facts.links or facts.ambiguous:
            continue
        return ref
    return None


def _contact(
    session: Session, org_id: int, customer_id: int, contact_id: int | None
) -> Contact | None:
    if contact_id is not None:
        contact = session.get(Contact, contact_id)
        if contact is None or contact.org_id != org_id or contact.customer_id != customer_id:
            raise a360.NotInOrganisation(f"contact {contact_id} is not this customer's")
        return contact
    contacts = session.scalars(
        select(Contact)
        .where(Contact.org_id == org_id, Contact.customer_id == customer_id)
        .order_by(Contact.is_primary.desc(), Contact.id)
    ).all()
    reachable = [
        c
        for c in contacts
        if c.email and c.consent_email and not c.opted_out_email and not c.bounced
    ]
    ranked = reachable or [c for c in contacts if c.email] or list(contacts)
    return ranked[0] if ranked else None


def _promise(
    session: Session, org_id: int, promise_id: int, customer_id: int, locale: str
) -> CaseCommitment:
    p = session.get(PromiseToPay, promise_id)
    if p is None or p.org_id != org_id or p.customer_id != customer_id:
        raise a360.NotInOrganisation(f"promise {promise_id} is not this customer's")
    # An open promise is about the invoices its amount covers (the ones it pauses).
    nums = sorted(i.number for i in covered_invoices(p))
    return _commitment(
        p.id, p.amount_minor, p.currency, p.promised_date, p.status.value, nums, locale
    )


def _installment(
    session: Session, org_id: int, installment_id: int, customer_id: int, locale: str
) -> CaseCommitment:
    inst = session.get(PlanInstallment, installment_id)
    plan = session.get(PaymentPlan, inst.plan_id) if inst is not None else None
    if inst is None or plan is None or plan.org_id != org_id or plan.customer_id != customer_id:
        raise a360.NotInOrganisation(f"installment {installment_id} is not this customer's")
    nums = list(
        session.scalars(
            select(Invoice.number)
            .join(plan_invoice, plan_invoice.c.invoice_id == Invoice.id)
            .where(plan_invoice.c.plan_id == plan.id)
            .order_by(Invoice.number)
        )
    )
    owed = inst.amount_minor - inst.paid_minor
    return _commitment(inst.id, owed, plan.currency, inst.due_date, inst.status.value, nums, locale)


def relocalize(case: CaseFile, language: str) -> CaseFile:
    """The case rewritten for another language: every figure re-formatted for its locale."""
    country = case.locale.split("_")[1] if "_" in case.locale else None
    locale = locale_for(language, country if language == case.language else None)

    def commit(c: CaseCommitment | None) -> CaseCommitment | None:
        if c is None:
            return None
        return c.model_copy(
            update={
                "amount_text": format_amount(c.amount_minor, c.currency, locale),
                "date_text": format_day(c.date, locale),
            }
        )

    invoices = [
        i.model_copy(
            update={
                "amount_text": format_amount(i.amount_minor, i.currency, locale),
                "balance_text": format_amount(i.balance_minor, i.currency, locale),
                "paid_text": format_amount(i.paid_minor, i.currency, locale)
                if i.paid_minor
                else None,
                "due_date_text": format_day(i.due_date, locale),
            }
        )
        for i in case.invoices
    ]
    return case.model_copy(
        update={
            "language": language,
            "locale": locale,
            "invoices": invoices,
            "promise": commit(case.promise),
            "installment": commit(case.installment),
            "promises": [p for p in (commit(x) for x in case.promises) if p is not None],
        }
    )


# --- rendering ---------------------------------------------------------------------------------

Length = Literal["normal", "short"]
#: Templates about a promise (its amount and date are stated); a case without one gets the generic.
PROMISE_TEMPLATES = frozenset({"promise_broken", "promise_reminder"})
#: Statement-style templates: every invoice under its aging-bucket heading, with totals per
#: currency (``tools.outreach.consolidation.listing_lines``); the second is the final-notice
#: wording of a
#: consolidated message one of whose invoices reached its final notice.
STATEMENT_TEMPLATES = frozenset({GROUP_TEMPLATE, GROUP_FINAL_TEMPLATE})
#: Templates that list every invoice of the case (the others are about the first invoice only).
LISTING_TEMPLATES = STATEMENT_TEMPLATES | {
    "promise_broken",
    "promise_reminder",
    "installment_missed",
}


def resolve_template(name: str, book: TemplateBook) -> str:
    """The template to use for a step's template name (an organisation may invent its own)."""
    return resolve_template_name(name, book.templates)


@dataclass
class Style:
    """How to write: the step's tone, and what an operator asked for in a revision."""

    tone: str = "friendly"
    length: Length = "normal"
    formal: bool = False
    mention_promise: CaseCommitment | None = None
    mention_plan: bool = False


@lru_cache(maxsize=64)
def book_for(language: str, version: str = "v1") -> TemplateBook:
    """The templates of ``version`` in ``language``; English when there are none (the language
    check will hold such a draft for a human rather than send English to a German contact)."""
    if language in template_languages(version):
        return templates(language, version)
    return templates("en", version)


def case_book(case: CaseFile) -> TemplateBook:
    """The template book a case is written from (its language, its template version)."""
    return book_for(case.language, case.template_version)


def is_sms(case: CaseFile) -> bool:
    return case.channel is Channel.SMS


def template_name(case: CaseFile, book: TemplateBook) -> str:
    """The template the case is written from: its step's, unless the case lacks what that one
    states (a promise, an installment, invoices at their final notice)."""
    name = resolve_template(case.template, book)
    if name in PROMISE_TEMPLATES and case.promise is None:
        return "generic_reminder"
    if name == "installment_missed" and case.installment is None:
        return "generic_reminder"
    if name == GROUP_FINAL_TEMPLATE and not case.final_notice_invoices:
        return GROUP_TEMPLATE
    return name


def _headings(book: TemplateBook) -> bool:
    """Whether the book has the words of a statement's aging-bucket headings (v2 on)."""
    return "coming_due" in book.labels and "overdue_bucket" in book.labels


def _template_values(
    case: CaseFile, book: TemplateBook, primary: CaseInvoice, lines: str
) -> dict[str, Any]:
    """The placeholders a template fills: the primary invoice's figures, the listing, and the
    final-notice, promise and installment words when the case has them."""
    values: dict[str, Any] = {
        "first_name": case.first_name,
        "full_name": case.contact_name,
        "customer_name": case.customer_name,
        "org_name": case.org_name,
        "sender_name": case.sender_name,
        "invoice_number": primary.number,
        "amount": primary.amount_text,
        "balance": primary.balance_text,
        "due_date": primary.due_date_text,
        "days_overdue": primary.days_past_due,
        "pay_link": case.pay_link,
        "invoice_lines": lines,
        "paid_amount": primary.paid_text or "",
    }
    if case.final_notice_invoices:
        finals = case.final_notice_invoices
        joined = f" {book.labels.get('and', 'and')} ".join(
            [", ".join(finals[:-1]), finals[-1]] if len(finals) > 1 else finals
        )
        values["final_invoices"] = joined
        key = "final_one" if len(finals) == 1 else "final_many"
        if key in book.mentions:
            values["final_notice"] = fill(book.mentions[key], values)
    if case.promise is not None:
        values.update(promise_amount=case.promise.amount_text, promise_date=case.promise.date_text)
    if case.installment is not None:
        values.update(
            installment_amount=case.installment.amount_text,
            installment_date=case.installment.date_text,
        )
    return values


def _extra_sentences(
    case: CaseFile,
    style: Style,
    book: TemplateBook,
    tmpl: Mapping[str, Any],
    name: str,
    primary: CaseInvoice,
    values: dict[str, Any],
    short: bool,
) -> list[str]:
    """Sentences added after the template's text: a part-payment, a promise or plan an operator
    asked to mention, the purchase-order reference (none in a short text or a call script)."""
    extras: list[str] = []
    single = name not in LISTING_TEMPLATES
    if single and not short and primary.paid_text and len(case.invoices) == 1:
        extras.append(fill(book.mentions["partial"], values))
    if style.mention_promise is not None:
        p = style.mention_promise
        mention = {  # formatted here: an earlier revision may have changed the language
            "promise_amount": format_amount(p.amount_minor, p.currency, case.locale),
            "promise_date": format_day(p.date, case.locale),
        }
        past = p.date < case.as_of or p.status == "missed"
        extras.append(fill(book.mentions["promise_past" if past else "promise"], mention))
    if style.mention_plan and case.installment is not None:
        extras.append(fill(book.mentions["plan"], values))
    if case.po_reference and not short and not tmpl.get("script") and "reference" in book.mentions:
        extras.append(fill(book.mentions["reference"], {"po_reference": case.po_reference}))
    return extras


def render(case: CaseFile, style: Style | None = None) -> tuple[str, str, TemplateBook]:
    """Subject and body for the case, filled from the versioned templates."""
    style = style or Style(tone=case.tone)
    book = case_book(case)
    name = template_name(case, book)
    sms = is_sms(case)
    short = style.length == "short" or sms
    tmpl = book.template(name)
    primary = case.invoices[0]
    # A statement's listing: headings by aging bucket, subtotals and totals per currency, except
    # in an SMS, which keeps its room for the invoices and the link.
    statement = name in STATEMENT_TEMPLATES and not sms
    lines = "\n".join(
        listing_lines(
            case.invoices, case.as_of, book.labels, case.locale,
            headings=statement and _headings(book), totals=statement,
        )
    )  # fmt: skip
    values = _template_values(case, book, primary, lines)
    body_key = "short" if short and "short" in tmpl else "body"
    try:
        subject = fill(str(tmpl["subject"]), values)
        text = fill(str(tmpl[body_key]), values)
    except PromptError as exc:
        raise PromptError(f"template {name} ({book.language}): {exc}") from exc
    extras = _extra_sentences(case, style, book, tmpl, name, primary, values, short)
    if extras:
        text = text + "\n\n" + " ".join(extras)
    if case.customer_name.endswith("."):  # "Falcon S.L." at the end of a sentence
        text = text.replace(f"{case.customer_name}.", case.customer_name)
        subject = subject.replace(f"{case.customer_name}.", case.customer_name)
    if tmpl.get("script"):
        return subject, text, book
    formal = style.formal or book.tone_greeting.get(style.tone, "informal") == "formal"
    if sms:
        return subject, sms_text(book, values, text), book
    greeting = fill(book.greetings["formal" if formal else "informal"], values)
    team = case.persona in (DraftPersona.AUTOPILOT,) or case.sender_name.endswith(
        "Accounts Receivable"
    )
    signoff_key = ("formal_team" if team else "formal") if style.formal else case.persona.value
    signoff = fill(book.signoffs.get(signoff_key, book.signoffs["autopilot"]), values)
    return subject, f"{greeting}\n\n{text}\n\n{signoff}", book


def sms_text(book: TemplateBook, values: Mapping[str, Any], text: str) -> str:
    """An SMS: the short text with the contact's first name and the sender, within
    ``SMS_MAX_CHARS``; the greeting and then the sender go first when it would not fit (the
    invoice, the amount and the pay link never do)."""
    greeting = fill(book.greetings["informal"], values)
    signoff = fill(book.mentions["sms_signoff"], values) if "sms_signoff" in book.mentions else ""
    for parts in ((greeting, text, signoff), (text, signoff), (text,)):
        candidate = "\n".join(p for p in parts if p)
        if len(candidate) <= SMS_MAX_CHARS:
            return candidate
    return text


def stated_facts(case: CaseFile, style: Style | None = None) -> dict[str, Any]:
    """The facts a rendered message states, as the typed output declares them."""
    book = case_book(case)
    name = template_name(case, book)
    amounts: list[tuple[int, str]] = []
    dates: list[date] = []
    invoices = case.invoices if name in LISTING_TEMPLATES else case.invoices[:1]
    numbers = [i.number for i in invoices]
    for inv in invoices:
        amounts.append((inv.balance_minor, inv.currency))
        dates.append(inv.due_date)
    short = (style is not None and style.length == "short") or is_sms(case)
    if name in PROMISE_TEMPLATES and case.promise is not None:
        amounts.append((case.promise.amount_minor, case.promise.currency))
        dates.append(case.promise.date)
    if name == "installment_missed" and case.installment is not None:
        amounts.append((case.installment.amount_minor, case.installment.currency))
        dates.append(case.installment.date)
    if name in STATEMENT_TEMPLATES and not is_sms(case):  # as ``render`` lists them
        amounts.extend(
            listing_amounts(case.invoices, case.as_of)
            if _headings(book)
            else listing_totals(case.invoices)
        )
    if short and name in LISTING_TEMPLATES - STATEMENT_TEMPLATES:
        numbers, amounts, dates = numbers[:1], amounts[-1:], dates[-1:]
    primary = case.invoices[0]
    if (
        not short
        and name not in LISTING_TEMPLATES
        and primary.paid_text
        and len(case.invoices) == 1
    ):
        amounts.append((primary.paid_minor, primary.currency))
    if style is not None and style.mention_promise is not None:
        amounts.append((style.mention_promise.amount_minor, style.mention_promise.currency))
        dates.append(style.mention_promise.date)
    return {
        "invoice_numbers": list(dict.fromkeys(numbers)),
        "amounts": [{"amount_minor": m, "currency": c} for m, c in dict.fromkeys(amounts)],
        "dates": list(dict.fromkeys(dates)),
        "pay_link": case.pay_link,
    }
