"""``plixo mailbox sync``: read the payers' replies from the IMAP mailbox (``PLIXO_IMAP_*``).

Safe to run again at any time, and while a worker's scheduled sync runs (``mailbox_sync_cron``):
each message is stored once per Message-ID and the folder's cursor moves with it. Replies go to
reply triage, whose proposals wait for a person; bounces and opt-outs change the contact
(audited); auto-replies are labelled. The organisation is ``--org``, else ``PLIXO_IMAP_ORG``, else
the only one (``agent.mailbox_sync``, the same sync the worker runs).
"""

from __future__ import annotations

import typer
from rich.table import Table

from api.cli.common import console, fail, open_ledger, print_json
from memory import clock
from memory.config import get_settings
from tools.replies import mailbox

mailbox_app = typer.Typer(help="Payers' replies from the IMAP mailbox.", no_args_is_help=True)


@mailbox_app.command("sync")
def sync(
    org: str | None = typer.Option(
        None, "--org", help="Organisation slug (if several; default PLIXO_IMAP_ORG)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Read new messages: thread them, triage replies, mark bounces and opt-outs."""
    # lazy: importing it registers a DBOS workflow and loads DBOS; only this command needs it
    from agent.mailbox_sync import sync_configured

    settings = get_settings()
    _, sessions = open_ledger(upgrade=True)
    with sessions() as session:
        try:
            result = sync_configured(session, settings, org=org, now=clock.now())
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
