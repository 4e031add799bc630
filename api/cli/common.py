"""What every CLI command shares: the console, clean failures, and opening the ledger."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from memory import migrate
from memory.config import get_settings
from memory.db import LedgerUnavailable, check_connection, make_engine, session_factory

console = Console(soft_wrap=True)  # never break a path or a sentence mid-word
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an actionable error (never a traceback) and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=code)


def print_json(data: Any) -> None:
    """Machine-readable output for scripts: plain JSON on stdout, nothing else."""
    typer.echo(json.dumps(data, indent=2, default=str, sort_keys=False))


def open_ledger(upgrade: bool = True) -> tuple[Engine, sessionmaker[Session]]:
    """The configured ledger, reachable and migrated, or a clean exit saying what to do."""
    url = get_settings().resolved_database_url
    try:
        engine = make_engine(url)
        check_connection(engine)
        if upgrade:
            migrate.upgrade(engine)
    except LedgerUnavailable as exc:
        fail(str(exc))
    return engine, session_factory(engine)
