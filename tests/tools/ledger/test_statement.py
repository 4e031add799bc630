"""Statement of account as PDF: rendered by WeasyPrint, read back as pages and as text.

The pages are rasterized with PDFium (pypdfium2) and checked to carry ink where the letterhead and
the tables are; the text is extracted with pdfplumber and every figure is compared with the
ledger, formatted the way the payer's language writes it.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pdfplumber
import pypdfium2
import pytest
from sqlalchemy.orm import Session

from memory.models import Invoice, Organisation
from tests.agent.factories import AS_OF, Builder
from tools.kit.formatting import format_amount, format_day
from tools.ledger.statement import build_statement, render_pdf, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


def _book(session: Session, language: str) -> tuple[Builder, int, list[Invoice]]:
    b = Builder.new_org(session, name="Acme Test GmbH")
    customer = b.customer("Nordwind Lebensmittel AG", language=language, country="DE")
    invoices = [
        b.invoice(customer, number="RE-2025-101", amount_minor=1_240_000, currency="EUR",
                  days_overdue=95),
        b.invoice(customer, number="RE-2025-144", amount_minor=310_050, currency="EUR",
                  days_overdue=40),
        b.invoice(customer, number="RE-2025-170", amount_minor=99_999, currency="EUR",
                  days_overdue=-10),
        b.invoice(customer, number="US-2025-007", amount_minor=500_000, balance_minor=250_000,
                  currency="USD", days_overdue=12),
    ]  # fmt: skip
    b.payment(invoices[3], 250_000, AS_OF - timedelta(days=5))
    b.promise(customer, [invoices[1]], amount_minor=310_050, promised=AS_OF + timedelta(days=9))
    b.plan(customer, [invoices[0]], [(AS_OF + timedelta(days=30), 620_000, 0),
                                     (AS_OF + timedelta(days=60), 620_000, 0)])  # fmt: skip
    session.commit()
    return b, customer.id, invoices


def _pages(pdf: bytes) -> list[tuple[int, int, bytes]]:
    doc = pypdfium2.PdfDocument(pdf)
    out = []
    for i in range(len(doc)):
        image = doc[i].render(scale=1).to_pil().convert("L")
        out.append((image.width, image.height, image.tobytes()))
    return out


def _plain(text: str) -> str:
    """No-break spaces (Babel's, between amount and symbol) as the spaces a PDF shows."""
    return text.replace("\xa0", " ").replace("\u202f", " ")


def _ink(page: tuple[int, int, bytes], top: float, bottom: float) -> float:
    """Share of dark pixels between two heights (fractions of the page)."""
    width, height, data = page
    rows = data[int(top * height) * width : int(bottom * height) * width]
    return sum(1 for px in rows if px < 200) / max(1, len(rows))


@pytest.mark.parametrize("language", ["de", "en"])
def test_statement_pdf_matches_the_ledger(session: Session, language: str) -> None:
    b, customer_id, invoices = _book(session, language)
    st = build_statement(session, b.org.id, customer_id, as_of=AS_OF)
    assert st.totals == {"EUR": 1_240_000 + 310_050 + 99_999, "USD": 250_000}
    assert st.aging["EUR"]["90+"] == 1_240_000 and st.aging["EUR"]["31-60"] == 310_050
    assert st.aging["EUR"]["Current"] == 99_999 and st.aging["USD"]["1-30"] == 250_000
    pdf = render_pdf(st)
    assert pdf.startswith(b"%PDF-")
    pages = _pages(pdf)
    assert pages and _ink(pages[0], 0.0, 0.12) > 0.005  # the letterhead
    assert _ink(pages[0], 0.15, 0.6) > 0.01  # the tables
    assert _ink(pages[-1], 0.93, 1.0) > 0.0  # the page footer ("Seite 1 / 1")
    with pdfplumber.open(io.BytesIO(pdf)) as doc:
        text = _plain("\n".join(p.extract_text() or "" for p in doc.pages))
    locale = {"de": "de_DE", "en": "en_US"}[language]
    money = lambda m, c: _plain(format_amount(m, c, locale))  # noqa: E731
    assert ("Kontoauszug" if language == "de" else "Statement of account") in text
    assert "Acme Test GmbH" in text and "Nordwind Lebensmittel AG" in text
    for inv in invoices:
        assert inv.number in text
        assert money(inv.balance_minor, inv.currency) in text
        assert format_day(inv.due_date, locale) in text
    assert money(1_650_049, "EUR") in text and money(250_000, "USD") in text  # per currency
    assert money(620_000, "EUR") in text  # the plan's installments
    assert format_day(AS_OF + timedelta(days=9), locale) in text  # the promise
    assert format_day(AS_OF - timedelta(days=5), locale) in text  # the payment received
    _ = Organisation  # the org row carries the letterhead name


def test_no_open_items_still_renders(session: Session) -> None:
    b = Builder.new_org(session)
    customer = b.customer("Quiet Customer Ltd")
    session.commit()
    st = build_statement(session, b.org.id, customer.id, as_of=AS_OF)
    with pdfplumber.open(io.BytesIO(render_pdf(st))) as doc:
        text = doc.pages[0].extract_text() or ""
    assert "Nothing is open." in text and "No payments received." in text
