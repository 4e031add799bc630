"""Every write operation in tools/ x every persona, against policies/access.yaml.

Each operation is called with a persona's user and a tripwire for every other argument: the
tripwire records any use (a query, a comparison, an attribute) and raises. So "denied" is
observable as a refusal marked by the guard *before the body touched anything*, and "allowed" as
the body starting (the tripwire fires, or the body refuses the placeholder input for its own
reasons). The expected answer is read from the matrix, never written here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import tools
from memory.models import Persona, User
from policies.access import access_matrix, allowed
from tools.kit.authz import WRITE_OPERATIONS, PermissionDenied, WriteOperation, authorize

for _mod in pkgutil.walk_packages(tools.__path__, "tools."):
    importlib.import_module(_mod.name)

ORG_ID = 7


class Reached(Exception):
    """The operation's body used one of its arguments: the guard let the caller through."""


class Tripwire:
    """Stands for every argument but the caller; any use raises :class:`Reached`."""

    def __init__(self) -> None:
        object.__setattr__(self, "uses", 0)

    def _hit(self, *_: object, **__: object) -> Any:
        object.__setattr__(self, "uses", self.uses + 1)
        raise Reached

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._hit()

    __setattr__ = _hit
    __call__ = _hit
    __bool__ = _hit
    __eq__ = _hit  # type: ignore[assignment]
    __lt__ = __le__ = __gt__ = __ge__ = _hit
    __iter__ = __len__ = __int__ = __index__ = __contains__ = __getitem__ = _hit
    __add__ = __sub__ = __mul__ = __radd__ = __rsub__ = _hit
    __hash__ = None  # type: ignore[assignment]


def persona_user(role: Persona, *, org_id: int = ORG_ID, active: bool = True) -> User:
    return User(id=1, org_id=org_id, email="p@example.com", name="P", role=role, active=active)


def _arguments(op: WriteOperation, caller: object, wire: Tripwire) -> dict[str, Any]:
    sig = inspect.signature(op.func)
    args: dict[str, Any] = {}
    for name, param in sig.parameters.items():
        if name == op.actor_arg:
            args[name] = caller
        elif name == "org_id":
            args[name] = ORG_ID
        elif param.default is inspect.Parameter.empty:
            args[name] = wire
    return args


def _dynamic_variants() -> dict[str, list[tuple[str, dict[str, Any], tuple[str, ...]]]]:
    """Operations whose permission depends on an argument: every shape of the call, with what
    the matrix must grant for it."""
    from tools.replies.proposals import ACCEPTABLE

    return {
        "tools.replies.proposals.accept_proposal": [
            (kind, {"proposal": SimpleNamespace(kind=kind)}, (permission,))
            for kind, permission in ACCEPTABLE.items()
        ],
        "tools.commitments.plans.propose_plan": [
            ("", {}, ("manage_plans",)),
            ("for approval", {"for_approval": True}, ("propose_plan",)),
        ],
        "tools.admin.sessions.change_password": [
            ("own", {"user_id": 1}, ()),  # persona_user has id 1
            ("another user's", {"user_id": 2}, ("manage_users",)),
        ],
    }


def _variants(op: WriteOperation) -> list[tuple[str, dict[str, Any], tuple[str, ...]]]:
    """(label, extra arguments, permissions the matrix must grant) for each shape of the call."""
    if op.permissions_for is None:
        return [("", {}, op.permissions)]
    dynamic = _dynamic_variants()
    assert op.name in dynamic, f"{op.name} decides its permission per call: list its variants"
    return dynamic[op.name]


def _call(op: WriteOperation, role: Persona, extra: dict[str, Any]) -> tuple[bool, int]:
    """(refused by the guard, how often the body used an argument before that)."""
    wire = Tripwire()
    args = _arguments(op, persona_user(role), wire) | extra
    try:
        op.func(**args)
    except Exception as exc:  # noqa: BLE001 - every other refusal means "the guard let it in"
        return getattr(exc, "access_denied", None) is not None, wire.uses
    return False, wire.uses


CASES = [
    (name, role, label, extra, needed)
    for name, op in sorted(WRITE_OPERATIONS.items())
    for label, extra, needed in _variants(op)
    for role in Persona
]


def test_the_registry_holds_the_operations_that_write_money_commitments_drafts_and_policy() -> None:
    names = set(WRITE_OPERATIONS)
    for needed in (
        "tools.payments.posting.post_payment",
        "tools.commitments.plans.mark_installment_paid",
        "tools.commitments.plans.approve_plan",
        "tools.drafts.service.approve_draft",
        "tools.ledger.policy_overrides.update_policy",
        "tools.admin.sessions.change_password",
    ):
        assert needed in names


@pytest.mark.parametrize(
    ("name", "role", "label", "extra", "needed"),
    CASES,
    ids=[
        f"{c[0].removeprefix('tools.')}{'[' + c[2] + ']' if c[2] else ''}-{c[1].value}"
        for c in CASES
    ],
)
def test_every_write_operation_answers_every_persona_as_the_matrix_says(
    name: str, role: Persona, label: str, extra: dict[str, Any], needed: tuple[str, ...]
) -> None:
    op = WRITE_OPERATIONS[name]
    expected = all(allowed(role.value, p) for p in needed)
    refused, uses = _call(op, role, extra)
    assert refused is (not expected), f"{name} for {role.value}: matrix says {expected}"
    if refused:
        assert uses == 0, f"{name} touched its arguments before refusing {role.value}"


@pytest.mark.parametrize("name", sorted(WRITE_OPERATIONS))
def test_a_caller_of_another_organisation_or_deactivated_or_missing_is_refused(name: str) -> None:
    op = WRITE_OPERATIONS[name]
    _, extra, _ = _variants(op)[0]
    for caller in (
        persona_user(Persona.ADMIN, org_id=ORG_ID + 1),
        persona_user(Persona.ADMIN, active=False),
        None,
        "",
    ):
        wire = Tripwire()
        args = _arguments(op, caller, wire) | extra
        with pytest.raises(Exception) as err:
            op.func(**args)
        assert getattr(err.value, "access_denied", None) is not None, (name, caller)
        assert wire.uses == 0


def test_the_matrix_covers_every_permission_a_write_operation_names() -> None:
    known = set(access_matrix().permissions)
    for op in WRITE_OPERATIONS.values():
        assert set(op.permissions) <= known, op.name


def test_a_system_caller_is_let_through_but_a_blank_one_is_not() -> None:
    authorize("stripe webhook", ORG_ID, "post_payment")
    with pytest.raises(PermissionDenied):
        authorize("  ", ORG_ID, "post_payment")
    with pytest.raises(PermissionDenied, match="Collector may not post a payment"):
        authorize(persona_user(Persona.COLLECTOR), ORG_ID, "post_payment")


# Public tools functions that take a person (a User-typed argument) and write, but are not
# guarded themselves: each is only reached through a guarded operation, or is the person acting
# on their own account. Anything new that takes a User must be guarded or listed here with why.
UNGUARDED_WITH_A_REASON = {
    "tools.kit.audit.record": "writes the trail of the guarded operation that calls it",
    "tools.cashapp.service.open_import": "called by the imports after their apply_cash check",
    "tools.cashapp.stripe_payouts.clear_payout_lines": (
        "called by the imports after their apply_cash check"
    ),
    "tools.inbox.approvals.decide": "decides through each subject's own guarded tool",
    "tools.payments.posting.queue_receipt": "called by post_payment after its check",
    "tools.commitments.plans.apply_payment": "called by post_payment after its check",
    "tools.commitments.promises.on_payment": "called by post_payment after its check",
    "tools.delivery.outbox.enqueue_draft": (
        "queues a draft that approve_draft/request_nudge just allowed"
    ),
    "tools.delivery.outbox.enqueue_email": (
        "queues a receipt or link for an operation already checked"
    ),
    "tools.drafts.service.store_new_draft": "stores the agent's draft (the actor is Autopilot)",
    "tools.ledger.users.issue_api_token": "the authenticated person's own token",
    "tools.admin.sessions.revoke_token": "the authenticated person's own token",
    "tools.admin.sessions.start_session": "the authenticated person's own session (log-in)",
    "tools.ledger.users.authenticate": "log-in itself",
    "tools.delivery.outbox.resolve": (
        "checks manage_delivery itself (OutboxPermissionError) before writing"
    ),
    "tools.ledger.contact_status.mark_contacts": "records what a payer's own mail said "
    "(opt-out, bounce); its actor is the mailbox reader or the relay, never a person's request",
    "tools.drafts.lifecycle.move": "moves a draft for the guarded operation that calls it "
    "(review, revision, nudges, delivery) and writes that move's audit event",
    "tools.drafts.lifecycle.record_created": "audits a new draft its (guarded) caller stored",
    "tools.inbox.notifications.set_preferences": (
        "the authenticated person's own notification choice"
    ),
}


def _takes_a_person(fn: ast.FunctionDef) -> bool:
    args = fn.args.args + fn.args.kwonlyargs
    return any(a.annotation is not None and "User" in ast.unparse(a.annotation) for a in args)


def _writes(fn: ast.FunctionDef) -> bool:
    text = ast.unparse(fn)
    return any(w in text for w in (".add(", ".delete(", "audit.record(", ".execute(update"))


def _checks_itself(fn: ast.FunctionDef) -> bool:
    """The body asks the access matrix itself before writing (an explicit check, not the
    decorator): ``authorize``, or a domain's wrapper of it (``require``, ``check_manager``)."""
    text = ast.unparse(fn)
    return any(c in text for c in ("authorize(", "require(", "check_manager(", "allowed("))


def test_every_tool_that_takes_a_person_and_writes_is_guarded_or_explained() -> None:
    root = Path(tools.__file__).parent
    missing = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in tree.body:
            if not isinstance(fn, ast.FunctionDef) or fn.name.startswith("_"):
                continue
            module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
            name = f"{module}.{fn.name}"
            known = (
                name in WRITE_OPERATIONS or name in UNGUARDED_WITH_A_REASON or _checks_itself(fn)
            )
            if _takes_a_person(fn) and _writes(fn) and not known:
                missing.append(name)
    assert missing == [], f"guard these with tools.kit.authz.guarded or explain why not: {missing}"
