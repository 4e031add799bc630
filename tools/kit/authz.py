"""Permission checks where the write happens: every tool that changes money, a commitment, a draft,
a policy or a user asks the access matrix (``policies/access.yaml``) itself.

A route's guard is not enough: a second route (or the agent, a CLI, a batch) reaching the same
tool must not be able to do what the matrix forbids. So a write operation is declared with
:func:`guarded`, naming the permissions it needs and the argument that holds the caller:

* a :class:`~memory.models.User` must hold every named permission, be active and belong to the
  organisation the operation writes to; otherwise :class:`PermissionDenied` (403) and nothing is
  written (the check runs before the body);
* a non-empty string is a system caller that is not a persona: the Stripe webhook, a payer
  through a mini-portal token, the nightly sweep, an import. They are authenticated by their own
  means (a signature, a token) and are never what an authenticated person is passed as.

:data:`WRITE_OPERATIONS` lists every guarded operation, so a test can walk them all against every
persona and compare with the matrix.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from memory.errors import PlixoError
from memory.models import User
from policies.access import access_matrix, allowed

P = ParamSpec("P")
R = TypeVar("R")


class PermissionDenied(PlixoError, PermissionError):
    """The caller's persona may not do this (403), said with the matrix's own sentence.

    Its own type rather than a commitment or draft error: no caller catches it by accident and
    carries on; the API answers it with 403 for every route."""

    http_status = 403


@dataclass(frozen=True)
class WriteOperation:
    """One guarded tool: its qualified name, the permissions it needs, and its caller argument."""

    name: str
    permissions: tuple[str, ...]
    actor_arg: str
    func: Callable[..., Any]
    permissions_for: Callable[[dict[str, Any]], tuple[str, ...]] | None = None


WRITE_OPERATIONS: dict[str, WriteOperation] = {}


def denial(role: str, permission: str) -> str:
    """'Collector may not post a payment received outside Stripe (bank transfer, cheque) ...'."""
    sentence = access_matrix().permissions[permission].rstrip(".")
    return f"{role} may not {sentence[:1].lower()}{sentence[1:]}."


Refusal = Callable[[str, str], Exception]  # (role, permission) -> the module's own refusal


def _denied(exc: Exception, role: str, permission: str) -> Exception:
    """Mark ``exc`` as an access-matrix refusal (what the write-operation test looks for)."""
    exc.access_denied = (role, permission)  # type: ignore[attr-defined]
    return exc


def authorize(
    actor: object,
    org_id: int | None,
    *permissions: str,
    refuse: Refusal | None = None,
    foreign: Callable[[], Exception] | None = None,
) -> None:
    """Raise unless ``actor`` may use every one of ``permissions`` in organisation ``org_id``.

    The refusal is :class:`PermissionDenied` unless the operation names its own (``refuse``: a
    module whose callers already handle, say, ``PolicyRefused``); a caller from another
    organisation gets ``foreign()`` (typically "not found": foreign ids look like missing ones).
    """
    if isinstance(actor, User):
        role = actor.role.value
        if not actor.active:
            raise _denied(
                PermissionDenied(f"{actor.name}'s account is deactivated; nothing was changed."),
                role,
                "active",
            )
        if org_id is not None and actor.org_id != org_id:
            exc = (
                foreign() if foreign else PermissionDenied("That belongs to another organisation.")
            )
            raise _denied(exc, role, "organisation")
        for permission in permissions:
            if not allowed(role, permission):
                exc = (
                    refuse(role, permission)
                    if refuse
                    else PermissionDenied(denial(role, permission))
                )
                raise _denied(exc, role, permission)
        return
    if isinstance(actor, str) and actor.strip():
        return  # a system caller (webhook, portal payer, sweep): authenticated by its own means
    raise _denied(
        PermissionDenied("Say who is doing this: no caller was given, so nothing was changed."),
        "",
        "caller",
    )


def guarded(
    *permissions: str,
    actor: str = "actor",
    payer_source: bool = False,
    permissions_for: Callable[[dict[str, Any]], tuple[str, ...]] | None = None,
    refuse: Refusal | None = None,
    foreign: Callable[[], Exception] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare a write operation: check ``permissions`` on the ``actor`` argument before running.

    The operation's ``org_id`` argument (when it has one) must be the caller's organisation.
    ``payer_source``: the operation also takes ``actor=None`` with ``source="portal"`` (a payer
    through their mini-portal token, e.g. proposing a plan, which then always waits for a person).
    ``permissions_for``: the permissions depend on the arguments (accepting a promise proposal
    needs ``manage_promises``, a dispute proposal ``manage_disputes``).
    """
    for permission in permissions:
        allowed("Admin", permission)  # an unknown permission fails at import, not per call

    def wrap(func: Callable[P, R]) -> Callable[P, R]:
        sig = inspect.signature(func)
        if actor not in sig.parameters:
            raise TypeError(f"{func.__qualname__} has no {actor!r} argument to check")
        if sig.parameters[actor].default is not inspect.Parameter.empty:
            raise TypeError(f"{func.__qualname__}: the caller {actor!r} must be required")
        has_org = "org_id" in sig.parameters

        @functools.wraps(func)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = sig.bind_partial(*args, **kwargs)
            org_id = bound.arguments.get("org_id") if has_org else None
            caller = bound.arguments.get(actor)
            if caller is None and payer_source and bound.arguments.get("source") == "portal":
                caller = "payer (mini-portal)"
            needed = permissions_for(bound.arguments) if permissions_for else permissions
            authorize(caller, org_id, *needed, refuse=refuse, foreign=foreign)
            return func(*args, **kwargs)

        name = f"{func.__module__}.{func.__qualname__}"
        WRITE_OPERATIONS[name] = WriteOperation(
            name, tuple(permissions), actor, checked, permissions_for
        )
        return checked

    return wrap
