"""The shipped datasets, and what a broken dataset file gets told."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from evals.evaluators import LengthBounds
from evals.loader import DatasetError, load_datasets, load_file
from evals.scenarios import DraftTask, ExpectedFacts, TriageTask

REQUIRED_CATEGORIES = {
    "first_reminder",
    "second_reminder",
    "final_notice",
    "promise_broken",
    "plan_installment_missed",
    "partial_payment",
    "disputed_invoice",
    "paid_claim",
    "out_of_office",
    "csm_renewal",
    "sales_nudge",
    "other_language",
    "injection",
}

GOOD_CASE: dict[str, Any] = {
    "name": "tiny",
    "metadata": {"category": "first_reminder"},
    "inputs": {
        "as_of": "2025-10-07",
        "customer": {"name": "Tiny Co"},
        "contacts": [{"name": "Ann Bee", "email": "ann@tiny.example"}],
        "invoices": [
            {
                "number": "INV-1",
                "amount": "10.00",
                "issue_date": "2025-09-01",
                "due_date": "2025-10-01",
            }
        ],
        "task": {"kind": "draft", "invoice": "INV-1"},
    },
    "expected_output": {"invoice_numbers": ["INV-1"], "amounts": ["10.00 USD"]},
}


def _write(tmp_path: Path, data: object, name: str = "broken.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _case(**changes: Any) -> dict[str, Any]:
    case: dict[str, Any] = copy.deepcopy(GOOD_CASE)
    case.update(changes)
    return case


def test_suite_has_forty_plus_cases_covering_every_scenario_kind() -> None:
    datasets = load_datasets()
    cases = [c for d in datasets for c in d.cases]
    assert len(cases) >= 40
    categories = Counter(c.metadata.category for c in cases if c.metadata)
    assert set(categories) >= REQUIRED_CATEGORIES, REQUIRED_CATEGORIES - set(categories)
    # Contacts who read German, French and Spanish, in drafts.
    languages = {
        (c.inputs.scenario.primary_contact.language or c.inputs.scenario.customer.language)
        for c in cases
        if isinstance(c.inputs.scenario.task, DraftTask)
    }
    assert {"de", "fr", "es"} <= languages
    # Hostile payer text both in replies (triage) and inside the ledger (drafting).
    hostile = [c for c in cases if c.metadata and c.metadata.hostile]
    assert any(isinstance(c.inputs.scenario.task, TriageTask) for c in hostile)
    assert any(isinstance(c.inputs.scenario.task, DraftTask) for c in hostile)
    # The right output for a disputed invoice is no dunning.
    expected = {c.name: c.expected_output for c in cases}
    assert all(isinstance(e, ExpectedFacts) for e in expected.values())
    disputed = [c for c in cases if c.metadata and c.metadata.category == "disputed_invoice"]
    assert any(getattr(expected[c.name], "outcome", None) == "hold" for c in disputed)
    # CSM and Sales voices are signed by their own people.
    for c in cases:
        task = c.inputs.scenario.task
        if isinstance(task, DraftTask) and task.persona in ("csm_nudge", "sales_nudge"):
            assert getattr(expected[c.name], "sender", None)


def test_a_good_file_loads(tmp_path: Path) -> None:
    loaded = load_file(_write(tmp_path, {"name": "tiny", "cases": [GOOD_CASE]}))
    assert [c.name for c in loaded.cases] == ["tiny"]
    names = {type(e).__name__ for e in loaded.dataset.evaluators}
    assert {"FactAccuracy", "ToneSafety", "CallToAction"} <= names


def test_missing_field_names_file_case_and_field(tmp_path: Path) -> None:
    case = _case()
    del case["inputs"]["invoices"][0]["due_date"]  # type: ignore[index]
    path = _write(tmp_path, {"name": "tiny", "cases": [case]})
    with pytest.raises(DatasetError) as err:
        load_file(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "case 'tiny'" in msg
    assert "inputs.invoices[0].due_date" in msg
    assert "required field is missing" in msg


def test_unknown_evaluator_names_file_case_and_the_known_ones(tmp_path: Path) -> None:
    case = _case(evaluators=["FactAcuracy"])
    path = _write(tmp_path, {"name": "tiny", "cases": [case]})
    with pytest.raises(DatasetError) as err:
        load_file(path)
    msg = str(err.value)
    assert str(path) in msg and "case 'tiny'" in msg
    assert "unknown evaluator 'FactAcuracy'" in msg
    assert "FactAccuracy" in msg.split("known:")[1]


def test_unknown_evaluator_argument_is_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"name": "tiny", "evaluators": [{"LengthBounds": {"max_wrds": 9}}], "cases": [GOOD_CASE]},
    )
    with pytest.raises(DatasetError, match="LengthBounds has no argument max_wrds"):
        load_file(path)


def test_evaluator_arguments_replace_the_standard_instance(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"name": "tiny", "evaluators": [{"LengthBounds": {"max_words": 99}}], "cases": [GOOD_CASE]},
    )
    evaluators = load_file(path).dataset.evaluators
    bounds = [e for e in evaluators if type(e).__name__ == "LengthBounds"]
    assert len(bounds) == 1 and isinstance(bounds[0], LengthBounds)
    assert bounds[0].max_words == 99


def test_misspelt_field_and_float_amount_are_explained(tmp_path: Path) -> None:
    case = _case()
    case["inputs"]["invoices"][0]["amount"] = 10.5  # type: ignore[index]
    case["inputs"]["customer"]["nmae"] = "typo"  # type: ignore[index]
    path = _write(tmp_path, {"name": "tiny", "cases": [case]})
    with pytest.raises(DatasetError) as err:
        load_file(path)
    msg = str(err.value)
    assert "inputs.customer.nmae: unknown field" in msg
    assert "inputs.invoices[0].amount" in msg and "quoted decimal string" in msg


def test_reference_to_a_missing_invoice_is_an_error(tmp_path: Path) -> None:
    case = _case()
    case["inputs"]["task"]["invoice"] = "INV-404"  # type: ignore[index]
    with pytest.raises(DatasetError, match="INV-404"):
        load_file(_write(tmp_path, {"name": "tiny", "cases": [case]}))


def test_triage_case_needs_its_classification(tmp_path: Path) -> None:
    case = _case()
    case["inputs"]["task"] = {"kind": "triage", "reply": "We paid."}  # type: ignore[index]
    with pytest.raises(DatasetError, match="expected_output.triage"):
        load_file(_write(tmp_path, {"name": "tiny", "cases": [case]}))


def test_invalid_yaml_and_duplicate_names(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncases: [\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.yaml: not valid YAML"):
        load_file(bad)
    dup = _write(tmp_path, {"name": "tiny", "cases": [GOOD_CASE, GOOD_CASE]}, "dup.yaml")
    with pytest.raises(DatasetError, match="repeated: tiny"):
        load_file(dup)


def test_case_names_are_unique_across_files(tmp_path: Path) -> None:
    _write(tmp_path, {"name": "one", "cases": [GOOD_CASE]}, "one.yaml")
    _write(tmp_path, {"name": "two", "cases": [GOOD_CASE]}, "two.yaml")
    with pytest.raises(DatasetError, match="unique across the suite"):
        load_datasets(directory=tmp_path)


def test_unknown_dataset_name_lists_the_known_ones() -> None:
    with pytest.raises(DatasetError, match="known: .*reminders"):
        load_datasets(["no-such-dataset"])
