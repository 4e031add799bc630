"""The policy YAML in human units, read into the stored form the guardrails compile (one place).

People write a policy the way they read it: amounts as decimal money strings in the policy's
currency (``controller_above: "50000.00"``; each ``currency_limits.<CUR>`` entry in its own
currency), shares as percents (``max_discount: "10%"``, ``short_pay_tolerance: "3%"``) and
durations in words (``pause_recheck: "15 minutes"``). The compiled set keeps integer minor units,
basis points and minutes (``controller_above_minor``, ``max_discount_bps``,
``pause_recheck_minutes``), the keys every saved policy version in the database was written with:
both forms load, through :func:`stored_form`, and :func:`human_form` writes a set back in human
units for people (``plixo policy show``, the admin screen).

A bare number is refused under a human key (``controller_above: 50000`` could be dollars or
cents; a guardrail must not guess). The role tables (``approval_limits``, ``credit_limits``) keep
their names in both forms, so there a bare integer is read as the stored form, minor units, as
saved versions hold it: written by a person meaning dollars it makes the limit smaller, never
larger (more approvals, never fewer). People write quoted amounts: ``Collector: "10000.00"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policies.units import (
    UnitError,
    format_amount,
    format_minutes,
    format_percent,
    parse_minutes,
    parse_money,
    parse_percent,
)

#: section -> human key -> (stored key, unit)
HUMAN_KEYS: dict[str, dict[str, tuple[str, str]]] = {
    "plans": {
        "controller_above": ("controller_above_minor", "money"),
        "max_discount": ("max_discount_bps", "percent"),
    },
    "credits": {"max_discount": ("max_discount_bps", "percent")},
    "cash_app": {
        "max_auto_apply": ("max_auto_apply_minor", "money_by_currency"),
        "short_pay_tolerance": ("short_pay_tolerance_bps", "percent"),
        "short_pay_max": ("short_pay_max_minor", "money"),
        "auto_write_off_max": ("auto_write_off_max_minor", "money_by_currency"),
        "auto_write_off_max_share": ("auto_write_off_max_bps", "percent"),
        "auto_over_payment_max": ("auto_over_payment_max_minor", "money_by_currency"),
        "auto_over_payment_max_share": ("auto_over_payment_max_bps", "percent"),
    },
    "sending": {"pause_recheck": ("pause_recheck_minutes", "duration")},
}
#: Tables of amounts by role, in the policy's currency (and in each ``currency_limits`` entry).
ROLE_TABLES = ("approval_limits", "credit_limits")


def _money(value: Any, currency: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str):
        raise UnitError(
            f"{value!r} is not a money string; write it quoted, like '50000.00' ({currency})"
        )
    minor, code = parse_money(value, currency)
    if code != currency:
        raise UnitError(f"{value!r} is in {code}; write it in {currency} here")
    return minor


def _percent(value: Any, currency: str) -> int:
    if not isinstance(value, str):
        raise UnitError(f"{value!r} is not a percentage; write it quoted, like '10%'")
    return parse_percent(value)


def _duration(value: Any, currency: str) -> int:
    if not isinstance(value, str):
        raise UnitError(f"{value!r} is not a duration; write it like '15 minutes'")
    return parse_minutes(value)


def _by_currency(value: Any, currency: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise UnitError("must map currencies to amounts, like {USD: '5000.00'}")
    return {str(cur): _money(amount, str(cur)) for cur, amount in value.items()}


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "money": _money,
    "percent": _percent,
    "duration": _duration,
    "money_by_currency": _by_currency,
}


class HumanUnitsError(ValueError):
    """Values that cannot be read; ``problems`` holds ``(path, message)`` for each one."""

    def __init__(self, problems: list[tuple[tuple[str, ...], str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(p)}: {m}" for p, m in problems))
        self.problems = problems


def stored_form(data: dict[str, Any], currency: str) -> dict[str, Any]:
    """``data`` (a policy set or an override) with human units read into the stored form.

    ``currency`` is the policy's currency (an override that changes it passes the new one).
    Stored keys pass through as they are (saved versions); a setting given both ways is refused.
    """
    problems: list[tuple[tuple[str, ...], str]] = []
    out = dict(data)
    for section, keys in HUMAN_KEYS.items():
        body = out.get(section)
        if isinstance(body, dict):
            out[section] = _section(body, keys, currency, (section,), problems)
    for table in ROLE_TABLES:
        if isinstance(out.get(table), dict):
            out[table] = _role_table(out[table], currency, (table,), problems)
    limits = out.get("currency_limits")
    if isinstance(limits, dict):
        out["currency_limits"] = {
            cur: _currency_entry(body, str(cur), problems) for cur, body in limits.items()
        }
    if problems:
        raise HumanUnitsError(problems)
    return out


def _section(
    body: dict[str, Any],
    keys: dict[str, tuple[str, str]],
    currency: str,
    where: tuple[str, ...],
    problems: list[tuple[tuple[str, ...], str]],
) -> dict[str, Any]:
    out = dict(body)
    for human, (stored, unit) in keys.items():
        if human not in body:
            continue
        del out[human]
        if stored in body:
            problems.append((where + (human,), f"given twice (also as {stored}); keep one"))
            continue
        try:
            out[stored] = _PARSERS[unit](body[human], currency)
        except UnitError as exc:
            problems.append((where + (human,), str(exc)))
    return out


def _role_table(
    table: dict[str, Any],
    currency: str,
    where: tuple[str, ...],
    problems: list[tuple[tuple[str, ...], str]],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role, value in table.items():
        if isinstance(value, int) and not isinstance(value, bool):
            out[role] = value  # the stored form (a saved version): minor units
            continue
        try:
            out[role] = _money(value, currency)
        except UnitError as exc:
            problems.append((where + (str(role),), str(exc)))
    return out


def _currency_entry(body: Any, cur: str, problems: list[tuple[tuple[str, ...], str]]) -> Any:
    if not isinstance(body, dict):
        return body  # the validation says what is wrong
    where = ("currency_limits", cur)
    out = _section(
        body, {"controller_above": ("controller_above_minor", "money")}, cur, where, problems
    )
    for table in ROLE_TABLES:
        if isinstance(out.get(table), dict):
            out[table] = _role_table(out[table], cur, where + (table,), problems)
    return out


def human_form(stored: dict[str, Any]) -> dict[str, Any]:
    """A policy set's stored form (``model_dump(mode="json")``) written in human units."""
    currency = str(stored.get("currency", "USD"))
    out = dict(stored)
    for section, keys in HUMAN_KEYS.items():
        body = out.get(section)
        if not isinstance(body, dict):
            continue
        body = dict(body)
        for human, (key, unit) in keys.items():
            if key in body:
                body[human] = _shown(body.pop(key), unit, currency)
        out[section] = body
    for table in ROLE_TABLES:
        if isinstance(out.get(table), dict):
            out[table] = {r: format_amount(v, currency) for r, v in out[table].items()}
    limits = out.get("currency_limits")
    if isinstance(limits, dict):
        out["currency_limits"] = {
            cur: {
                **{
                    t: {r: format_amount(v, cur) for r, v in body.get(t, {}).items()}
                    for t in ROLE_TABLES
                },
                "controller_above": format_amount(body["controller_above_minor"], cur),
            }
            for cur, body in limits.items()
        }
    return out


def _shown(value: int | dict[str, int], unit: str, currency: str) -> Any:
    if unit == "money" and isinstance(value, int):
        return format_amount(value, currency)
    if unit == "percent" and isinstance(value, int):
        return format_percent(value)
    if unit == "duration" and isinstance(value, int):
        return format_minutes(value)
    if isinstance(value, dict):
        return {cur: format_amount(v, cur) for cur, v in value.items()}
    return value
