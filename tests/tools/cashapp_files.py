"""Bank files for the Cash App Assist tests and benchmark, written as banks write them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class Entry:
    """One statement entry: ``amount`` is the bank's decimal text (e.g. "1234.50")."""

    booked_on: date
    amount: str
    currency: str
    reference: str = ""
    payer_name: str = ""
    payer_iban: str = ""
    bank_ref: str = ""
    credit: bool = True


def camt053(
    entries: list[Entry], *, msg_id: str = "STMT-1", iban: str = "DE89370400440532013000"
) -> bytes:
    """A CAMT.053.001.02 statement with one entry (and one transaction detail) per ``Entry``."""
    rows = []
    for i, e in enumerate(entries, start=1):
        ref = e.bank_ref or f"{msg_id}-{i}"
        party = (
            f"<RltdPties><Dbtr><Nm>{escape(e.payer_name)}</Nm></Dbtr>"
            + (f"<DbtrAcct><Id><IBAN>{e.payer_iban}</IBAN></Id></DbtrAcct>" if e.payer_iban else "")
            + "</RltdPties>"
            if e.payer_name or e.payer_iban
            else ""
        )
        rmt = f"<RmtInf><Ustrd>{escape(e.reference)}</Ustrd></RmtInf>" if e.reference else ""
        rows.append(
            f"""<Ntry><Amt Ccy="{e.currency}">{e.amount}</Amt>
<CdtDbtInd>{"CRDT" if e.credit else "DBIT"}</CdtDbtInd><Sts>BOOK</Sts>
<BookgDt><Dt>{e.booked_on.isoformat()}</Dt></BookgDt><ValDt><Dt>{e.booked_on.isoformat()}</Dt></ValDt>
<AcctSvcrRef>{escape(ref)}</AcctSvcrRef>
<NtryDtls><TxDtls><Refs><EndToEndId>E2E-{escape(ref)}</EndToEndId></Refs>
<Amt Ccy="{e.currency}">{e.amount}</Amt>{party}{rmt}</TxDtls></NtryDtls></Ntry>"""
        )
    body = "\n".join(rows)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">
<BkToCstmrStmt><GrpHdr><MsgId>{escape(msg_id)}</MsgId><CreDtTm>2026-11-30T18:00:00Z</CreDtTm></GrpHdr>
<Stmt><Id>{escape(msg_id)}</Id><Acct><Id><IBAN>{iban}</IBAN></Id><Ccy>EUR</Ccy></Acct>
{body}
</Stmt></BkToCstmrStmt></Document>""".encode()


def mt940(entries: list[Entry], *, ref: str = "STMT-940") -> bytes:
    cur = entries[0].currency if entries else "EUR"
    lines = [":20:" + ref, ":25:DE89370400440532013000", ":28C:1/1", f":60F:C261101{cur}0,00"]
    for e in entries:
        d = e.booked_on.strftime("%y%m%d")
        amount = e.amount.replace(".", ",")
        lines.append(
            f":61:{d}{d[2:]}{'C' if e.credit else 'D'}{amount}NTRF{e.bank_ref or 'NONREF'}"
        )
        lines.append(f":86:{e.reference} {e.payer_name}".strip())
    lines.append(f":62F:C261130{cur}0,00")
    return ("\r\n".join(lines) + "\r\n-").encode()


def bai2(entries: list[Entry], *, file_id: str = "BAI-1", currency: str = "USD") -> bytes:
    """A BAI2 file: one group, one account; amounts in minor units (type 195 in, 495 out)."""
    d = entries[0].booked_on.strftime("%y%m%d") if entries else "261130"
    recs = [f"01,BANK,PLIXO,{d},0800,{file_id},,,2/", f"02,PLIXO,BANK,1,{d},0800,{currency},2/"]
    recs.append(f"03,0975312468,{currency},010,0,,,/")
    total = 0
    for e in entries:
        cents = int(e.amount.replace(".", ""))
        total += cents
        code = "195" if e.credit else "495"
        recs.append(f"16,{code},{cents},0,{e.bank_ref or 'NONREF'},,{e.reference}/")
    n_acct = len(entries) + 2
    recs.append(f"49,{total},{n_acct}/")
    recs.append(f"98,{total},1,{n_acct + 2}/")
    recs.append(f"99,{total},1,{n_acct + 4}/")
    return ("\n".join(recs) + "\n").encode()


def pdf(text_lines: list[str]) -> bytes:
    """A one-page PDF (Helvetica, one text line per entry), as a remittance advice arrives."""

    def esc(t: str) -> str:
        return t.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = ["BT", "/F1 11 Tf", "14 TL", "50 780 Td"]
    for t in text_lines:
        ops.append(f"({esc(t)}) Tj T*")
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)
