"""``plixo cash import FILE`` / ``stripe-payout PO_ID`` / ``queue`` / ``export`` / ``close``: Cash
App Assist from a shell.

The CLI acts as the operator of the installation (a string actor, like the other commands);
auto-apply is still decided by the organisation's policy set, exactly as for an upload in the
panel. A file that cannot be read exits non-zero and writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.remittance import propose_for_import
from api.cli.common import console, fail, open_ledger, print_json
from memory.config import get_settings
from memory.models import CashLine, CashLineStatus, Organisation
from memory.money import format_money
from tools.cashapp import applying, export, intake, service, stripe_payouts
from tools.cashapp.parsers import KINDS, CashFileError
from tools.commitments.promises import CommitmentError

cash_app = typer.Typer(
    help="Cash App Assist: bank files and remittances matched to invoices.", no_args_is_help=True
)
OrgOpt = typer.Option("main", "--org", help="Organisation slug.")
JsonOpt = typer.Option(False, "--json", help="Print JSON.")
ACTOR = "plixo cash (CLI)"


def _org(session: Session, slug: str) -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.slug == slug))
    if org is None:
        fail(f"no organisation {slug!r}; import its invoices first (plixo import invoices).")
    return org


@cash_app.command("import")
def cash_import(
    file: Path = typer.Argument(..., help="CAMT.053, MT940, BAI2, CSV, PDF or e-mail text."),
    org_slug: str = OrgOpt,
    kind: str | None = typer.Option(None, "--kind", help=f"One of {', '.join(KINDS)}."),
    profile: str | None = typer.Option(None, "--profile", help="Remittance CSV mapping name."),
    as_json: bool = JsonOpt,
) -> None:
    """Import a bank statement or remittance: new lines matched, auto-applied where allowed."""
    if not file.is_file():
        fail(f"{file} does not exist or is not a file.")
    _, sessions = open_ledger()
    with sessions() as session:
        org = _org(session, org_slug)
        try:
            report = intake.import_cash_file(
                session,
                org.id,
                file.read_bytes(),
                filename=file.name,
                actor=ACTOR,
                kind=kind,
                profile=profile,
            )
        except (CashFileError, CommitmentError, stripe_payouts.PayoutError) as exc:
            session.rollback()
            fail(f"nothing was imported: {exc}")
        session.commit()
        proposals = _copilot(session, org.id, report.import_id)
    _print_report(report, as_json, proposals)


def _print_report(
    report: service.ImportReport, as_json: bool, proposals: list[dict[str, object]] | None = None
) -> None:
    if as_json:
        out = report.as_dict()
        print_json(out if proposals is None else {**out, "copilot": proposals})
        return
    console.print(
        f"{report.filename} ({report.kind}): {report.lines_new} new, {report.auto_applied} "
        f"applied automatically, {report.exceptions} waiting, {len(report.duplicates)} already "
        f"imported, {report.skipped_debits} debits skipped"
        + (f", {report.cleared} Stripe payout line(s) cleared." if report.cleared else ".")
    )
    for po in getattr(report, "payouts", []):
        cur = po["currency"]
        console.print(
            f"Payout {po['payout_id']}: {format_money(po['amount_minor'], cur)} = charges "
            f"{format_money(po['charges_minor'], cur)} - Stripe fees "
            f"{format_money(po['fees_minor'], cur)}"
            + (
                f" + refunds {format_money(po['refunds_minor'], cur)}"
                if po["refunds_minor"]
                else ""
            )
            + (
                f" + disputes {format_money(po['disputes_minor'], cur)}"
                if po["disputes_minor"]
                else ""
            )
            + (f" + other {format_money(po['other_minor'], cur)}" if po["other_minor"] else "")
            + f"; {po['charges_linked']} charge(s) already posted by the webhook; bank line "
            + (f"{po['bank_line_id']} cleared." if po.get("bank_line_id") else "not seen yet.")
        )
    if report.notice:
        console.print(f"[yellow]{report.notice}[/]")
    for err in report.errors:
        console.print(f"[red]{err.message}[/]")
    proposed = sum(1 for p in proposals or [] if p["proposed"])
    if proposed:
        console.print(f"The co-pilot proposed {proposed} split(s); accept or ignore them in /cash.")


def _copilot(session: Session, org_id: int, import_id: int) -> list[dict[str, object]]:
    """The co-pilot's split proposals for the import's waiting lines (``agent.remittance``)."""
    outcomes = propose_for_import(session, org_id, import_id, get_settings())
    session.commit()
    return [o.as_dict() for o in outcomes]


@cash_app.command("stripe-payout")
def cash_stripe_payout(
    payout_id: str = typer.Argument(..., help="The Stripe payout id (po_...)."),
    org_slug: str = OrgOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Import a Stripe payout's balance transactions from the organisation's Stripe account and
    clear the bank line that carries it (PLIXO_STRIPE_API_KEY)."""
    _, sessions = open_ledger()
    with sessions() as session:
        org = _org(session, org_slug)
        try:
            report = stripe_payouts.import_from_stripe(
                session, org.id, payout_id, settings=get_settings(), actor=ACTOR
            )
        except CommitmentError as exc:  # no key, an unknown payout, Stripe not answering
            session.rollback()
            fail(f"nothing was imported: {exc}")
        except stripe_payouts.PayoutError as exc:
            session.rollback()
            fail(f"nothing was imported: {exc}")
        session.commit()
    _print_report(report, as_json)


@cash_app.command("queue")
def cash_queue(org_slug: str = OrgOpt, as_json: bool = JsonOpt) -> None:
    """The exceptions queue: lines waiting for a person, with the best suggestion."""
    _, sessions = open_ledger()
    with sessions() as session:
        org = _org(session, org_slug)
        lines = service.waiting_lines(session, org.id, limit=1000)
        rows = [_queue_row(line) for line in lines]
    if as_json:
        print_json(rows)
        return
    table = Table("booked", "amount", "payer", "reference", "best", "score")
    for r in rows:
        table.add_row(
            r["booked_on"], r["amount"], r["payer"], r["reference"][:40], r["best"], str(r["score"])
        )
    console.print(table)


def _queue_row(line: CashLine) -> dict[str, str]:
    best = line.suggestions[0] if line.suggestions else None
    return {
        "booked_on": line.booked_on.isoformat(),
        "amount": format_money(line.amount_minor, line.currency),
        "payer": line.payer_name or "",
        "reference": line.reference,
        "best": (best["kind"] + ": " + "; ".join(best["reasons"][:2])) if best else "no match",
        "score": str(line.best_score),
        "status": CashLineStatus(line.status).value,
    }


@cash_app.command("export")
def cash_export(
    period: str = typer.Argument(..., help="YYYY-MM"),
    org_slug: str = OrgOpt,
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
) -> None:
    """Applied (and parked, unapplied) cash of a period for the ledger of record."""
    _, sessions = open_ledger()
    with sessions() as session:
        org = _org(session, org_slug)
        try:
            data = export.applied_cash(session, org.id, period, actor=ACTOR)
        except CommitmentError as exc:
            fail(str(exc))
    if fmt == "json":
        print_json(data)
    else:
        typer.echo(export.to_csv(data), nl=False)


@cash_app.command("close")
def cash_close(period: str = typer.Argument(..., help="YYYY-MM"), org_slug: str = OrgOpt) -> None:
    """Close a cash period: its applications can no longer be undone."""
    _, sessions = open_ledger()
    with sessions() as session:
        org = _org(session, org_slug)
        try:
            applying.close_period(session, org.id, period, actor=ACTOR)
        except CommitmentError as exc:
            session.rollback()
            fail(str(exc))
        session.commit()
    console.print(f"Cash period {period} is closed.")
