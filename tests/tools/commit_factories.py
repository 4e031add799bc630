"""Small ledger builders for the commitment tests (promises, plans, disputes, payments, portal).

Everything is written through the real ORM into the real test ledger; ``NOW`` is a fixed, aware
clock so date rules (promise deadlines, SLA clocks, token expiry) are tested without sleeping.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from memory.config import Settings
from memory.models import (
    Contact,
    Customer,
    Invoice,
    InvoiceStatus,
    Organisation,
    Persona,
    User,
)
from tools.ledger.users import issue_api_token

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
TODAY = NOW.date()

_seq = itertools.count(1)


@dataclass
class Factory:
    """Builders bound to one session and organisation."""

    session: Session
    org: Organisation

    def customer(
        self,
        name: str | None = None,
        *,
        email: str | None = "ap@payer.example",
        opted_out: bool = False,
    ) -> Customer:
        n = next(_seq)
        customer = Customer(
            org_id=self.org.id, external_ref=f"C{n:05d}", name=name or f"Payer {n} Ltd"
        )
        self.session.add(customer)
        self.session.flush()
        if email is not None:
            self.session.add(
                Contact(
                    org_id=self.org.id,
                    customer_id=customer.id,
                    name="Dana Payer",
                    email=email,
                    is_primary=True,
                    opted_out_email=opted_out,
                )
            )
            self.session.flush()
        return customer

    def invoice(
        self,
        customer: Customer,
        amount_minor: int = 100_000,
        *,
        balance_minor: int | None = None,
        due: date | None = None,
        currency: str = "USD",
        status: InvoiceStatus = InvoiceStatus.OPEN,
        disputed: bool = False,
    ) -> Invoice:
        n = next(_seq)
        inv = Invoice(
            org_id=self.org.id,
            customer_id=customer.id,
            number=f"INV-{n:05d}",
            currency=currency,
            amount_minor=amount_minor,
            balance_minor=amount_minor if balance_minor is None else balance_minor,
            issue_date=(due or TODAY) - timedelta(days=30),
            due_date=due or TODAY - timedelta(days=10),
            status=status,
            disputed=disputed,
        )
        self.session.add(inv)
        self.session.flush()
        return inv

    def user(self, role: Persona, *, limit: int | None = None) -> User:
        n = next(_seq)
        user = User(
            org_id=self.org.id,
            email=f"user{n}@plixo.example",
            name=f"{role.value} {n}",
            role=role,
            approval_limits=None if limit is None else {"USD": limit},
        )
        self.session.add(user)
        self.session.flush()
        return user


# --- API helpers ----------------------------------------------------------------------------------


def app_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for an app under test: a private data dir, no network anywhere."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "public_base_url": "http://testserver",
        "secret_key": "commitments-test-secret-key-0123456789",
        "smtp_host": "127.0.0.1",
        "smtp_port": 1,
    }
    values.update(overrides)
    return Settings(**values)


def bearer(session: Session, user: User) -> dict[str, str]:
    """A bearer-token header for ``user`` (committed, so the app's own sessions see it)."""
    token = issue_api_token(session, user)
    session.commit()
    return {"Authorization": f"Bearer {token}"}


def client_for(engine: Engine, settings: Settings) -> TestClient:
    return TestClient(create_app(engine, settings))
