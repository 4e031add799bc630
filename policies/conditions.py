"""A tiny builder for durable_rules condition JSON (the ``m`` side of a rule).

durable_rules' own ``lang`` module builds the same dictionaries through operator overloading on
global objects; plain functions keep the compiled rules inspectable, testable and free of the
module-level ruleset registry.
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
