"""Rejected drafts from the review panel become eval cases (anonymized, loadable, runnable)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
import yaml
from sqlalchemy.orm import Session
from typer.testing import CliRunner

import api.cli.eval as cli_eval
from evals.export import ExportError, export_rejections
from evals.fixtures import build_scenario
from evals.loader import load_datasets, load_file
from evals.runner import FunctionAgent, eval_settings, run_suite
from evals.scenarios import ExpectedFacts
from memory.config import Settings, get_settings
from memory.models import Draft, DraftPersona, Note, Organisation, User
from tests.evals.reference import reference_agent
from tools.drafts.service import reject_draft, store_new_draft

CASE = next(
    c for d in load_datasets(["reminders"]) for c in d.cases if c.name == "first-reminder-usd"
)


def _rejected_draft(session: Session, reason: str) -> Draft:
    spec = CASE.inputs.scenario
    prep = build_scenario(session, "export-source", spec, eval_settings(Settings()))
    session.add(
        Note(
            org_id=prep.org_id,
            customer_id=prep.customer_id,
            body="Dana Whitfield asked us to call before the 20th.",
            created_at=datetime(2025, 10, 1, 9, tzinfo=UTC),
        )
    )
    draft = Draft(
        org_id=prep.org_id,
        customer_id=prep.customer_id,
        invoice_id=prep.invoice_id,
        contact_id=prep.contact_id,
        persona=DraftPersona.AUTOPILOT,
        recipient="dana.whitfield@globex.example",
        subject="Invoice INV-1042",
        body="Dana, pay the $12,400.00 today or else.",
        language="en",
        tone="firm",
        stated_facts={"template": "friendly_reminder"},
        created_at=datetime(2025, 10, 7, 15, tzinfo=UTC),
    )
    store_new_draft(session, draft, decision={"outcome": "needs_approval"}, actor="test")
    collector = session.get(User, prep.user_ids["Sam Okafor"])
    assert collector is not None
    reject_draft(
        session,
        prep.org_id,
        draft.id,
        user=collector,
        expected_version=draft.version,
        reason=reason,
    )
    session.commit()
    return draft


def test_export_writes_loadable_anonymized_cases_that_run(session: Session, tmp_path: Path) -> None:
    draft = _rejected_draft(session, "Too harsh for Dana Whitfield; and 'or else' is a threat.")
    out = tmp_path / "rejections.yaml"
    result = export_rejections(session, out)
    assert len(result.added) == 1 and not result.skipped
    text = out.read_text(encoding="utf-8")
    assert "Dana Whitfield" not in text and "globex.example" not in text  # anonymized
    assert "Globex Corporation" not in text
    loaded = load_file(out)
    (case,) = loaded.cases
    assert case.metadata is not None and case.metadata.category == "review_rejection"
    assert "Too harsh for Contact A" in (case.metadata.rejection_reason or "")
    assert "or else" in (case.metadata.rejected_body or "")
    scenario = case.inputs.scenario
    assert scenario.task.invoice == "INV-1042" and scenario.task.kind == "draft"
    assert [i.number for i in scenario.invoices] == ["INV-1042"]
    assert isinstance(case.expected_output, ExpectedFacts)
    assert case.expected_output.amounts[0].minor == 1_240_000
    assert any("call before the 20th" in n.body for n in scenario.notes)
    summary = asyncio.run(
        run_suite([loaded], FunctionAgent(reference_agent, model="reference"), Settings())
    ).summary
    assert summary.passed, [c.gated_failed for c in summary.cases]
    # Exporting again keeps the case once (curated expectations survive).
    again = export_rejections(session, out)
    assert again.added == [] and "already in" in again.skipped[0]
    assert len(yaml.safe_load(out.read_text(encoding="utf-8"))["cases"]) == 1
    assert draft.id is not None


def test_nothing_to_export_is_an_error_and_writes_nothing(session: Session, tmp_path: Path) -> None:
    out = tmp_path / "none.yaml"
    with pytest.raises(ExportError, match="no rejected draft"):
        export_rejections(session, out)
    assert not out.exists()
    with pytest.raises(ExportError, match="no organisation"):
        export_rejections(session, out, org_slug="nope")


def test_cli_export_rejections(session: Session, data_dir: Path, tmp_path: Path) -> None:
    _rejected_draft(session, "Wrong tone.")
    org = session.query(Organisation).first()
    assert org is not None
    out = tmp_path / "out.yaml"
    app = typer.Typer()
    app.add_typer(cli_eval.eval_app, name="eval")
    get_settings.cache_clear()
    result = CliRunner().invoke(
        app, ["eval", "export-rejections", "--out", str(out), "--org", org.slug, "--keep-names"]
    )
    assert result.exit_code == 0, result.output
    assert "Exported 1 rejected draft" in result.stdout
    assert "Dana Whitfield" in out.read_text(encoding="utf-8")  # --keep-names
    missing = CliRunner().invoke(
        app, ["eval", "export-rejections", "--out", str(out), "--org", "nope"]
    )
    assert missing.exit_code == 2 and "no organisation" in missing.output
