"""The `plixo autopilot` commands; filled in by the engineer who owns this area."""

import typer

autopilot_app = typer.Typer(help="autopilot commands", no_args_is_help=True)
