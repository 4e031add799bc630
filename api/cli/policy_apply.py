"""``plixo policy apply FILE``: a human-unit override, its diff, a 90-day dry run, then (``--save``)
the new version. Without ``--save`` nothing is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from sqlalchemy import select

from api.cli.common import console, fail, open_ledger, print_json
from memory import clock
from memory.models import Organisation, User
from policies.types import PolicyError
from tools.admin import policy_apply as pa
from tools.ledger.policy_overrides import PolicyChangeRefused


def _org(session: Any, slug: str | None) -> Organisation:
    orgs = session.scalars(select(Organisation).order_by(Organisation.slug)).all()
    if slug is not None:
        orgs = [o for o in orgs if o.slug == slug]
        if not orgs:
            fail(f"No organisation {slug!r}; see `plixo init` or `plixo demo`.")
    if len(orgs) != 1:
        fail("Choose the organisation with --org SLUG." if orgs else "No organisation yet.")
    return orgs[0]


def _read(file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        fail(f"Cannot read {file}: {exc}")
    if not isinstance(data, dict):
        fail(f"{file} must be a mapping of sections (plans:, credits:, quiet_hours:, ...).")
    return data


def _print(proposal: pa.Proposal, run: pa.DryRun) -> None:
    console.print("[bold]Changes against the active policy[/]")
    for path, change in sorted(proposal.changes.items()):
        console.print(f"  {path}: {change['from']} -> {change['to']}")
    replayed = ", ".join(f"{n} {a}" for a, n in sorted(run.replayed.items())) or "no actions"
    console.print(
        f"[bold]Dry run[/] over {run.since:%Y-%m-%d} to {run.until:%Y-%m-%d}: {replayed}; "
        f"{run.changed} would have been decided differently."
    )
    for shift, n in sorted(run.outcome_changes.items()):
        console.print(f"  {shift}: {n}")
    for rule in sorted(run.rules.values(), key=lambda r: r.rule_id):
        console.print(
            f"  [bold]{rule.rule_id}[/]: fires {rule.newly_fired} more, "
            f"{rule.no_longer_fired} fewer"
        )
        for ex in rule.examples:
            console.print(
                f"    e.g. {ex['subject']} ({ex['at'][:10]}): {ex['before']} -> {ex['after']}"
            )


def policy_apply(
    file: Path = typer.Argument(..., help="Override in human units (YAML)."),
    org: str | None = typer.Option(None, "--org", help="Organisation slug (if several)."),
    as_user: str | None = typer.Option(None, "--as", help="E-mail of the Controller saving it."),
    save: bool = typer.Option(False, "--save", help="Save after the dry run (default: do not)."),
    days: int = typer.Option(pa.WINDOW_DAYS, min=1, max=366, help="Days of history to replay."),
    as_json: bool = typer.Option(False, "--json", help="Print diff and dry run as JSON."),
) -> None:
    """Validate a policy override, show its diff and a dry run of the last 90 days; --save it."""
    human = _read(file)
    _, sessions = open_ledger(upgrade=True)
    now = clock.now()
    with sessions() as session:
        organisation = _org(session, org)
        try:
            proposal = pa.propose(session, organisation.id, human)
        except PolicyError as exc:
            fail(f"{exc}. Nothing was saved.")
        run = pa.dry_run(session, organisation.id, proposal, now, days)
        if as_json:
            print_json({"changes": proposal.changes, "dry_run": run.as_dict(), "saved": save})
        else:
            _print(proposal, run)
        if not save:
            if not as_json:
                console.print("Nothing saved; re-run with --save --as EMAIL to apply it.")
            return
        user = session.scalars(
            select(User).where(
                User.org_id == organisation.id, User.email == (as_user or "").lower()
            )
        ).first()
        if user is None or not user.active:
            fail("--save needs --as EMAIL of an active person allowed to change policies.")
        try:
            row = pa.apply(
                session, organisation.id, user, proposal, comment=f"plixo policy apply {file.name}"
            )
        except (PolicyChangeRefused, PolicyError) as exc:
            session.rollback()
            fail(f"{exc}. Nothing was saved.")
        session.commit()
        if not as_json:
            console.print(f"Saved as policy version {row.version}.")
