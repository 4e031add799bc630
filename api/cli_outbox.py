"""The ``plixo outbox`` commands: run the delivery worker, list the outbox.

Run one worker per machine or several: claims are atomic and leased, so workers never send the same
row twice, and a worker that dies mid-send is replaced by any other after its lease expires.
Also runnable as ``python -m api.cli_outbox`` (the kill-and-restart test starts it that way).
"""

from __future__ import annotations

import os
import signal
import socket
from types import FrameType

import typer

from api.cli_common import console, fail, open_ledger, print_json
from memory.config import get_settings
from memory.models import OutboxStatus
from tools import outbox

outbox_app = typer.Typer(help="Deliver approved messages (exactly once).", no_args_is_help=True)


@outbox_app.command("work")
def work(
    once: bool = typer.Option(False, "--once", help="Deliver what is queued now, then exit."),
    worker_id: str = typer.Option(
        "", "--worker-id", help="Name in claims and the audit trail (default: host and pid)."
    ),
    lease: float = typer.Option(
        outbox.DEFAULT_LEASE_S,
        min=1.0,
        help="Seconds a claim is held; a dead worker's rows are re-claimed after this.",
    ),
    poll: float = typer.Option(1.0, min=0.05, help="Seconds between polls when idle."),
    batch: int = typer.Option(10, min=1, max=500, help="Rows claimed at a time."),
    max_attempts: int = typer.Option(outbox.DEFAULT_MAX_ATTEMPTS, min=1, max=50),
    json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON at the end."),
) -> None:
    """Run the delivery worker: claim, send over SMTP, mark sent; retry transient failures."""
    _, sessions = open_ledger(upgrade=False)
    settings = get_settings()
    name = worker_id or f"{socket.gethostname()}:{os.getpid()}"
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not json_out:
        console.print(
            f"outbox worker {name}: SMTP {settings.smtp_host}:{settings.smtp_port}, "
            f"lease {lease:g}s"
        )
    try:
        result = outbox.run_worker(
            sessions,
            outbox.smtp_sender(settings),
            worker=name,
            poll_s=poll,
            limit=batch,
            lease_s=lease,
            max_attempts=max_attempts,
            once=once,
            should_stop=lambda: stopping,
            settings=settings,
        )
    except Exception as exc:  # the ledger went away: say so, no traceback
        fail(f"The outbox worker stopped: {exc}")
    counts = {
        "worker": name,
        "claimed": result.claimed,
        "sent": result.sent,
        "retried": result.retried,
        "failed": result.failed,
        "lost": result.lost,
    }
    if json_out:
        print_json(counts)
    else:
        console.print(
            f"sent {result.sent}, retried {result.retried}, failed {result.failed}, "
            f"lost leases {result.lost}"
        )


@outbox_app.command("list")
def list_(
    org: str = typer.Option(..., "--org", help="Organisation slug."),
    status: str = typer.Option("", help="queued | claimed | sent | failed"),
    limit: int = typer.Option(50, min=1, max=1000),
) -> None:
    """List an organisation's outbox as JSON."""
    from tools.orgs import get_org

    _, sessions = open_ledger(upgrade=False)
    try:
        wanted = OutboxStatus(status) if status else None
    except ValueError:
        fail(f"Unknown status {status!r}; use queued, claimed, sent or failed.")
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


if __name__ == "__main__":
    outbox_app()
