"""A deterministic demo organisation: what a real A/R book looks like on a given day.

Everything comes from one seeded RNG and is laid out relative to ``today``, so the same seed and
day give the same ledger: a few hundred customers with contacts in several languages and time
zones, a year of paid history (for the risk score), open invoices in every aging bucket, promises
kept, missed and open, payment plans, open disputes, notes with @mentions, segments with cadences,
and one user per persona.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from memory import clock
from memory.models import (
    Activity,
    ActivityKind,
    Cadence,
    CadenceStep,
    Channel,
    Contact,
    Customer,
    Dispute,
    DisputeStatus,
    InstallmentStatus,
    Invoice,
    InvoiceStatus,
    Note,
    Organisation,
    Payment,
    PaymentPlan,
    Persona,
    PlanInstallment,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
    Segment,
    User,
)
from tools.commitments.plans import InstallmentSpec, add_months, propose_plan
from tools.ledger.users import hash_password

DEMO_SLUG = "demo"
#: The demo organisation's time zone: its business date ("today") is the date there.
DEMO_TIMEZONE = "America/New_York"
DEMO_PASSWORD = "plixo-demo"
DEMO_DOMAIN = "demo.plixo.example"


# (login, name, persona, approval limit in USD minor units or None)
def _limits(usd: int, eur: int, gbp: int) -> dict[str, int]:
    """Own approval limits in each currency the demo's customers are billed in (minor units)."""
    return {"USD": usd, "EUR": eur, "GBP": gbp}


USERS: Sequence[tuple[str, str, Persona, dict[str, int] | None]] = (
    ("admin", "Alex Admin", Persona.ADMIN, None),
    ("controller", "Morgan Reyes", Persona.CONTROLLER, _limits(50_000_000, 46_000_000, 39_000_000)),
    (
        "manager",
        "Priya Natarajan",
        Persona.COLLECTIONS_MANAGER,
        _limits(10_000_000, 9_200_000, 7_800_000),
    ),
    ("collector", "Sam Okafor", Persona.COLLECTOR, _limits(2_500_000, 2_300_000, 1_950_000)),
    ("collector2", "Lena Fischer", Persona.COLLECTOR, _limits(2_500_000, 2_300_000, 1_950_000)),
    ("billing", "Chris Lam", Persona.BILLING_ADMIN, None),
    ("sales", "Jordan Blake", Persona.SALES, None),
    ("csm", "Taylor Kim", Persona.CSM, None),
    ("legal", "Robin Adeyemi", Persona.LEGAL, None),
    ("viewer", "Casey Viewer", Persona.VIEWER, None),
)

# Cadences: (day offset from due date, channel, template, tone)
CADENCES: dict[str, Sequence[tuple[int, Channel, str, str]]] = {
    "Enterprise touch": (
        (-5, Channel.EMAIL, "pre_due_courtesy", "warm"),
        (7, Channel.EMAIL, "friendly_reminder", "warm"),
        (21, Channel.EMAIL, "second_reminder", "professional"),
        (45, Channel.CALL, "account_review_call", "professional"),
        (75, Channel.EMAIL, "final_notice", "firm"),
    ),
    "Standard": (
        (-3, Channel.EMAIL, "pre_due_courtesy", "friendly"),
        (3, Channel.EMAIL, "friendly_reminder", "friendly"),
        (14, Channel.EMAIL, "second_reminder", "professional"),
        (30, Channel.EMAIL, "firm_reminder", "firm"),
        (60, Channel.EMAIL, "final_notice", "firm"),
    ),
}
SEGMENTS: Sequence[tuple[str, str, int, tuple[int, int], int]] = (
    # name, cadence, customers, invoice amount range (USD), payment terms (days)
    ("Enterprise", "Enterprise touch", 40, (8_000, 95_000), 45),
    ("Mid-Market", "Standard", 100, (1_500, 22_000), 30),
    ("SMB", "Standard", 140, (150, 3_500), 30),
)
REGIONS: Sequence[tuple[str, str, str, str, float]] = (
    # country, time zone, language, currency, weight
    ("US", "America/New_York", "en", "USD", 0.30),
    ("US", "America/Chicago", "en", "USD", 0.15),
    ("US", "America/Los_Angeles", "en", "USD", 0.20),
    ("GB", "Europe/London", "en", "GBP", 0.08),
    ("DE", "Europe/Berlin", "de", "EUR", 0.10),
    ("FR", "Europe/Paris", "fr", "EUR", 0.07),
    ("ES", "Europe/Madrid", "es", "EUR", 0.05),
    ("SG", "Asia/Singapore", "en", "USD", 0.05),
)
_WORDS_A = (
    "Blue",
    "Harbor",
    "Summit",
    "Cedar",
    "Northwind",
    "Granite",
    "Silver",
    "Maple",
    "Orbit",
    "Beacon",
    "Copper",
    "Lumen",
    "Atlas",
    "Pioneer",
    "Vertex",
    "Willow",
    "Crescent",
    "Evergreen",
    "Falcon",
    "Juniper",
    "Keystone",
    "Meridian",
    "Nimbus",
    "Quarry",
    "Redwood",
    "Sable",
    "Tidal",
)
_WORDS_B = (
    "Logistics",
    "Analytics",
    "Foods",
    "Health",
    "Robotics",
    "Textiles",
    "Energy",
    "Labs",
    "Systems",
    "Retail",
    "Media",
    "Builders",
    "Pharma",
    "Freight",
    "Studios",
    "Software",
    "Outfitters",
    "Networks",
    "Dental",
    "Hospitality",
)
_SUFFIX = {"US": "Inc.", "GB": "Ltd", "DE": "GmbH", "FR": "SAS", "ES": "S.L.", "SG": "Pte. Ltd."}
_FIRST = {
    "en": (
        "Avery",
        "Jamie",
        "Riley",
        "Morgan",
        "Drew",
        "Hannah",
        "Marcus",
        "Olivia",
        "Ethan",
        "Maya",
    ),
    "de": ("Jana", "Lukas", "Katrin", "Felix", "Anja", "Jonas"),
    "fr": ("Camille", "Julien", "Chloé", "Antoine", "Élodie"),
    "es": ("Lucía", "Javier", "Carmen", "Diego", "Marta"),
}
_LAST = {
    "en": ("Parker", "Nguyen", "Brooks", "Hughes", "Patel", "Foster", "Reid", "Coleman"),
    "de": ("Roth", "Becker", "Wagner", "Hoffmann", "Schulz"),
    "fr": ("Martin", "Dubois", "Lefèvre", "Moreau"),
    "es": ("García", "Fernández", "López", "Ruiz"),
}
_NOTES = (
    "Spoke with {contact} in AP: invoice {invoice} is approved for the next payment run. @{owner}",
    "{contact} asked for a copy of the PO before paying {invoice}.",
    "Customer is migrating ERP this quarter; expect delays. @{owner} please keep an eye on it.",
    "Renewal conversation going well; keep collections tone friendly. @{owner}",
    "{contact} confirmed the remittance address change.",
    "Payment runs are on Thursdays for this account.",
)
# Keys of tools.commitments.disputes.REASONS, the dispute workflow's own list.
_DISPUTE_REASONS = ("pricing", "quantity", "not_received", "duplicate_billing", "quality")


@dataclass
class DemoResult:
    org: Organisation
    users: dict[str, User]
    counts: dict[str, int]


def _minor(rng: random.Random, low: int, high: int) -> int:
    # Invoice totals end in realistic cents; money stays integer throughout.
    return rng.randint(low * 100, high * 100)


def _pick_region(rng: random.Random) -> tuple[str, str, str, str, float]:
    return rng.choices(REGIONS, weights=[r[4] for r in REGIONS])[0]


@dataclass
class _Build:
    """What the demo's steps share: the session, one seeded RNG, the day, and what earlier steps
    created. The steps run in a fixed order and draw from the RNG in that order, so one seed and
    one day always give the same ledger."""

    session: Session
    rng: random.Random
    today: date
    now: datetime
    org: Organisation = field(init=False)
    users: dict[str, User] = field(default_factory=dict)
    cadences: dict[str, Cadence] = field(default_factory=dict)
    # customer, currency, amount range, payment terms in days, typical days late
    customers: list[tuple[Customer, str, tuple[int, int], int, float]] = field(default_factory=list)
    contacts: dict[int, list[Contact]] = field(default_factory=dict)
    inv_rows: list[dict[str, Any]] = field(default_factory=list)
    pay_rows: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0
    open_invoices: dict[int, Invoice] = field(default_factory=dict)
    overdue: list[Invoice] = field(default_factory=list)
    used: set[int] = field(default_factory=set)
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("promises", "plans", "disputes", "notes", "activities"), 0
        )
    )

    @property
    def collectors(self) -> list[User]:
        return [self.users["collector"], self.users["collector2"]]

    def take(self, pred: Any = None) -> Invoice:
        """The next overdue invoice no other commitment has taken (matching ``pred``)."""
        for inv in self.overdue:
            if inv.id not in self.used and (pred is None or pred(inv)):
                self.used.add(inv.id)
                return inv
        raise RuntimeError("demo ledger ran out of overdue invoices")


def build_demo(session: Session, *, seed: int = 7, today: date | None = None) -> DemoResult:
    """Create the demo organisation in ``session`` (the caller commits), one named step at a time.

    ``today`` is a business date in ``DEMO_TIMEZONE`` (default: today there). The ledger is
    stamped at 09:00 UTC on that day, or at the current moment if that is still in the future:
    nothing the demo writes is dated after the moment it was built.
    """
    today = today or clock.business_date(DEMO_TIMEZONE)
    now = min(datetime.combine(today, time(9, 0), tzinfo=UTC), clock.now())
    b = _Build(session, random.Random(seed), today, now)
    for step in DEMO_STEPS:
        step(b)
    b.session.flush()
    b.counts.update(customers=len(b.customers), invoices=len(b.inv_rows), users=len(b.users))
    return DemoResult(org=b.org, users=b.users, counts=b.counts)


def _organisation(b: _Build) -> None:
    b.org = Organisation(
        name="Northwind Analytics (demo)",
        slug=DEMO_SLUG,
        default_currency="USD",
        timezone=DEMO_TIMEZONE,
        shadow_mode=True,
        sending_domain=DEMO_DOMAIN,
        sending_domain_verified=True,
        last_import_at=b.now - timedelta(hours=2),
        created_at=b.now - timedelta(days=400),
    )
    b.session.add(b.org)
    b.session.flush()


def _people(b: _Build) -> None:
    """One user per persona (two Collectors), all with the demo password."""
    password = hash_password(DEMO_PASSWORD)
    for login, name, role, limits in USERS:
        u = User(
            org_id=b.org.id,
            email=f"{login}@{DEMO_DOMAIN}",
            name=name,
            role=role,
            approval_limits=limits,
            password_hash=password,
        )
        b.session.add(u)
        b.users[login] = u
    b.session.flush()


def _cadences(b: _Build) -> None:
    for cname, steps in CADENCES.items():
        cad = Cadence(org_id=b.org.id, name=cname)
        cad.steps = [
            CadenceStep(position=i + 1, day_offset=off, channel=ch, template=tpl, tone=tone)
            for i, (off, ch, tpl, tone) in enumerate(steps)
        ]
        b.session.add(cad)
        b.cadences[cname] = cad
    b.session.flush()


def _segments_and_customers(b: _Build) -> None:
    """Segments with their cadences, and their customers in several regions."""
    used_names: set[str] = set()
    ref = 0
    for sname, cname, n_customers, amount_range, terms in SEGMENTS:
        seg = Segment(
            org_id=b.org.id,
            name=sname,
            cadence_id=b.cadences[cname].id,
            shadow_mode=True,
            autopilot_enabled=sname != "Enterprise",
        )
        b.session.add(seg)
        b.session.flush()
        for _ in range(n_customers):
            ref += 1
            cust, currency, lateness = _customer(b, seg, sname, ref, used_names)
            b.session.add(cust)
            b.customers.append((cust, currency, amount_range, terms, lateness))
    b.session.flush()


def _customer(
    b: _Build, seg: Segment, sname: str, ref: int, used_names: set[str]
) -> tuple[Customer, str, float]:
    rng = b.rng
    country, tz, lang, currency, _w = _pick_region(rng)
    while True:
        base = f"{rng.choice(_WORDS_A)} {rng.choice(_WORDS_B)}"
        if base not in used_names:
            used_names.add(base)
            break
    renewal = (
        b.today + timedelta(days=rng.randint(-30, 330))
        if sname != "SMB" or rng.random() < 0.4
        else None
    )
    cust = Customer(
        org_id=b.org.id,
        external_ref=f"C{ref:05d}",
        name=f"{base} {_SUFFIX[country]}",
        segment_id=seg.id,
        csm_user_id=b.users["csm"].id if sname != "SMB" else None,
        sales_user_id=b.users["sales"].id,
        collector_user_id=b.collectors[ref % 2].id,
        timezone=tz,
        country_code=country,
        language=lang,
        renewal_date=renewal,
        created_at=b.now - timedelta(days=400),
    )
    # payer behaviour: the typical days late of this customer's payments
    lateness = rng.choices([0.0, 6.0, 18.0, 40.0], weights=[0.45, 0.3, 0.17, 0.08])[0]
    return cust, currency, lateness


def _contacts(b: _Build) -> None:
    """One or two contacts per customer, named in the customer's language."""
    rng = b.rng
    for cust, *_ in b.customers:
        lang = cust.language
        domain = cust.name.split()[0].lower() + cust.name.split()[1].lower() + ".example"
        n = 1 if rng.random() < 0.6 else 2
        people = []
        taken: set[tuple[str, str]] = set()
        for i in range(n):
            first, last = rng.choice(_FIRST[lang]), rng.choice(_LAST[lang])
            while (first, last) in taken:
                first, last = rng.choice(_FIRST[lang]), rng.choice(_LAST[lang])
            taken.add((first, last))
            c = Contact(
                org_id=b.org.id,
                customer_id=cust.id,
                name=f"{first} {last}",
                email=f"{_ascii(first).lower()}.{_ascii(last).lower()}@{domain}",
                phone=f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
                timezone=cust.timezone,
                language=lang,
                is_primary=i == 0,
                opted_out_email=rng.random() < 0.03,
                bounced=rng.random() < 0.02,
            )
            people.append(c)
            b.session.add(c)
        b.contacts[cust.id] = people
    b.session.flush()


def _invoices(b: _Build) -> None:
    """A year of paid history per customer (for the risk score), then its open book."""
    for cust, currency, (lo, hi), terms, lateness in b.customers:
        _paid_history(b, cust, currency, (lo, hi), terms, lateness)
        _open_book(b, cust, currency, (lo, hi), terms)


def _payment_row(
    b: _Build, cust: Customer, number: str, amount: int, currency: str, received: date
) -> dict[str, Any]:
    return {
        "org_id": b.org.id,
        "customer_id": cust.id,
        "invoice_number": number,
        "amount_minor": amount,
        "applied_minor": amount,
        "unapplied_minor": 0,
        "currency": currency,
        "received_on": received,
        "method": "bank_transfer",
        "external_ref": f"demo-pay-{b.seq}",
        "created_at": b.now,
    }


def _paid_history(
    b: _Build, cust: Customer, currency: str, span: tuple[int, int], terms: int, lateness: float
) -> None:
    rng, today = b.rng, b.today
    monthly = 1 if span[0] > 5000 else rng.choice((1, 1, 2))
    for month in range(12, 0, -1):
        for _ in range(monthly):
            b.seq += 1
            issue = today - timedelta(days=30 * month + rng.randint(0, 20))
            due = issue + timedelta(days=terms)
            amount = _minor(rng, *span)
            late = max(0, int(rng.gauss(lateness, lateness / 2 + 1)))
            settled = min(
                due + timedelta(days=late - rng.randint(0, 8) if late == 0 else late),
                today - timedelta(days=1),
            )
            settled = max(settled, issue + timedelta(days=1))
            if settled >= today - timedelta(days=1) and due + timedelta(days=late) >= today:
                continue  # would still be open: leave it to the open book
            b.inv_rows.append(
                _inv(b.org.id, cust.id, b.seq, currency, amount, 0, issue, due,
                     InvoiceStatus.PAID, settled, b.now)
            )  # fmt: skip
            b.pay_rows.append(_payment_row(b, cust, _number(b.seq), amount, currency, settled))


def _open_book(b: _Build, cust: Customer, currency: str, span: tuple[int, int], terms: int) -> None:
    """1-4 open invoices spread over every aging bucket, a few partly paid."""
    rng, today = b.rng, b.today
    for _ in range(rng.choices((1, 2, 3, 4), weights=(0.35, 0.35, 0.2, 0.1))[0]):
        b.seq += 1
        days_past_due = rng.choices(
            (
                rng.randint(-25, 0),
                rng.randint(1, 30),
                rng.randint(31, 60),
                rng.randint(61, 90),
                rng.randint(91, 160),
            ),
            weights=(0.34, 0.28, 0.17, 0.11, 0.10),
        )[0]
        due = today - timedelta(days=days_past_due)
        issue = due - timedelta(days=terms)
        amount = _minor(rng, *span)
        paid = amount // rng.choice((2, 3, 4)) if rng.random() < 0.08 else 0
        row = _inv(b.org.id, cust.id, b.seq, currency, amount, amount - paid, issue, due,
                   InvoiceStatus.OPEN, None, b.now)  # fmt: skip
        b.inv_rows.append(row)
        if paid:
            received = today - timedelta(days=rng.randint(1, 10))
            b.pay_rows.append(_payment_row(b, cust, row["number"], paid, currency, received))


def _store_invoices(b: _Build) -> None:
    """Bulk-insert the invoices and payments, then load the open book and shuffle the overdue
    invoices the commitments draw from."""
    b.session.execute(insert(Invoice), b.inv_rows)
    ids = {
        number: iid
        for iid, number in b.session.execute(
            Invoice.__table__.select()
            .with_only_columns(Invoice.id, Invoice.number)
            .where(Invoice.org_id == b.org.id)
        )
    }
    for p in b.pay_rows:
        p["invoice_id"] = ids[p.pop("invoice_number")]
    b.session.execute(insert(Payment), b.pay_rows)
    b.open_invoices = {
        inv.id: inv
        for inv in b.session.query(Invoice).filter(
            Invoice.org_id == b.org.id, Invoice.status == InvoiceStatus.OPEN
        )
    }
    b.overdue = [inv for inv in b.open_invoices.values() if inv.due_date < b.today]
    b.overdue.sort(key=lambda i: (i.due_date, i.number))
    b.rng.shuffle(b.overdue)


_PROMISE_SPECS = (
    [(PromiseStatus.OPEN, d) for d in (0, 0, 0, 2, 5, 9, 14, 21)]
    + [(PromiseStatus.OPEN, d) for d in (-1, -2)]  # past date, within grace: still open
    + [(PromiseStatus.MISSED, d) for d in (-6, -9, -12, -20, -27, -35)]
    + [(PromiseStatus.KEPT, d) for d in (-4, -8, -15, -22, -30, -41, -50, -61)]
)


def _promises(b: _Build) -> None:
    """Promises-to-pay open, missed and kept (a kept one was paid on its date)."""
    for status, offset in _PROMISE_SPECS:
        inv = b.take()
        promise = PromiseToPay(
            org_id=b.org.id,
            customer_id=inv.customer_id,
            contact_id=b.contacts[inv.customer_id][0].id,
            amount_minor=inv.balance_minor,
            currency=inv.currency,
            promised_date=b.today + timedelta(days=offset),
            grace_days=3,
            status=status,
            source="collector",
            created_by_user_id=b.collectors[0].id,
            created_at=b.now - timedelta(days=max(3, 10 - offset)),
            resolved_at=b.now + timedelta(days=offset + 3)
            if status is not PromiseStatus.OPEN
            else None,
        )
        promise.invoices = [inv]
        b.session.add(promise)
        if status is PromiseStatus.KEPT:
            paid_on = b.today + timedelta(days=offset)
            _settle(
                b, inv, inv.balance_minor, paid_on, "bank_transfer", f"demo-promise-{inv.number}"
            )
        b.counts["promises"] += 1


def _settle(b: _Build, inv: Invoice, amount: int, on: date, method: str, ref: str) -> None:
    """A payment applied to ``inv``; the invoice is paid when nothing is left."""
    b.session.add(
        Payment(
            org_id=b.org.id,
            customer_id=inv.customer_id,
            invoice_id=inv.id,
            amount_minor=amount,
            applied_minor=amount,
            currency=inv.currency,
            received_on=on,
            method=method,
            external_ref=ref,
        )
    )
    inv.balance_minor -= amount
    if inv.balance_minor == 0:
        inv.status, inv.settled_date = InvoiceStatus.PAID, on


# status, non-standard terms, installments
_PLAN_SPECS: Sequence[tuple[PlanStatus, bool, int]] = (
    (PlanStatus.ACTIVE, False, 3),
    (PlanStatus.ACTIVE, False, 4),
    (PlanStatus.ACTIVE, False, 6),
    (PlanStatus.ACTIVE, False, 3),
    (PlanStatus.ACTIVE, False, 2),
    (PlanStatus.DEFAULTED, False, 4),
    (PlanStatus.COMPLETED, False, 3),
    (PlanStatus.PENDING_APPROVAL, False, 6),
    (PlanStatus.PENDING_APPROVAL, True, 12),
    (PlanStatus.PROPOSED, False, 3),
)
_NONSTANDARD_NOTE = "Customer asks to waive late fees and extend to 12 months"


def _plans(b: _Build) -> None:
    """Payment plans in every status; the waiting ones go through the guardrails."""
    for i, (plan_status, nonstandard, n) in enumerate(_PLAN_SPECS):
        big = i == 7  # one large plan above the $50,000 Controller threshold
        # Plan limits are set in the organisation's currency, so plans are offered in it.
        inv = b.take(
            lambda x, big=big: (
                x.currency == b.org.default_currency
                and (x.balance_minor > 5_000_000 if big else True)
            )
        )
        if plan_status is PlanStatus.PENDING_APPROVAL:
            _proposed_plan(b, inv, i, nonstandard, n)
        else:
            _recorded_plan(b, inv, i, plan_status, nonstandard, n)
        b.counts["plans"] += 1


def _proposed_plan(b: _Build, inv: Invoice, i: int, nonstandard: bool, n: int) -> None:
    """Proposed through ``propose_plan``, so the demo's approval queues (Controller above
    $50,000, Legal for non-standard terms) are the guardrails' own."""
    first_due = b.today + timedelta(days=14)
    share, rest = divmod(inv.balance_minor, n)
    propose_plan(
        b.session,
        b.org.id,
        customer_id=inv.customer_id,
        invoice_ids=[inv.id],
        installments=[
            InstallmentSpec(add_months(first_due, k), share + (1 if k < rest else 0))
            for k in range(n)
        ],
        proposer=b.collectors[i % 2],
        non_standard_terms=nonstandard,
        terms_note=_NONSTANDARD_NOTE if nonstandard else None,
        source="collector",
        now=b.now,
    )


def _recorded_plan(
    b: _Build, inv: Invoice, i: int, status: PlanStatus, nonstandard: bool, n: int
) -> None:
    """A plan already decided, with its installments paid or missed so far."""
    decided = status in (PlanStatus.ACTIVE, PlanStatus.DEFAULTED, PlanStatus.COMPLETED)
    plan = PaymentPlan(
        org_id=b.org.id,
        customer_id=inv.customer_id,
        total_minor=inv.balance_minor,
        currency=inv.currency,
        status=status,
        non_standard_terms=nonstandard,
        terms_note=_NONSTANDARD_NOTE if nonstandard else None,
        proposed_by_user_id=b.collectors[i % 2].id,
        approved_by_user_id=b.users["manager"].id if decided else None,
        source="collector" if i % 3 else "portal",
        created_at=b.now - timedelta(days=40),
    )
    plan.invoices = [inv]
    plan.installments = _installments(b.today, status, inv.balance_minor, n)
    b.session.add(plan)
    paid_total = sum(x.paid_minor for x in plan.installments)
    if paid_total:
        on = b.today - timedelta(days=3)
        _settle(b, inv, paid_total, on, "plan", f"demo-plan-{inv.number}")


def _installments(today: date, status: PlanStatus, total: int, n: int) -> list[PlanInstallment]:
    start = today - timedelta(days=30 * (n // 2))
    share, rest = divmod(total, n)
    out = []
    for k in range(n):
        amt = share + (1 if k < rest else 0)
        due = start + timedelta(days=30 * k)
        st, paid = InstallmentStatus.DUE, 0
        if status is PlanStatus.COMPLETED or (status is PlanStatus.ACTIVE and due < today):
            st, paid = InstallmentStatus.PAID, amt
        elif status is PlanStatus.DEFAULTED and due < today:
            missed = k == n // 2 - 1 or k >= n // 2
            st = InstallmentStatus.MISSED if missed else InstallmentStatus.PAID
            paid = 0 if missed else amt
        out.append(
            PlanInstallment(seq=k + 1, due_date=due, amount_minor=amt, paid_minor=paid, status=st)
        )
    return out


_SLA_HOURS = {
    DisputeStatus.OPEN: 48,
    DisputeStatus.INVESTIGATING: 120,
    DisputeStatus.AWAITING_CUSTOMER: 168,
    DisputeStatus.ESCALATED_LEGAL: 240,
}
_DISPUTE_STATUSES = (
    [DisputeStatus.OPEN] * 6
    + [DisputeStatus.INVESTIGATING] * 6
    + [DisputeStatus.AWAITING_CUSTOMER] * 4
    + [DisputeStatus.ESCALATED_LEGAL] * 2
    + [DisputeStatus.RESOLVED_CREDIT, DisputeStatus.REJECTED]
)


def _disputes(b: _Build) -> None:
    """Disputes in every status, with SLA clocks running from their last status change."""
    for j, dstatus in enumerate(_DISPUTE_STATUSES):
        inv = b.take()
        age_h = b.rng.randint(2, 300)
        changed = b.now - timedelta(hours=min(age_h, b.rng.randint(1, 200)))
        resolved = dstatus in (DisputeStatus.RESOLVED_CREDIT, DisputeStatus.REJECTED)
        reason = j % len(_DISPUTE_REASONS)
        b.session.add(
            Dispute(
                org_id=b.org.id,
                customer_id=inv.customer_id,
                invoice_id=inv.id,
                reason=_DISPUTE_REASONS[reason],
                description="Customer says the delivered quantity does not match the invoice."
                if reason == 1
                else "Customer questions the invoiced price.",
                status=dstatus,
                source="collector" if j % 2 else "portal",
                opened_at=b.now - timedelta(hours=age_h),
                status_changed_at=changed,
                sla_due_at=None if resolved else changed + timedelta(hours=_SLA_HOURS[dstatus]),
                resolved_at=b.now - timedelta(hours=1) if resolved else None,
                credit_minor=inv.balance_minor // 10
                if dstatus is DisputeStatus.RESOLVED_CREDIT
                else 0,
            )
        )
        inv.disputed = not resolved
        b.counts["disputes"] += 1


def _notes(b: _Build) -> None:
    """Internal notes on about half the customers, some with an @mention of their owner."""
    rng = b.rng
    owners = {u.id: u.name.split()[0] for u in b.users.values()}
    by_customer: dict[int, list[Invoice]] = {}
    for inv in b.open_invoices.values():
        by_customer.setdefault(inv.customer_id, []).append(inv)
    for cust, *_ in b.customers:
        if rng.random() < 0.5:
            continue
        for _ in range(rng.randint(1, 2)):
            contact = b.contacts[cust.id][0]
            inv_list = by_customer.get(cust.id) or []
            tmpl = rng.choice(_NOTES)
            owner = owners[cust.collector_user_id or b.collectors[0].id]
            b.session.add(
                Note(
                    org_id=b.org.id,
                    customer_id=cust.id,
                    invoice_id=inv_list[0].id if inv_list and "{invoice}" in tmpl else None,
                    author_user_id=cust.collector_user_id,
                    source="internal",
                    body=tmpl.format(
                        contact=contact.name,
                        invoice=inv_list[0].number if inv_list else "the open invoice",
                        owner=owner,
                    ),
                    mentions=[owner] if "@" in tmpl else [],
                    created_at=b.now - timedelta(days=rng.randint(1, 40)),
                )
            )
            b.counts["notes"] += 1


def _past_touches(b: _Build) -> None:
    """Reminders already sent for invoices more than five days overdue (the cadence's past)."""
    for inv in sorted(b.open_invoices.values(), key=lambda i: i.number):
        if inv.due_date < b.today - timedelta(days=5) and b.rng.random() < 0.6:
            b.session.add(
                Activity(
                    org_id=b.org.id,
                    customer_id=inv.customer_id,
                    invoice_id=inv.id,
                    contact_id=b.contacts[inv.customer_id][0].id,
                    kind=ActivityKind.EMAIL,
                    direction="out",
                    summary=f"Reminder about {inv.number}",
                    occurred_at=b.now - timedelta(days=b.rng.randint(3, 25)),
                )
            )
            b.counts["activities"] += 1


#: The demo, step by step: each step reads what the earlier ones created.
DEMO_STEPS: tuple[Callable[[_Build], None], ...] = (
    _organisation,
    _people,
    _cadences,
    _segments_and_customers,
    _contacts,
    _invoices,
    _store_invoices,
    _promises,
    _plans,
    _disputes,
    _notes,
    _past_touches,
)


def _number(seq: int) -> str:
    return f"INV-{seq:06d}"


def _inv(
    org_id: int,
    customer_id: int,
    seq: int,
    currency: str,
    amount: int,
    balance: int,
    issue: date,
    due: date,
    status: InvoiceStatus,
    settled: date | None,
    now: datetime,
) -> dict[str, Any]:
    return {
        "org_id": org_id,
        "customer_id": customer_id,
        "number": _number(seq),
        "currency": currency,
        "amount_minor": amount,
        "balance_minor": balance,
        "issue_date": issue,
        "due_date": due,
        "status": status,
        "disputed": False,
        "paperless": True,
        "settled_date": settled,
        "source": "demo",
        "created_at": now,
        "updated_at": now,
    }


def _ascii(name: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
