"""The `plixo eval` commands; filled in by the engineer who owns this area."""

import typer

eval_app = typer.Typer(help="eval commands", no_args_is_help=True)
