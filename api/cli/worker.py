"""``plixo worker``: run a worker process (delivery and Autopilot workflows on DBOS, and the
scheduled sending-domain re-check, notification sweep and mailbox sync), or show and act on what
the workers hold.

Start as many as you like, on one machine or several sharing the PostgreSQL ledger: they share the
queues. ``--status`` lists the queues, the live workers, and per organisation the workflows in
flight or failed and the messages waiting for a person; ``--retry`` / ``--cancel`` act on one
workflow as a person holding the ``manage_delivery`` permission (audited).
Also runnable as ``python -m api.cli.worker`` (the kill-and-restart tests start it that way).
"""

from __future__ import annotations

import signal
from types import FrameType

import typer
from sqlalchemy.orm import Session, sessionmaker

from api import worker as runtime
from api.cli.common import console, err_console, fail, open_ledger, print_json
from memory.config import Settings, get_settings
from memory.db import LedgerUnavailable


def worker(
    status: bool = typer.Option(False, "--status", help="Show queues and workflows, then exit."),
    once: bool = typer.Option(
        False,
        "--once",
        help="Deliver what is queued now, then exit (scripts, tests); runs no scheduled work.",
    ),
    retry: str = typer.Option("", "--retry", help="Retry this failed or cancelled workflow id."),
    cancel: str = typer.Option("", "--cancel", help="Cancel this workflow id."),
    as_user: str = typer.Option(
        "", "--as", help="Your plixo e-mail (needed with --retry/--cancel; checked and audited)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run a worker: durable delivery (never sent twice), Autopilot drafting, and on schedules
    the sending-domain re-check, the notification sweep and the mailbox sync."""
    settings = get_settings()
    _, sessions = open_ledger(upgrade=True)
    if not (status or retry or cancel):
        _work(settings, sessions, once=once, json_out=json_out)
        return
    try:
        dbos = runtime.client(settings)
    except LedgerUnavailable as exc:
        fail(str(exc))
    if status:
        data = runtime.status(sessions, settings, dbos)
        dbos.destroy()
        if json_out:
            print_json(data)
        else:
            _print_status(data)
        return
    if retry or cancel:
        if not as_user:
            fail("Say who you are with --as YOUR_EMAIL: retries and cancels are audited.")
        try:
            outcome = runtime.act_on_workflow(
                sessions,
                retry or cancel,
                action="retry" if retry else "cancel",
                user_email=as_user,
                dbos=dbos,
            )
        except runtime.OperationRefused as exc:
            fail(str(exc))
        finally:
            dbos.destroy()
        console.print(outcome)


def _work(
    settings: Settings, sessions: sessionmaker[Session], *, once: bool, json_out: bool
) -> None:
    """Run this process as a worker until SIGTERM or Ctrl-C (or, with ``once``, drained)."""
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not json_out:
        err_console.print(
            f"plixo worker: SMTP {settings.smtp_host}:{settings.smtp_port}; Ctrl-C to stop"
        )
    try:
        result = runtime.run_worker(
            settings, sessions, once=once, should_stop=lambda: stopping, exiting=True
        )
    except LedgerUnavailable as exc:
        fail(f"The worker stopped: {exc}")
    if json_out:
        print_json(
            {
                "worker": result.executor_id,
                "dispatched": result.dispatched,
                "recovered_from": result.recovered_from,
            }
        )
    else:
        console.print(
            f"worker {result.executor_id} stopped; started {result.dispatched} deliveries"
        )


def _print_status(data: dict[str, object]) -> None:
    from rich.table import Table

    queues = Table("Queue", "Per-worker concurrency", title="Queues")
    for q in data["queues"]:  # type: ignore[attr-defined]
        queues.add_row(str(q["name"]), str(q["worker_concurrency"] or "-"))
    console.print(queues)
    workers = Table("Worker", "Kind", "Last seen", title="Live workers")
    for w in data["workers"]:  # type: ignore[attr-defined]
        workers.add_row(str(w["executor_id"]), str(w["kind"]), str(w["seen_at"]))
    console.print(workers)
    orgs = Table(
        "Organisation", "In flight", "Failed workflows", "Uncertain", "Failed messages",
        title="Per organisation",
    )  # fmt: skip
    for slug, b in sorted(data["organisations"].items()):  # type: ignore[attr-defined]
        orgs.add_row(
            slug,
            str(len(b["in_flight"])),
            str(len(b["failed"])),
            str(len(b["uncertain"])),
            str(len(b["failed_messages"])),
        )
    console.print(orgs)
    for slug, b in sorted(data["organisations"].items()):  # type: ignore[attr-defined]
        for m in b["uncertain"]:
            console.print(
                f"[yellow]uncertain[/] {slug} outbox {m['outbox_id']} Message-ID {m['message_id']}"
                f" — confirm sent or resend on the outbox page or with `plixo outbox resolve`."
            )
        for f in b["failed"]:
            console.print(f"[red]failed[/] {slug} {f['workflow_id']} ({f['status']})")


if __name__ == "__main__":
    typer.run(worker)
