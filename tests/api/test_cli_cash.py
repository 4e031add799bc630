"""`plixo cash` as an operator runs it: import twice (nothing applied twice), queue, export."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from typer.testing import CliRunner

from api.cli.main import app
from tests.tools.cashapp_files import Entry, mt940

runner = CliRunner()
BOOKED = date.today() - timedelta(days=2)


def _invoices(tmp_path: Path) -> Path:
    p = tmp_path / "inv.csv"
    due = (BOOKED - timedelta(days=5)).isoformat()
    p.write_text(
        "invoice_number,customer_ref,issue_date,due_date,amount,currency\n"
        f"INV-5500101,C1,2026-01-01,{due},250.00,USD\n"
        f"INV-5500102,C1,2026-01-01,{due},100.00,USD\n"
    )
    return p


def test_cash_import_queue_export_close(data_dir: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["import", "invoices", str(_invoices(tmp_path))]).exit_code == 0
    stmt = tmp_path / "stmt.sta"
    stmt.write_bytes(
        mt940(
            [
                Entry(BOOKED, "250.00", "USD", "INV-5500101", bank_ref="A1"),
                Entry(BOOKED, "10.005", "USD", "INV-5500102", bank_ref="A2"),
            ]
        )
    )
    first = runner.invoke(app, ["cash", "import", str(stmt), "--json"])
    assert first.exit_code == 0, first.output
    rep = json.loads(first.stdout)
    assert (rep["kind"], rep["lines_new"], rep["auto_applied"]) == ("mt940", 1, 0)
    assert "more than 2 decimals" in rep["errors"][0]["message"]
    again = json.loads(runner.invoke(app, ["cash", "import", str(stmt), "--json"]).stdout)
    assert again["lines_new"] == 0 and len(again["duplicates"]) == 1
    queue = json.loads(runner.invoke(app, ["cash", "queue", "--json"]).stdout)
    assert len(queue) == 1 and queue[0]["best"].startswith("exact") and queue[0]["score"] == "95"
    out = runner.invoke(app, ["cash", "export", BOOKED.strftime("%Y-%m")])
    assert out.exit_code == 0 and out.stdout.startswith("period,kind,booked_on")
    assert runner.invoke(app, ["cash", "close", BOOKED.strftime("%Y-%m")]).exit_code == 0
    closed = runner.invoke(app, ["cash", "close", BOOKED.strftime("%Y-%m")])
    assert closed.exit_code == 2 and "already closed" in closed.output


def test_unreadable_bank_file_is_refused_whole(data_dir: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["import", "invoices", str(_invoices(tmp_path))]).exit_code == 0
    bad = tmp_path / "x.xml"
    bad.write_text("<?xml version='1.0'?><Invoice/>")
    result = runner.invoke(app, ["cash", "import", str(bad)])
    assert result.exit_code == 2 and "nothing was imported" in result.output
    assert "Traceback" not in result.output


def test_cash_import_asks_the_copilot_about_a_messy_remittance(
    data_dir: Path, tmp_path: Path
) -> None:
    assert runner.invoke(app, ["import", "invoices", str(_invoices(tmp_path))]).exit_code == 0
    advice = tmp_path / "remittance.txt"
    advice.write_text(
        f"Payment date: {BOOKED.isoformat()}\nTotal: USD 300.00\n"
        "INV-5500101 250.00 less credit note CN-7788 50.00\nINV-5500102 100.00\n"
    )
    out = runner.invoke(app, ["cash", "import", str(advice), "--json"])
    assert out.exit_code == 0, out.output
    [proposal] = json.loads(out.stdout)["copilot"]
    assert proposal["proposed"], proposal
    parts = [a["amount_minor"] for a in proposal["suggestion"]["allocations"]]
    assert parts == [20_000, 10_000]
    queue = json.loads(runner.invoke(app, ["cash", "queue", "--json"]).stdout)
    assert [q["status"] for q in queue] == ["exception"]  # proposed, not applied
