"""``plixo mailbox sync``: read the payers' replies from the IMAP mailbox (``PLIXO_IMAP_*``).

Safe to run again at any time (from cron, or a loop): each message is stored once per Message-ID
and the folder's cursor moves with it. Replies go to reply triage, whose proposals wait for a
person; bounces and opt-outs change the contact (audited); auto-replies are labelled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.cli_common import console, fail, open_ledger, print_json
from memory import clock
from memory.config import Settings, get_settings
from memory.models import Organisation
from tools import mailbox

mailbox_app = typer.Typer(help="Payers' replies from the IMAP mailbox.", no_args_is_help=True)


def _org_id(session: Session, slug: str | None) -> int:
    orgs = session.scalars(select(Organisation).order_by(Organisation.slug)).all()
    if slug is not None:
        match = [o for o in orgs if o.slug == slug]
        if not match:
            known = ", ".join(o.slug for o in orgs) or "none yet"
            fail(f"No organisation {slug!r} (organisations: {known}).")
        return match[0].id
    if not orgs:
        fail("The ledger has no organisation yet: run `plixo demo` or import your data first.")
    if len(orgs) > 1:
        fail(f"There are several organisations ({', '.join(o.slug for o in orgs)}); use --org.")
    return orgs[0].id


def reply_triage(settings: Settings, now: datetime) -> mailbox.Triage:
    """The agent's reply triage for the sync: it proposes, never writes; a failure holds the
    reply for a person (``held``) instead of stopping the sync."""
    from agent.service import triage_reply

    def triage(session: Session, org_id: int, customer_id: int, text: str) -> dict[str, Any]:
        result = triage_reply(session, org_id, customer_id, text, settings, now=now)
        data: dict[str, Any] = result.model_dump(mode="json")
        data["acceptable"] = [
            {"customer_id": customer_id, **change.model_dump(mode="json")}
            for change in result.proposed_changes
        ]
        return data

    return triage


@mailbox_app.command("sync")
def sync(
    org: str | None = typer.Option(None, "--org", help="Organisation slug (if several)."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Read new messages: thread them, triage replies, mark bounces and opt-outs."""
    settings = get_settings()
    _, sessions = open_ledger(upgrade=True)
    now = clock.now()
    with sessions() as session:
        org_id = _org_id(session, org)
        try:
            with mailbox.connect(settings) as client:
                result = mailbox.sync_mailbox(
                    session, org_id, settings, client, triage=reply_triage(settings, now), now=now
                )
        except mailbox.MailboxError as exc:
            fail(str(exc))
    data = {
        "mailbox": result.mailbox,
        "uidvalidity": result.uidvalidity,
        "uidvalidity_changed": result.uidvalidity_changed,
        "fetched": result.fetched,
        "stored": result.stored,
        "duplicates": result.duplicates,
        "kinds": result.kinds,
        "contacts_changed": result.contacts_changed,
        "errors": result.errors,
    }
    if as_json:
        print_json(data)
        return
    table = Table("fetched", "stored", "already read", "kinds", "contacts changed")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(result.kinds.items())) or "-"
    table.add_row(
        str(result.fetched), str(result.stored), str(result.duplicates), kinds,
        str(len(result.contacts_changed)),
    )  # fmt: skip
    console.print(table)
    for error in result.errors:
        console.print(f"[yellow]{error}[/]")
