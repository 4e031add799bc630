"""CSV import of invoices, customers and contacts.

Column mappings are declared in ``tools/imports/profiles/*.yaml`` and picked by an exact header
match (or named with ``--profile``): a column nobody declared is an error, never a silent guess.
Every row is validated; by default a file with any bad row commits nothing, and ``partial=True``
commits the good rows and hands back the rejects. Re-importing upserts by organisation + number.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from memory import clock
from memory.models import (
    Contact,
    Customer,
    ImportRun,
    Invoice,
    InvoiceStatus,
    Organisation,
    Payment,
    Segment,
    User,
)
from memory.money import MoneyError, check_currency, parse_amount
from memory.planner_stats import note_bulk_write
from memory.queue_version import mark_queue_changed
from tools.insights.risk import refresh_snapshot_for
from tools.kit.csvsafe import safe_writer

PROFILE_DIR = Path(__file__).parent / "profiles"
MAX_FILE_BYTES = 200 * 1024 * 1024
CHECK_PREFIX = "check_"
Progress = Callable[[int, int], None]


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (encoding, not CSV, columns); nothing is written."""


@dataclass(frozen=True)
class ColumnMapping:
    """A declared mapping from a file's columns to plixo fields."""

    name: str
    kind: str
    description: str
    date_format: str
    columns: dict[str, str]
    booleans: dict[str, bool]
    optional: frozenset[str] = frozenset()
    currency: str | None = None
    channels: dict[str, str] = field(default_factory=dict)

    @property
    def required_columns(self) -> set[str]:
        return {src for src, dst in self.columns.items() if dst not in self.optional}


def load_profile(path: Path) -> ColumnMapping:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return ColumnMapping(
            name=str(data["name"]),
            kind=str(data["kind"]),
            description=str(data.get("description", "")),
            date_format=str(data["date_format"]),
            columns={str(k): str(v) for k, v in data["columns"].items()},
            booleans={str(k): bool(v) for k, v in (data.get("booleans") or {}).items()},
            optional=frozenset(data.get("optional") or []),
            currency=data.get("currency"),
            channels={str(k): str(v) for k, v in (data.get("channels") or {}).items()},
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ImportFileError(f"column mapping {path} is malformed: {exc}") from exc


def load_profiles(kind: str | None = None) -> dict[str, ColumnMapping]:
    profiles = [load_profile(p) for p in sorted(PROFILE_DIR.glob("*.yaml"))]
    return {p.name: p for p in profiles if kind is None or p.kind == kind}


def choose_profile(header: list[str], kind: str, named: str | Path | None = None) -> ColumnMapping:
    """The declared mapping for this header: named explicitly, or the one whose columns it has."""
    if named is not None:
        path = Path(named)
        profile = load_profile(path) if path.suffix in {".yaml", ".yml"} else None
        if profile is None:
            profiles = load_profiles(kind)
            if str(named) not in profiles:
                raise ImportFileError(
                    f"unknown column mapping {named!r}; known for {kind}: {', '.join(profiles)}"
                )
            profile = profiles[str(named)]
        _check_header(header, profile)
        return profile
    present = set(header)
    candidates = []
    for profile in load_profiles(kind).values():
        declared = set(profile.columns)
        if profile.required_columns <= present and present <= declared:
            candidates.append(profile)
    if len(candidates) == 1:
        return candidates[0]
    known = "; ".join(f"{p.name}: {', '.join(p.columns)}" for p in load_profiles(kind).values())
    raise ImportFileError(
        f"the columns {', '.join(header)} match no declared {kind} mapping. Rename the columns "
        f"to one of these layouts, or pass --profile FILE.yaml with your own mapping. "
        f"Known: {known}"
    )


def _check_header(header: list[str], profile: ColumnMapping) -> None:
    unknown = [c for c in header if c not in profile.columns]
    missing = sorted(profile.required_columns - set(header))
    problems = []
    if unknown:
        problems.append(f"unknown columns {', '.join(unknown)}")
    if missing:
        problems.append(f"missing required columns {', '.join(missing)}")
    if problems:
        raise ImportFileError(
            f"{'; '.join(problems)} for mapping {profile.name!r}. Declare them in a mapping "
            "file (--profile FILE.yaml) or fix the header."
        )


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    row: int
    column: str
    value: str
    reason: str


def duplicate_columns(header: Iterable[str]) -> list[str]:
    """The column names that appear more than once, sorted: one pass over the header (a count
    per column was quadratic: 104 s for a 0.9 MB one-line file of repeated names)."""
    return sorted(name for name, n in Counter(header).items() if n > 1)


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]], str]:
    """Header, (line number, record) pairs and the file's SHA-256, or a clear file-level error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ImportFileError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise ImportFileError(f"{path} is a folder; give the CSV file itself") from None
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ImportFileError(f"{path} is over {MAX_FILE_BYTES // 2**20} MiB; split it")
    if not raw.strip():
        raise ImportFileError(f"{path} is empty: it needs a header row and at least one row")
    if b"\x00" in raw[:65536]:
        raise ImportFileError(f"{path} is not a CSV text file (it contains binary data)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ImportFileError(
            f"{path} is not UTF-8 (bad byte at line {line}). Re-save it as UTF-8 "
            "(in a spreadsheet: Save As → CSV UTF-8)."
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ImportFileError(f"{path} is empty") from None
    except csv.Error as exc:
        raise ImportFileError(f"{path} is not valid CSV: {exc}") from None
    if len(header) < 2 or any(not h for h in header):
        raise ImportFileError(
            f"{path} does not look like a CSV with a header row (found {header[:3]!r}); "
            "the first line must name the columns, separated by commas"
        )
    dupes = duplicate_columns(header)
    if dupes:
        raise ImportFileError(f"{path} repeats the columns {', '.join(dupes)}")
    records: list[tuple[int, dict[str, str]]] = []
    try:
        for values in reader:
            line = reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                records.append(
                    (line, {"__shape__": f"{len(values)} fields, header has {len(header)}"})
                )
                continue
            records.append((line, dict(zip(header, values, strict=True))))
    except csv.Error as exc:
        raise ImportFileError(
            f"{path} is not valid CSV near line {reader.line_num}: {exc}"
        ) from None
    if not records:
        raise ImportFileError(f"{path} has a header but no rows")
    return header, records, hashlib.sha256(raw).hexdigest()


class _Row:
    """Field access for one record that collects errors instead of raising on the first."""

    def __init__(self, line: int, record: dict[str, str], profile: ColumnMapping) -> None:
        self.line = line
        self.profile = profile
        self.errors: list[RowError] = []
        self.values: dict[str, tuple[str, str]] = {
            dst: (src, record[src].strip()) for src, dst in profile.columns.items() if src in record
        }

    def _err(self, fld: str, value: str, reason: str) -> None:
        self.errors.append(RowError(self.line, self.values.get(fld, (fld, ""))[0], value, reason))

    def text(self, fld: str, required: bool = True, max_len: int = 200) -> str | None:
        value = self.values.get(fld, (fld, ""))[1]
        if not value:
            if required and fld not in self.profile.optional:
                self._err(fld, value, "is required")
            return None
        if len(value) > max_len:
            self._err(fld, value[:40], f"is longer than {max_len} characters")
            return None
        return value

    def date(self, fld: str, required: bool = True) -> date | None:
        value = self.text(fld, required)
        if value is None:
            return None
        try:
            return datetime.strptime(value, self.profile.date_format).date()
        except ValueError:
            fmt = self.profile.date_format.replace("%Y", "YYYY").replace("%m", "MM")
            self._err(fld, value, f"is not a date in the format {fmt.replace('%d', 'DD')}")
            return None

    def amount(self, fld: str, currency: str | None, required: bool = True) -> int | None:
        value = self.text(fld, required)
        if value is None or currency is None:
            return None
        try:
            minor = parse_amount(value, currency)
        except MoneyError as exc:
            self._err(fld, value, str(exc))
            return None
        if minor < 0:
            self._err(fld, value, "is negative; credit notes are not imported as invoices")
            return None
        return minor

    def boolean(self, fld: str) -> bool | None:
        value = self.values.get(fld, (fld, ""))[1]
        if fld not in self.values:
            return None
        lowered = {k.lower(): v for k, v in self.profile.booleans.items()}
        if value.lower() not in lowered:
            allowed = "/".join(k for k in self.profile.booleans if k) or "(none declared)"
            self._err(fld, value, f"is not one of {allowed}")
            return None
        return lowered[value.lower()]

    def integer(self, fld: str) -> int | None:
        value = self.text(fld, required=False)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            self._err(fld, value, "is not a whole number")
            return None


# --- invoices -------------------------------------------------------------------------------


@dataclass
class ParsedInvoiceRow:
    """One valid invoice row in plixo's terms (money in minor units)."""

    row: int
    invoice_number: str
    customer_ref: str
    customer_name: str | None
    country_code: str | None
    issue_date: date
    due_date: date
    amount_minor: int
    paid_minor: int
    currency: str
    disputed: bool
    paperless: bool | None
    paperless_since: date | None
    settled_date: date | None


@dataclass
class ParseResult:
    profile: ColumnMapping
    sha256: str
    rows: list[ParsedInvoiceRow]
    errors: list[RowError]
    warnings: list[str]
    total_rows: int

    @property
    def rejected_rows(self) -> set[int]:
        return {e.row for e in self.errors}


def _row_currency(r: _Row, mapping: ColumnMapping, default_currency: str) -> str | None:
    """The row's currency (its column, else the profile's, else the organisation's), checked;
    None with the error recorded when it is not a currency."""
    currency_raw = r.text("currency", required=False) if "currency" in r.values else None
    currency: str | None = currency_raw or mapping.currency or default_currency
    try:
        currency = check_currency(currency) if currency else None
    except MoneyError as exc:
        r._err("currency", currency or "", str(exc))
        currency = None
    return currency


def _row_paperless(r: _Row, mapping: ColumnMapping) -> bool | None:
    """Whether the invoice went out electronically, from the profile's channel names; None when
    the file has no channel column or the value is unknown (the error is recorded)."""
    paperless: bool | None = None
    if "channel" in r.values:
        channel = r.values["channel"][1]
        if channel not in mapping.channels:
            r._err("channel", channel, f"is not one of {'/'.join(mapping.channels)}")
        else:
            paperless = mapping.channels[channel] == "electronic"
    return paperless


def _check_invoice_row(
    r: _Row,
    issue: date | None,
    due: date | None,
    settled: date | None,
    amount: int | None,
    paid: int | None,
) -> None:
    """Record the errors between fields: dates before the invoice date, a zero amount, more
    paid than invoiced."""
    if issue and due and due < issue:
        r._err("due_date", str(due), "is before the invoice date")
    if issue and settled and settled < issue:
        r._err("settled_date", str(settled), "is before the invoice date")
    if amount is not None and amount == 0:
        r._err("amount", "0", "is zero; an invoice needs an amount")
    if paid is not None and amount is not None and paid > amount:
        r._err("amount_paid", str(paid), "is more than the invoice amount")


def parse_invoice_csv(
    path: Path | str, profile: str | Path | None = None, default_currency: str = "USD"
) -> ParseResult:
    """Read and validate an invoice CSV without touching the ledger."""
    header, records, sha = read_csv(Path(path))
    mapping = choose_profile(header, "invoices", profile)
    rows: list[ParsedInvoiceRow] = []
    errors: list[RowError] = []
    warnings: list[str] = []
    seen: dict[str, int] = {}
    settle_mismatch = 0
    for line, record in records:
        if "__shape__" in record:
            errors.append(RowError(line, "*", "", f"has {record['__shape__']}"))
            continue
        r = _Row(line, record, mapping)
        number = r.text("invoice_number", max_len=64)
        currency = _row_currency(r, mapping, default_currency)
        customer_ref = r.text("customer_ref", max_len=80)
        issue = r.date("issue_date")
        due = r.date("due_date")
        amount = r.amount("amount", currency)
        paid = (
            r.amount("amount_paid", currency, required=False) if "amount_paid" in r.values else None
        )
        settled = r.date("settled_date", required=False) if "settled_date" in r.values else None
        since = r.date("paperless_since", required=False) if "paperless_since" in r.values else None
        disputed = r.boolean("disputed") if "disputed" in r.values else False
        paperless = _row_paperless(r, mapping)
        _check_invoice_row(r, issue, due, settled, amount, paid)
        if number is not None:
            if number in seen:
                r._err("invoice_number", number, f"duplicates row {seen[number]} of this file")
            else:
                seen[number] = line
        check_settle = r.integer("check_days_to_settle")
        check_late = r.integer("check_days_late")
        if r.errors:
            errors.extend(r.errors)
            continue
        assert number and customer_ref and issue and due and amount is not None and currency
        # A settled row without an explicit amount paid was paid in full.
        paid_minor = (amount if paid is None else paid) if settled is not None else (paid or 0)
        if settled is not None and (
            (check_settle is not None and check_settle != (settled - issue).days)
            or (check_late is not None and check_late != max(0, (settled - due).days))
        ):
            settle_mismatch += 1
        rows.append(
            ParsedInvoiceRow(
                row=line,
                invoice_number=number,
                customer_ref=customer_ref,
                customer_name=r.text("customer_name", required=False),
                country_code=r.text("country_code", required=False, max_len=8),
                issue_date=issue,
                due_date=due,
                amount_minor=amount,
                paid_minor=paid_minor,
                currency=currency,
                disputed=bool(disputed),
                paperless=paperless,
                paperless_since=since,
                settled_date=settled,
            )
        )
    if settle_mismatch:
        warnings.append(
            f"{settle_mismatch} rows state days-to-settle or days-late that disagree with their "
            "dates; plixo uses the dates"
        )
    return ParseResult(mapping, sha, rows, errors, warnings, len(records))


@dataclass
class ImportReport:
    file: str
    profile: str
    kind: str
    committed: bool
    rows: int
    rejected: int
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    customers_created: int = 0
    customers_total: int = 0
    payments_created: int = 0
    errors: list[RowError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rejects_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = [asdict(e) for e in self.errors]
        return data


def _chunks(items: list[dict[str, Any]], size: int = 2000) -> Iterable[list[dict[str, Any]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def import_invoices(
    session: Session,
    org: Organisation,
    path: Path | str,
    *,
    partial: bool = False,
    profile: str | Path | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Validate and upsert invoices (and their customers and settlement payments) in one go.

    Nothing is flushed unless the whole file is valid, or ``partial`` is set; the caller commits.
    """
    parsed = parse_invoice_csv(path, profile, default_currency=org.default_currency)
    report = ImportReport(
        file=str(path),
        profile=parsed.profile.name,
        kind="invoices",
        committed=False,
        rows=parsed.total_rows,
        rejected=len(parsed.rejected_rows),
        errors=parsed.errors,
        warnings=parsed.warnings,
    )
    if parsed.errors and not partial:
        return report
    touched = _upsert_invoices(session, org, parsed.rows, report, progress)
    org.last_import_at = clock.now()
    session.flush()
    # Today's Focus scores from a per-customer risk snapshot: bring the touched customers' rows
    # up to date now (a new customer with an overdue invoice is ranked on its real history).
    refresh_snapshot_for(session, org.id, touched)
    session.add(
        ImportRun(
            org_id=org.id,
            kind="invoices",
            filename=Path(path).name,
            sha256=parsed.sha256,
            report={k: v for k, v in report.to_dict().items() if k != "errors"},
        )
    )
    report.committed = True
    return report


def _upsert_customers(
    session: Session, org: Organisation, rows: list[ParsedInvoiceRow], report: ImportReport
) -> dict[str, int]:
    """Create the customers the file names and the ledger lacks; returns reference -> id."""
    customers = dict(
        session.execute(select(Customer.external_ref, Customer.id).where(Customer.org_id == org.id))
        .tuples()
        .all()
    )
    new_customers: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.customer_ref not in customers and r.customer_ref not in new_customers:
            new_customers[r.customer_ref] = {
                "org_id": org.id,
                "external_ref": r.customer_ref,
                "name": r.customer_name or r.customer_ref,
                "country_code": r.country_code,
                "paperless_since": r.paperless_since,
                "timezone": org.timezone,
                "created_at": clock.now(),
            }
    for chunk in _chunks(list(new_customers.values())):
        session.execute(insert(Customer), chunk)
    note_bulk_write(session, Customer.__tablename__, len(new_customers))
    report.customers_created = len(new_customers)
    if new_customers:
        customers = dict(
            session.execute(
                select(Customer.external_ref, Customer.id).where(Customer.org_id == org.id)
            )
            .tuples()
            .all()
        )
    report.customers_total = len({r.customer_ref for r in rows})
    return customers


def _existing_invoices(session: Session, org: Organisation) -> dict[str, Any]:
    """The organisation's invoices by number, with the columns an import may change."""
    return {
        row.number: row
        for row in session.execute(
            select(
                Invoice.id,
                Invoice.number,
                Invoice.customer_id,
                Invoice.currency,
                Invoice.amount_minor,
                Invoice.balance_minor,
                Invoice.issue_date,
                Invoice.due_date,
                Invoice.disputed,
                Invoice.paperless,
                Invoice.settled_date,
            ).where(Invoice.org_id == org.id)
        )
    }


def _write_invoice_rows(
    session: Session,
    org: Organisation,
    rows: list[ParsedInvoiceRow],
    customers: dict[str, int],
    existing: dict[str, Any],
    now: datetime,
    report: ImportReport,
    progress: Progress | None,
) -> set[int]:
    """Insert new invoices and update changed ones in bulk (unchanged rows are only counted);
    returns the customers touched, including one an invoice moved away from."""
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    touched = {customers[r.customer_ref] for r in rows}
    for i, r in enumerate(rows):
        values: dict[str, Any] = {
            "customer_id": customers[r.customer_ref],
            "currency": r.currency,
            "amount_minor": r.amount_minor,
            "balance_minor": r.amount_minor - r.paid_minor,
            "issue_date": r.issue_date,
            "due_date": r.due_date,
            "disputed": r.disputed,
            "paperless": r.paperless,
            "settled_date": r.settled_date,
        }
        old = existing.get(r.invoice_number)
        if old is None:
            inserts.append(
                values
                | {
                    "org_id": org.id,
                    "number": r.invoice_number,
                    "status": (
                        InvoiceStatus.PAID if values["balance_minor"] == 0 else InvoiceStatus.OPEN
                    ),
                    "source": "import",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        elif any(getattr(old, k) != v for k, v in values.items()):
            touched.add(old.customer_id)  # an invoice moved to another customer leaves this one
            status = InvoiceStatus.PAID if values["balance_minor"] == 0 else InvoiceStatus.OPEN
            updates.append(values | {"id": old.id, "status": status, "updated_at": now})
        else:
            report.unchanged += 1
        if progress and i % 1000 == 0:
            progress(i, len(rows))
    for chunk in _chunks(inserts):
        session.execute(insert(Invoice), chunk)
    if updates:
        session.execute(update(Invoice), updates)
        mark_queue_changed(session, org.id)  # balances beside drafts in the review queue
    note_bulk_write(session, Invoice.__tablename__, len(inserts) + len(updates))
    report.created, report.updated = len(inserts), len(updates)
    return touched


def _record_settlements(
    session: Session,
    org: Organisation,
    paid_rows: list[ParsedInvoiceRow],
    customers: dict[str, int],
    now: datetime,
    report: ImportReport,
) -> None:
    """Settlements become payments, once each: keyed by the invoice number."""
    have = set(
        session.scalars(
            select(Payment.external_ref).where(Payment.org_id == org.id, Payment.method == "import")
        )
    )
    ids = dict(
        session.execute(select(Invoice.number, Invoice.id).where(Invoice.org_id == org.id))
        .tuples()
        .all()
    )
    payments = [
        {
            "org_id": org.id,
            "customer_id": customers[r.customer_ref],
            "invoice_id": ids[r.invoice_number],
            "amount_minor": r.paid_minor,
            "applied_minor": r.paid_minor,
            "unapplied_minor": 0,
            "currency": r.currency,
            "received_on": r.settled_date or r.issue_date,
            "method": "import",
            "external_ref": f"import:{r.invoice_number}",
            "created_at": now,
        }
        for r in paid_rows
        if f"import:{r.invoice_number}" not in have
    ]
    for chunk in _chunks(payments):
        session.execute(insert(Payment), chunk)
    note_bulk_write(session, Payment.__tablename__, len(payments))
    report.payments_created = len(payments)


def _upsert_invoices(
    session: Session,
    org: Organisation,
    rows: list[ParsedInvoiceRow],
    report: ImportReport,
    progress: Progress | None,
) -> set[int]:
    """Write the rows; returns the ids of the customers whose invoices or payments changed."""
    customers = _upsert_customers(session, org, rows, report)
    existing = _existing_invoices(session, org)
    now = clock.now()
    touched = _write_invoice_rows(session, org, rows, customers, existing, now, report, progress)
    paid_rows = [r for r in rows if r.paid_minor > 0]
    if paid_rows:
        _record_settlements(session, org, paid_rows, customers, now, report)
    if progress:
        progress(len(rows), len(rows))
    return touched


def write_rejects(report: ImportReport, path: Path) -> None:
    """The rejected rows as CSV (row, column, value, reason), for fixing and re-importing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = safe_writer(fh)  # the values are the file's own: never a live formula
        writer.writerow(["row", "column", "value", "reason"])
        for e in report.errors:
            writer.writerow([e.row, e.column, e.value, e.reason])


# --- customers and contacts -----------------------------------------------------------------


def _apply_customers(
    session: Session,
    org: Organisation,
    staged: list[dict[str, Any]],
    existing: dict[str, Customer],
    report: ImportReport,
) -> None:
    """Create or update each staged customer; a blank cell never clears a known value."""
    for s in staged:
        ref = s.pop("ref")
        cust = existing.get(ref)
        if cust is None:
            cust = Customer(org_id=org.id, external_ref=ref, name=s["name"])
            session.add(cust)
            report.created += 1
        else:
            changed = any(v is not None and getattr(cust, k) != v for k, v in s.items())
            report.updated += int(changed)
            report.unchanged += int(not changed)
        for k, v in s.items():
            if v is not None:
                setattr(cust, k, v)


def import_customers(
    session: Session,
    org: Organisation,
    path: Path | str,
    *,
    partial: bool = False,
    profile: str | Path | None = None,
) -> ImportReport:
    """Upsert customers by reference; owners are matched to users by e-mail, segments by name."""
    header, records, sha = read_csv(Path(path))
    mapping = choose_profile(header, "customers", profile)
    report = ImportReport(str(path), mapping.name, "customers", False, len(records), 0)
    users = {u.email: u.id for u in session.scalars(select(User).where(User.org_id == org.id))}
    segments = {s.name: s for s in session.scalars(select(Segment).where(Segment.org_id == org.id))}
    existing = {
        c.external_ref: c
        for c in session.scalars(select(Customer).where(Customer.org_id == org.id))
    }
    staged: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line, record in records:
        if "__shape__" in record:
            report.errors.append(RowError(line, "*", "", f"has {record['__shape__']}"))
            continue
        r = _Row(line, record, mapping)
        ref, name = r.text("customer_ref", max_len=80), r.text("name")
        renewal = r.date("renewal_date", required=False)
        tz = r.text("timezone", required=False, max_len=64)
        if tz:
            try:
                from zoneinfo import ZoneInfo

                ZoneInfo(tz)
            except (KeyError, ValueError):
                r._err("timezone", tz, "is not an IANA time zone such as Europe/Paris")
        owners: dict[str, int | None] = {}
        for fld in ("csm_email", "sales_email"):
            email = r.text(fld, required=False)
            if email and email.lower() not in users:
                r._err(fld, email, "is not a user of this organisation; add the user first")
            owners[fld] = users.get(email.lower()) if email else None
        segment = r.text("segment", required=False)
        if segment and segment not in segments:
            r._err("segment", segment, f"is not a segment; known: {', '.join(segments) or 'none'}")
        if ref in seen:
            r._err("customer_ref", ref or "", "appears twice in this file")
        if r.errors:
            report.errors.extend(r.errors)
            continue
        assert ref and name
        seen.add(ref)
        staged.append(
            {
                "ref": ref,
                "name": name,
                "renewal_date": renewal,
                "timezone": tz,
                "country_code": r.text("country_code", required=False, max_len=8),
                "language": r.text("language", required=False, max_len=8),
                "csm_user_id": owners["csm_email"],
                "sales_user_id": owners["sales_email"],
                "segment_id": segments[segment].id if segment else None,
            }
        )
    report.rejected = len({e.row for e in report.errors})
    if report.errors and not partial:
        return report
    _apply_customers(session, org, staged, existing, report)
    note_bulk_write(session, Customer.__tablename__, report.created + report.updated)
    session.add(ImportRun(org_id=org.id, kind="customers", filename=Path(path).name, sha256=sha))
    org.last_import_at = clock.now()
    report.committed = True
    return report


def import_contacts(
    session: Session,
    org: Organisation,
    path: Path | str,
    *,
    partial: bool = False,
    profile: str | Path | None = None,
) -> ImportReport:
    """Upsert contacts by customer + e-mail."""
    header, records, sha = read_csv(Path(path))
    mapping = choose_profile(header, "contacts", profile)
    report = ImportReport(str(path), mapping.name, "contacts", False, len(records), 0)
    customers = dict(
        session.execute(select(Customer.external_ref, Customer.id).where(Customer.org_id == org.id))
        .tuples()
        .all()
    )
    existing = {
        (c.customer_id, (c.email or "").lower()): c
        for c in session.scalars(select(Contact).where(Contact.org_id == org.id))
    }
    staged: list[tuple[int, str, dict[str, Any]]] = []
    for line, record in records:
        if "__shape__" in record:
            report.errors.append(RowError(line, "*", "", f"has {record['__shape__']}"))
            continue
        r = _Row(line, record, mapping)
        ref, name, email = r.text("customer_ref"), r.text("name"), r.text("email", max_len=254)
        if ref and ref not in customers:
            r._err(
                "customer_ref", ref, "is not a known customer; import customers or invoices first"
            )
        if email and ("@" not in email or " " in email):
            r._err("email", email, "is not an e-mail address")
        flags = {k: r.boolean(k) for k in ("is_primary", "opted_out_email", "consent_email")}
        if r.errors:
            report.errors.extend(r.errors)
            continue
        assert ref and name and email
        staged.append(
            (
                customers[ref],
                email.lower(),
                {
                    "name": name,
                    "phone": r.text("phone", required=False, max_len=40),
                    "timezone": r.text("timezone", required=False, max_len=64),
                    "language": r.text("language", required=False, max_len=8),
                }
                | {k: v for k, v in flags.items() if v is not None},
            )
        )
    report.rejected = len({e.row for e in report.errors})
    if report.errors and not partial:
        return report
    for customer_id, email, values in staged:
        contact = existing.get((customer_id, email))
        if contact is None:
            contact = Contact(
                org_id=org.id, customer_id=customer_id, email=email, name=values["name"]
            )
            session.add(contact)
            existing[(customer_id, email)] = contact
            report.created += 1
        else:
            changed = any(v is not None and getattr(contact, k) != v for k, v in values.items())
            report.updated += int(changed)
            report.unchanged += int(not changed)
        for k, v in values.items():
            if v is not None:
                setattr(contact, k, v)
    note_bulk_write(session, Contact.__tablename__, report.created + report.updated)
    session.add(ImportRun(org_id=org.id, kind="contacts", filename=Path(path).name, sha256=sha))
    org.last_import_at = clock.now()
    report.committed = True
    return report
