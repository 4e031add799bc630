"""A tiny builder for durable_rules condition JSON (the ``m`` side of a rule).

durable_rules' own ``lang`` module builds the same dictionaries through operator overloading on
global objects; plain functions keep the compiled rules inspectable, testable and free of the
module-level ruleset registry.

Flags (yes/no facts) are asserted only when they hold: :func:`holds` tests one, :func:`lacks` its
absence. durable_rules hands the whole fact back, as JSON, to every rule that fires, so each key
of the payload is paid for several times per decision; the flags that do not hold are most of
them. A condition made only of absences would also match the session's own state, which
durable_rules runs through the same rules after every action (and so again, without end):
:func:`anchored` finds such conditions and the rule compiler anchors them to a key every payload
carries (:data:`ALWAYS`).
"""

from __future__ import annotations

from typing import Any

Cond = dict[str, Any]

# Every payload carries k=1, so ALWAYS matches any fact (rules that fire on every action).
ALWAYS: Cond = {"k": 1}


def ref(name: str) -> Cond:
    """Another field of the same fact, as a right-hand side: ``gt("total", ref("limit"))``."""
    return {"$m": name}


def eq(field: str, value: Any) -> Cond:
    return {field: value}


def ne(field: str, value: Any) -> Cond:
    return {"$neq": {field: value}}


def gt(field: str, value: Any) -> Cond:
    return {"$gt": {field: value}}


def gte(field: str, value: Any) -> Cond:
    return {"$gte": {field: value}}


def lt(field: str, value: Any) -> Cond:
    return {"$lt": {field: value}}


def lte(field: str, value: Any) -> Cond:
    return {"$lte": {field: value}}


def present(field: str) -> Cond:
    return {"$ex": {field: 1}}


def absent(field: str) -> Cond:
    return {"$nex": {field: 1}}


def holds(flag: str) -> Cond:
    """The flag holds (it is asserted only then)."""
    return {flag: True}


def lacks(flag: str) -> Cond:
    """The flag does not hold (it is not asserted)."""
    return absent(flag)


def any_flag(*flags: str) -> Cond:
    """At least one of the flags holds, as branches that exclude each other.

    durable_rules runs a rule's action once per ``$or`` branch that holds: a branch per flag
    that also lacks the flags before it fires the rule once, however many flags hold.
    """
    return any_of(*(all_of(holds(f), *map(lacks, flags[:i])) for i, f in enumerate(flags)))


def anchored(cond: Cond) -> bool:
    """Whether every way ``cond`` can hold needs a key of the payload (not only absences)."""
    if "$and" in cond:
        return any(anchored(part) for part in cond["$and"])
    if "$or" in cond:
        return all(anchored(part) for part in cond["$or"])
    return "$nex" not in cond


def anchor(cond: Cond) -> Cond:
    """``cond``, tested only on payloads (never on durable_rules' session state)."""
    if anchored(cond):
        return cond
    return {"$and": [ALWAYS, *cond["$and"]]} if "$and" in cond else {"$and": [ALWAYS, cond]}


def all_of(*conds: Cond) -> Cond:
    flat = [c for c in conds if c is not ALWAYS] or [ALWAYS]
    return flat[0] if len(flat) == 1 else {"$and": flat}


def any_of(*conds: Cond) -> Cond:
    if not conds:
        raise ValueError("any_of needs at least one condition")
    return conds[0] if len(conds) == 1 else {"$or": list(conds)}


def one_of(field: str, values: list[Any]) -> Cond:
    """``field`` equals one of ``values`` (an OR of equalities)."""
    return any_of(*(eq(field, v) for v in values))


def none_of(field: str, values: list[Any]) -> Cond:
    """``field`` equals none of ``values``."""
    return all_of(*(ne(field, v) for v in values)) if values else ALWAYS
