"""Rejected drafts become eval cases: the review panel's "no, because ..." as a regression test.

Each rejected draft (``Draft.status == rejected`` with its ``rejection_reason``) is exported as one
case: the customer's ledger as it stood on the day of the draft (invoices with their balance then,
payments up to that day, promises, plans, disputes, recent notes and touches), the same drafting
task (invoice, template, persona, channel, tone), the facts a right draft states, and the reviewer's
reason and the rejected text in the case's metadata so whoever curates the case can add a sharper
expectation.

Names, e-mail addresses and phone numbers are replaced by placeholders by default (``anonymize``):
datasets get committed, payers' details should not. Amounts, dates and invoice numbers stay: they
are what the checks compare.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from evals.loader import DatasetError, load_file
from evals.scenarios import CaseFile
from memory import clock
from memory.models import (
    Activity,
    CadenceStep,
    Contact,
    Customer,
    Dispute,
    Draft,
    DraftStatus,
    Invoice,
    Note,
    Organisation,
    Payment,
    PaymentPlan,
    PlanInstallment,
    PromiseToPay,
    Segment,
    User,
    plan_invoice,
    promise_invoice,
)
from memory.money import to_decimal

MAX_INVOICES = 30
MAX_NOTES = 10
MAX_TOUCHES = 10
_PERSONAS = {"Admin", "Controller", "Collections Manager", "Collector", "Billing Admin", "Sales",
             "CSM", "Legal", "Viewer"}  # fmt: skip
_TEMPLATES = {
    "pre_due_courtesy", "due_today", "friendly_reminder", "second_reminder", "firm_reminder",
    "final_notice", "promise_broken", "installment_missed", "sales_nudge", "csm_nudge",
    "generic_reminder", "account_statement",
}  # fmt: skip


class ExportError(ValueError):
    """The export cannot be written; the message says what to do."""


@dataclass
class Anonymizer:
    """Consistent placeholders for every real name, e-mail address and phone number."""

    enabled: bool = True
    replacements: dict[str, str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def _next(self, kind: str) -> int:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        return self._counts[kind]

    def person(self, name: str, kind: str = "Contact") -> str:
        if not self.enabled or not name.strip():
            return name
        if name not in self.replacements:
            n = self._next(kind)
            letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            fake = f"{kind} {letters[(n - 1) % 26]}{'' if n <= 26 else n}"
            self.replacements[name] = fake
            first = name.split()[0]
            if len(first) > 2 and first not in self.replacements:
                self.replacements[first] = fake.split()[0] if " " in fake else fake
        return self.replacements[name]

    def company(self, name: str, ident: int) -> str:
        if not self.enabled:
            return name
        return self.replacements.setdefault(name, f"Customer {ident} Ltd")

    def email(self, email: str | None, domain: str = "customer.example") -> str | None:
        if not self.enabled or not email:
            return email
        if email not in self.replacements:
            self.replacements[email] = f"contact{self._next('email')}@{domain}"
        return self.replacements[email]

    def phone(self, phone: str | None) -> str | None:
        if not self.enabled or not phone:
            return phone
        if phone not in self.replacements:
            self.replacements[phone] = f"+1555010{self._next('phone'):04d}"
        return self.replacements[phone]

    def text(self, text: str | None) -> str | None:
        if not self.enabled or not text:
            return text
        out = text
        for real in sorted(self.replacements, key=len, reverse=True):
            out = re.sub(
                rf"(?<!\w){re.escape(real)}(?!\w)", self.replacements[real], out, flags=re.I
            )
        return out


def _money(minor: int, currency: str) -> str:
    return str(to_decimal(minor, currency))


def _case_name(org: Organisation, draft: Draft) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", org.slug.lower()).strip("-") or "org"
    return f"rejected-{slug}-{draft.id}"


def _template(session: Session, draft: Draft) -> str:
    if draft.cadence_step_id is not None:
        step = session.get(CadenceStep, draft.cadence_step_id)
        if step is not None and step.template in _TEMPLATES:
            return step.template
    stated = (draft.stated_facts or {}).get("template")
    if isinstance(stated, str) and stated in _TEMPLATES:
        return stated
    if draft.persona.value in ("sales_nudge", "csm_nudge"):
        return draft.persona.value
    return "generic_reminder"


def _replay_contacts(
    session: Session, org: Organisation, customer: Customer, draft: Draft
) -> list[Contact]:
    """The customer's contacts, primary first, with the draft's addressee put at the front."""
    contacts = list(
        session.scalars(
            select(Contact)
            .where(Contact.org_id == org.id, Contact.customer_id == customer.id)
            .order_by(Contact.is_primary.desc(), Contact.id)
        )
    )
    if not contacts:
        raise ExportError(f"draft {draft.id}: the customer has no contact")
    if draft.contact_id is not None:
        contacts.sort(key=lambda c: c.id != draft.contact_id)
    return contacts


def _replay_invoices(
    session: Session, org: Organisation, customer: Customer, invoice: Invoice, as_of: date
) -> list[Invoice]:
    """The customer's latest invoices issued by the draft's day, always with the draft's own."""
    invoices = list(
        session.scalars(
            select(Invoice)
            .where(Invoice.org_id == org.id, Invoice.customer_id == customer.id)
            .where(Invoice.issue_date <= as_of)
            .order_by(Invoice.due_date.desc(), Invoice.id)
            .limit(MAX_INVOICES)
        )
    )
    if invoice not in invoices:
        invoices.append(invoice)
    return invoices


def _invoice_and_payment_specs(
    session: Session, org: Organisation, invoices: list[Invoice], as_of: date
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Invoices with their balance as it stood then (later payments added back), and the payments
    received up to that day."""
    numbers = {i.id: i.number for i in invoices}
    payments = list(
        session.scalars(
            select(Payment).where(
                Payment.org_id == org.id, Payment.invoice_id.in_([i.id for i in invoices])
            )
        )
    )
    later: dict[int, int] = {}
    for p in payments:
        if p.received_on > as_of and p.invoice_id is not None:
            later[p.invoice_id] = later.get(p.invoice_id, 0) + (p.applied_minor or p.amount_minor)
    inv_specs = []
    for inv in invoices:
        balance = min(inv.amount_minor, inv.balance_minor + later.get(inv.id, 0))
        status = "open" if balance > 0 and inv.status.value != "void" else inv.status.value
        inv_specs.append(
            {
                "number": inv.number,
                "amount": _money(inv.amount_minor, inv.currency),
                "balance": _money(balance, inv.currency),
                "currency": inv.currency,
                "issue_date": inv.issue_date,
                "due_date": inv.due_date,
                "status": status if status in ("open", "paid", "void") else "open",
                "disputed": inv.disputed,
            }
        )
    pay_specs = [
        {
            "invoice": numbers[p.invoice_id],
            "amount": _money(p.amount_minor, p.currency),
            "received_on": p.received_on,
            "method": p.method,
        }
        for p in payments
        if p.received_on <= as_of and p.invoice_id in numbers
    ]
    return inv_specs, pay_specs


def _promise_specs(
    session: Session, org: Organisation, customer: Customer, numbers: dict[int, str], as_of: date
) -> list[dict[str, Any]]:
    """Promises made by the draft's day that cover at least one replayed invoice."""
    promise_specs = []
    for pr in session.scalars(
        select(PromiseToPay).where(
            PromiseToPay.org_id == org.id, PromiseToPay.customer_id == customer.id
        )
    ):
        covered = [
            numbers[i]
            for i in session.scalars(
                select(promise_invoice.c.invoice_id).where(promise_invoice.c.promise_id == pr.id)
            )
            if i in numbers
        ]
        if covered and pr.created_at.astimezone(UTC).date() <= as_of:
            promise_specs.append(
                {
                    "invoices": covered,
                    "amount": _money(pr.amount_minor, pr.currency),
                    "promised_date": pr.promised_date,
                    "status": pr.status.value,
                    "grace_days": pr.grace_days,
                }
            )
    return promise_specs


def _plan_specs(
    session: Session, org: Organisation, customer: Customer, numbers: dict[int, str]
) -> list[dict[str, Any]]:
    """Payment plans (with their installments) that cover at least one replayed invoice."""
    plan_specs = []
    for plan in session.scalars(
        select(PaymentPlan).where(
            PaymentPlan.org_id == org.id, PaymentPlan.customer_id == customer.id
        )
    ):
        covered = [
            numbers[i]
            for i in session.scalars(
                select(plan_invoice.c.invoice_id).where(plan_invoice.c.plan_id == plan.id)
            )
            if i in numbers
        ]
        items = list(
            session.scalars(
                select(PlanInstallment)
                .where(PlanInstallment.plan_id == plan.id)
                .order_by(PlanInstallment.seq)
            )
        )
        status = plan.status.value
        if covered and items and status in ("active", "defaulted", "completed", "proposed",
                                            "pending_approval"):  # fmt: skip
            plan_specs.append(
                {
                    "invoices": covered,
                    "status": status,
                    "installments": [
                        {
                            "due_date": i.due_date,
                            "amount": _money(i.amount_minor, plan.currency),
                            "paid": _money(i.paid_minor, plan.currency),
                            "status": i.status.value,
                        }
                        for i in items
                    ],
                }
            )
    return plan_specs


def _dispute_specs(
    session: Session,
    org: Organisation,
    customer: Customer,
    numbers: dict[int, str],
    as_of: date,
    anon: Anonymizer,
) -> list[dict[str, Any]]:
    """Disputes opened by the draft's day on a replayed invoice, descriptions anonymised."""
    return [
        {
            "invoice": numbers[d.invoice_id],
            "reason": d.reason,
            "status": d.status.value,
            "description": anon.text(d.description),
            "opened_on": d.opened_at.astimezone(UTC).date(),
        }
        for d in session.scalars(
            select(Dispute).where(Dispute.org_id == org.id, Dispute.customer_id == customer.id)
        )
        if d.invoice_id in numbers and d.opened_at.astimezone(UTC).date() <= as_of
    ]


def _contact_specs(contacts: list[Contact], anon: Anonymizer) -> list[dict[str, Any]]:
    """Up to ten contacts with placeholder names and addresses; the first one is the primary."""
    contact_specs = []
    for i, c in enumerate(contacts[:10]):
        contact_specs.append(
            {
                "name": anon.person(c.name),
                "email": anon.email(c.email) or f"contact{c.id}@customer.example",
                "phone": anon.phone(c.phone),
                "language": c.language,
                "timezone": c.timezone,
                "primary": i == 0,
                "opted_out_email": c.opted_out_email,
                "bounced": c.bounced,
                "consent_email": c.consent_email,
                "opted_out_sms": c.opted_out_sms,
                "consent_sms": c.consent_sms,
            }
        )
    return contact_specs


def _note_specs(
    session: Session,
    org: Organisation,
    customer: Customer,
    draft: Draft,
    numbers: dict[int, str],
    anon: Anonymizer,
) -> list[dict[str, Any]]:
    """The latest non-empty notes written before the draft, oldest first."""
    notes = list(
        session.scalars(
            select(Note)
            .where(Note.org_id == org.id, Note.customer_id == customer.id)
            .where(Note.created_at <= draft.created_at)
            .order_by(Note.created_at.desc())
            .limit(MAX_NOTES)
        )
    )
    return [
        {
            "body": anon.text(n.body) or "(empty note)",
            "source": n.source
            if n.source in ("internal", "collector", "system", "payer", "portal", "reply")
            else "payer",  # fmt: skip
            "invoice": numbers.get(n.invoice_id) if n.invoice_id else None,
            "written_on": n.created_at.astimezone(UTC).date(),
        }
        for n in reversed(notes)
        if n.body and n.body.strip()
    ]


def _touch_specs(
    session: Session, org: Organisation, customer: Customer, draft: Draft, anon: Anonymizer
) -> list[dict[str, Any]]:
    """The latest outbound touches before the draft, oldest first."""
    touches = list(
        session.scalars(
            select(Activity)
            .where(
                Activity.org_id == org.id,
                Activity.customer_id == customer.id,
                Activity.direction == "out",
                Activity.occurred_at < draft.created_at,
            )
            .order_by(Activity.occurred_at.desc())
            .limit(MAX_TOUCHES)
        )
    )
    return [
        {
            "at": t.occurred_at.astimezone(UTC).isoformat(),
            "kind": t.kind.value if t.kind.value in ("email", "call", "sms", "nudge") else "email",
            "summary": anon.text(t.summary) or "touch",
        }
        for t in reversed(touches)
    ]


def _customer_spec(
    org: Organisation,
    customer: Customer,
    segment: Segment | None,
    company: str,
    user_names: dict[int, str],
) -> dict[str, Any]:
    """The customer as the case sees it: placeholder name, segment settings, named owners."""
    role_names = {
        "csm": customer.csm_user_id,
        "sales": customer.sales_user_id,
        "collector": customer.collector_user_id,
    }
    return {
        "name": company,
        "language": customer.language,
        "country_code": customer.country_code,
        "timezone": customer.timezone,
        "renewal_date": customer.renewal_date,
        "segment": segment.name if segment else "Unsegmented",
        "segment_shadow_mode": segment.shadow_mode if segment else org.shadow_mode,
        "autopilot_enabled": segment.autopilot_enabled if segment else False,
        **{k: user_names.get(v) for k, v in role_names.items() if v in user_names},
    }


def _expected_output(
    draft: Draft, invoice: Invoice, dispute_specs: list[dict[str, Any]], balance_then: str
) -> dict[str, Any]:
    """What a right answer does: hold on an open dispute, else state the invoice's facts."""
    open_states = ("open", "investigating", "awaiting_customer", "escalated_legal")
    disputed = invoice.disputed or any(
        d["invoice"] == invoice.number and d["status"] in open_states for d in dispute_specs
    )
    if disputed:
        return {"outcome": "hold", "hold_reason": ["dispute", "disputed"]}
    return {
        "invoice_numbers": [invoice.number],
        "amounts": [f"{balance_then} {invoice.currency}"],
        "dates": [invoice.due_date],
        "language": draft.language or None,
    }


def case_from_draft(session: Session, draft: Draft, anon: Anonymizer) -> dict[str, Any]:
    """One pydantic-evals case (as a plain mapping) replaying the rejected draft's situation.

    The steps run in a fixed order because the anonymiser hands out placeholders in the order it
    meets names: users, dispute texts, the company, contacts, notes, touches, the rejection.
    """
    org = session.get(Organisation, draft.org_id)
    customer = session.get(Customer, draft.customer_id)
    invoice = session.get(Invoice, draft.invoice_id) if draft.invoice_id else None
    if org is None or customer is None or invoice is None:
        raise ExportError(f"draft {draft.id} has no invoice or customer to replay; skip it")
    as_of = clock.business_date(org.timezone, draft.created_at)  # the organisation's date then
    users = list(session.scalars(select(User).where(User.org_id == org.id).order_by(User.id)))
    user_names = {u.id: anon.person(u.name, "Staff") for u in users}
    contacts = _replay_contacts(session, org, customer, draft)
    invoices = _replay_invoices(session, org, customer, invoice, as_of)
    numbers = {i.id: i.number for i in invoices}
    inv_specs, pay_specs = _invoice_and_payment_specs(session, org, invoices, as_of)
    promise_specs = _promise_specs(session, org, customer, numbers, as_of)
    plan_specs = _plan_specs(session, org, customer, numbers)
    dispute_specs = _dispute_specs(session, org, customer, numbers, as_of, anon)
    segment = session.get(Segment, customer.segment_id) if customer.segment_id else None
    company = anon.company(customer.name, customer.id)
    contact_specs = _contact_specs(contacts, anon)
    note_specs = _note_specs(session, org, customer, draft, numbers, anon)
    touch_specs = _touch_specs(session, org, customer, draft, anon)
    channel = draft.channel.value if draft.channel.value in ("email", "sms") else "email"
    balance_then = next(s["balance"] for s in inv_specs if s["number"] == invoice.number)
    inputs: dict[str, Any] = {
        "as_of": as_of,
        "now": draft.created_at.astimezone(UTC).isoformat(),
        "org": {
            "name": org.name,
            "default_currency": org.default_currency,
            "timezone": org.timezone,
            "shadow_mode": org.shadow_mode,
            "sending_domain_verified": org.sending_domain_verified,
        },
        "users": [
            {"name": user_names[u.id], "role": u.role.value}
            for u in users
            if u.role.value in _PERSONAS
        ]
        or [{"name": "Staff A", "role": "Collector"}],
        "customer": _customer_spec(org, customer, segment, company, user_names),
        "contacts": contact_specs,
        "invoices": inv_specs,
        "payments": pay_specs,
        "promises": promise_specs,
        "plans": plan_specs,
        "disputes": dispute_specs,
        "notes": note_specs,
        "touches": touch_specs,
        "task": {
            "kind": "draft",
            "invoice": invoice.number,
            "step": _template(session, draft),
            "tone": draft.tone or "friendly",
            "persona": draft.persona.value,
            "channel": channel,
        },
    }
    expected = _expected_output(draft, invoice, dispute_specs, balance_then)
    reason = anon.text(draft.rejection_reason) or ""
    return {
        "name": _case_name(org, draft),
        "metadata": {
            "category": "review_rejection",
            "description": f"Rejected in review: {reason}"[:500],
            "source": f"draft {draft.id} ({org.slug}), rejected",
            "rejection_reason": reason,
            "rejected_body": anon.text(draft.body),
        },
        "inputs": _drop_none(inputs),
        "expected_output": _drop_none(expected),
    }


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def rejected_drafts(session: Session, org_slug: str | None = None) -> list[Draft]:
    query = select(Draft).where(
        Draft.status == DraftStatus.REJECTED, Draft.rejection_reason.is_not(None)
    )
    if org_slug:
        org = session.scalars(select(Organisation).where(Organisation.slug == org_slug)).first()
        if org is None:
            raise ExportError(f"no organisation with slug {org_slug!r}")
        query = query.where(Draft.org_id == org.id)
    return list(session.scalars(query.order_by(Draft.org_id, Draft.id)))


@dataclass
class ExportResult:
    path: Path
    added: list[str]
    skipped: list[str]
    existing: int


def export_rejections(
    session: Session,
    out: Path,
    *,
    org_slug: str | None = None,
    anonymize: bool = True,
    drafts: Sequence[Draft] | None = None,
) -> ExportResult:
    """Append a case per rejected draft to the dataset file ``out`` (created if missing).

    Cases already in the file (same name) are kept as they are: curated expectations survive a
    re-export. The new file is validated by the same loader as every dataset, then replaces the
    old one in one step; on any error nothing is written.
    """
    drafts = list(drafts) if drafts is not None else rejected_drafts(session, org_slug)
    existing: dict[str, Any] = {
        "name": out.stem,
        "description": "Drafts rejected in review, exported by plixo eval export-rejections.",
        "cases": [],
    }
    if out.exists():
        try:
            loaded = yaml.safe_load(out.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ExportError(f"{out}: cannot read the existing dataset ({exc})") from exc
        if not isinstance(loaded, dict) or not isinstance(loaded.get("cases", []), list):
            raise ExportError(
                f"{out}: not a dataset file (a mapping with 'cases'); pick another --out"
            )
        existing.update(loaded)
        existing["cases"] = list(loaded.get("cases") or [])
    names = {c.get("name") for c in existing["cases"] if isinstance(c, dict)}
    added: list[str] = []
    skipped: list[str] = []
    for draft in drafts:
        anon = Anonymizer(enabled=anonymize)
        try:
            case = case_from_draft(session, draft, anon)
            CaseFile.model_validate(case)
        except (ExportError, ValueError) as exc:
            skipped.append(f"draft {draft.id}: {exc}".splitlines()[0][:300])
            continue
        if case["name"] in names:
            skipped.append(f"draft {draft.id}: already in {out.name} as {case['name']}")
            continue
        existing["cases"].append(case)
        names.add(case["name"])
        added.append(case["name"])
    if not existing["cases"]:
        raise ExportError(
            "no rejected draft with a reason to export"
            + (f" in organisation {org_slug!r}" if org_slug else "")
            + (f" ({'; '.join(skipped)})" if skipped else "")
        )
    text = yaml.safe_dump(existing, sort_keys=False, allow_unicode=True, width=100)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{out.stem}-", suffix=out.suffix or ".yaml", dir=out.parent
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(
                "# Exported by `plixo eval export-rejections`: one case per rejected draft.\n"
                "# Curate the expectations (metadata.rejection_reason says what was wrong).\n"
            )
            fh.write(text)
        try:
            load_file(tmp)
        except DatasetError as exc:
            msg = str(exc).replace(str(tmp), str(out))
            raise ExportError(f"the exported dataset does not load: {msg}") from exc
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportResult(path=out, added=added, skipped=skipped, existing=len(names) - len(added))


__all__ = ["Anonymizer", "ExportError", "ExportResult", "case_from_draft", "export_rejections"]
