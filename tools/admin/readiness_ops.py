"""The readiness page's data: the Data-Ready score, its components, and what pulls each one down.

The score itself is ``tools.insights.readiness.data_ready``; this module names the customers
without a
reachable e-mail contact and the open invoices that are incomplete (the rows to fix), and imports
an uploaded CSV with the same all-or-nothing importer the CLI uses, returning its per-row report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from memory.errors import PlixoError
from memory.models import Contact, Customer, Invoice, InvoiceStatus, Organisation, User
from policies.access import allowed
from tools.imports import importer
from tools.insights.readiness import WEIGHTS, DataReadiness, data_ready

UPLOAD_KINDS = ("invoices", "customers", "contacts")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


class UploadError(PlixoError, ValueError):
    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message, http_status=status_code)


@dataclass
class ReadinessDetail:
    readiness: DataReadiness
    weights: dict[str, float]
    unreachable: list[dict[str, Any]] = field(default_factory=list)
    incomplete: list[dict[str, Any]] = field(default_factory=list)


def detail(session: Session, org_id: int, now: datetime, limit: int = 25) -> ReadinessDetail:
    """The score and the rows behind its low components (largest open balances first)."""
    ready = data_ready(session, org_id, now)
    reachable = select(Contact.customer_id).where(
        Contact.org_id == org_id,
        Contact.email.is_not(None),
        Contact.bounced.is_(False),
        Contact.opted_out_email.is_(False),
        Contact.consent_email.is_(True),
    )
    open_balance = func.sum(Invoice.balance_minor)
    rows = session.execute(
        select(Customer.name, Invoice.currency, open_balance, func.count(Invoice.id))
        .join(Invoice, Invoice.customer_id == Customer.id)
        .where(
            Customer.org_id == org_id,
            Invoice.status == InvoiceStatus.OPEN,
            Customer.id.not_in(reachable),
        )
        .group_by(Customer.id, Customer.name, Invoice.currency)
        .order_by(open_balance.desc())
        .limit(limit)
    ).all()
    unreachable = [
        {"customer": n, "currency": c, "open_minor": int(b or 0), "invoices": k}
        for n, c, b, k in rows
    ]
    bad = session.execute(
        select(Invoice.number, Customer.name, Invoice.amount_minor, Invoice.currency)
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(
            Invoice.org_id == org_id,
            Invoice.status == InvoiceStatus.OPEN,
            or_(Invoice.amount_minor <= 0, Invoice.due_date < Invoice.issue_date),
        )
        .limit(limit)
    ).all()
    incomplete = [
        {"invoice": n, "customer": c, "amount_minor": a, "currency": cur} for n, c, a, cur in bad
    ]
    return ReadinessDetail(ready, dict(WEIGHTS), unreachable, incomplete)


def upload(
    session: Session,
    org_id: int,
    actor: User,
    *,
    kind: str,
    filename: str,
    data: bytes,
    data_dir: Path,
) -> importer.ImportReport:
    """Import an uploaded CSV (all or nothing); the report lists every rejected row."""
    if actor.org_id != org_id or not allowed(actor.role.value, "import_data"):
        raise UploadError(f"{actor.role.value} may not import data.", 403)
    if kind not in UPLOAD_KINDS:
        raise UploadError(f"Choose what the file holds: {', '.join(UPLOAD_KINDS)}.")
    if not data:
        raise UploadError("The file is empty; choose a CSV file.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"The file is larger than {MAX_UPLOAD_BYTES // 2**20} MiB; split it.")
    org = session.get(Organisation, org_id)
    assert org is not None
    folder = data_dir / "imports" / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    safe = (
        "".join(ch for ch in Path(filename).name if ch.isalnum() or ch in "._-")[:80]
        or "upload.csv"
    )
    path = folder / f"{hashlib.sha256(data).hexdigest()[:12]}-{safe}"
    path.write_bytes(data)
    run = {
        "invoices": importer.import_invoices,
        "customers": importer.import_customers,
        "contacts": importer.import_contacts,
    }[kind]
    try:
        return run(session, org, path)
    except importer.ImportFileError as exc:
        raise UploadError(str(exc)) from None
