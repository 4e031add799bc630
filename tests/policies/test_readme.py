"""The README's JSON shapes are the real ones: every example validates, decides, and is current."""

from __future__ import annotations

import json
import re
from importlib import resources

from policies.engine import decide
from policies.facts import EXAMPLES, FACT_MODELS
from policies.types import ActionType


def _blocks() -> list[dict]:
    text = resources.files("policies").joinpath("README.md").read_text(encoding="utf-8")
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, flags=re.S)]


def test_the_readme_has_one_current_example_per_action_type() -> None:
    lines = [b for b in _blocks() if "facts" in b]
    by_type = {b["action"]["type"]: b["facts"] for b in lines}
    assert set(by_type) == {a.value for a in ActionType}
    for action, facts in by_type.items():
        assert facts == json.loads(json.dumps(EXAMPLES[ActionType(action)]))
        FACT_MODELS[ActionType(action)].model_validate(facts)
        assert decide(action, facts).reasons


def test_the_readme_decision_example_is_what_the_engine_says() -> None:
    decisions = [b for b in _blocks() if "outcome" in b]
    assert decisions
    for shown in decisions:
        facts = shown.pop("_facts")
        assert decide(shown["action"], facts).as_dict() == shown
