"""One business date: `plixo demo`, Autopilot and the panel agree late on a Saturday in New York.

At 23:30 on Saturday in New York it is already 04:30 on Sunday in UTC. The demo organisation lives
in America/New_York, so its "today" is Saturday everywhere: the demo build, its Autopilot pass, a
later `plixo autopilot run`, Today's Focus and Renewal Risk. Nothing written carries a timestamp
after the moment it was written, no invoice has two pending drafts, and no pending draft says
something about a date that is false on the organisation's date. A run on a later day supersedes
the older pending drafts of the invoices it writes for.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import time_machine
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.app import create_app
from api.cli.main import app
from memory import clock
from memory.config import Settings
from memory.db import session_factory
from memory.models import (
    AuditEvent,
    Base,
    Draft,
    DraftStatus,
    Invoice,
    Persona,
    User,
    UTCDateTime,
)
from tools.demo.builder import DEMO_SLUG, build_demo
from tools.drafts.service import SUPERSEDABLE
from tools.grounding.date_wording import date_wording_problems
from tools.ledger.orgs import get_org
from tools.ledger.users import issue_api_token

NY = ZoneInfo("America/New_York")
SATURDAY_LATE = datetime(2026, 12, 5, 23, 30, tzinfo=NY)  # 2026-12-06 04:30 UTC, a Sunday
SATURDAY = date(2026, 12, 5)
THURSDAY_LATE = datetime(2026, 12, 10, 23, 30, tzinfo=NY)
THURSDAY = date(2026, 12, 10)
#: Columns that record when something happened (deadlines and expiries may lie ahead).
STAMPS = {
    "created_at", "updated_at", "occurred_at", "opened_at", "status_changed_at", "resolved_at",
    "received_at", "trained_at", "computed_at", "started_at", "finished_at", "last_import_at",
    "uploaded_at", "sent_at", "claimed_at",
}  # fmt: skip

runner = CliRunner()


def _at(moment: datetime) -> time_machine.travel:
    """Travel to ``moment`` on a server whose local zone is UTC (time-machine sets the process's
    zone to the destination's ZoneInfo), as most servers run: ``date.today()`` says Sunday. The
    clock stands still, so a slow machine cannot carry the run past midnight."""
    return time_machine.travel(moment.astimezone(ZoneInfo("UTC")), tick=False)


def _cli(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _latest_stamp(session: Session) -> tuple[datetime, str]:
    """The latest "when it happened" timestamp anywhere in the ledger, and where it is."""
    latest: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), "")
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if column.name not in STAMPS or not isinstance(column.type, UTCDateTime):
                continue
            value = session.execute(select(column).order_by(column.desc()).limit(1)).scalar()
            if value is not None and value > latest[0]:
                latest = (value, f"{table.name}.{column.name}")
    return latest


def _pending_problems(
    session: Session, org_id: int, today: date, written_since: datetime | None = None
) -> list[str]:
    """Contradictions among the drafts still waiting: two per invoice, or wording false today
    (in the drafts written since ``written_since``, when given)."""
    pending = session.scalars(
        select(Draft).where(Draft.org_id == org_id, Draft.status.in_(list(SUPERSEDABLE)))
    ).all()
    per_invoice = Counter(d.invoice_id for d in pending if d.invoice_id is not None)
    found = [f"invoice {i} has {n} pending drafts" for i, n in per_invoice.items() if n > 1]
    due = dict(session.execute(select(Invoice.id, Invoice.due_date)).tuples().all())
    for d in pending:
        if not d.body or (written_since is not None and d.created_at < written_since):
            continue
        step = (d.stated_facts or {}).get("step_date")
        if step and date.fromisoformat(step) > today:
            found.append(f"draft {d.id} is for step date {step}, after {today}")
        for p in date_wording_problems(
            f"{d.subject}\n\n{d.body}",
            language=d.language,
            today=today,
            due_dates=(due[d.invoice_id],) if d.invoice_id in due else (),
        ):
            found.append(f"draft {d.id}: {p.message}")
    return found


def _token(session: Session, org_id: int, role: Persona) -> dict[str, str]:
    user = session.scalars(
        select(User).where(User.org_id == org_id, User.role == role).order_by(User.id)
    ).first()
    assert user is not None
    token = issue_api_token(session, user)
    session.commit()
    return {"Authorization": f"Bearer {token}"}


def _pages_agree(engine: Engine, session: Session, org_id: int, data_dir: Path) -> None:
    settings = Settings(
        data_dir=data_dir,
        public_base_url="http://testserver",
        secret_key="business-date-test-secret-0123456789",  # type: ignore[arg-type]
    )
    now = clock.now()
    with TestClient(create_app(engine, settings)) as client:
        csm = _token(session, org_id, Persona.CSM)
        renewal = client.get("/api/renewal-risk?window=365", headers=csm)
        assert renewal.status_code == 200, renewal.text
        report = renewal.json()
        assert report["as_of"] == SATURDAY.isoformat()
        computed = datetime.fromisoformat(report["computed_at"])
        changed = datetime.fromisoformat(report["ledger_updated_at"])
        assert changed <= computed <= clock.now() and computed >= now
        collector = _token(session, org_id, Persona.COLLECTOR)
        focus = client.get("/api/focus", headers=collector)
        assert focus.status_code == 200, focus.text
        assert focus.json()["as_of"] == SATURDAY.isoformat()
        for page in ("/", "/focus", "/renewal-risk", "/queue"):
            assert client.get(page, headers=collector).status_code == 200, page
        draft_id = session.scalars(
            select(Draft.id).where(
                Draft.org_id == org_id, Draft.status == DraftStatus.PENDING_REVIEW
            )
        ).first()
        assert draft_id is not None
        assert client.get(f"/drafts/{draft_id}", headers=collector).status_code == 200


def test_demo_autopilot_and_pages_share_one_business_date_late_on_saturday(
    data_dir: Path, engine: Engine
) -> None:
    sessions = session_factory(engine)
    with _at(SATURDAY_LATE):
        demo = _cli("demo")
        assert demo["as_of"] == SATURDAY.isoformat()
        assert demo["autopilot"]["as_of"] == SATURDAY.isoformat()
        assert demo["autopilot"]["drafted"] > 0
        # Overdue invoices whose pre-due step was still inside the catch-up window.
        assert demo["autopilot"]["excluded"].get("pre_due_step_overdue", 0) > 0
        again = _cli("autopilot", "run")
        assert again["as_of"] == SATURDAY.isoformat()
        assert again["drafted"] == 0 and again["skipped_existing"] > 0
        with sessions() as session:
            org = get_org(session, DEMO_SLUG)
            assert org is not None
            latest, where = _latest_stamp(session)
            assert latest <= clock.now(), f"{where} is {latest}, in the future"
            assert _pending_problems(session, org.id, SATURDAY) == []
            _pages_agree(engine, session, org.id, data_dir)

    with _at(THURSDAY_LATE):
        later = _cli("autopilot", "run")
        assert later["as_of"] == THURSDAY.isoformat() and later["drafted"] > 0
        with sessions() as session:
            org = get_org(session, DEMO_SLUG)
            assert org is not None
            superseded = session.scalars(
                select(Draft).where(Draft.org_id == org.id, Draft.status == DraftStatus.SUPERSEDED)
            ).all()
            assert superseded, "a later step must supersede the older pending draft"
            events = session.scalars(
                select(AuditEvent).where(
                    AuditEvent.org_id == org.id, AuditEvent.action == "draft.superseded"
                )
            ).all()
            assert {e.subject_id for e in events} == {d.id for d in superseded}
            for e in events:
                successor = session.get(Draft, e.detail["superseded_by"])
                old = session.get(Draft, e.subject_id)
                assert successor is not None and old is not None
                # A consolidated draft (one message for a customer's due invoices) is the newer
                # word on every invoice it names, not only on its first.
                named = set((successor.stated_facts or {}).get("invoice_numbers") or [])
                covered = {successor.invoice_id} | set(
                    session.scalars(
                        select(Invoice.id).where(
                            Invoice.customer_id == successor.customer_id, Invoice.number.in_(named)
                        )
                    )
                    if successor.run_key and successor.run_key.startswith("group:")
                    else set()
                )
                assert old.invoice_id in covered and successor.id > old.id
                assert e.from_state in {s.value for s in SUPERSEDABLE}
            assert _pending_problems(session, org.id, THURSDAY, written_since=THURSDAY_LATE) == []


def test_demo_built_before_dawn_is_stamped_no_later_than_now(session: Session) -> None:
    """At 02:00 in New York (07:00 UTC) the demo's usual 09:00 UTC stamp is still ahead."""
    with _at(datetime(2026, 12, 5, 2, 0, tzinfo=NY)):
        result = build_demo(session, seed=3)
        session.flush()
        assert result.org.last_import_at is not None
        assert result.org.last_import_at <= clock.now()
        latest, where = _latest_stamp(session)
        assert latest <= clock.now(), f"{where} is {latest}, in the future"
        due = session.scalars(select(Invoice.due_date).where(Invoice.org_id == result.org.id))
        assert max(due) >= SATURDAY  # laid out around the organisation's Saturday
