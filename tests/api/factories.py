"""Small, explicit fixtures for the review API tests (independent of the demo generator).

``seed_review`` builds one organisation in Shadow Mode with a user per persona (password
``pw-<role>`` and a bearer token), a segment with a cadence, customers with reachable contacts, open
invoices and drafts pending review whose decisions come from the real grounding and guardrails.
Everything is pinned to ``NOW`` (a Tuesday afternoon in New York) so quiet hours never interfere.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import (
    Cadence,
    CadenceStep,
    Channel,
    Contact,
    Customer,
    Draft,
    DraftKind,
    DraftPersona,
    Invoice,
    Organisation,
    Persona,
    Segment,
    User,
)
from tools.drafts.service import make_recheck, store_new_draft
from tools.insights.account360 import pay_link
from tools.kit.formatting import format_amount, format_day
from tools.ledger.users import hash_password, issue_api_token

NOW = datetime(2025, 10, 7, 18, 0, tzinfo=UTC)  # Tuesday 14:00 in New York
TZ = "America/New_York"

LIMITS: dict[Persona, int | None] = {
    Persona.ADMIN: None,
    Persona.CONTROLLER: 25_000_000,
    Persona.COLLECTIONS_MANAGER: 2_500_000,
    Persona.COLLECTOR: 500_000,
}


def _limits(usd: int | None) -> dict[str, int] | None:
    return None if usd is None else {"USD": usd}


def password_for(role: Persona) -> str:
    return "pw-" + role.name.lower()


def settings_for(tmp_data_dir: str | None = None) -> Settings:
    return Settings(
        data_dir=Path(tmp_data_dir or "plixo-test-data"),
        public_base_url="http://testserver",
        secret_key="test-secret-key-for-sessions-0123456789",  # type: ignore[arg-type]
        smtp_host="127.0.0.1",
        smtp_port=1,
        # configured, so the Stripe webhook answers unsigned calls with 4xx rather than 503
        stripe_webhook_secret="whsec_review_tests",  # type: ignore[arg-type]
    )


@dataclass
class Seeded:
    org: Organisation
    users: dict[Persona, User]
    tokens: dict[Persona, str]
    segment: Segment
    customers: list[Customer] = field(default_factory=list)
    invoices: list[Invoice] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)

    def email(self, role: Persona) -> str:
        return self.users[role].email

    def auth(self, role: Persona) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def make_users(
    session: Session, org: Organisation
) -> tuple[dict[Persona, User], dict[Persona, str]]:
    """One user per persona; scrypt is slow, so the hashes are computed once per role."""
    users: dict[Persona, User] = {}
    tokens: dict[Persona, str] = {}
    for role in Persona:
        user = User(
            org_id=org.id,
            email=f"{role.name.lower()}.{org.slug}@example.test",
            name=f"{role.value} User",
            role=role,
            approval_limits=_limits(LIMITS.get(role)),
            password_hash=_HASHES.setdefault(role, hash_password(password_for(role))),
            slack_user_id=f"U{role.name[:6]}{org.id}",
        )
        session.add(user)
        users[role] = user
    session.flush()
    for role, user in users.items():
        tokens[role] = issue_api_token(session, user)
    return users, tokens


_HASHES: dict[Persona, str] = {}


def make_segment(session: Session, org: Organisation, name: str = "Mid-market") -> Segment:
    cadence = Cadence(org_id=org.id, name=f"{name} cadence")
    cadence.steps = [
        CadenceStep(position=1, day_offset=-3, channel=Channel.EMAIL, template="pre_due"),
        CadenceStep(position=2, day_offset=7, channel=Channel.EMAIL, template="reminder"),
        CadenceStep(position=3, day_offset=60, channel=Channel.EMAIL, template="final"),
    ]
    session.add(cadence)
    session.flush()
    segment = Segment(org_id=org.id, name=name, cadence_id=cadence.id, shadow_mode=True)
    session.add(segment)
    session.flush()
    return segment


def make_customer(
    session: Session,
    org: Organisation,
    segment: Segment | None,
    *,
    name: str,
    collector: User | None = None,
    sales: User | None = None,
) -> Customer:
    customer = Customer(
        org_id=org.id,
        external_ref=f"C-{uuid.uuid4().hex[:8]}",
        name=name,
        segment_id=segment.id if segment else None,
        timezone=TZ,
        country_code="US",
        collector_user_id=collector.id if collector else None,
        sales_user_id=sales.id if sales else None,
    )
    session.add(customer)
    session.flush()
    first = name.split(" ")[0]
    session.add(
        Contact(
            org_id=org.id,
            customer_id=customer.id,
            name=f"{first} Payables",
            email=f"ap.{customer.external_ref.lower()}@payer.test",
            timezone=TZ,
            is_primary=True,
        )
    )
    session.flush()
    return customer


def make_invoice(
    session: Session,
    org: Organisation,
    customer: Customer,
    *,
    number: str,
    amount_minor: int,
    due: date,
    currency: str = "USD",
) -> Invoice:
    invoice = Invoice(
        org_id=org.id,
        customer_id=customer.id,
        number=number,
        currency=currency,
        amount_minor=amount_minor,
        balance_minor=amount_minor,
        issue_date=due - timedelta(days=30),
        due_date=due,
    )
    session.add(invoice)
    session.flush()
    return invoice


def draft_text(
    settings: Settings, org: Organisation, customer: Customer, invoice: Invoice
) -> tuple[str, str]:
    link = pay_link(settings, org.slug, invoice.number)
    subject = f"Invoice {invoice.number} is past due"
    body = (
        f"Hello {customer.name} team,\n\n"
        f"Invoice {invoice.number} for {format_amount(invoice.balance_minor, invoice.currency)} "
        f"was due on {format_day(invoice.due_date)}. You can pay it here: {link}\n\n"
        "Thank you,\nAccounts receivable"
    )
    return subject, body


def make_draft(
    session: Session,
    settings: Settings,
    org: Organisation,
    customer: Customer,
    invoice: Invoice,
    *,
    segment: Segment | None,
    step: CadenceStep | None = None,
    now: datetime = NOW,
) -> Draft:
    """A cadence draft whose decision comes from the real grounding and guardrails."""
    subject, body = draft_text(settings, org, customer, invoice)
    contact = customer.contacts[0] if customer.contacts else None
    draft = Draft(
        org_id=org.id,
        customer_id=customer.id,
        invoice_id=invoice.id,
        contact_id=contact.id if contact else None,
        segment_id=segment.id if segment else None,
        cadence_step_id=step.id if step else None,
        run_key=f"test:{invoice.id}:{uuid.uuid4().hex[:6]}",
        kind=DraftKind.CADENCE,
        persona=DraftPersona.AUTOPILOT,
        channel=Channel.EMAIL,
        recipient=contact.email if contact else None,
        subject=subject,
        body=body,
        stated_facts={
            "invoice_numbers": [invoice.number],
            "pay_link": pay_link(settings, org.slug, invoice.number),
        },
        model_name="test",
        prompt_version="test-1",
    )
    result = make_recheck(settings)(session, draft, now)
    draft.grounding = result.grounding
    store_new_draft(
        session,
        draft,
        decision=result.decision,
        actor="Autopilot",
        grounding_blocked=result.grounding_blocked,
    )
    return draft


def seed_review(
    session: Session,
    org: Organisation,
    settings: Settings,
    *,
    drafts: int = 3,
    amount_minor: int = 120_000,
    now: datetime = NOW,
) -> Seeded:
    """An organisation in Shadow Mode with ``drafts`` drafts pending review (committed)."""
    org.timezone = TZ
    org.sending_domain = "mail.acme.test"
    org.sending_domain_verified = True
    users, tokens = make_users(session, org)
    segment = make_segment(session, org)
    seeded = Seeded(org=org, users=users, tokens=tokens, segment=segment)
    cadence_steps = segment.cadence.steps if segment.cadence else []
    for i in range(drafts):
        customer = make_customer(
            session,
            org,
            segment,
            name=f"Customer {i + 1:03d} Ltd",
            collector=users[Persona.COLLECTOR],
            sales=users[Persona.SALES],
        )
        invoice = make_invoice(
            session,
            org,
            customer,
            number=f"INV-{org.id}-{1000 + i}",
            amount_minor=amount_minor + i * 100,
            due=now.date() - timedelta(days=10 + i % 5),
        )
        step = cadence_steps[1] if cadence_steps else None
        seeded.customers.append(customer)
        seeded.invoices.append(invoice)
        seeded.drafts.append(
            make_draft(
                session, settings, org, customer, invoice, segment=segment, step=step, now=now
            )
        )
    session.commit()
    return seeded
