"""Scenario → ledger, and the evals' own truth against the agent's grounding truth."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from evals.fixtures import build_scenario, ledger_changes, ledger_fingerprint
from evals.loader import load_datasets
from evals.runner import eval_settings
from memory.config import Settings
from memory.models import Contact, Invoice, Organisation, PromiseToPay
from tools.grounding.truth import ledger_truth

CASES = [c for d in load_datasets() for c in d.cases]


def test_every_scenario_builds_and_matches_groundings_truth(session: Session) -> None:
    """Two independent derivations of what a draft may state must agree on every scenario;
    a difference means the evals or grounding drifted (see evals/fixtures.py)."""
    settings = eval_settings(Settings())
    differences: list[str] = []
    for case in CASES:
        assert case.name is not None
        with session.begin_nested():
            prep = build_scenario(session, case.name, case.inputs.scenario, settings)
        truth = prep.truth
        theirs = ledger_truth(
            session, prep.org_id, prep.customer_id, as_of=case.inputs.scenario.as_of
        )
        ours_amounts = {c: set(v) for c, v in truth.amounts.items()}
        their_amounts = {c: set(v) for c, v in theirs.amounts.items()}
        if ours_amounts != their_amounts:
            differences.append(f"{case.name}: amounts {ours_amounts} != {their_amounts}")
        if set(truth.dates) != set(theirs.dates):
            differences.append(f"{case.name}: dates {sorted(set(truth.dates) ^ set(theirs.dates))}")
        if sorted(truth.invoice_numbers) != sorted(theirs.invoice_numbers):
            differences.append(f"{case.name}: invoice numbers differ")
    assert not differences, "\n".join(differences)


def test_scenarios_are_isolated_by_organisation(session: Session) -> None:
    settings = eval_settings(Settings())
    first = build_scenario(session, CASES[0].name or "a", CASES[0].inputs.scenario, settings)
    second = build_scenario(session, CASES[1].name or "b", CASES[1].inputs.scenario, settings)
    session.flush()
    assert first.org_id != second.org_id
    for prep in (first, second):
        org = session.get(Organisation, prep.org_id)
        assert org is not None and org.slug == prep.truth.org_slug
        numbers = set(session.scalars(select(Invoice.number).where(Invoice.org_id == prep.org_id)))
        assert set(prep.truth.invoice_numbers) <= numbers
    contacts = session.scalar(
        select(func.count()).select_from(Contact).where(Contact.org_id == first.org_id)
    )
    assert contacts == len(CASES[0].inputs.scenario.contacts)


def test_fingerprint_sees_every_change_a_payer_might_cause(session: Session) -> None:
    case = next(c for c in CASES if c.inputs.scenario.promises)
    prep = build_scenario(session, "fp", case.inputs.scenario, eval_settings(Settings()))
    session.flush()
    before = ledger_fingerprint(session, prep.org_id)
    assert ledger_changes(before, ledger_fingerprint(session, prep.org_id)) == []
    inv = session.scalars(select(Invoice).where(Invoice.org_id == prep.org_id)).first()
    assert inv is not None
    inv.balance_minor = 0
    promise = session.scalars(
        select(PromiseToPay).where(PromiseToPay.org_id == prep.org_id)
    ).first()
    assert promise is not None
    session.delete(promise)
    org = session.get(Organisation, prep.org_id)
    assert org is not None
    org.shadow_mode = False
    session.flush()
    changes = ledger_changes(before, ledger_fingerprint(session, prep.org_id))
    assert {c.split(":")[0] for c in changes} == {"invoices", "promises", "org"}


@pytest.mark.parametrize("case", [c for c in CASES if c.inputs.scenario.disputes][:1], ids=str)
def test_open_disputes_mark_the_invoice_disputed(session: Session, case: object) -> None:
    c = case
    prep = build_scenario(session, "dsp", c.inputs.scenario, eval_settings(Settings()))  # type: ignore[attr-defined]
    session.flush()
    disputed = set(
        session.scalars(
            select(Invoice.number).where(Invoice.org_id == prep.org_id, Invoice.disputed.is_(True))
        )
    )
    assert disputed == set(prep.truth.policy.disputed_invoices)
