"""The persona access matrix: the table the API enforces on every route."""

from __future__ import annotations

import importlib.util

import pytest

from policies import access
from policies.types import PolicyError

CONFIG = {"edit_cadence", "edit_segment", "edit_policy", "set_sending_mode"}


@pytest.mark.skipif(
    importlib.util.find_spec("memory.models") is None, reason="memory/models.py not written yet"
)
def test_roles_are_exactly_the_ledger_personas() -> None:
    from memory.models import Persona

    assert sorted(access.roles()) == sorted(p.value for p in Persona)


def test_admin_holds_every_permission() -> None:
    assert access.permissions_for("Admin") == frozenset(access.permissions())


def test_sales_and_csm_are_view_only_on_configuration_and_may_send_nudges() -> None:
    for role in ("Sales", "CSM"):
        assert access.allowed(role, "view_console")
        assert access.allowed(role, "send_nudge")
        assert not CONFIG & access.permissions_for(role)
        assert not access.allowed(role, "approve_draft")
        assert not access.allowed(role, "batch_approve")


def test_viewer_is_read_only() -> None:
    assert access.permissions_for("Viewer") == {"view_queue", "view_account", "view_console"}


def test_only_admin_and_controller_edit_policies_and_only_admin_manages_users() -> None:
    assert sorted(access.roles_with("edit_policy")) == ["Admin", "Controller"]
    assert access.roles_with("manage_users") == ["Admin"]


def test_batch_approval_is_for_managers_and_above() -> None:
    assert sorted(access.roles_with("batch_approve")) == [
        "Admin",
        "Collections Manager",
        "Controller",
    ]


def test_every_approver_of_drafts_ranks_collector_or_above() -> None:
    for role in access.roles_with("approve_draft"):
        assert access.at_least(role, "Collector"), role


def test_ranks_order_the_collections_chain() -> None:
    chain = ["Viewer", "Sales", "Collector", "Collections Manager", "Controller", "Admin"]
    assert [access.rank(r) for r in chain] == sorted(access.rank(r) for r in chain)
    assert access.at_least("Collections Manager", "Collector")
    assert not access.at_least("Sales", "Collector")
    assert not access.at_least("Payer", "Viewer")
    assert access.rank("Payer") == -1


def test_unknown_roles_hold_nothing_and_unknown_permissions_fail_loudly() -> None:
    assert not access.allowed("Payer", "view_queue")
    assert access.permissions_for("Payer") == frozenset()
    with pytest.raises(PolicyError, match="unknown permission 'aprove_draft'"):
        access.allowed("Admin", "aprove_draft")
    with pytest.raises(PolicyError, match="unknown role"):
        access.at_least("Admin", "Boss")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("roles: {A: 1}\npermissions: {p: x}\ngrants: {A: [q]}\n", "unknown permissions ['q']"),
        ("roles: {A: 1}\npermissions: {p: x}\ngrants: {B: [p]}\n", "unknown roles ['B']"),
        ("roles: {A: 1, B: 2}\npermissions: {p: x}\ngrants: {A: [p]}\n", "have no grants entry"),
        ("roles: {A: one}\npermissions: {p: x}\ngrants: {A: [p]}\n", "line 1 (roles.A)"),
    ],
)
def test_a_malformed_matrix_is_refused(text: str, needle: str) -> None:
    with pytest.raises(PolicyError) as err:
        access.parse_access(text, "access.yaml")
    assert needle in str(err.value)
