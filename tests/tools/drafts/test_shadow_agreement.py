"""Shadow Mode agreement (tools/drafts/shadow_agreement.py): what counts as a decision, what
changed in an edit, the weekly trend on the organisation's business weeks, and the window the gate
reads."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from sqlalchemy.orm import Session

from memory.models import DraftRevision, DraftStatus, Organisation, Persona
from tests.api.factories import NOW, Seeded, seed_review, settings_for
from tools.drafts import service as drafts
from tools.drafts import shadow_agreement
from tools.drafts.shadow_agreement import Decision, figures, what_changed
from tools.ledger.policy_overrides import update_policy

BEFORE = (
    "Invoice INV-7 is past due\n\nHello Acme team,\n\nInvoice INV-7 for $1,200.00 was due on "
    "September 26, 2025. You can pay it here: https://pay.test/x\n\nThank you,\nAccounts receivable"
)


@pytest.mark.parametrize(
    ("after", "kinds"),
    [
        (BEFORE.replace("$1,200.00", "$1,100.00"), ("amounts",)),
        (BEFORE.replace("September 26", "September 29"), ("dates",)),
        (BEFORE.replace("Thank you,", "Pay immediately."), ("tone",)),
        (BEFORE.replace("Hello Acme team", "Dear Acme team"), ("wording",)),
        (
            BEFORE + "\n\nP.S. Our bank details changed last month; the link has the new ones.",
            ("length",),
        ),
    ],
)
def test_what_changed_names_the_kind_of_edit(after: str, kinds: tuple[str, ...]) -> None:
    assert what_changed(BEFORE, after) == kinds


def test_tone_markers_are_matched_in_german() -> None:
    before = "Rechnung R-1 ist fällig.\n\nVielen Dank"
    after = "Rechnung R-1 ist fällig. Zahlen Sie umgehend.\n\nVielen Dank"
    assert "tone" in what_changed(before, after, "de")


def _week(n: int) -> date:
    return date(2025, 9, 29) + timedelta(weeks=n)


def test_figures_count_outcomes_distances_and_reasons_case_blind() -> None:
    ds = [
        Decision(1, 1, 1, NOW, _week(0), "unchanged", distance=0),
        Decision(2, 1, 1, NOW, _week(0), "edited", distance=10, changes=("tone", "length")),
        Decision(3, 1, 1, NOW, _week(0), "edited", distance=30, changes=("amounts",)),
        Decision(4, 1, 1, NOW, _week(0), "rejected", reason="Wrong  contact"),
        Decision(5, 1, 1, NOW, _week(0), "rejected", reason="wrong contact"),
        Decision(6, 1, 1, NOW, _week(0), "rejected", reason="Too early"),
    ]
    f = figures(ds)
    assert (f.decided, f.unchanged, f.edited, f.rejected, f.unchanged_pct) == (6, 1, 2, 3, 16.7)
    assert (f.edit_distance_mean, f.edit_distance_median, f.edit_distance_max) == (20.0, 20.0, 30)
    assert f.changes == {"amounts": 1, "dates": 0, "tone": 1, "length": 1, "wording": 0}
    assert f.rejection_reasons == [
        {"reason": "Wrong contact", "count": 2},
        {"reason": "Too early", "count": 1},
    ]
    empty = figures([])
    assert empty.unchanged_pct is None and empty.edit_distance_median is None


@pytest.fixture
def seeded(session: Session, org: Organisation, tmp_path: Path) -> Seeded:
    return seed_review(session, org, settings_for(str(tmp_path)), drafts=4)


def _approve(session: Session, seeded: Seeded, i: int) -> None:
    d = seeded.drafts[i]
    drafts.approve_draft(
        session, seeded.org.id, d.id, user=seeded.users[Persona.COLLECTOR],
        expected_version=d.version, settings=settings_for(), now=NOW,
    )  # fmt: skip
    session.commit()


def test_decisions_by_business_week_and_drafts_sent_back_wait(
    session: Session, seeded: Seeded
) -> None:
    collector = seeded.users[Persona.COLLECTOR]
    # Sunday 5 October, 23:30 in New York is already Monday in UTC: the New York week counts
    with time_machine.travel(datetime(2025, 10, 6, 3, 30, tzinfo=UTC), tick=False):
        _approve(session, seeded, 0)
    with time_machine.travel(NOW, tick=False):
        d = seeded.drafts[1]
        drafts.edit_draft(
            session, seeded.org.id, d.id, user=collector, expected_version=d.version,
            subject=d.subject.replace(" is past due", ": payment past due"), body=d.body,
            settings=settings_for(), now=NOW,
        )  # fmt: skip
        session.commit()
        _approve(session, seeded, 1)
        r = seeded.drafts[2]
        drafts.reject_draft(
            session, seeded.org.id, r.id, user=collector, expected_version=r.version,
            reason="Wrong contact",
        )  # fmt: skip
        _approve(session, seeded, 3)
        # the fourth goes back to review (held at send time): it waits for a new decision
        seeded.drafts[3].status = DraftStatus.PENDING_REVIEW
        session.commit()
    turns = session.query(DraftRevision).filter_by(draft_id=seeded.drafts[1].id).all()
    assert [(t.seq, t.author) for t in turns] == [(1, "copilot"), (2, "editor")]
    report = shadow_agreement.agreement_report(session, seeded.org.id, weeks=3, now=NOW)
    seg = report.segment(seeded.segment.id)
    assert seg is not None
    f = seg.window
    assert (f.decided, f.unchanged, f.edited, f.rejected) == (3, 1, 1, 1)
    assert f.changes["wording"] == 1 and f.edit_distance_max, f.changes
    assert [(w.week, w.decided, w.unchanged) for w in seg.weeks] == [
        (date(2025, 9, 22), 0, 0),
        (date(2025, 9, 29), 1, 1),
        (date(2025, 10, 6), 2, 0),
    ]


def test_the_gate_reads_the_last_window_of_decisions(session: Session, seeded: Seeded) -> None:
    update_policy(
        session,
        seeded.org.id,
        seeded.users[Persona.CONTROLLER],
        {"autopilot": {"shadow_window_drafts": 2}},
    )
    session.commit()
    collector = seeded.users[Persona.COLLECTOR]
    r = seeded.drafts[0]
    with time_machine.travel(NOW - timedelta(days=1), tick=False):
        drafts.reject_draft(
            session, seeded.org.id, r.id, user=collector, expected_version=r.version,
            reason="Too early",
        )  # fmt: skip
        session.commit()
    with time_machine.travel(NOW, tick=False):
        _approve(session, seeded, 1)
        _approve(session, seeded, 2)
    record = shadow_agreement.segment_record(session, seeded.org.id, seeded.segment.id)
    assert (record.decided, record.unchanged) == (2, 2)  # the older rejection is outside
    report = shadow_agreement.agreement_report(session, seeded.org.id, now=NOW)
    seg = report.segment(seeded.segment.id)
    assert seg is not None and seg.meets_minimum
    with pytest.raises(ValueError, match="weeks"):
        shadow_agreement.agreement_report(session, seeded.org.id, weeks=0)
