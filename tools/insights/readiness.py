"""Data-Ready: how far the ledger can be trusted to drive Autopilot, as a 0-100 score.

Three components, each 0-100, weighted into the score that the Autopilot gating guardrail compares
with its threshold:
- freshness (25%): 100 when data was imported within a day, falling linearly to 0 at 30 days;
- contact coverage (50%): customers with open invoices that have a reachable e-mail contact
  (not bounced, not opted out, consent given);
- invoice completeness (25%): open invoices with a positive amount, a currency and a due date on or
  after the issue date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from memory.models import Contact, Customer, Invoice, InvoiceStatus, Organisation

WEIGHTS = {"freshness": 0.25, "contact_coverage": 0.5, "invoice_completeness": 0.25}
FRESH_DAYS, STALE_DAYS = 1, 30


@dataclass
class DataReadiness:
    score: int
    components: dict[str, int]
    issues: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"score": self.score, "components": self.components, "issues": self.issues}


def _pct(part: int, whole: int) -> int:
    return 100 if whole == 0 else round(100 * part / whole)


def data_ready(session: Session, org_id: int, now: datetime) -> DataReadiness:
    org = session.get(Organisation, org_id)
    if org is None:
        raise LookupError(f"organisation {org_id} does not exist")
    issues: list[str] = []

    if org.last_import_at is None:
        freshness = 0
        issues.append("No data has been imported yet: run `plixo import invoices FILE.csv`.")
    else:
        age_days = (now - org.last_import_at).total_seconds() / 86400
        span = STALE_DAYS - FRESH_DAYS
        freshness = round(100 * min(1.0, max(0.0, (STALE_DAYS - age_days) / span)))
        if age_days > FRESH_DAYS:
            issues.append(
                f"Last import was {age_days:.0f} days ago: re-import to refresh balances."
            )

    open_inv = and_(Invoice.org_id == org_id, Invoice.status == InvoiceStatus.OPEN)
    # Coverage is measured over customers with open invoices; with none open, over all customers.
    has_open = session.scalar(select(func.count()).where(open_inv)) or 0
    scope = (
        select(Invoice.customer_id).where(open_inv)
        if has_open
        else select(Customer.id).where(Customer.org_id == org_id)
    ).subquery()
    reachable = (
        select(Contact.customer_id)
        .where(
            Contact.org_id == org_id,
            Contact.email.is_not(None),
            Contact.bounced.is_(False),
            Contact.opted_out_email.is_(False),
            Contact.consent_email.is_(True),
        )
        .subquery()
    )
    customers_scope = session.scalar(select(func.count(func.distinct(scope.c[0])))) or 0
    customers_reachable = (
        session.scalar(
            select(func.count(func.distinct(scope.c[0]))).where(
                scope.c[0].in_(select(reachable.c.customer_id))
            )
        )
        or 0
    )
    coverage = 0 if customers_scope == 0 else _pct(customers_reachable, customers_scope)
    if customers_scope - customers_reachable:
        which = "with open invoices " if has_open else ""
        issues.append(
            f"{customers_scope - customers_reachable} of {customers_scope} customers {which}have "
            "no reachable e-mail contact: `plixo import contacts FILE.csv`."
        )

    open_count = session.scalar(select(func.count()).where(open_inv)) or 0
    complete = (
        session.scalar(
            select(func.count()).where(
                open_inv, Invoice.amount_minor > 0, Invoice.due_date >= Invoice.issue_date
            )
        )
        or 0
    )
    completeness = _pct(complete, open_count)
    if open_count - complete:
        issues.append(f"{open_count - complete} open invoices lack a valid amount or due date.")

    components = {
        "freshness": freshness,
        "contact_coverage": coverage,
        "invoice_completeness": completeness,
    }
    score = round(sum(WEIGHTS[k] * v for k, v in components.items()))
    return DataReadiness(score=score, components=components, issues=issues)
