"""The `plixo risk` commands; filled in by the engineer who owns this area."""

import typer

risk_app = typer.Typer(help="risk commands", no_args_is_help=True)
