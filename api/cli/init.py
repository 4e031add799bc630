"""``plixo init``: a real organisation and its first Admin, then the next steps to take."""

from __future__ import annotations

import typer

from api.cli.common import console, fail, open_ledger
from memory import clock
from memory.config import get_settings
from tools.admin.org_setup import SetupError, create_organisation
from tools.admin.people import PeopleError, accept, invitation_link


def init(
    org: str = typer.Option(..., "--org", help="The organisation's name, e.g. 'Acme Corp'."),
    admin_email: str = typer.Option(..., "--admin-email", help="E-mail of the first Admin."),
    admin_name: str = typer.Option("Admin", "--admin-name", help="The Admin's full name."),
    currency: str = typer.Option("USD", help="Default currency (ISO 4217)."),
    timezone: str = typer.Option("UTC", help="The organisation's time zone (IANA name)."),
    country: str = typer.Option("US", help="Country (ISO 3166) for the holiday calendar."),
    subdivision: str | None = typer.Option(None, help="State or canton, e.g. CA or ZH."),
    fiscal_year_start: int = typer.Option(1, help="First month of the fiscal year (1-12)."),
    slug: str | None = typer.Option(None, help="Short name used by --org in other commands."),
    password_prompt: bool = typer.Option(
        False, "--password-prompt", help="Set the Admin's password now instead of by link."
    ),
) -> None:
    """Create an organisation (Shadow Mode on, domain unverified) and its Admin."""
    password = None
    if password_prompt:
        password = typer.prompt("Admin password", hide_input=True, confirmation_prompt=True)
    _, sessions = open_ledger(upgrade=True)
    now = clock.now()
    with sessions() as session:
        try:
            result = create_organisation(
                session,
                name=org,
                admin_email=admin_email,
                admin_name=admin_name,
                currency=currency,
                timezone=timezone,
                country=country,
                subdivision=subdivision,
                fiscal_year_start_month=fiscal_year_start,
                slug=slug,
                now=now,
            )
            if password is not None:
                accept(session, result.admin.token, password, now)
        except (SetupError, PeopleError) as exc:
            session.rollback()
            fail(f"{exc} Nothing was created.")
        session.commit()
        slug_value = result.org.slug
        email = result.admin.user.email
    console.print(f"Created [bold]{org}[/] ({slug_value}) with Admin {email}.")
    if password is None:
        link = invitation_link(get_settings(), result.admin.token)
        console.print(
            f"Set the Admin password (once, within 72 hours) after `plixo serve`:\n  {link}"
        )
    console.print(
        "Next steps:\n"
        "  1. plixo serve, log in, and invite your team under People\n"
        f"  2. plixo import invoices FILE.csv --org {slug_value}  (or upload: Readiness)\n"
        "  3. Create segments and cadences under Segments\n"
        "  4. Set up the sending domain under Sending domain and publish its DNS records\n"
        f"  5. plixo autopilot run --org {slug_value} --shadow, then review the drafts"
    )
