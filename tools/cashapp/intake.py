"""The one way in for a cash file: a bank statement or remittance list, or a Stripe payout export.

Why a module of its own: a bank file's lines are first cleared against Stripe payouts
(``stripe_payouts``) before they are matched, and a payout export is imported by
``stripe_payouts`` on ``service``'s import machinery; dispatching here, above both, keeps the
two in one direction (``stripe_payouts`` -> ``service``) with no cycle.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy.orm import Session

from memory.models import User, utcnow
from tools.cashapp import parsers, service, stripe_payouts
from tools.cashapp.applying import require


def import_cash_file(
    session: Session,
    org_id: int,
    data: bytes,
    *,
    filename: str,
    actor: User | str,
    kind: str | None = None,
    profile: str | None = None,
    now: datetime | None = None,
) -> service.ImportReport:
    """Read, store, match and decide every line of ``data`` (see the module docstring).

    A file that cannot be read raises :class:`parsers.CashFileError` and writes nothing.
    """
    now = now or utcnow()
    require(actor, "apply_cash")
    if kind == parsers.STRIPE_PAYOUT or (kind is None and parsers.is_stripe_payout_export(data)):
        # A Stripe payout's balance transactions, not bank lines.
        return stripe_payouts.import_csv(
            session, org_id, data, filename=filename, actor=actor, now=now
        )
    parsed = parsers.parse(data, kind=kind, profile=profile)
    sha = hashlib.sha256(data).hexdigest()
    notice = service.earlier_import(session, org_id, sha, parsed)
    run = service.open_import(
        session, org_id, parsed.kind, filename, sha, parsed.statement_ref, actor=actor, now=now
    )
    report = service.ImportReport(
        import_id=run.id,
        kind=parsed.kind,
        filename=run.filename,
        statement_ref=parsed.statement_ref,
        lines_read=len(parsed.lines) + len(parsed.errors),
        lines_new=0,
        errors=list(parsed.errors),
        skipped_debits=parsed.skipped_debits,
        notice=notice,
    )
    new_lines = service.store_new(session, org_id, run, parsed, report, now)
    new_lines = stripe_payouts.clear_payout_lines(
        session, org_id, new_lines, report, actor=actor, now=now
    )
    service.match_and_decide(session, org_id, new_lines, report, now)
    run.report = report.as_dict()
    session.flush()
    return report
