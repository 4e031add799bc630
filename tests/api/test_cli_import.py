"""`plixo import` as a user runs it: JSON report, exit codes, no traceback, nothing half-done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli.main import app

IBM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ibm-accounts-receivable.csv"
runner = CliRunner()


@pytest.mark.skipif(not IBM.exists(), reason="../shared/data is not beside the repository")
def test_import_ibm_json_twice(data_dir: Path) -> None:
    first = runner.invoke(app, ["import", "invoices", str(IBM), "--json"])
    assert first.exit_code == 0, first.output
    rep = json.loads(first.stdout)
    assert (rep["created"], rep["customers_total"]) == (2466, 100)
    assert rep["data_ready"]["score"] < 80  # no contacts yet: not Data-Ready
    second = json.loads(runner.invoke(app, ["import", "invoices", str(IBM), "--json"]).stdout)
    assert (second["created"], second["unchanged"]) == (0, 2466)


def test_bad_file_is_a_clear_error_without_traceback(data_dir: Path, tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_bytes(b"\xff\xfe\x00\x00garbage")
    result = runner.invoke(app, ["import", "invoices", str(p)])
    assert result.exit_code == 2
    assert "nothing was imported" in result.output and "Traceback" not in result.output


def test_bad_row_exits_1_and_reports_it(data_dir: Path, tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text(
        "invoice_number,customer_ref,issue_date,due_date,amount,currency\n"
        "A1,C1,2026-01-01,2026-01-31,10.00,USD\nA2,C1,2026-02-30,2026-03-01,10.00,USD\n"
    )
    result = runner.invoke(app, ["import", "invoices", str(p), "--json"])
    assert result.exit_code == 1
    rep = json.loads(result.stdout)
    assert rep["committed"] is False and rep["errors"][0]["row"] == 3


def test_unreachable_database_names_url_without_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from memory.config import get_settings

    monkeypatch.setenv("PLIXO_DATABASE_URL", "postgresql+psycopg://bob:s3cret@127.0.0.1:1/nope")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["db", "upgrade"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "127.0.0.1:1" in result.output and "s3cret" not in result.output
    assert "PLIXO_DATABASE_URL" in result.output
