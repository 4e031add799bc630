"""Creating a real organisation from nothing: the tenant, its profile and its first Admin.

``plixo init`` calls :func:`create_organisation`; everything is validated before the first row is
written (currency, time zone, country, fiscal year start), so a typo leaves the ledger untouched.
The organisation starts in Shadow Mode with an unverified sending domain: nothing can leave until a
person reviews it and the domain checks pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import Organisation, OrganisationProfile
from memory.money import MoneyError, check_currency
from tools.admin.people import IssuedInvitation, PeopleError, create_first_admin
from tools.kit import audit

_SLUG = re.compile(r"[^a-z0-9]+")


class SetupError(ValueError):
    """A set-up value that cannot be used; the message says what to write instead."""


@dataclass(frozen=True)
class SetupResult:
    org: Organisation
    profile: OrganisationProfile
    admin: IssuedInvitation


def slug_for(name: str) -> str:
    slug = _SLUG.sub("-", name.lower()).strip("-")[:80]
    if not slug:
        raise SetupError(f"{name!r} gives no usable short name; use letters or digits.")
    return slug


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SetupError(
            f"{name!r} is not a time zone; use an IANA name such as Europe/Zurich."
        ) from None
    return name


def check_country(code: str, subdivision: str | None = None) -> tuple[str, str | None]:
    """An ISO 3166 country the ``holidays`` package has a calendar for (and the subdivision)."""
    country = code.strip().upper()
    supported = holidays.list_supported_countries()
    if country not in supported:
        raise SetupError(
            f"{code!r} is not a country with a holiday calendar; use an ISO code such as US or CH."
        )
    if subdivision:
        sub = subdivision.strip().upper()
        if sub not in supported[country]:
            raise SetupError(
                f"{subdivision!r} is not a subdivision of {country}; "
                f"known: {', '.join(supported[country][:12])}..."
            )
        return country, sub
    return country, None


def create_organisation(
    session: Session,
    *,
    name: str,
    admin_email: str,
    admin_name: str,
    currency: str = "USD",
    timezone: str = "UTC",
    country: str = "US",
    subdivision: str | None = None,
    fiscal_year_start_month: int = 1,
    slug: str | None = None,
    now: datetime,
) -> SetupResult:
    """Create the organisation, its profile and its Admin (with a set-password link); flushes."""
    if not name.strip():
        raise SetupError("Give the organisation a name, e.g. --org 'Acme Corp'.")
    try:
        code = check_currency(currency)
    except MoneyError as exc:
        raise SetupError(str(exc)) from None
    zone = check_timezone(timezone)
    country_code, sub = check_country(country, subdivision)
    if not 1 <= fiscal_year_start_month <= 12:
        raise SetupError(
            f"Fiscal year start month {fiscal_year_start_month} is not a month; use 1 to 12."
        )
    short = slug_for(slug or name)
    if session.scalars(select(Organisation).where(Organisation.slug == short)).first():
        raise SetupError(f"An organisation named {short!r} already exists; choose another --slug.")
    org = Organisation(
        name=name.strip(),
        slug=short,
        default_currency=code,
        timezone=zone,
        shadow_mode=True,
        sending_domain_verified=False,
        created_at=now,
    )
    session.add(org)
    session.flush()
    profile = OrganisationProfile(
        org_id=org.id,
        country_code=country_code,
        subdivision=sub,
        fiscal_year_start_month=fiscal_year_start_month,
        created_at=now,
    )
    session.add(profile)
    try:
        admin = create_first_admin(session, org, email=admin_email, name=admin_name, now=now)
    except PeopleError as exc:
        raise SetupError(str(exc)) from None
    audit.record(
        session,
        org.id,
        actor="plixo init",
        action="organisation.created",
        subject_type="organisation",
        subject_id=org.id,
        detail={"currency": code, "timezone": zone, "country": country_code},
    )
    session.flush()
    return SetupResult(org=org, profile=profile, admin=admin)


def profile_for(session: Session, org_id: int) -> OrganisationProfile | None:
    return session.get(OrganisationProfile, org_id)
