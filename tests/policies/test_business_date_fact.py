"""Promise dates are the organisation's dates: the ``business_date`` fact, not the contact's day.

At 15:00 UTC on 2025-10-07 it is 11:00 on 2025-10-07 for a contact in New York, and already
2025-10-08 for an organisation on Kiritimati (UTC+14). A promise for 2025-10-06 with one day of
grace is past its grace on the organisation's calendar, whatever the contact's clock says; the
contact's clock still decides quiet hours (11:00 is inside the sending window).
"""

from __future__ import annotations

from datetime import date

from tests.policies.factories import NOW, check, draft, ids

PROMISE = {
    "promised_date": "2025-10-06",
    "status": "open",
    "invoice_numbers": ["INV-1"],
    "grace_days": 1,
}


def _facts(business_date: date | None) -> dict[str, object]:
    facts = draft(promises=[PROMISE], contact={"timezone": "America/New_York"})
    if business_date is not None:
        facts["business_date"] = business_date.isoformat()
    return facts


def test_the_promise_pauses_through_its_grace_on_the_organisations_date() -> None:
    assert NOW.isoformat().startswith("2025-10-07T15:00")
    d = check("send_draft", _facts(date(2025, 10, 7)))
    assert d.outcome == "defer" and "promise.open" in ids(d)


def test_the_organisations_next_day_resumes_the_cadence_whatever_the_contacts_date() -> None:
    d = check("send_draft", _facts(date(2025, 10, 8)))
    assert d.allowed and "promise.missed" in ids(d) and "promise.open" not in ids(d)


def test_without_the_fact_the_contacts_date_stands_in() -> None:
    d = check("send_draft", _facts(None))  # New York is on 2025-10-07
    assert d.outcome == "defer" and "promise.open" in ids(d)
