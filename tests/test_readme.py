"""The README says what is true: its policy examples are the engine's, with the outcomes it gives,
and its first lines hold the two fresh-machine commands that .ci/run runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from policies.engine import decide
from policies.facts import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(
    r"<summary><code>(?P<action>\w+)</code> → <b>(?P<outcome>\w+)</b> \((?P<rules>[^)]*)\)"
    r"</summary>\s*```json\n(?P<json>.*?)\n```",
    re.S,
)


def test_one_policy_example_per_action_type_with_its_real_decision() -> None:
    found = {m["action"]: m for m in BLOCK.finditer(README)}
    assert set(found) == {a.value for a in EXAMPLES}
    for action, facts in EXAMPLES.items():
        m = found[action.value]
        line = json.loads(m["json"])
        assert line == {"action": {"type": action.value}, "facts": facts}
        decision = decide(action, line["facts"])
        assert decision.outcome.value == m["outcome"]
        assert [r.rule_id for r in decision.reasons] == m["rules"].split(", ")


def test_first_lines_hold_the_two_commands_ci_runs() -> None:
    head = README.split("## Configuration")[0]
    commands = re.findall(r"^python3 -m venv .*$", head, re.M)
    assert len(commands) == 2 and "plixo demo" in commands[0] and "pytest" in commands[1]
    test_cmd = commands[1].split("  #")[0].strip()
    assert test_cmd in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def _requirement_name(spec: str) -> str:
    """The distribution name of a requirement, normalised as pip compares them (PEP 503)."""
    name = re.split(r"[\[<>=!~; ]", spec.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_both_commands_install_from_the_lock_which_pins_every_declared_dependency() -> None:
    import tomllib

    head = README.split("## Configuration")[0]
    commands = re.findall(r"^python3 -m venv .*$", head, re.M)
    assert all("-c requirements.lock" in c for c in commands), commands
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock line {line!r} is not an exact pin"
            pins[_requirement_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = list(project["dependencies"]) + list(project["optional-dependencies"]["test"])
    unpinned = sorted({_requirement_name(d) for d in declared} - set(pins))
    assert not unpinned, f"run `bash .ci/lock`: {unpinned} are not in requirements.lock"
