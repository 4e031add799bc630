"""Bank statements and remittances read into :class:`BankLine` rows, or per-line errors.

The format is recognised from the bytes (never from the file name alone): CAMT.053 XML (through
``pycamt``), SWIFT MT940 (``mt-940``), BAI2 (``bai2``), a CSV remittance list with a declared
column mapping (``tools/cashapp/profiles/*.yaml``, as for the invoice importer), a remittance
advice PDF (text through ``pdfplumber``) or the plain text of a remittance e-mail. Only credits
(money in) become lines; debits are counted and skipped. An amount with more decimals than its
currency has, an unknown currency or a missing date is an error for that line, with its number;
a file no parser recognises is refused as a whole with the formats that are accepted.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from memory.errors import PlixoError
from memory.money import MoneyError, check_currency, parse_amount
from tools.cashapp.schemas import BankLine, LineError, ParsedFile

MAX_FILE_BYTES = 50 * 1024 * 1024
PROFILE_DIR = Path(__file__).parent / "profiles"
STRIPE_PAYOUT = "stripe_payout"  # read by tools/cashapp/stripe_payouts.py, not here
KINDS = ("camt053", "mt940", "bai2", "csv", "pdf", "email", STRIPE_PAYOUT)
STRIPE_PAYOUT_COLUMNS = frozenset({"automatic_payout_id", "balance_transaction_id"})


class CashFileError(PlixoError, ValueError):
    """The file as a whole cannot be read; nothing was imported (400, said to the person)."""

    http_status = 400


def detect_kind(data: bytes) -> str:
    """Which format the bytes are, or :class:`CashFileError` naming the accepted ones."""
    if data.startswith(b"%PDF-"):
        return "pdf"
    head = data[:4096].lstrip(b"\xef\xbb\xbf \r\n\t")
    if head.startswith(b"<") and b"BkToCstmrStmt" in data[:200_000]:
        return "camt053"
    if head.startswith(b"<"):
        raise CashFileError(
            "This XML file is not a CAMT.053 bank statement (no BkToCstmrStmt). Export the "
            "statement from your bank as CAMT.053, MT940 or BAI2."
        )
    if head.startswith(b"01,"):
        return "bai2"
    if re.search(rb"(^|\n):20:", head) and b":61:" in data:
        return "mt940"
    if is_stripe_payout_export(data):
        return STRIPE_PAYOUT
    text = _decode(data)
    first = text.splitlines()[0] if text.strip() else ""
    if first.count(",") >= 2 or first.count(";") >= 2:
        return "csv"
    if text.strip():
        return "email"
    raise CashFileError("The file is empty.")


def is_stripe_payout_export(data: bytes) -> bool:
    """Stripe's itemized payout reconciliation CSV, by its header (read by ``stripe_payouts``)."""
    first = data[:4096].decode("utf-8-sig", errors="replace").partition("\n")[0]
    return {c.strip().strip('"') for c in first.split(",")} >= STRIPE_PAYOUT_COLUMNS


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CashFileError(
            "The file is not UTF-8 text; save it as UTF-8 (or upload the bank's CAMT.053 XML)."
        ) from None


def parse(data: bytes, *, kind: str | None = None, profile: str | None = None) -> ParsedFile:
    """Read ``data`` as ``kind`` (detected when None) into lines and per-line errors."""
    if len(data) > MAX_FILE_BYTES:
        raise CashFileError(f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB.")
    kind = kind or detect_kind(data)
    if kind not in KINDS:
        raise CashFileError(f"Unknown format {kind!r}; use one of {', '.join(KINDS)}.")
    if kind == STRIPE_PAYOUT:
        raise CashFileError(
            "A Stripe payout export holds balance transactions, not bank lines: import it "
            "through Cash App Assist (tools.cashapp.intake.import_cash_file)."
        )
    if kind == "camt053":
        return parse_camt053(data)
    if kind == "mt940":
        return parse_mt940(_decode(data))
    if kind == "bai2":
        return parse_bai2(_decode(data))
    if kind == "csv":
        return parse_csv(_decode(data), profile=profile)
    if kind == "pdf":
        return parse_remittance_text(pdf_text(data), kind="pdf")
    return parse_remittance_text(_decode(data), kind="email")


def to_minor(amount: Decimal | str, currency: str) -> int:
    """Exact minor units, or :class:`MoneyError` (three decimals in USD, an unknown currency)."""
    cur = check_currency(currency)
    return parse_amount(str(amount), cur)


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


# --- CAMT.053 ---------------------------------------------------------------------------------


def _camt053_parser(data: bytes) -> Any:
    """pycamt's parser, with each statement's account IBAN looked up once.

    Why: pycamt looks the statement's IBAN up again for every entry with a descendant search of
    the whole statement (``.//Acct//Id//IBAN``), which makes reading quadratic in the number of
    entries: 2,000 lines read in 1.2 s, 10,000 in 39 s. The answer is the same for every entry
    of a statement, so it is kept per statement element (held, so lxml keeps its proxy).
    """
    from pycamt.parser import Camt053Parser

    class _Parser(Camt053Parser):  # type: ignore[misc]
        statement_iban: dict[Any, str | None]

        def _find_text(self, element: Any, xpath: str) -> str | None:
            if xpath != ".//Acct//Id//IBAN" or element is None:
                return super()._find_text(element, xpath)  # type: ignore[no-any-return]
            if element not in self.statement_iban:
                self.statement_iban[element] = super()._find_text(element, xpath)
            return self.statement_iban[element]

    parser = _Parser(data)
    parser.statement_iban = {}
    return parser


def parse_camt053(data: bytes) -> ParsedFile:
    from lxml import etree

    try:
        parser = _camt053_parser(data)
        header = parser.get_group_header() or {}
        txs = parser.get_transactions()
        infos = parser.get_statement_info()
    except (etree.XMLSyntaxError, ValueError, AttributeError) as exc:
        raise CashFileError(
            f"The CAMT.053 file cannot be read: {exc}. Nothing was imported."
        ) from None
    out = ParsedFile(kind="camt053", statement_ref=header.get("MessageID"))
    out.account = infos[0].get("IBAN") if infos else None
    for no, tx in enumerate(txs, start=1):
        if tx.get("CreditDebitIndicator") != "CRDT" or tx.get("ReversalIndicator") == "true":
            out.skipped_debits += 1
            continue
        _camt_line(out, no, tx)
    return out


def _camt_line(out: ParsedFile, no: int, tx: dict[str, Any]) -> None:
    raw_date = tx.get("BookingDate") or tx.get("ValueDate")
    if not raw_date:
        out.errors.append(LineError(no, "Entry has no booking date; ask the bank for a full file."))
        return
    try:
        booked = date.fromisoformat(str(raw_date)[:10])
        amount = to_minor(tx.get("Amount") or "", tx.get("Currency") or "")
    except (MoneyError, ValueError) as exc:
        out.errors.append(LineError(no, f"Entry {tx.get('TransactionID') or no}: {exc}"))
        return
    ref_parts = [
        tx.get("RemittanceInformationFull") or tx.get("RemittanceInformation"),
        tx.get("AdditionalRemittanceInformation"),
        tx.get("AdditionalEntryInformation"),
    ]
    bank_ref = "/".join(x for x in (tx.get("TransactionID"), tx.get("EndToEndId")) if x) or None
    out.lines.append(
        BankLine(
            line_no=no,
            booked_on=booked,
            amount_minor=amount,
            currency=str(tx.get("Currency")).upper(),
            reference=_clean(" ".join(p for p in ref_parts if p)),
            payer_name=_clean(tx.get("DebtorName")) or None,
            payer_iban=_clean(tx.get("DebtorIBAN")).replace(" ", "") or None,
            bank_ref=bank_ref,
        )
    )


# --- MT940 ------------------------------------------------------------------------------------


def parse_mt940(text: str) -> ParsedFile:
    import mt940

    try:
        transactions = mt940.models.Transactions()
        transactions.parse(text)
    except Exception as exc:  # noqa: BLE001 - mt-940 raises bare exceptions on malformed tags
        raise CashFileError(
            f"The MT940 file cannot be read: {exc}. Nothing was imported."
        ) from None
    head = transactions.data
    out = ParsedFile(
        kind="mt940",
        statement_ref=_join(head.get("transaction_reference"), head.get("statement_number")),
        account=head.get("account_identification"),
    )
    for no, tx in enumerate(transactions, start=1):
        d = tx.data
        amount = d.get("amount")
        if amount is None or amount.amount <= 0 or d.get("status") not in ("C", "RD"):
            out.skipped_debits += 1
            continue
        try:
            minor = to_minor(_mt940_amount(d), amount.currency)
        except MoneyError as exc:
            out.errors.append(LineError(no, f"Transaction {no}: {exc}"))
            continue
        details = d.get("transaction_details") or d.get("extra_details") or ""
        booked = d.get("date") or d.get("entry_date")
        if booked is None:
            out.errors.append(LineError(no, f"Transaction {no} has no date; nothing to book."))
            continue
        out.lines.append(
            BankLine(
                line_no=no,
                booked_on=date(booked.year, booked.month, booked.day),
                amount_minor=minor,
                currency=amount.currency.upper(),
                reference=_clean(" ".join(x for x in (details, d.get("customer_reference")) if x)),
                payer_name=_clean(d.get("applicant_name")) or None,
                payer_iban=_clean(d.get("applicant_iban")).replace(" ", "") or None,
                bank_ref=_join(d.get("bank_reference"), d.get("customer_reference")),
            )
        )
    return out


_MT940_AMOUNT = re.compile(r"^:61:.*?[CD]R?[A-Z]?(\d+,\d*)", re.M)


def _mt940_amount(d: dict[str, Any]) -> str:
    """The amount as the bank wrote it (mt-940 rounds to two places; three must be refused)."""
    amount = d["amount"].amount
    return str(amount) if isinstance(amount, Decimal) else str(Decimal(str(amount)))


def _join(*parts: Any) -> str | None:
    text = "/".join(str(p) for p in parts if p not in (None, "", "NONREF"))
    return text or None


# --- BAI2 -------------------------------------------------------------------------------------


def parse_bai2(text: str) -> ParsedFile:
    from bai2 import bai2

    try:
        parsed = bai2.parse_from_string(text, check_integrity=True)
    except Exception as exc:  # noqa: BLE001 - bai2 raises its own bare errors per record
        raise CashFileError(f"The BAI2 file cannot be read: {exc}. Nothing was imported.") from None
    out = ParsedFile(kind="bai2", statement_ref=_join(parsed.header.file_id))
    no = 0
    for group in parsed.children:
        as_of: date = group.header.as_of_date
        for account in group.children:
            currency = account.header.currency or group.header.currency or "USD"
            out.account = out.account or account.header.customer_account_number
            for tx in account.children:
                no += 1
                _bai2_line(out, no, tx, as_of, currency)
    return out


def _bai2_line(out: ParsedFile, no: int, tx: Any, as_of: date, currency: str) -> None:
    code = tx.type_code
    if code is None or getattr(code.transaction, "name", "") != "credit":
        out.skipped_debits += 1
        return
    try:
        cur = check_currency(currency)
    except MoneyError as exc:
        out.errors.append(LineError(no, f"Transaction {no}: {exc}"))
        return
    out.lines.append(
        BankLine(
            line_no=no,
            booked_on=as_of,
            amount_minor=int(tx.amount),  # BAI2 amounts are already in minor units
            currency=cur,
            reference=_clean(" ".join(x for x in (tx.text, tx.customer_reference) if x)),
            bank_ref=_join(tx.bank_reference, tx.customer_reference),
        )
    )


# --- CSV remittance lists ---------------------------------------------------------------------

FIELDS = ("booked_on", "amount", "currency", "reference", "payer_name", "payer_iban", "bank_ref")
REQUIRED = ("booked_on", "amount", "currency")


@dataclass(frozen=True)
class CashProfile:
    """A declared mapping from a remittance CSV's columns to line fields."""

    name: str
    description: str
    date_format: str
    columns: dict[str, str]
    delimiter: str = ","


def load_profiles() -> dict[str, CashProfile]:
    out: dict[str, CashProfile] = {}
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        unknown = set(raw["columns"].values()) - set(FIELDS)
        if unknown:
            raise CashFileError(f"{path.name}: unknown fields {sorted(unknown)}; use {FIELDS}")
        out[raw["name"]] = CashProfile(
            name=raw["name"],
            description=raw.get("description", ""),
            date_format=raw.get("date_format", "%Y-%m-%d"),
            columns=dict(raw["columns"]),
            delimiter=raw.get("delimiter", ","),
        )
    return out


def _pick_profile(header: list[str], profile: str | None) -> CashProfile:
    profiles = load_profiles()
    if profile is not None:
        if profile not in profiles:
            raise CashFileError(f"No remittance mapping {profile!r}; declared: {sorted(profiles)}.")
        return profiles[profile]
    cols = {h.strip() for h in header}
    for p in profiles.values():
        if set(p.columns) == cols:
            return p
    raise CashFileError(
        f"No declared remittance mapping has exactly the columns {sorted(cols)}. Declared: "
        + "; ".join(f"{p.name} ({', '.join(p.columns)})" for p in profiles.values())
        + ". Add a YAML mapping in tools/cashapp/profiles/ or rename the columns."
    )


def parse_csv(text: str, *, profile: str | None = None) -> ParsedFile:
    sample = text.splitlines()[0] if text else ""
    delimiter = ";" if sample.count(";") > sample.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, [])
    prof = _pick_profile(header, profile)
    index = {prof.columns[h.strip()]: i for i, h in enumerate(header) if h.strip() in prof.columns}
    out = ParsedFile(kind="csv")
    for no, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        values = {f: (row[i].strip() if i < len(row) else "") for f, i in index.items()}
        missing = [f for f in REQUIRED if not values.get(f)]
        if missing:
            out.errors.append(LineError(no, f"Row {no}: {', '.join(missing)} is empty."))
            continue
        try:
            booked = datetime.strptime(values["booked_on"], prof.date_format).date()
            amount = to_minor(values["amount"], values["currency"])
        except (MoneyError, ValueError) as exc:
            out.errors.append(LineError(no, f"Row {no}: {exc}"))
            continue
        if amount <= 0:
            out.skipped_debits += 1
            continue
        out.lines.append(
            BankLine(
                line_no=no,
                booked_on=booked,
                amount_minor=amount,
                currency=values["currency"].upper(),
                reference=_clean(values.get("reference")),
                payer_name=_clean(values.get("payer_name")) or None,
                payer_iban=(values.get("payer_iban") or "").replace(" ", "") or None,
                bank_ref=values.get("bank_ref") or None,
            )
        )
    return out


# --- remittance advice: PDF or e-mail text ----------------------------------------------------


def pdf_text(data: bytes) -> str:
    import pdfplumber
    from pdfminer.pdfparser import PDFSyntaxError
    from pdfplumber.utils.exceptions import PdfminerException

    try:
        with pdfplumber.open(io.BytesIO(data)) as pdf:
            return "\n".join(page.extract_text() or "" for page in pdf.pages)
    except (PDFSyntaxError, PdfminerException, ValueError) as exc:
        raise CashFileError(f"The PDF cannot be read: {exc}.") from None


_LABELLED = {
    "amount": re.compile(
        r"(?im)^\s*(?:total|amount|payment amount|amount paid)\s*[:=]?\s*"
        r"(?P<cur>[A-Z]{3})?\s*(?P<num>\d[\d,']*(?:\.\d+)?)\s*(?P<cur2>[A-Z]{3})?"
    ),
    "date": re.compile(r"(?im)^\s*(?:payment date|date|value date)\s*[:=]?\s*(\d{4}-\d{2}-\d{2})"),
    "payer": re.compile(r"(?im)^\s*(?:payer|from|remitter|customer)\s*[:=]\s*(.+)$"),
    "iban": re.compile(r"(?im)^\s*(?:iban|account)\s*[:=]\s*([A-Z]{2}\d{2}[A-Z0-9 ]{10,32})$"),
    "ref": re.compile(r"(?im)^\s*(?:reference|payment reference|ref)\s*[:=]\s*(.+)$"),
}


def parse_remittance_text(text: str, *, kind: str) -> ParsedFile:
    """A remittance advice (PDF text or e-mail body): one payment, its date, amount and the
    invoices it names. The lines listing invoices stay in the reference for the matcher."""
    out = ParsedFile(kind=kind)
    amount_m = _LABELLED["amount"].search(text)
    date_m = _LABELLED["date"].search(text)
    if amount_m is None or date_m is None:
        missing = [] if amount_m else ["'Total: USD 1234.56' line"]
        missing += [] if date_m else ["'Payment date: YYYY-MM-DD' line"]
        out.errors.append(
            LineError(
                1,
                f"The remittance advice has no {' and no '.join(missing)}; add "
                f"{'them' if len(missing) > 1 else 'it'} or enter the payment by hand.",
            )
        )
        return out
    currency = amount_m.group("cur") or amount_m.group("cur2") or ""
    number = amount_m.group("num").replace(",", "").replace("'", "")
    try:
        minor = to_minor(number, currency)
        booked = date.fromisoformat(date_m.group(1))
    except (MoneyError, ValueError) as exc:
        out.errors.append(LineError(1, f"Remittance advice: {exc}"))
        return out
    payer = _LABELLED["payer"].search(text)
    iban = _LABELLED["iban"].search(text)
    ref = _LABELLED["ref"].search(text)
    body = _clean(text)
    out.lines.append(
        BankLine(
            line_no=1,
            booked_on=booked,
            amount_minor=minor,
            currency=currency.upper(),
            reference=body[:4000],
            payer_name=_clean(payer.group(1)) if payer else None,
            payer_iban=iban.group(1).replace(" ", "") if iban else None,
            bank_ref=_clean(ref.group(1)) if ref else None,
        )
    )
    return out
