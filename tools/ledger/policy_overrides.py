"""Per-organisation guardrail overrides, stored as versioned, audited rows in the ledger.

Each :class:`~memory.models.PolicySetVersion` row holds the organisation's *complete* override
(``content``, merged onto the packaged default set), who changed it, when, and the diff of the
effective policy. Exactly one row per organisation is active; older rows stay for the history and
can be restored (restoring writes a new version, so the trail only ever grows).

The change itself is an action the guardrails decide (``change_policy``: only roles the access
matrix allows), and the merged set is validated before anything is written, so an invalid override
never reaches the ledger. Functions flush; the caller commits (one transaction).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from memory.models import PolicySetVersion, User
from policies.engine import decide
from policies.policy_set import PolicySet, diff, load_default, merge
from policies.types import Decision, Outcome, PolicyError, Reason
from tools.kit import audit
from tools.kit.authz import denial, guarded

__all__ = [
    "PolicyChangeRefused",
    "active_override",
    "active_policy_set",
    "active_version",
    "history",
    "policy_set_for",
    "restore_version",
    "update_policy",
]

# Merged sets by override content (not by row id: ids repeat across databases and after a restore).
_cache: dict[str, PolicySet] = {}
_CACHE_MAX = 128


class PolicyChangeRefused(PermissionError):
    """The guardrails refused the change (e.g. a Sales user); ``decision`` says why."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.summary())
        self.decision = decision


def _refused(role: str, permission: str) -> PolicyChangeRefused:
    """The matrix's refusal as the guardrails' ``change_policy`` block (same shape, same test)."""
    message = f"{denial(role, permission)} (needs {permission})"
    reason = Reason(rule_id="access.denied", outcome=Outcome.BLOCK, message=message)
    return PolicyChangeRefused(
        Decision(action="change_policy", outcome=Outcome.BLOCK, reasons=[reason])
    )


def _foreign() -> PermissionError:
    return PermissionError("That organisation is not yours; nothing was changed.")


def active_version(session: Session, org_id: int) -> PolicySetVersion | None:
    """The organisation's active override row, or None when it runs on the default set."""
    return session.scalars(
        select(PolicySetVersion)
        .where(PolicySetVersion.org_id == org_id, PolicySetVersion.active.is_(True))
        .order_by(PolicySetVersion.version.desc())
        .limit(1)
    ).first()


def active_override(session: Session, org_id: int) -> dict[str, Any]:
    row = active_version(session, org_id)
    return copy.deepcopy(row.content) if row is not None else {}


def _merged(org_id: int, row: PolicySetVersion) -> PolicySet:
    key = json.dumps(row.content, sort_keys=True, default=str)
    cached = _cache.get(key)
    if cached is None:
        cached = merge(load_default(), row.content, source=f"org {org_id} policy v{row.version}")
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[key] = cached
    return cached


def active_policy_set(session: Session, org_id: int) -> PolicySet:
    """The organisation's effective policy set: the default with its active override merged in."""
    row = active_version(session, org_id)
    return load_default() if row is None else _merged(org_id, row)


def policy_set_for(session: Session, org_id: int) -> PolicySet:
    """Alias of :func:`active_policy_set` (the name the drafting and plan tools import)."""
    return active_policy_set(session, org_id)


def history(session: Session, org_id: int) -> list[PolicySetVersion]:
    """Every version of the organisation's override, newest first."""
    return list(
        session.scalars(
            select(PolicySetVersion)
            .where(PolicySetVersion.org_id == org_id)
            .order_by(PolicySetVersion.version.desc())
        )
    )


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _authorize(session: Session, org_id: int, user: User, target: str) -> Decision:
    if user.org_id != org_id:
        raise PermissionError("A user may only change their own organisation's policy.")
    decision = decide(
        "change_policy",
        {"actor_role": user.role.value, "target": target},
        active_policy_set(session, org_id),
    )
    if not decision.allowed:
        raise PolicyChangeRefused(decision)
    return decision


def _write(
    session: Session,
    org_id: int,
    user: User,
    content: dict[str, Any],
    comment: str | None,
    action: str,
    extra: dict[str, Any] | None = None,
) -> PolicySetVersion:
    before = active_policy_set(session, org_id)
    after = merge(load_default(), content, source="override")  # validates; raises PolicyError
    changes = diff(before, after)
    if not changes:
        raise PolicyError("The override changes nothing in the effective policy; nothing saved.")
    decision = _authorize(session, org_id, user, ", ".join(sorted(changes))[:200])
    latest = session.scalar(
        select(func.max(PolicySetVersion.version)).where(PolicySetVersion.org_id == org_id)
    )
    session.execute(
        update(PolicySetVersion)
        .where(PolicySetVersion.org_id == org_id, PolicySetVersion.active.is_(True))
        .values(active=False)
    )
    row = PolicySetVersion(
        org_id=org_id,
        version=(latest or 0) + 1,
        content=content,
        diff=changes,
        changed_by_user_id=user.id,
        comment=comment,
        active=True,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        org_id,
        actor=user,
        action=action,
        subject_type="policy_set",
        subject_id=row.id,
        from_state=before.digest,
        to_state=after.digest,
        detail={
            "version": row.version,
            "diff": changes,
            "decision": decision.as_dict(),
            **(extra or {}),
        },
    )
    session.flush()
    return row


@guarded("edit_policy", actor="user", refuse=_refused, foreign=_foreign)
def update_policy(
    session: Session,
    org_id: int,
    user: User,
    override: dict[str, Any],
    *,
    comment: str | None = None,
    replace: bool = False,
) -> PolicySetVersion:
    """Apply ``override`` to the organisation's policy and record a new active version.

    By default ``override`` is merged into the current override (change one threshold, keep the
    rest); ``replace=True`` makes it the whole override (keys it omits return to the default).
    Raises :class:`PolicyError` for an invalid or empty change and :class:`PolicyChangeRefused` when
    the user's role may not change policies; nothing is written in either case.
    """
    if not isinstance(override, dict):
        raise PolicyError(
            f"An override must be a mapping of sections, got {type(override).__name__}."
        )
    content = override if replace else _deep_merge(active_override(session, org_id), override)
    return _write(session, org_id, user, copy.deepcopy(content), comment, "policy.changed")


@guarded("edit_policy", actor="user", refuse=_refused, foreign=_foreign)
def restore_version(
    session: Session, org_id: int, user: User, version: int, *, comment: str | None = None
) -> PolicySetVersion:
    """Make an earlier version's override current again, as a new version (history is kept)."""
    old = session.scalars(
        select(PolicySetVersion).where(
            PolicySetVersion.org_id == org_id, PolicySetVersion.version == version
        )
    ).first()
    if old is None:
        raise PolicyError(f"Organisation {org_id} has no policy version {version}.")
    return _write(
        session,
        org_id,
        user,
        copy.deepcopy(old.content),
        comment or f"restored version {version}",
        "policy.restored",
        {"restored_version": version},
    )
