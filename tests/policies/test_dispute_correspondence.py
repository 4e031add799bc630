"""Dispute correspondence: a reply from the dispute panel may name the disputed invoice and needs no
pay link, but never asks for the disputed amount and still meets every other guardrail."""

from __future__ import annotations

import pytest

from tests.policies.factories import LINK, check, deep_update, draft, ids

DISPUTED = [{"number": "INV-1", "disputed": True}]
ACK = (
    "Hello Dana, thank you for your query about invoice INV-1 ($1,240.00). We have opened a case "
    "and will reply by 2025-09-15."
)


def reply(body: str = ACK, **changes: object) -> dict[str, object]:
    """A reviewed dispute reply about the disputed INV-1, without a pay link."""
    base = draft(
        invoices=DISPUTED,
        approved_by_roles=["Collector"],
        content={"body": body, "pay_link": None},
    )
    base["dispute_correspondence"] = True
    return deep_update(base, changes)


def test_dispute_correspondence_about_a_disputed_invoice_is_allowed_without_a_pay_link() -> None:
    d = check("send_draft", reply())
    assert d.outcome.value == "allow"
    assert "dispute.correspondence" in ids(d)
    assert not ids(d) & {"dispute.no_dunning", "content.missing_pay_link"}


def test_the_same_text_as_an_ordinary_draft_is_still_blocked() -> None:
    facts = reply()
    facts["dispute_correspondence"] = False
    d = check("send_draft", facts)
    assert d.outcome.value == "block"
    assert {"dispute.no_dunning", "content.missing_pay_link"} <= ids(d)


@pytest.mark.parametrize(
    "wording",
    [
        "Please pay the invoice by Friday.",
        "The balance remains due.",
        "Your account is OVER-DUE.",
        "Bitte überweisen Sie den Betrag.",
        "Veuillez régler la facture.",
    ],
)
def test_dunning_wording_in_dispute_correspondence_is_refused(wording: str) -> None:
    d = check("send_draft", reply(f"{ACK} {wording}"))
    assert d.outcome.value == "block"
    assert "dispute.correspondence_demand" in ids(d)


def test_a_pay_link_in_dispute_correspondence_is_refused() -> None:
    d = check("send_draft", reply(content={"body": f"{ACK} {LINK}", "pay_link": LINK}))
    assert d.outcome.value == "block"
    assert "dispute.correspondence_pay_link" in ids(d)


def test_dunning_wording_is_allowed_once_the_invoice_is_no_longer_disputed() -> None:
    facts = reply(f"{ACK} The balance remains due.")
    facts["invoices"] = [{"number": "INV-1", "disputed": False}]
    d = check("send_draft", facts)
    assert d.outcome.value == "allow"
    assert not ids(d) & {"dispute.correspondence_demand", "dispute.correspondence"}


def test_an_autopilot_draft_about_a_disputed_invoice_is_still_refused() -> None:
    d = check("send_draft", draft(invoices=DISPUTED))
    assert d.outcome.value == "block"
    assert "dispute.no_dunning" in ids(d)
    assert "dispute.correspondence" not in ids(d)


def test_unreviewed_dispute_correspondence_waits_for_a_person_even_with_autopilot_on() -> None:
    d = check("send_draft", reply(approved_by_roles=[]))
    assert d.outcome.value == "needs_approval"
    assert d.approver_role == "Collector"
    assert {"autopilot.allowed", "dispute.correspondence_review"} <= ids(d)


def test_shadow_mode_still_asks_for_review() -> None:
    d = check("send_draft", reply(approved_by_roles=[], org_shadow_mode=True))
    assert d.outcome.value == "needs_approval"
    assert "shadow.review_required" in ids(d)


@pytest.mark.parametrize(
    ("change", "rule", "outcome"),
    [
        ({"contact": {"opted_out": True}}, "contact.opted_out", "block"),
        ({"now": "2025-10-08T02:00:00+00:00"}, "quiet_hours.window", "defer"),
        ({"content": {"body": ACK + " Our lawyers will call."}}, "content.legal_threat", None),
        ({"content": {"amounts": [{"amount_minor": 1, "currency": "USD"}]}}, None, "block"),
    ],
)
def test_every_other_guardrail_still_applies(
    change: dict[str, object], rule: str | None, outcome: str | None
) -> None:
    d = check("send_draft", deep_update(reply(), change))
    if rule:
        assert rule in ids(d)
    if outcome:
        assert d.outcome.value == outcome
    else:
        assert d.outcome.value == "needs_approval" and d.approver_role == "Legal"
