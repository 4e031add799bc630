"""``plixo import invoices|customers|contacts FILE.csv``: validated, all-or-nothing by default."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from api.cli.common import console, err_console, fail, open_ledger, print_json
from memory import clock
from memory.config import get_settings
from tools.imports import importer
from tools.insights.readiness import DataReadiness, data_ready
from tools.ledger.orgs import get_or_create_org

import_app = typer.Typer(
    help="Import invoices, customers and contacts from CSV.", no_args_is_help=True
)

FileArg = typer.Argument(..., help="The CSV file.", show_default=False)
OrgOpt = typer.Option("main", "--org", help="Organisation slug (created on first import).")
PartialOpt = typer.Option(
    False, "--partial", help="Commit the good rows; write the rejected ones to a CSV."
)
ProfileOpt = typer.Option(
    None, "--profile", help="Column mapping: a declared name or your own YAML mapping file."
)
JsonOpt = typer.Option(False, "--json", help="Print the report as JSON.")
PROGRESS_MIN_ROWS = 3000


def _run(
    kind: str, file: Path, org_slug: str, partial: bool, profile: str | None, as_json: bool
) -> None:
    _, sessions = open_ledger()
    started = clock.now()
    with sessions() as session:
        try:
            org = get_or_create_org(session, org_slug)
            if kind == "invoices":
                with Progress(
                    TextColumn("importing"),
                    BarColumn(),
                    TaskProgressColumn(),
                    console=err_console,
                    transient=True,
                    disable=as_json,
                ) as bar:
                    task = bar.add_task("rows", total=None)

                    def tick(done: int, total: int) -> None:
                        if total >= PROGRESS_MIN_ROWS:
                            bar.update(task, completed=done, total=total)

                    report = importer.import_invoices(
                        session, org, file, partial=partial, profile=profile, progress=tick
                    )
            elif kind == "customers":
                report = importer.import_customers(
                    session, org, file, partial=partial, profile=profile
                )
            else:
                report = importer.import_contacts(
                    session, org, file, partial=partial, profile=profile
                )
            if report.committed:
                session.commit()
            else:
                session.rollback()
        except importer.ImportFileError as exc:
            session.rollback()
            fail(f"nothing was imported: {exc}")
        except SQLAlchemyError as exc:
            session.rollback()
            fail(
                f"nothing was imported: the ledger refused the write ({exc.__class__.__name__}: "
                f"{str(exc.orig if hasattr(exc, 'orig') else exc).splitlines()[0]})."
            )
        readiness = data_ready(session, org.id, clock.now()) if report.committed else None

    out_dir = get_settings().data_dir / "imports"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%S")
    report_path = out_dir / f"{file.stem}-{kind}-{stamp}.json"
    if report.errors and partial:
        rejects = report_path.with_name(report_path.stem + "-rejects.csv")
        importer.write_rejects(report, rejects)
        report.rejects_file = str(rejects)
    data = report.to_dict() | {
        "organisation": org_slug,
        "data_ready": readiness.to_dict() if readiness else None,
        "report_file": str(report_path),
    }
    report_path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")

    if as_json:
        print_json(data)
    else:
        _print_report(report, readiness, report_path)
    if report.errors and not partial:
        raise typer.Exit(code=1)


def _print_report(report: importer.ImportReport, readiness: object, report_path: Path) -> None:
    verdict = "[green]committed[/]" if report.committed else "[red]nothing committed[/]"
    console.print(
        f"[bold]{report.kind}[/] from {report.file} (mapping {report.profile}): {verdict}"
    )
    table = Table(show_header=False, box=None)
    for label, value in (
        ("rows read", report.rows),
        ("rejected rows", report.rejected),
        ("created", report.created),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
        ("customers created", report.customers_created),
        ("payments created", report.payments_created),
    ):
        table.add_row(label, str(value))
    console.print(table)
    for w in report.warnings:
        console.print(f"[yellow]note:[/] {w}")
    if report.errors:
        errs = Table("row", "column", "value", "reason", title="Rejected rows")
        for e in report.errors[:20]:
            errs.add_row(str(e.row), e.column, e.value, e.reason)
        console.print(errs)
        if len(report.errors) > 20:
            console.print(f"... and {len(report.errors) - 20} more in {report_path}")
        if not report.committed:
            console.print("Fix these rows and import again, or use --partial to import the rest.")
    if report.rejects_file:
        console.print(f"Rejected rows written to {report.rejects_file}")
    if readiness is not None:
        assert isinstance(readiness, DataReadiness)
        console.print(f"Data-Ready score: [bold]{readiness.score}[/]/100 {readiness.components}")
        for issue in readiness.issues:
            console.print(f"  · {issue}")
    console.print(f"[dim]report: {report_path}[/]")


@import_app.command("invoices")
def import_invoices_cmd(
    file: Path = FileArg,
    org: str = OrgOpt,
    partial: bool = PartialOpt,
    profile: str | None = ProfileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Import invoices (and their customers and settlement payments)."""
    _run("invoices", file, org, partial, profile, as_json)


@import_app.command("customers")
def import_customers_cmd(
    file: Path = FileArg,
    org: str = OrgOpt,
    partial: bool = PartialOpt,
    profile: str | None = ProfileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Import customers (segment, owners, time zone, renewal date)."""
    _run("customers", file, org, partial, profile, as_json)


@import_app.command("contacts")
def import_contacts_cmd(
    file: Path = FileArg,
    org: str = OrgOpt,
    partial: bool = PartialOpt,
    profile: str | None = ProfileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Import payer contacts (e-mail, phone, time zone, opt-outs)."""
    _run("contacts", file, org, partial, profile, as_json)
