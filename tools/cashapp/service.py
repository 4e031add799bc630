"""Importing a bank file or remittance: every line stored once, matched, and decided.

A line is identified by its *fingerprint*: the statement account plus the bank's own entry
reference when the file has one, else its date, amount, currency, reference, payer and how many
identical lines came before it in the same file. A line already stored (the same statement again,
or an overlapping one) is reported per line and skipped, so re-importing applies nothing.

Each new line gets its suggestions (``matching``) and the best one is put to the policy engine as
``apply_cash`` with no person (auto-apply): ``allow`` posts it at once, in its own savepoint;
anything else leaves it in the exceptions queue with the decision's reasons. Auto-apply is off in
the seed policy set (Shadow Mode for cash), so by default every line waits for a Collector.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, null, select
from sqlalchemy.orm import Session

from memory.bulk import among, insert_rows, loaded
from memory.models import (
    CashImport,
    CashLine,
    CashLineStatus,
    Invoice,
    InvoiceStatus,
    User,
)
from memory.money import format_money
from policies.engine import engine_for
from tools.cashapp.applying import AUTO_ACTOR, Applied, LineToApply, apply_lines, get_line
from tools.cashapp.decision import apply_cash_facts
from tools.cashapp.matching import Matcher, OpenInvoice
from tools.cashapp.schemas import BankLine, LineError, ParsedFile, Suggestion
from tools.kit.gc_pauses import fewer_gc_pauses
from tools.ledger.policy_overrides import policy_set_for

CHUNK = 500


@dataclass
class ImportReport:
    """What one import did, line by line where it matters (for the CLI, the API and the page)."""

    import_id: int
    kind: str
    filename: str
    statement_ref: str | None
    lines_read: int
    lines_new: int
    duplicates: list[LineError] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    skipped_debits: int = 0
    auto_applied: int = 0
    exceptions: int = 0
    notice: str | None = None
    cleared: int = 0  # explained without posting: a Stripe payout's line (stripe_payouts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_import(
    session: Session,
    org_id: int,
    kind: str,
    filename: str,
    sha256: str,
    statement_ref: str | None,
    *,
    actor: User | str,
    now: datetime,
) -> CashImport:
    """The record of one import (a bank file, a remittance, a Stripe payout), flushed so its
    lines can name it."""
    run = CashImport(
        org_id=org_id,
        kind=kind,
        filename=filename[:255],
        sha256=sha256,
        statement_ref=statement_ref,
        created_by_user_id=actor.id if isinstance(actor, User) else None,
        created_at=now,
    )
    session.add(run)
    session.flush()
    return run


def fingerprint(account: str | None, line: BankLine, occurrence: int) -> str:
    if line.bank_ref:
        raw = f"{account or ''}|ref|{line.bank_ref}"
    else:
        raw = "|".join(
            str(x)
            for x in (
                account or "",
                line.booked_on.isoformat(),
                line.amount_minor,
                line.currency,
                line.reference,
                line.payer_name or "",
                line.payer_iban or "",
                occurrence,
            )
        )
    return hashlib.sha256(raw.encode()).hexdigest()


def earlier_import(session: Session, org_id: int, sha: str, parsed: ParsedFile) -> str | None:
    same = session.scalars(
        select(CashImport)
        .where(CashImport.org_id == org_id, CashImport.sha256 == sha)
        .order_by(CashImport.id)
    ).first()
    if same is not None:
        return (
            f"This file was already imported on {same.created_at:%Y-%m-%d %H:%M} UTC "
            f"({same.filename}); lines already stored are skipped, nothing is applied twice."
        )
    if parsed.statement_ref:
        stmt = session.scalars(
            select(CashImport)
            .where(
                CashImport.org_id == org_id,
                CashImport.kind == parsed.kind,
                CashImport.statement_ref == parsed.statement_ref,
            )
            .order_by(CashImport.id)
        ).first()
        if stmt is not None:
            return (
                f"Statement {parsed.statement_ref} was already imported on "
                f"{stmt.created_at:%Y-%m-%d} ({stmt.filename}); only lines not stored then are new."
            )
    return None


def store_new(
    session: Session,
    org_id: int,
    run: CashImport,
    parsed: ParsedFile,
    report: ImportReport,
    now: datetime,
) -> list[tuple[dict[str, Any], BankLine]]:
    """The lines not stored before, as the columns of their rows (inserted once they are
    matched and decided, so each row is written once, in one INSERT per chunk)."""
    seen: Counter[tuple[Any, ...]] = Counter()
    prints: list[tuple[str, BankLine]] = []
    for line in parsed.lines:
        key = (line.booked_on, line.amount_minor, line.currency, line.reference, line.payer_name)
        prints.append((fingerprint(parsed.account, line, seen[key]), line))
        seen[key] += 1
    existing = _existing(session, org_id, [fp for fp, _ in prints])
    stored: list[tuple[dict[str, Any], BankLine]] = []
    in_file: set[str] = set()
    for fp, line in prints:
        if fp in existing or fp in in_file:
            report.duplicates.append(
                LineError(
                    line.line_no,
                    f"Line {line.line_no} ({format_money(line.amount_minor, line.currency)}, "
                    f"{line.booked_on.isoformat()}) was already imported; skipped.",
                )
            )
            continue
        in_file.add(fp)
        row = {
            "org_id": org_id,
            "import_id": run.id,
            "line_no": line.line_no,
            "fingerprint": fp,
            "booked_on": line.booked_on,
            "amount_minor": line.amount_minor,
            "currency": line.currency,
            "payer_name": (line.payer_name or None) and line.payer_name[:200],
            "payer_iban": (line.payer_iban or None) and line.payer_iban[:40],
            "reference": line.reference,
            "bank_ref": (line.bank_ref or None) and line.bank_ref[:140],
            "created_at": now,
        }
        stored.append((row, line))
    report.lines_new = len(stored)
    return stored


def existing_prints(session: Session, org_id: int, prints: list[str]) -> set[str]:
    """The fingerprints among ``prints`` already stored for the organisation."""
    return _existing(session, org_id, prints)


def _existing(session: Session, org_id: int, prints: list[str]) -> set[str]:
    found: set[str] = set()
    for cond in among(session, CashLine.fingerprint, prints):
        found.update(
            session.scalars(select(CashLine.fingerprint).where(CashLine.org_id == org_id, cond))
        )
    return found


# The columns an inserted line has that the importer does not set (its rows are built whole).
_UNSET: dict[str, Any] = {
    "status": CashLineStatus.EXCEPTION,
    "decision": None,
    "customer_id": None,
    "note": None,
    "applied_by": None,
    "applied_at": None,
}


def _insert(session: Session, rows: list[dict[str, Any]], wanted: set[str]) -> dict[str, CashLine]:
    """Insert a chunk of lines in one statement; the ``wanted`` ones (by fingerprint) come back
    as rows of the session, built from what was written (nothing is read back).

    Why one statement (:func:`memory.bulk.insert_rows`, RETURNING the id and fingerprint): the
    unit of work inserts one row at a time on SQLite, to learn each id. A line without a
    decision is written with SQL NULL (``null()``: a JSON None would be stored as the JSON
    ``null``), so every row has the same columns and the chunk is never split into runs.
    """
    table = cast(Table, CashLine.__table__)
    written = insert_rows(
        session,
        table,
        [{**row, "decision": row.get("decision", null())} for row in rows],
        (table.c.id, table.c.fingerprint),
    )
    ids: dict[str, int] = {fp: i for i, fp in written}
    out: dict[str, CashLine] = {}
    for row in rows:
        if row["fingerprint"] not in wanted:
            continue
        # as if read: every column loaded, nothing to write
        line = loaded(CashLine, {**_UNSET, **row, "id": ids[row["fingerprint"]]})
        session.add(line)
        out[line.fingerprint] = line
    return out


def decide_lines(
    session: Session,
    org_id: int,
    lines: list[tuple[CashLine, BankLine]],
    report: ImportReport,
    now: datetime,
    *,
    preset: dict[int, list[Suggestion]] | None = None,
) -> None:
    """Suggest, decide and post lines another importer has stored already (a Stripe payout's
    charges, written with their balance transaction), taking ``preset`` suggestions (by line
    id) instead of the matcher's where given. Bank files go through :func:`match_and_decide`,
    which stores each line once it is decided."""
    if not lines:
        return
    policy = policy_set_for(session, org_id)
    matcher = Matcher(session, org_id, policy.cash_app)
    engine = engine_for(policy)
    for start in range(0, len(lines), CHUNK):
        queued: list[tuple[CashLine, LineToApply]] = []
        for row, line in lines[start : start + CHUNK]:
            suggestions = (preset or {}).get(row.id) or matcher.suggest(line)
            row.suggestions = [s.as_dict() for s in suggestions]
            row.best_score = suggestions[0].score if suggestions else 0
            if not suggestions:
                report.exceptions += 1
                continue
            facts = {"amount_minor": row.amount_minor, "currency": row.currency}
            row.decision = decision = _auto_decision(engine, matcher, facts, suggestions[0])
            if decision["outcome"] != "allow":
                report.exceptions += 1
                continue
            _consume(matcher, suggestions[0])
            queued.append((row, LineToApply(row.id, suggestions[0], auto_decision=decision)))
        _post_queued(session, org_id, matcher, queued, report, now)
    session.flush()


def match_and_decide(
    session: Session,
    org_id: int,
    lines: list[tuple[dict[str, Any], BankLine]],
    report: ImportReport,
    now: datetime,
) -> None:
    """Suggest and decide for every line; the lines are stored and the ones auto-apply may take
    are posted, a chunk of lines at a time.

    The matcher is told at once what each allowed line will pay (so the next line of the file
    sees today's balances) and the posting follows in :func:`apply_lines`; a line refused there
    waits in the queue, and its invoices are read back into the matcher as they really are.
    """
    if not lines:
        return
    policy = policy_set_for(session, org_id)
    matcher = Matcher(session, org_id, policy.cash_app)
    engine = engine_for(policy)
    open_currencies = _open_currencies(session, org_id)
    with fewer_gc_pauses():  # see tools.kit.gc_pauses: the import's heap is large and lives long
        for start in range(0, len(lines), CHUNK):
            _chunk(
                session,
                org_id,
                matcher,
                engine,
                open_currencies,
                lines[start : start + CHUNK],
                report,
                now,
            )
    session.flush()


def _chunk(
    session: Session,
    org_id: int,
    matcher: Matcher,
    engine: Any,
    open_currencies: set[str],
    chunk: list[tuple[dict[str, Any], BankLine]],
    report: ImportReport,
    now: datetime,
) -> None:
    """Match, decide, store and post one chunk of lines."""
    allowed: list[tuple[str, Suggestion, dict[str, Any]]] = []
    for row, line in chunk:
        suggestions = matcher.suggest(line)
        row["suggestions"] = [s.as_dict() for s in suggestions]
        row["best_score"] = suggestions[0].score if suggestions else 0
        if line.currency not in open_currencies:
            report.errors.append(
                LineError(
                    line.line_no,
                    f"Line {line.line_no}: {format_money(line.amount_minor, line.currency)} "
                    f"- no open invoice is in {line.currency}; it waits in the exceptions "
                    "queue (park it as unapplied cash, or refund it).",
                )
            )
        if not suggestions:
            report.exceptions += 1
            continue
        decision = _auto_decision(engine, matcher, row, suggestions[0])
        row["decision"] = decision
        if decision["outcome"] != "allow":
            report.exceptions += 1
            continue
        _consume(matcher, suggestions[0])
        allowed.append((row["fingerprint"], suggestions[0], decision))
    stored = _insert(session, [row for row, _ in chunk], {fp for fp, _, _ in allowed})
    queued = [
        (stored[fp], LineToApply(stored[fp].id, best, auto_decision=decision))
        for fp, best, decision in allowed
    ]
    _post_queued(session, org_id, matcher, queued, report, now)


def _auto_decision(
    engine: Any, matcher: Matcher, row: dict[str, Any], best: Suggestion
) -> dict[str, Any]:
    """Ask the guardrails whether plixo may apply ``best`` alone (not ``allow``: a person
    decides); a write-off is measured against the invoices' balances as the matcher has them."""
    balances = {
        a.invoice_id: inv.balance_minor
        for a in best.allocations
        if a.invoice_id is not None and (inv := matcher.invoices.get(a.invoice_id)) is not None
    }
    facts = apply_cash_facts(best, row["amount_minor"], row["currency"], balances)
    decision: dict[str, Any] = engine.decide("apply_cash", facts).as_dict()
    return decision


def _post_queued(
    session: Session,
    org_id: int,
    matcher: Matcher,
    queued: list[tuple[CashLine, LineToApply]],
    report: ImportReport,
    now: datetime,
) -> None:
    if not queued:
        return
    results = apply_lines(session, org_id, [it for _, it in queued], actor=AUTO_ACTOR, now=now)
    for (row, item), result in zip(queued, results, strict=True):
        if isinstance(result, Applied):
            report.auto_applied += 1
            continue
        report.exceptions += 1
        row.decision = {
            **(item.auto_decision or {}),
            "outcome": "needs_approval",
            "error": str(result),
        }
        _resync(matcher, session, item.suggestion)


def _consume(matcher: Matcher, s: Suggestion) -> None:
    """Tell the matcher what auto-apply is about to pay, so later lines see today's balances."""
    for a in s.allocations:
        old = matcher.invoices.get(a.invoice_id) if a.invoice_id is not None else None
        if old is None:
            continue
        matcher.remove_invoice(old)
        left = old.balance_minor - a.amount_minor - a.adjustment_minor
        if left > 0:
            matcher.add_invoice(replace(old, balance_minor=left))


def _resync(matcher: Matcher, session: Session, s: Suggestion) -> None:
    """A queued line was refused after all: its invoices are open as the ledger says."""
    for a in s.allocations:
        inv = session.get(Invoice, a.invoice_id) if a.invoice_id is not None else None
        if inv is None:
            continue
        old = matcher.invoices.get(inv.id)
        if old is not None:
            matcher.remove_invoice(old)
        if inv.status == InvoiceStatus.OPEN and inv.balance_minor > 0:
            matcher.add_invoice(
                OpenInvoice(
                    inv.id,
                    inv.number,
                    inv.customer_id,
                    inv.currency,
                    inv.balance_minor,
                    inv.amount_minor,
                    inv.due_date,
                    inv.disputed,
                )
            )


def _open_currencies(session: Session, org_id: int) -> set[str]:
    return set(
        session.scalars(
            select(Invoice.currency)
            .where(Invoice.org_id == org_id, Invoice.status == InvoiceStatus.OPEN)
            .distinct()
        )
    )


def rematch(session: Session, org_id: int, line_id: int) -> list[Suggestion]:
    """Fresh suggestions for one waiting line (after other lines or payments moved balances)."""
    row = get_line(session, org_id, line_id)
    matcher = Matcher(session, org_id, policy_set_for(session, org_id).cash_app)
    line = BankLine(
        line_no=row.line_no,
        booked_on=row.booked_on,
        amount_minor=row.amount_minor,
        currency=row.currency,
        reference=row.reference,
        payer_name=row.payer_name,
        payer_iban=row.payer_iban,
        bank_ref=row.bank_ref,
    )
    suggestions = matcher.suggest(line)
    row.suggestions = [s.as_dict() for s in suggestions]
    row.best_score = suggestions[0].score if suggestions else 0
    return suggestions


def waiting_lines(session: Session, org_id: int, *, limit: int = 200) -> list[CashLine]:
    return list(
        session.scalars(
            select(CashLine)
            .where(CashLine.org_id == org_id, CashLine.status == CashLineStatus.EXCEPTION)
            .order_by(CashLine.booked_on, CashLine.id)
            .limit(limit)
        )
    )
