"""The held-out set cannot confirm itself: none of its wording is in the code, and it is gated.

Why: an eval that the code was tuned on measures the tuning. The held-out set (``evals/heldout``)
has its own ledgers and phrasings; if any five consecutive words of a held-out case appear in the
agent, the tools, the policies, the prompts or the eval code, someone copied it there (a rule, an
example in a prompt) and the held-out score no longer means what it says.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

from evals.loader import DEVELOPMENT, HELDOUT, HELDOUT_DIR, load_datasets

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("agent", "tools", "policies", "prompts")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".j2", ".json", ".txt", ".html"}
N = 5


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.casefold())


def shingles(text: str, n: int = N) -> set[tuple[str, ...]]:
    words = _words(text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def heldout_shingles() -> dict[tuple[str, ...], str]:
    """Every 5-word sequence of every held-out case (each string on its own), with its case."""
    out: dict[tuple[str, ...], str] = {}
    for path in sorted(HELDOUT_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text("utf-8"))
        for case in data["cases"]:
            for s in _strings(case):
                for sh in shingles(s):
                    out.setdefault(sh, f"{path.name}:{case['name']}")
    return out


def code_files() -> list[Path]:
    files = [
        p
        for d in CODE_DIRS
        for p in (ROOT / d).rglob("*")
        if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts
    ]
    files += sorted((ROOT / "evals").glob("*.py"))
    return files


def copied(files: list[Path], wanted: dict[tuple[str, ...], str]) -> list[str]:
    found = []
    for path in files:
        for sh in shingles(path.read_text("utf-8", errors="replace")) & wanted.keys():
            found.append(f"{path.relative_to(ROOT)}: {' '.join(sh)!r} (from {wanted[sh]})")
    return found


def test_no_five_words_of_a_heldout_case_are_in_the_code() -> None:
    wanted = heldout_shingles()
    assert len(wanted) > 300  # the set has real text to protect
    files = code_files()
    assert any(p.name == "offline.py" for p in files) and any(p.suffix == ".yaml" for p in files)
    assert copied(files, wanted) == []


def test_the_copy_check_finds_a_copied_sentence(tmp_path: Path) -> None:
    wanted = heldout_shingles()
    sentence = " ".join(next(iter(wanted)))
    leak = tmp_path / "rule.py"
    leak.write_text(f"RX = r'{sentence.upper()}'\n")
    # The check reads files under ROOT; a copy under it would be named the same way.
    assert shingles(leak.read_text()) & wanted.keys()


def test_the_heldout_set_is_loaded_as_such_and_shares_no_case_with_development() -> None:
    loaded = load_datasets()
    splits = {d.split for d in loaded}
    assert splits == {DEVELOPMENT, HELDOUT}
    held = [c for d in loaded if d.split == HELDOUT for c in d.cases]
    dev = [c for d in loaded if d.split == DEVELOPMENT for c in d.cases]
    assert len(held) >= 15
    dev_numbers = {inv.number for c in dev for inv in c.inputs.scenario.invoices}
    held_numbers = {inv.number for c in held for inv in c.inputs.scenario.invoices}
    assert not dev_numbers & held_numbers  # new ledger fixtures, not reused ones


def test_production_code_imports_nothing_from_the_offline_model() -> None:
    """Only the model factory (agent/models.py) may import agent.offline; tests may too."""
    found = subprocess.run(
        ["grep", "-rnE", r"(from agent\.offline import|import agent\.offline|from agent import "
         r"offline)", "agent", "tools", "policies", "prompts", "memory", "api", "evals"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout.splitlines()  # fmt: skip
    assert [line for line in found if not line.startswith("agent/models.py:")] == []


def test_a_run_reports_both_sets_side_by_side_and_gates_on_the_heldout_set() -> None:
    import asyncio

    from evals.runner import FunctionAgent, run_suite
    from memory.config import Settings
    from tests.evals.reference import broken, reference_agent

    picked = load_datasets(["reminders", "heldout-replies"])
    agent = FunctionAgent(reference_agent, model="reference")
    summary = asyncio.run(run_suite(picked, agent, Settings(), concurrency=4)).summary
    data = summary.public()
    assert set(data["splits"]) == {DEVELOPMENT, HELDOUT} and data["gated_split"] == HELDOUT
    held = summary.splits[HELDOUT]
    assert [g.name for g in summary.gates] == [g.name for g in held.gates]
    assert held.cases_run == len(picked[1].cases) and summary.passed
    # A failure that only the development set can see does not move the held-out gate...
    bad = FunctionAgent(
        broken(lambda d, _ctx: d.model_copy(update={"body": d.body + " Our lawyers will call."})),
        model="broken",
    )
    dev_only = asyncio.run(
        run_suite(load_datasets(["reminders", "heldout-replies"]), bad, Settings())
    ).summary
    assert not dev_only.splits[DEVELOPMENT].passed
    assert dev_only.splits[HELDOUT].passed == dev_only.passed
