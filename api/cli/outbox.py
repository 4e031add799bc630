"""The ``plixo outbox`` commands: the delivery worker (an alias of ``plixo worker``), the outbox,
and what a person decides for an uncertain or failed message.
"""

from __future__ import annotations

import typer

from api.cli.common import console, fail, open_ledger, print_json
from api.cli.worker import worker
from memory.models import OutboxStatus, User
from tools.delivery import outbox
from tools.ledger.orgs import get_org

outbox_app = typer.Typer(help="Deliver approved messages (never twice).", no_args_is_help=True)


@outbox_app.command("work")
def work(
    once: bool = typer.Option(False, "--once", help="Deliver what is queued now, then exit."),
    json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON at the end."),
) -> None:
    """Run a worker (the same as ``plixo worker``): delivery and Autopilot workflows."""
    worker(status=False, once=once, retry="", cancel="", as_user="", json_out=json_out)


@outbox_app.command("list")
def list_(
    org: str = typer.Option(..., "--org", help="Organisation slug."),
    status: str = typer.Option("", help="queued | claimed | sent | failed | uncertain | cancelled"),
    limit: int = typer.Option(50, min=1, max=1000),
) -> None:
    """List an organisation's outbox as JSON."""
    _, sessions = open_ledger(upgrade=False)
    try:
        wanted = OutboxStatus(status) if status else None
    except ValueError:
        fail(f"Unknown status {status!r}; use {', '.join(s.value for s in OutboxStatus)}.")
    with sessions() as session:
        organisation = get_org(session, org)
        if organisation is None:
            fail(f"No organisation with slug {org!r}.")
        rows = outbox.list_messages(session, organisation.id, status=wanted, limit=limit)
        print_json(
            [
                {
                    "id": m.id,
                    "draft_id": m.draft_id,
                    "to": m.recipient,
                    "subject": m.subject,
                    "status": m.status.value,
                    "attempts": m.attempts,
                    "message_id": m.message_id,
                    "sent_at": m.sent_at,
                    "last_error": m.last_error,
                }
                for m in rows
            ]
        )


@outbox_app.command("resolve")
def resolve(
    outbox_id: int = typer.Argument(..., help="The outbox message (see `plixo outbox list`)."),
    action: str = typer.Argument(..., help="confirm_sent | resend | cancel"),
    as_user: str = typer.Option(..., "--as", help="Your plixo e-mail (checked and audited)."),
) -> None:
    """Confirm an uncertain message sent, resend it (same Message-ID), or cancel it."""
    from sqlalchemy import select

    _, sessions = open_ledger(upgrade=False)
    with sessions() as session:
        user = session.scalar(select(User).where(User.email == as_user))
        if user is None or not user.active:
            fail(f"No active user {as_user!r}.")
        try:
            row = outbox.resolve(session, user.org_id, outbox_id, user=user, action=action)
        except outbox.OutboxError as exc:
            fail(str(exc))
        session.commit()
        console.print(f"outbox {row.id} ({row.message_id}) is now {row.status.value}")


if __name__ == "__main__":
    outbox_app()
