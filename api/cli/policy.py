"""``plixo policy``: check actions against the guardrails, explain them, validate policy files.

``check FILE.jsonl`` reads one ``{"action": ..., "facts": ...}`` object per line and prints one
decision per line as JSON (stdout stays machine-readable; problems with a line go to stderr and make
the exit code 2 once every other line is decided). ``explain`` prints every rule of the active set
as a sentence; ``show`` prints the active set as YAML in human units (amounts, percents,
durations), the form a policy file is written in; ``validate`` checks a policy file or an override
before anyone relies on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
import yaml
from rich.markup import escape

from api.cli.common import console, err_console, fail, open_ledger
from memory.models import Organisation
from policies.engine import PolicyEngine, engine_for
from policies.human_units import human_form
from policies.policy_set import PolicySet, load, load_default, load_override
from policies.types import ActionType, Outcome, PolicyError
from tools.ledger.policy_overrides import active_policy_set

policy_app = typer.Typer(
    help="Guardrails: check actions, explain the rules, validate policy files.",
    no_args_is_help=True,
)

PolicyOpt = Annotated[
    Path | None,
    typer.Option("--policy", help="A complete policy set (YAML) instead of the packaged default."),
]
OverrideOpt = Annotated[
    Path | None,
    typer.Option("--override", help="An override (YAML) merged onto the policy set."),
]
OrgOpt = Annotated[
    int | None,
    typer.Option("--org", help="Use this organisation's active policy set from the ledger."),
]

_LINE_KEYS = {"action", "facts", "id"}
_STYLE = {
    Outcome.BLOCK: "bold red",
    Outcome.NEEDS_APPROVAL: "yellow",
    Outcome.DEFER: "cyan",
    Outcome.ALLOW: "green",
}


def _resolve(policy: Path | None, override: Path | None, org: int | None) -> PolicySet:
    """The policy set the command should use, or a clean exit saying what is wrong."""
    try:
        if org is not None:
            if policy or override:
                fail("--org uses the organisation's stored policy; drop --policy/--override.")
            return _org_policy(org)
        ps = load(policy) if policy else load_default()
        return load_override(override, ps) if override else ps
    except PolicyError as exc:
        fail(str(exc))


def _org_policy(org: int) -> PolicySet:
    _, sessions = open_ledger(upgrade=False)
    with sessions() as session:
        if session.get(Organisation, org) is None:
            fail(f"No organisation with id {org}. List them in the review panel or the API.")
        return active_policy_set(session, org)


def _parse_line(raw: str, number: int) -> tuple[Any, Any, Any]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(obj, dict):
        raise ValueError('expected an object like {"action": {"type": "send_draft"}, "facts": {}}')
    missing = [k for k in ("action", "facts") if k not in obj]
    if missing:
        raise ValueError(f"missing {', '.join(repr(k) for k in missing)}")
    unknown = sorted(set(obj) - _LINE_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; a line holds action, facts and an optional id")
    action = obj["action"]
    if not isinstance(action, (str, dict)):
        raise ValueError('"action" must be a string or an object with a "type"')
    ident = obj.get("id", action.get("id") if isinstance(action, dict) else None)
    return action, obj["facts"], ident


def check_stream(stream: TextIO, engine: PolicyEngine, out: TextIO) -> int:
    """Decide every line of ``stream``; returns how many lines could not be read."""
    bad = 0
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            action, facts, ident = _parse_line(raw, number)
        except ValueError as exc:
            bad += 1
            err_console.print(f"[bold red]line {number}:[/] {escape(str(exc))}")
            continue
        decision = engine.decide(action, facts)
        row: dict[str, Any] = {"line": number}
        if ident is not None:
            row["id"] = ident
        row.update(decision.as_dict())
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return bad


@policy_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="JSON Lines file of actions; '-' reads stdin.")],
    policy: PolicyOpt = None,
    override: OverrideOpt = None,
    org: OrgOpt = None,
) -> None:
    """Decide each {"action": ..., "facts": ...} line; print one JSON decision per line."""
    engine = engine_for(_resolve(policy, override, org))
    if str(file) == "-":
        bad = check_stream(sys.stdin, engine, sys.stdout)
    else:
        try:
            handle = file.open(encoding="utf-8")
        except OSError as exc:
            fail(f"Cannot read {file}: {exc.strerror}. Pass a JSON Lines file (or - for stdin).")
        with handle:
            try:
                bad = check_stream(handle, engine, sys.stdout)
            except UnicodeDecodeError:
                fail(f"{file} is not UTF-8 text; save it as UTF-8 JSON Lines.")
    sys.stdout.flush()
    if bad:
        fail(f"{bad} line(s) could not be read (see above); every other line was decided.")


@policy_app.command("explain")
def explain(
    policy: PolicyOpt = None,
    override: OverrideOpt = None,
    org: OrgOpt = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only the rules for this action type.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print the rules of the active policy set as sentences."""
    ps = _resolve(policy, override, org)
    wanted: ActionType | None = None
    if action is not None:
        try:
            wanted = ActionType(action)
        except ValueError:
            known = ", ".join(a.value for a in ActionType)
            fail(f"Unknown action type {action!r}; use one of {known}.")
    rules = PolicyEngine(ps).explain() if wanted else engine_for(ps).explain()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "policy": ps.name,
                    "digest": ps.digest,
                    "rules": {
                        a.value: [
                            {"rule_id": rid, "outcome": o.value, "sentence": text}
                            for rid, o, text in lines
                        ]
                        for a, lines in rules.items()
                        if wanted in (None, a)
                    },
                },
                indent=2,
            )
        )
        return
    console.print(f"[bold]{escape(ps.name)}[/]  (digest {ps.digest}, currency {ps.currency})")
    for a, lines in rules.items():
        if wanted not in (None, a):
            continue
        console.print(f"\n[bold underline]{a.value}[/]")
        for rid, outcome, text in lines:
            style = _STYLE[outcome]
            console.print(f"  [{style}]{outcome.value:>14}[/]  {escape(text)}  [dim]({rid})[/]")


@policy_app.command("show")
def show(policy: PolicyOpt = None, override: OverrideOpt = None, org: OrgOpt = None) -> None:
    """Print the active policy set as YAML in human units (what a policy file says)."""
    ps = _resolve(policy, override, org)
    human = human_form(ps.model_dump(mode="json"))
    typer.echo(yaml.safe_dump(human, sort_keys=False, allow_unicode=True, width=100), nl=False)


@policy_app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="A policy file (YAML).")],
    as_override: Annotated[
        bool, typer.Option("--override", help="Validate FILE as an override of the default set.")
    ] = False,
) -> None:
    """Check a policy file (or an override) and say exactly what to fix."""
    try:
        ps = load_override(file) if as_override else load(file)
        PolicyEngine(ps).close()  # it must also compile
    except PolicyError as exc:
        fail(str(exc))
    console.print(f"[green]OK[/] {escape(str(file))}: {escape(ps.name)} (digest {ps.digest})")
