"""The ``plixo`` command line (typer + rich). Each area adds its sub-app here."""

from __future__ import annotations

import typer

from api.cli.autopilot import autopilot_app
from api.cli.cash import cash_app
from api.cli.common import console, fail, open_ledger
from api.cli.demo import demo
from api.cli.eval import eval_app
from api.cli.imports import import_app
from api.cli.init import init
from api.cli.mailbox import mailbox_app
from api.cli.outbox import outbox_app
from api.cli.policy import policy_app
from api.cli.policy_apply import policy_apply
from api.cli.risk import risk_app
from api.cli.worker import worker
from api.logredact import redacted_log_config
from memory import migrate
from memory.config import get_settings
from memory.db import redact_url

app = typer.Typer(
    name="plixo",
    help="plixo, the accounts-receivable co-pilot: the agent drafts, the guardrails decide.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.command("demo")(demo)
app.command("init")(init)
app.add_typer(policy_app, name="policy")
policy_app.command("apply")(policy_apply)
app.add_typer(autopilot_app, name="autopilot")
app.add_typer(eval_app, name="eval")
app.add_typer(risk_app, name="risk")
app.add_typer(outbox_app, name="outbox")
app.add_typer(mailbox_app, name="mailbox")
app.add_typer(cash_app, name="cash")
app.command("worker")(worker)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the ledger migrations (safe to run again)."""
    engine, _ = open_ledger(upgrade=True)
    console.print(
        f"Ledger at {redact_url(engine.url.render_as_string(False))} "
        f"is at revision [bold]{migrate.current_revision(engine)}[/]."
    )


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(
        1,
        min=1,
        max=64,
        help="Worker processes (one per CPU core is a good start; each has its own pool).",
    ),
) -> None:
    """Start the API, the review panel and the mini-portal."""
    import uvicorn

    engine, _ = open_ledger(upgrade=True)  # reachable and migrated before any worker starts
    engine.dispose()
    settings = get_settings()
    try:
        settings.signing_key()  # generated here, once, before the workers race to read it
    except (OSError, ValueError) as exc:
        fail(f"Cannot use the session signing key: {exc}")
    if settings.secret_key is None and not is_loopback(host):
        console.print(
            f"Sessions are signed with the key kept in {settings.secret_key_path.resolve()} "
            "(owner-only). Keep it private and in your backups, or set PLIXO_SECRET_KEY; "
            "deleting it logs everyone out."
        )
    console.print(
        f"plixo on http://{host}:{port}  (model: {get_settings().model}, "
        f"{workers} worker{'s' if workers > 1 else ''})"
    )
    try:
        # Each worker builds its app from the same settings (api.app:serve_app).
        uvicorn.run(
            "api.app:serve_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            log_config=redacted_log_config(),
        )
    except OSError as exc:
        fail(f"Cannot listen on {host}:{port}: {exc}. Pick another --port.")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost': nobody else can reach the server."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main() -> None:
    """Entry point: a bug shows one line and how to get the traceback, never a wall of text."""
    import os
    import sys

    try:
        app()
    except Exception as exc:  # noqa: BLE001 - the last line of defence for operators
        if os.environ.get("PLIXO_DEBUG"):
            raise
        err = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300]
        print(
            f"error: plixo hit an unexpected problem ({err}). Nothing further was changed. "
            "Re-run with PLIXO_DEBUG=1 for the traceback and report it.",
            file=sys.stderr,
        )
        sys.exit(70)


if __name__ == "__main__":
    main()
