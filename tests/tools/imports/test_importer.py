"""The CSV import against a real ledger: the IBM file as it is, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import Customer, Invoice, InvoiceStatus, Organisation, Payment
from memory.queue_version import read_queue_version
from tools.imports import importer

IBM = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ibm-accounts-receivable.csv"
HEADER = (
    "countryCode,customerID,PaperlessDate,invoiceNumber,InvoiceDate,DueDate,InvoiceAmount,"
    "Disputed,SettledDate,PaperlessBill,DaysToSettle,DaysLate"
)
GOOD = [
    "391,0379-NEVHP,4/6/2013,0000611365,1/2/2013,2/1/2013,55.94,No,1/15/2013,Paper,13,0",
    "406,8976-AMJEO,3/3/2012,0007900770,1/26/2013,2/25/2013,61.74,Yes,3/3/2013,Electronic,36,6",
]


def write(tmp_path: Path, lines: list[str], name: str = "f.csv") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


@pytest.mark.skipif(not IBM.exists(), reason="../shared/data is not beside the repository")
def test_ibm_file_imports_as_it_is_and_again_without_duplicates(
    session: Session, org: Organisation
) -> None:
    report = importer.import_invoices(session, org, IBM)
    session.commit()
    assert report.committed and report.rejected == 0
    assert (report.created, report.customers_created, report.payments_created) == (2466, 100, 2466)
    assert count(session, Invoice) == 2466 and count(session, Customer) == 100
    inv = session.scalars(select(Invoice).where(Invoice.number == "0000611365")).one()
    assert inv.amount_minor == 5594 and inv.balance_minor == 0 and inv.status is InvoiceStatus.PAID
    assert inv.issue_date.isoformat() == "2013-01-02" and inv.settled_date is not None
    assert session.scalar(select(func.count()).where(Invoice.disputed.is_(True))) == 561
    total = session.scalar(select(func.sum(Payment.amount_minor)))
    assert total == session.scalar(select(func.sum(Invoice.amount_minor)))

    again = importer.import_invoices(session, org, IBM)
    session.commit()
    assert (again.created, again.updated, again.unchanged, again.payments_created) == (
        0,
        0,
        2466,
        0,
    )
    assert count(session, Invoice) == 2466 and count(session, Payment) == 2466


def test_one_bad_row_commits_nothing_and_names_row_column_reason(
    tmp_path: Path, session: Session, org: Organisation
) -> None:
    bad = "391,0379-NEVHP,4/6/2013,0000999999,13/45/2013,2/1/2013,55.94,No,,Paper,,"
    report = importer.import_invoices(session, org, write(tmp_path, [HEADER, *GOOD, bad]))
    session.commit()
    assert not report.committed and count(session, Invoice) == 0
    assert [(e.row, e.column) for e in report.errors] == [(4, "InvoiceDate")]
    assert "MM/DD/YYYY" in report.errors[0].reason


def test_partial_commits_good_rows_and_keeps_rejects(
    tmp_path: Path, session: Session, org: Organisation
) -> None:
    bad = "391,X-1,4/6/2013,0000999999,1/2/2013,2/1/2013,-5.00,No,,Paper,,"
    report = importer.import_invoices(
        session, org, write(tmp_path, [HEADER, *GOOD, bad]), partial=True
    )
    session.commit()
    assert report.committed and report.created == 2 and report.rejected == 1
    assert report.errors[0].column == "InvoiceAmount" and "negative" in report.errors[0].reason
    out = tmp_path / "rejects.csv"
    importer.write_rejects(report, out)
    assert "row,column,value,reason" in out.read_text() and "-5.00" in out.read_text()


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        ("391,C,4/6/2013,N1,1/2/2013,2/1/2013,abc,No,,Paper,,", "InvoiceAmount", "not a number"),
        ("391,C,4/6/2013,N1,1/2/2013,2/1/2013,1.234,No,,Paper,,", "InvoiceAmount", "decimals"),
        ("391,C,4/6/2013,N1,1/2/2013,2/1/2013,,No,,Paper,,", "InvoiceAmount", "required"),
        ("391,,4/6/2013,N1,1/2/2013,2/1/2013,5.00,No,,Paper,,", "customerID", "required"),
        ("391,C,4/6/2013,N1,1/2/2013,2/1/2013,5.00,Maybe,,Paper,,", "Disputed", "Yes/No"),
        ("391,C,4/6/2013,N1,3/2/2013,2/1/2013,5.00,No,,Paper,,", "DueDate", "before"),
        ("391,C,4/6/2013,N1,1/2/2013,2/1/2013,5.00,No,,Fax,,", "PaperlessBill", "Paper"),
    ],
)
def test_row_validation(
    tmp_path: Path, session: Session, org: Organisation, row: str, column: str, reason: str
) -> None:
    report = importer.import_invoices(session, org, write(tmp_path, [HEADER, row]))
    assert not report.committed
    assert report.errors[0].row == 2 and report.errors[0].column == column
    assert reason in report.errors[0].reason


def test_duplicate_invoice_numbers_within_one_file(
    tmp_path: Path, session: Session, org: Organisation
) -> None:
    report = importer.import_invoices(session, org, write(tmp_path, [HEADER, GOOD[0], GOOD[0]]))
    assert not report.committed
    assert report.errors[0].row == 3 and "duplicates row 2" in report.errors[0].reason


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (HEADER.encode() + b"\n", "no rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
        ("invoiceNumber,Betrag\n1,\xe9\n".encode("latin-1"), "not UTF-8"),
        (b"just some prose without commas\nmore prose\n", "header row"),
        (b"invoiceNumber,Colour\n1,red\n", "match no declared"),
        ((HEADER + ",Extra\n" + GOOD[0] + ",x\n").encode(), "match no declared"),
    ],
)
def test_file_level_errors(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_bytes(content)
    with pytest.raises(importer.ImportFileError, match=message):
        importer.parse_invoice_csv(p)


def test_explicit_profile_reports_unknown_and_missing_columns(tmp_path: Path) -> None:
    p = write(tmp_path, ["invoiceNumber,customerID,Colour", "1,C,red"])
    with pytest.raises(importer.ImportFileError, match="unknown columns Colour") as exc:
        importer.parse_invoice_csv(p, profile="ibm-ar")
    assert "missing required columns" in str(exc.value)


def test_plixo_layout_with_open_balance_and_currency(
    tmp_path: Path, session: Session, org: Organisation
) -> None:
    p = write(
        tmp_path,
        [
            "invoice_number,customer_ref,customer_name,issue_date,due_date,amount,currency,amount_paid",
            "INV-1,ACME,Acme GmbH,2026-01-01,2026-01-31,1200.50,EUR,200.50",
            "INV-2,ACME,Acme GmbH,2026-01-05,2026-02-04,5000,JPY,",
        ],
    )
    report = importer.import_invoices(session, org, p)
    session.commit()
    assert report.profile == "plixo-invoices" and report.created == 2
    inv1 = session.scalars(select(Invoice).where(Invoice.number == "INV-1")).one()
    inv2 = session.scalars(select(Invoice).where(Invoice.number == "INV-2")).one()
    assert (inv1.amount_minor, inv1.balance_minor, inv1.status) == (
        120050,
        100000,
        InvoiceStatus.OPEN,
    )
    assert (inv2.amount_minor, inv2.currency) == (5000, "JPY")
    # A changed balance on re-import is an update, not a duplicate, and the review queue (which
    # shows balances) is told; an unchanged re-import tells it nothing.
    version = read_queue_version(session.connection(), org.id)
    session.commit()
    p.write_text(p.read_text().replace("EUR,200.50", "EUR,1200.50"))
    again = importer.import_invoices(session, org, p)
    session.commit()
    assert (again.created, again.updated, again.unchanged) == (0, 1, 1)
    session.refresh(inv1)
    assert inv1.balance_minor == 0 and inv1.status is InvoiceStatus.PAID
    assert read_queue_version(session.connection(), org.id) == (version or 0) + 1
    importer.import_invoices(session, org, p)
    session.commit()
    assert read_queue_version(session.connection(), org.id) == (version or 0) + 1


def test_customers_and_contacts_import(tmp_path: Path, session: Session, org: Organisation) -> None:
    cust = write(
        tmp_path,
        ["customer_ref,name,timezone,renewal_date", "ACME,Acme GmbH,Europe/Berlin,2027-03-01"],
        "c.csv",
    )
    rep = importer.import_customers(session, org, cust)
    session.commit()
    assert rep.committed and rep.created == 1
    contacts = write(
        tmp_path,
        [
            "customer_ref,name,email,is_primary",
            "ACME,Jana Roth,Jana@Acme.example,yes",
            "NOPE,Ghost,g@x.example,no",
        ],
        "k.csv",
    )
    rep2 = importer.import_contacts(session, org, contacts)
    assert (
        not rep2.committed
        and rep2.errors[0].row == 3
        and "not a known customer" in rep2.errors[0].reason
    )
    rep3 = importer.import_contacts(session, org, contacts, partial=True)
    session.commit()
    assert rep3.created == 1
    bad_tz = write(tmp_path, ["customer_ref,name,timezone", "B,B Ltd,Mars/Olympus"], "t.csv")
    rep4 = importer.import_customers(session, org, bad_tz)
    assert not rep4.committed and "IANA" in rep4.errors[0].reason
