"""The contact's holiday calendar, read from the ledger: the customer's country, else the
organisation's (its ``plixo init`` profile), and what the guardrails then decide on a holiday."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from memory.models import Contact, Customer, Organisation, OrganisationProfile
from policies.engine import decide
from tools.grounding.guardrail_facts import outreach_context

# Friday 2 January 2026, 10:00 in Bern: Berchtoldstag there, a working day in New York.
BERCHTOLDSTAG = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)


def _customer(session: Session, org: Organisation, ref: str, country: str | None) -> Customer:
    customer = Customer(
        org_id=org.id, external_ref=ref, name=f"Customer {ref}", timezone="Europe/Zurich"
    )
    customer.country_code = country
    session.add(customer)
    session.flush()
    session.add(
        Contact(
            org_id=org.id,
            customer_id=customer.id,
            name="Payer",
            email=f"{ref.lower()}@example.com",
            timezone="Europe/Zurich",
        )
    )
    session.flush()
    return customer


def _facts(session: Session, org: Organisation, customer: Customer) -> dict[str, object]:
    ctx = outreach_context(
        session,
        org.id,
        customer_id=customer.id,
        contact_id=customer.contacts[0].id,
        invoice_ids=[],
        channel="email",
        now=BERCHTOLDSTAG,
    )
    return {
        "now": BERCHTOLDSTAG.isoformat(),
        "channel": "email",
        "maintenance": False,
        "cron_paused": False,
        "contact": ctx.contact.model_dump(),
        "invoices": [],
        "promises": [],
        "touches": [],
        "actor_role": "Sales",
        "template_approved": True,
        "scheduled_autopilot_touches": [],
    }


def test_the_customers_country_else_the_organisations_picks_the_calendar(
    session: Session, org: Organisation
) -> None:
    session.add(OrganisationProfile(org_id=org.id, country_code="CH", subdivision="BE"))
    own = _customer(session, org, "US-1", "US")
    none = _customer(session, org, "XX-1", None)
    session.commit()

    us_facts = _facts(session, org, own)
    assert us_facts["contact"]["country"] == "US"  # type: ignore[index]
    assert decide("send_nudge", us_facts).outcome == "allow"

    bern_facts = _facts(session, org, none)
    assert bern_facts["contact"]["country"] == "CH-BE"  # type: ignore[index]
    held = decide("send_nudge", bern_facts)
    assert held.outcome == "defer"
    assert [r.rule_id for r in held.reasons if r.outcome.value == "defer"] == [
        "quiet_hours.holiday"
    ]
    assert "Saint Berchtold's Day (CH-BE)" in held.reasons[0].message


def test_an_organisation_without_a_profile_applies_no_national_calendar(
    session: Session, org: Organisation
) -> None:
    customer = _customer(session, org, "XX-2", None)
    session.commit()
    facts = _facts(session, org, customer)
    assert facts["contact"]["country"] is None  # type: ignore[index]
    assert decide("send_nudge", facts).outcome == "allow"
