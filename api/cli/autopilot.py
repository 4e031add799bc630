"""``plixo autopilot``: draft every due cadence step and follow-up; the guardrails decide.

``plixo autopilot run [--segment S] [--shadow] [--json] [--as-of DATE] [--limit N]`` selects the
invoices whose cadence step (or promise/installment follow-up) is due, drafts them with the
configured model, asks the policies, stores every draft with its decision, and prints a summary.
Stopping it (Ctrl-C) keeps what was drafted; running it again drafts only the rest.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select

from agent.models import ModelConfigError, build_model, is_offline, model_label
from api.cli.common import console, err_console, fail, open_ledger, print_json
from memory.config import Settings, get_settings
from memory.db import LedgerUnavailable
from memory.models import Organisation
from tools.insights.account360 import org_today
from tools.outreach.due import UnknownSegment

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from agent.autopilot import AutopilotSummary

autopilot_app = typer.Typer(
    help="Autopilot: draft every due cadence step; the guardrails decide what may be sent.",
    no_args_is_help=True,
)


def _org(sessions: object, slug: str | None) -> tuple[int, str]:
    with sessions() as session:  # type: ignore[operator]
        orgs = session.scalars(select(Organisation).order_by(Organisation.slug)).all()
    if slug is not None:
        match = [o for o in orgs if o.slug == slug]
        if not match:
            known = ", ".join(o.slug for o in orgs) or "none yet: run `plixo demo`"
            fail(f"No organisation {slug!r} (organisations: {known}).")
        return match[0].id, match[0].slug
    if not orgs:
        fail("The ledger has no organisation yet: run `plixo demo` or import your data first.")
    if len(orgs) > 1:
        known = ", ".join(o.slug for o in orgs)
        fail(f"There are several organisations ({known}); choose one with --org SLUG.")
    return orgs[0].id, orgs[0].slug


def _model_label(settings: Settings) -> str:
    """The configured model's label, or a clear error for a missing key or URL (before the run
    touches the ledger)."""
    try:
        build_model(settings)  # fail early on a missing key or URL, before touching anything
        label = model_label(settings)
    except ModelConfigError as exc:
        fail(str(exc))
    return label


def _run_day(as_of: str | None) -> date | None:
    """``--as-of`` as a date (``None``: today for the organisation), or a clear error."""
    day: date | None = None
    if as_of is not None:
        try:
            day = date.fromisoformat(as_of)
        except ValueError:
            fail(f"--as-of {as_of!r} is not a date: write it as YYYY-MM-DD, e.g. 2025-10-21.")
    return day


def _draft_with_progress(
    sessions: sessionmaker[Session],
    org_id: int,
    slug: str,
    day: date,
    *,
    segment: str | None,
    shadow: bool,
    settings: Settings,
    limit: int | None,
) -> AutopilotSummary:
    """Run Autopilot with a progress bar on stderr (stdout stays clean for ``--json``).

    An unknown segment or a lost database is a clear error; Ctrl-C keeps what was committed
    (a rerun drafts only the rest)."""
    # lazy: the Autopilot brings DBOS (~140 modules); only its commands load it (CLI start-up)
    from agent.autopilot import run_autopilot

    with Progress(
        TextColumn(f"Autopilot {slug} {day.isoformat()}" + (" (Shadow Mode)" if shadow else "")),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("drafting", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = run_autopilot(
                sessions,
                org_id,
                as_of=day,
                segment=segment,
                shadow=True if shadow else None,
                settings=settings,
                progress=progress,
                limit=limit,
            )
        except UnknownSegment as exc:
            fail(str(exc))
        except LedgerUnavailable as exc:
            fail(
                f"{exc} Nothing drafted since the last commit is lost: run the same command "
                "again when the database is back; it resumes where it stopped."
            )
        except KeyboardInterrupt:
            err_console.print(
                "[yellow]Stopped.[/] Drafts already committed are kept; run the same command "
                "again to draft the rest (nothing is drafted twice)."
            )
            raise typer.Exit(code=130) from None
    return summary


def _print_summary(summary: AutopilotSummary) -> None:
    """The run in words and tables: what was drafted, what the guardrails decided and why,
    what was due but not chased, what waits for a human, and the errors."""
    console.print(
        f"Drafted [bold]{summary.drafted}[/] of {summary.due} due items "
        f"({summary.skipped_existing} drafted earlier, {summary.held} held for a human, "
        f"{summary.grounding_mismatches} grounding mismatches, {summary.errors} errors) "
        f"in {summary.elapsed_s:.1f}s with {summary.model_name}."
    )
    if summary.promises_missed or summary.installments_missed or summary.promises_kept:
        console.print(
            f"Commitments: {summary.promises_missed} promise(s) marked missed, "
            f"{summary.promises_kept} kept, {summary.installments_missed} installment(s) missed "
            f"({summary.plans_defaulted} plan(s) defaulted), {summary.promise_reminders} promise "
            "reminder(s) drafted."
        )
    for note in summary.notes:
        err_console.print(f"[yellow]note:[/] {note}")
    outcomes = Table("Decision", "Drafts", title="What the guardrails decided")
    for key, value in sorted(summary.by_outcome.items()):
        outcomes.add_row(key, str(value))
    console.print(outcomes)
    if summary.by_reason:
        reasons = Table("Rule", "Fired", title="Reasons")
        for key, value in sorted(summary.by_reason.items(), key=lambda kv: -kv[1]):
            reasons.add_row(key, str(value))
        console.print(reasons)
    if summary.excluded:
        excluded = Table("Reason", "Items", title="Due but not chased")
        for key, value in sorted(summary.excluded.items()):
            excluded.add_row(key, str(value))
        console.print(excluded)
    if summary.held_reasons:
        held = Table("Why", "Drafts", title="Held for a human")
        for key, value in sorted(summary.held_reasons.items()):
            held.add_row(key, str(value))
        console.print(held)
    for sample in summary.error_samples:
        err_console.print(f"[red]error:[/] {sample}")


@autopilot_app.command("run")
def run(
    segment: str | None = typer.Option(None, "--segment", help="Only this segment (by name)."),
    shadow: bool = typer.Option(
        False, "--shadow", help="Force Shadow Mode: every draft waits for a human review."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    as_of: str | None = typer.Option(
        None, "--as-of", help="The date to run for (YYYY-MM-DD); default: today for the org."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Draft at most N items."),
    org: str | None = typer.Option(None, "--org", help="Organisation slug (if several)."),
) -> None:
    """Draft every due cadence step and follow-up, decide, store, and summarise."""
    settings = get_settings()
    label = _model_label(settings)
    day = _run_day(as_of)
    _, sessions = open_ledger(upgrade=True)
    org_id, slug = _org(sessions, org)
    if day is None:
        with sessions() as session:
            day = org_today(session, org_id)
    note = (
        f"Model: {label} — the built-in offline model (deterministic drafts from the versioned "
        "templates; set PLIXO_MODEL for an LLM)."
        if is_offline(settings)
        else f"Model: {label}"
    )
    err_console.print(note)
    summary = _draft_with_progress(
        sessions,
        org_id,
        slug,
        day,
        segment=segment,
        shadow=shadow,
        settings=settings,
        limit=limit,
    )
    data = summary.model_dump(mode="json")
    if as_json:
        print_json(data)
        return
    _print_summary(summary)
