"""Consolidated outreach: one message per customer and contact for every invoice that is due.

Why: a customer with six due invoices should get one reminder, not six (the most repeated request
in the trackers of the open-source dunning tools). ``group_due`` takes Autopilot's selection
(``tools.outreach.due.select_due``) and folds the cadence items of one customer and contact
into an ``OutreachGroup``:

- the invoices are grouped as the payer reads them: overdue by aging bucket (oldest bucket first),
  then coming due, each heading with a subtotal per currency where it helps (``sections``,
  ``listing_lines``: the drafter writes this same listing, in the contact's language);
- totals are **per currency**, never summed across currencies;
- the group keeps every item it covers (``items``), so each invoice's cadence history can still
  record its own step (its ``run_key``); the group speaks at its firmest member's step and tone,
  a final notice above all: then the message keeps the final-notice wording, about the invoices
  that reached it only (``GROUP_FINAL_TEMPLATE``), within the same guardrails as any draft (no
  legal threat, a step in Shadow Mode keeps the whole message in review);
- a disputed invoice of the customer is left out and listed in ``left_out`` with the reason, for
  the reviewer only (``reviewer_notes``, stored with the draft and shown in the inspector;
  ``payer_lines`` never mentions it);
- ``attach_statement`` says the message should carry the PDF statement of account
  (``tools.ledger.statement``): statements and the final-notice step;
- segments named in ``keep_separate`` keep one message per invoice, and follow-ups about a broken
  promise or a missed installment stay single (they are about one commitment).

``consolidate`` is the step Autopilot runs after selection: each group becomes one ``DueItem``
(the ``account_statement`` listing, or ``final_notice_statement``, at the tone of the group's
firmest step, under the group's ``run_key``), and an item a group draft already covered (a
group draft of an earlier pass that named the invoice, written on or after the item's step date)
is not drafted again.

Everything here is read from the ledger; the drafter writes around ``payer_lines`` and grounding
checks every figure as for any draft. This module only groups: it sends nothing and writes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Generic, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import (
    OPEN_DISPUTE_STATUSES,
    AgingBucket,
    CadenceStep,
    Channel,
    Dispute,
    Draft,
    DraftKind,
    Invoice,
    InvoiceStatus,
    aging_bucket,
)
from prompts.registry import latest, resolve_template_name, templates
from tools.kit.formatting import format_amount, format_day
from tools.ledger.policy_overrides import policy_set_for
from tools.ledger.statement import STATEMENT_STEPS
from tools.outreach.due import DueItem, Selection, existing_run_keys

#: The drafter template a consolidated message is written from (it lists every invoice).
GROUP_TEMPLATE = "account_statement"
#: The same listing with the final-notice wording, for a group one of whose invoices has reached
#: the final-notice step of its cadence (the wording names those invoices only).
GROUP_FINAL_TEMPLATE = "final_notice_statement"
#: The drafter template of a cadence's final notice (what a step's template name resolves to).
FINAL_NOTICE = "final_notice"
#: The tones of cadence steps, gentlest first (``tools.admin.segments.TONES``; "formal" is what a
#: reviser may ask for): a group speaks in the firmest tone of its invoices' steps.
TONE_ORDER = ("warm", "friendly", "formal", "professional", "firm")
#: Run keys of consolidated drafts start with this (``OutreachGroup.run_key``).
GROUP_PREFIX = "group:"
#: Oldest bucket first: what a payer should settle first comes first.
_OVERDUE_ORDER = [
    AgingBucket.D90_PLUS,
    AgingBucket.D61_90,
    AgingBucket.D31_60,
    AgingBucket.D1_30,
]
#: The headings of a consolidated message, in order: overdue by bucket, then coming due.
SECTION_ORDER = [*_OVERDUE_ORDER, AgingBucket.CURRENT]


@dataclass(frozen=True)
class GroupedInvoice:
    invoice_id: int
    number: str
    currency: str
    balance_minor: int
    due_date: date
    bucket: str
    step_key: str
    run_key: str


@dataclass
class OutreachGroup:
    """One consolidated message's content: which invoices, how grouped, what totals."""

    customer_id: int
    contact_id: int
    segment_id: int | None
    segment: str | None
    as_of: date
    items: list[DueItem]
    overdue: dict[str, list[GroupedInvoice]] = field(default_factory=dict)
    coming_due: list[GroupedInvoice] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    left_out: list[tuple[str, str]] = field(default_factory=list)
    step_key: str = ""
    template: str = ""
    attach_statement: bool = False
    lead: DueItem | None = None
    dropped: list[DueItem] = field(default_factory=list)
    #: numbers of the grouped invoices whose cadence has reached its final-notice step
    final_notice: list[str] = field(default_factory=list)

    @property
    def invoices(self) -> list[GroupedInvoice]:
        return [i for b in self.overdue.values() for i in b] + self.coming_due

    @property
    def run_key(self) -> str:
        """Stable per customer, contact, date and covered items (idempotent like single items)."""
        keys = ",".join(sorted(i.run_key for i in self.items))
        digest = hashlib.sha256(keys.encode()).hexdigest()[:16]
        day = self.as_of.isoformat()
        return f"{GROUP_PREFIX}{self.customer_id}:{self.contact_id}:{day}:{digest}"

    def reviewer_notes(self) -> list[str]:
        """What the reviewer sees and the payer never does: what was left out and why, and why
        the message speaks as a final notice when it does."""
        notes = [f"{number} is left out: {reason}." for number, reason in self.left_out]
        if self.final_notice:
            which = ", ".join(self.final_notice)
            verb = "has" if len(self.final_notice) == 1 else "have"
            notes.append(
                f"Final-notice wording: {which} {verb} reached the final-notice step of the "
                "cadence; the other invoices are listed without it."
            )
        return notes


def group_due(
    session: Session,
    org_id: int,
    items: Sequence[DueItem],
    as_of: date,
    *,
    keep_separate: Collection[str] = (),
) -> tuple[list[OutreachGroup], list[DueItem]]:
    """Fold cadence items into one group per customer and contact.

    Returns the groups (two or more invoices each) and the items that stay single: follow-ups,
    segments in ``keep_separate``, and customers with only one due invoice. The group's step is
    the most advanced cadence step among its items (by its position in the cadence).
    """
    single: list[DueItem] = []
    buckets: dict[tuple[int, int], list[DueItem]] = {}
    for item in items:
        if (
            item.kind != DraftKind.CADENCE
            or item.channel != Channel.EMAIL
            or (item.segment or "") in keep_separate
        ):
            single.append(item)
            continue
        buckets.setdefault((item.customer_id, item.contact_id), []).append(item)
    groups: list[OutreachGroup] = []
    grouped = {k: m for k, m in buckets.items() if len(m) >= 2}
    for members in (m for m in buckets.values() if len(m) < 2):
        single.extend(members)
    if not grouped:
        return groups, single
    # Three reads for all groups (Autopilot passes cover thousands of customers).
    members_all = [m for ms in grouped.values() for m in ms]
    invoices = {
        inv.id: inv
        for inv in session.scalars(
            select(Invoice).where(
                Invoice.org_id == org_id,
                Invoice.id.in_(sorted({m.invoice_id for m in members_all})),
            )
        )
    }
    disputed = _disputed(session, org_id, sorted({c for c, _ in grouped}))
    position = _positions(session, members_all)
    for (customer_id, contact_id), members in grouped.items():
        groups.append(
            _group(
                customer_id,
                contact_id,
                members,
                as_of,
                invoices,
                disputed.get(customer_id, {}),
                position,
            )  # fmt: skip
        )
    return groups, single


def _group(
    customer_id: int,
    contact_id: int,
    members: list[DueItem],
    as_of: date,
    invoices: dict[int, Invoice],
    disputed: dict[int, tuple[str, str]],
    position: dict[int, int],
) -> OutreachGroup:
    by_id = {m.invoice_id: m for m in members}
    group = OutreachGroup(
        customer_id=customer_id, contact_id=contact_id, segment_id=members[0].segment_id,
        segment=members[0].segment, as_of=as_of, items=list(members),
    )  # fmt: skip
    mine = [invoices[i] for i in by_id if i in invoices]
    for inv in sorted(mine, key=lambda i: (i.due_date, i.id)):
        if inv.id in disputed or inv.disputed or inv.status != InvoiceStatus.OPEN:
            reason = disputed[inv.id][1] if inv.id in disputed else "in dispute"
            group.left_out.append((inv.number, reason))
            group.dropped += [m for m in group.items if m.invoice_id == inv.id]
            group.items = [m for m in group.items if m.invoice_id != inv.id]
            continue
        item = by_id[inv.id]
        bucket = aging_bucket(inv.due_date, as_of)
        line = GroupedInvoice(
            inv.id, inv.number, inv.currency, inv.balance_minor, inv.due_date, bucket.value,
            item.step_key, item.run_key,
        )  # fmt: skip
        if bucket == AgingBucket.CURRENT:
            group.coming_due.append(line)
        else:
            group.overdue.setdefault(bucket.value, []).append(line)
        group.totals[inv.currency] = group.totals.get(inv.currency, 0) + inv.balance_minor
    group.overdue = {
        b.value: group.overdue[b.value] for b in _OVERDUE_ORDER if b.value in group.overdue
    }
    # Invoices of the customer in dispute that were not due anyway: still said to the reviewer.
    named = {n for n, _ in group.left_out}
    for number, reason in disputed.values():
        if number not in named:
            group.left_out.append((number, reason))
    if group.items:
        lead = max(group.items, key=lambda m: _severity(m, position))
        group.step_key, group.template, group.lead = lead.step_key, lead.template, lead
        finals = {m.invoice_id for m in group.items if is_final_notice(m.template)}
        group.final_notice = [i.number for i in group.invoices if i.invoice_id in finals]
    group.attach_statement = any(m.template in STATEMENT_STEPS for m in group.items)
    return group


def is_final_notice(template: str) -> bool:
    """Whether a cadence step's template is written as a final notice (an organisation may name
    its steps itself: "final_demand" is one too, as the drafter reads it)."""
    return resolve_template_name(template, templates("en", latest("drafter")).templates) == (
        FINAL_NOTICE
    )


def _severity(item: DueItem, position: dict[int, int]) -> tuple[bool, int, int, date]:
    """How firm an item's step is: a final notice above all, then the firmer tone, then the step
    that comes last in its cadence. A group speaks at its firmest member's step and tone."""
    tone = TONE_ORDER.index(item.tone) if item.tone in TONE_ORDER else 1
    return (
        is_final_notice(item.template),
        tone,
        position.get(item.step_id or 0, -1),
        item.step_date,
    )


def _disputed(
    session: Session, org_id: int, customer_ids: Sequence[int]
) -> dict[int, dict[int, tuple[str, str]]]:
    """Per customer, its open invoices in an open dispute: number and the reason in words."""
    rows = session.execute(
        select(
            Invoice.customer_id, Dispute.invoice_id, Invoice.number, Dispute.reason, Dispute.status
        )
        .join(Invoice, Invoice.id == Dispute.invoice_id)
        .where(
            Dispute.org_id == org_id,
            Invoice.customer_id.in_(customer_ids),
            Invoice.status == InvoiceStatus.OPEN,
            Dispute.status.in_(OPEN_DISPUTE_STATUSES),
        )
        .order_by(Invoice.due_date, Invoice.id)
    ).all()
    words = lambda v: str(v).replace("_", " ")  # noqa: E731
    out: dict[int, dict[int, tuple[str, str]]] = {}
    for r in rows:
        reason = f"in dispute ({words(r.reason)}, {words(r.status.value)})"
        out.setdefault(r.customer_id, {})[r.invoice_id] = (r.number, reason)
    return out


def _positions(session: Session, items: Sequence[DueItem]) -> dict[int, int]:
    """Each cadence step's position in its cadence (which of a group's steps is the firmest)."""
    ids = sorted({m.step_id for m in items if m.step_id is not None})
    if not ids:
        return {}
    return dict(
        session.execute(select(CadenceStep.id, CadenceStep.position).where(CadenceStep.id.in_(ids)))
        .tuples()
        .all()
    )


class Listed(Protocol):
    """An invoice as a listing shows it (a ``GroupedInvoice``, or the drafter's case invoice)."""

    @property
    def number(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def balance_minor(self) -> int: ...
    @property
    def due_date(self) -> date: ...


L = TypeVar("L", bound=Listed)


@dataclass(frozen=True)
class Section(Generic[L]):
    """One heading of a consolidated listing: an aging bucket (Current: coming due), its
    invoices (due first, first), and its subtotal per currency where one helps the reader."""

    bucket: AgingBucket
    invoices: list[L]
    subtotals: list[tuple[int, str]]


def sections(invoices: Sequence[L], as_of: date) -> list[Section[L]]:
    """The invoices under their headings: overdue by aging bucket, oldest first, then coming due.

    A bucket shows a subtotal in a currency when it holds two or more invoices in it and other
    buckets hold some too (a single invoice's balance, or a subtotal equal to the total, says
    nothing new). Totals stay per currency (``listing_totals``). Grounding accepts these
    subtotals: each is the sum of named invoices due within one period
    (``tools.grounding.truth.LedgerTruth.with_named_totals``).
    """
    grouped: dict[AgingBucket, list[L]] = {}
    for inv in sorted(invoices, key=lambda i: i.due_date):
        grouped.setdefault(aging_bucket(inv.due_date, as_of), []).append(inv)
    spread: dict[str, int] = {}
    for members in grouped.values():
        for cur in {i.currency for i in members}:
            spread[cur] = spread.get(cur, 0) + 1
    out: list[Section[L]] = []
    for bucket in SECTION_ORDER:
        members = grouped.get(bucket, [])
        if not members:
            continue
        subtotals: list[tuple[int, str]] = []
        for cur in dict.fromkeys(i.currency for i in members):
            mine = [i.balance_minor for i in members if i.currency == cur]
            if len(mine) >= 2 and spread[cur] >= 2:
                subtotals.append((sum(mine), cur))
        out.append(Section(bucket, members, subtotals))
    return out


def listing_totals(invoices: Sequence[Listed]) -> list[tuple[int, str]]:
    """The open balance of the listed invoices per currency (never summed across currencies), in
    the order the currencies first appear; none for a single invoice."""
    if len(invoices) < 2:
        return []
    totals: dict[str, int] = {}
    for inv in invoices:
        totals[inv.currency] = totals.get(inv.currency, 0) + inv.balance_minor
    return [(minor, cur) for cur, minor in totals.items()]


def listing_lines(
    invoices: Sequence[Listed],
    as_of: date,
    labels: Mapping[str, str],
    locale: str,
    *,
    headings: bool = True,
    totals: bool = True,
) -> list[str]:
    """The invoice listing of a statement-style message, line by line: with ``headings`` under
    its aging-bucket headings with their subtotals (``sections``), else oldest first; then the
    total per currency. Every figure is the ledger's, formatted for ``locale``; the labels are
    the template book's (its language). The e-mail and ``payer_lines`` are this same text."""
    label_total = labels.get("total", "Total")
    label_sub = labels.get("subtotal", label_total)
    lines: list[str] = []
    if headings:
        for section in sections(invoices, as_of):
            if section.bucket == AgingBucket.CURRENT:
                lines.append(labels.get("coming_due", "Coming due:"))
            else:
                heading = labels.get("overdue_bucket", "Overdue {bucket} days:")
                lines.append(heading.replace("{bucket}", section.bucket.value))
            lines += [_line(i, labels, locale) for i in section.invoices]
            lines += [
                f"{label_sub} {cur}: {format_amount(minor, cur, locale)}"
                for minor, cur in section.subtotals
            ]
    else:
        lines += [_line(i, labels, locale) for i in invoices]
    if totals:
        lines += [
            f"{label_total} {cur}: {format_amount(minor, cur, locale)}"
            for minor, cur in listing_totals(invoices)
        ]
    return lines


def listing_amounts(invoices: Sequence[Listed], as_of: date) -> list[tuple[int, str]]:
    """The subtotals and totals ``listing_lines`` states (what a drafter declares with it)."""
    subtotals = [t for s in sections(invoices, as_of) for t in s.subtotals]
    return subtotals + listing_totals(invoices)


def payer_lines(group: OutreachGroup, locale: str = "en_US", language: str = "en") -> list[str]:
    """The invoice listing of the group's message, as the drafter writes it (the labels of its
    newest templates in ``language``): headings by aging bucket, subtotals, totals per currency,
    every figure from the ledger. Disputed invoices never appear."""
    labels = templates(language, latest("drafter")).labels
    return listing_lines(group.invoices, group.as_of, labels, locale)


def _line(i: Listed, labels: Mapping[str, str], locale: str) -> str:
    return (
        f"- {labels.get('invoice', 'Invoice')} {i.number}: "
        f"{format_amount(i.balance_minor, i.currency, locale)}, "
        f"{labels.get('due', 'due')} {format_day(i.due_date, locale)}"
    )


# --- Autopilot's step ---------------------------------------------------------------------------


def as_item(group: OutreachGroup) -> DueItem | None:
    """The group as one item to draft: every grouped invoice listed (overdue, oldest bucket first,
    then coming due), at the step and tone of its firmest member, under the group's run key.
    A group with an invoice at its final-notice step is written with the final-notice wording
    about those invoices (``GROUP_FINAL_TEMPLATE``). The reviewer notes, the invoices at the
    final notice and the steps of every member travel with the item (a step in Shadow Mode on
    its own keeps the whole message in review).
    None when fewer than two invoices are left to list (its items then go out one by one)."""
    lines = group.invoices
    if len(lines) < 2 or group.lead is None:
        return None
    lead = group.lead
    finals = set(group.final_notice)
    return DueItem(
        invoice_id=lines[0].invoice_id,
        customer_id=group.customer_id,
        contact_id=group.contact_id,
        segment_id=group.segment_id,
        segment=group.segment,
        kind=DraftKind.CADENCE,
        step_key=lead.step_key,
        step_date=lead.step_date,
        template=GROUP_FINAL_TEMPLATE if finals else GROUP_TEMPLATE,
        channel=Channel.EMAIL,
        tone=lead.tone,
        step_id=lead.step_id,
        related_invoice_ids=tuple(i.invoice_id for i in lines[1:]),
        key=group.run_key,
        final_notice_ids=tuple(i.invoice_id for i in lines if i.number in finals),
        member_step_ids=tuple(sorted({m.step_id for m in group.items if m.step_id is not None})),
        reviewer_notes=tuple(group.reviewer_notes()),
    )


def covered_run_keys(session: Session, org_id: int, items: Sequence[DueItem]) -> dict[str, str]:
    """Run keys of cadence items an earlier consolidated draft already covered, each with the run
    key of the (latest) group draft that covered it.

    Why it can be read back without a table of its own: a group draft's run key carries the date
    it was written for, and its stated facts the invoice numbers its text names (the grounding
    reader's). An invoice's due step has a step date on or before that date; its next step's date
    is after it (else that step would have been the due one). So an item is covered exactly when a
    group draft of the customer names its invoice and was written on or after its step date.
    """
    cadence = [i for i in items if i.kind == DraftKind.CADENCE]
    if not cadence:
        return {}
    customers = sorted({i.customer_id for i in cadence})
    named: dict[tuple[int, str], tuple[date, str]] = {}
    for customer_id, run_key, stated in session.execute(
        select(Draft.customer_id, Draft.run_key, Draft.stated_facts).where(
            Draft.org_id == org_id,
            Draft.customer_id.in_(customers),
            Draft.run_key.like(f"{GROUP_PREFIX}%"),
        )
    ):
        written = _group_date(run_key)
        if written is None:
            continue
        for number in (stated or {}).get("invoice_numbers") or []:
            key = (customer_id, str(number))
            if key not in named or named[key][0] < written:
                named[key] = (written, str(run_key))
    if not named:
        return {}
    numbers = dict(
        session.execute(
            select(Invoice.id, Invoice.number).where(
                Invoice.org_id == org_id, Invoice.id.in_(sorted({i.invoice_id for i in cadence}))
            )
        )
        .tuples()
        .all()
    )
    covered: dict[str, str] = {}
    for i in cadence:
        written, group = named.get((i.customer_id, numbers.get(i.invoice_id, "")), (date.min, ""))
        if written >= i.step_date:
            covered[i.run_key] = group
    return covered


def _group_date(run_key: str | None) -> date | None:
    parts = (run_key or "").split(":")
    try:
        return date.fromisoformat(parts[3]) if len(parts) >= 5 else None
    except ValueError:
        return None


def consolidate(
    session: Session,
    org_id: int,
    selection: Selection,
    as_of: date,
    *,
    keep_separate: Collection[str] | None = None,
) -> Selection:
    """Autopilot's selection with each customer's due cadence steps folded into one message.

    Items covered by an earlier group draft, and groups already drafted today, count as
    ``existing``, one per message (as they counted when drafted); what stays single keeps its
    place, a group takes its first member's place.
    ``keep_separate``: segment names that keep one message per invoice (default: the
    organisation's policy, ``cadence.one_message_per_invoice_segments``).
    """
    if keep_separate is None:
        keep_separate = policy_set_for(session, org_id).cadence.one_message_per_invoice_segments
    covered = covered_run_keys(session, org_id, selection.items)
    fresh = [i for i in selection.items if i.run_key not in covered]
    groups, _ = group_due(session, org_id, fresh, as_of, keep_separate=keep_separate)
    folded: dict[str, DueItem | None] = {}
    for group in groups:
        item = as_item(group)
        if item is None:
            continue
        # Members left out (in dispute) are not drafted alone either: the dispute owns them.
        for member in [*group.items, *group.dropped]:
            folded[member.run_key] = None
        folded[group.items[0].run_key] = item
    items = [folded.get(i.run_key, i) for i in fresh]
    out = [i for i in items if i is not None]
    group_keys = [i.run_key for i in out if i.run_key.startswith(GROUP_PREFIX)]
    done = existing_run_keys(session, org_id, group_keys)
    out = [i for i in out if i.run_key not in done]
    return replace(
        selection,
        items=out,
        # a message already written counts once, however many invoices it named
        existing=selection.existing + len(set(covered.values()) - done) + len(done),
        excluded=selection.excluded,
    )
