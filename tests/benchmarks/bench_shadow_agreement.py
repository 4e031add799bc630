"""Cost of the Shadow Mode agreement report
(``tools.drafts.shadow_agreement.agreement_report``), which the sending-modes page computes on
every view, and of ``segment_record``, which enabling Autopilot
reads.

Seeds one organisation (SQLite in a temporary directory) with N decided Autopilot drafts over three
segments and three cadence steps: 80 % approved unchanged, 12 % edited then approved (the model's
text kept as turn 1), 8 % rejected, spread over 12 weeks. Prints ONE JSON object.

Usage: ``python tests/benchmarks/bench_shadow_agreement.py [--n 2000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

BODY = (
    "Hello {name} team,\n\nInvoice INV-{n} for $1,{n:03d}.00 was due on September 26, 2025. "
    "You can pay it here: https://pay.example.test/t/{n}\n\nThank you,\nAccounts receivable"
)


def _seed(session, n: int, now: datetime) -> int:  # type: ignore[no-untyped-def]
    from memory.models import (
        Approval,
        Cadence,
        CadenceStep,
        Customer,
        Draft,
        DraftRevision,
        DraftStatus,
        Organisation,
        Persona,
        Segment,
        User,
    )

    rng = random.Random(7)
    org = Organisation(name="Bench", slug="bench", timezone="America/New_York")
    session.add(org)
    session.flush()
    user = User(org_id=org.id, email="c@x.test", name="C", role=Persona.COLLECTOR)
    cadence = Cadence(org_id=org.id, name="Standard")
    cadence.steps = [
        CadenceStep(position=i, day_offset=d, template="reminder")
        for i, d in ((1, -3), (2, 7), (3, 30))
    ]
    session.add_all([user, cadence])
    session.flush()
    segments = [Segment(org_id=org.id, name=s, cadence_id=cadence.id) for s in ("A", "B", "C")]
    session.add_all(segments)
    session.flush()
    customer = Customer(org_id=org.id, external_ref="c1", name="Acme", segment_id=segments[0].id)
    session.add(customer)
    session.flush()
    for i in range(n):
        body = BODY.format(name="Acme", n=i % 1000)
        roll = rng.random()
        status = DraftStatus.REJECTED if roll > 0.92 else DraftStatus.SENT
        d = Draft(
            org_id=org.id, customer_id=customer.id, segment_id=segments[i % 3].id,
            cadence_step_id=cadence.steps[i % 3].id, run_key=f"b{i}", subject="Invoice",
            body=body, status=status,
        )  # fmt: skip
        session.add(d)
        session.flush()
        at = now - timedelta(minutes=rng.randint(0, 12 * 7 * 24 * 60))
        if 0.8 < roll <= 0.92:
            session.add(DraftRevision(draft_id=d.id, seq=1, author="copilot", subject=d.subject,
                                      body=body, created_at=at))  # fmt: skip
            d.body = body.replace("Thank you,", "Please pay immediately.\n\nThank you,")
        session.add(
            Approval(
                org_id=org.id,
                subject_type="draft",
                subject_id=d.id,
                approver_user_id=user.id,
                outcome="rejected" if status is DraftStatus.REJECTED else "approved",
                reason="Too early" if status is DraftStatus.REJECTED else None,
                created_at=at,
            )  # fmt: skip
        )
    session.commit()
    return org.id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="Decided drafts to seed.")
    ap.add_argument("--repeat", type=int, default=3, help="Reports to time.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from memory.db import make_engine, session_factory
        from memory.migrate import upgrade
        from memory.models import Segment
        from tools.drafts.shadow_agreement import agreement_report, segment_record

        engine = make_engine(f"sqlite:///{tmp}/plixo.db")
        upgrade(engine)
        sessions = session_factory(engine)
        now = datetime(2025, 10, 7, 18, 0, tzinfo=UTC)
        with sessions() as session:
            org_id = _seed(session, args.n, now)
        report_s: list[float] = []
        record_s: list[float] = []
        for _ in range(args.repeat):
            with sessions() as session:
                t = time.perf_counter()
                report = agreement_report(session, org_id, now=now)
                report_s.append(time.perf_counter() - t)
                seg_id = session.query(Segment.id).filter_by(org_id=org_id, name="A").scalar()
                t = time.perf_counter()
                record = segment_record(session, org_id, seg_id)
                record_s.append(time.perf_counter() - t)
        print(
            json.dumps(
                {
                    "decided_drafts": args.n,
                    "report_seconds_median": round(statistics.median(report_s), 3),
                    "segment_record_seconds_median": round(statistics.median(record_s), 3),
                    "org_unchanged_pct": report.organisation.window.unchanged_pct,
                    "segment_a_window": record.decided,
                    "load_average_1m": round(os.getloadavg()[0], 1),
                }
            )
        )


if __name__ == "__main__":
    main()
