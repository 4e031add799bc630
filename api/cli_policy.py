"""The `plixo policy` commands; filled in by the engineer who owns this area."""

import typer

policy_app = typer.Typer(help="policy commands", no_args_is_help=True)
