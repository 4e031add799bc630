"""Changing an organisation's policy safely: human units in, a diff, a 90-day dry run, then save.

A Controller writes the override the way they read it (``controller_above: 50,000.00 USD``,
``max_discount: 10%``, ``window: 20:00-08:00``); :func:`to_override` turns it into the stored
units and refuses out-of-range values with the path and what to write. :func:`dry_run` replays the
organisation's last 90 days of actions (drafts, nudges, plans, credits) under the active and the
proposed set, on the same facts, and reports per rule what would have been decided differently,
with examples. :func:`apply` saves through ``tools.ledger.policy_overrides.update_policy``
(versioned and
audited, permission checked there).

Replayed facts are rebuilt from the ledger as it is now, at each action's own time: both sets see
the same facts, so every difference shown is the policy's doing and nothing else.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import (
    Approval,
    Customer,
    Dispute,
    DisputeStatus,
    Draft,
    DraftKind,
    Invoice,
    Organisation,
    PaymentPlan,
    PolicySetVersion,
    User,
)
from policies.engine import decide
from policies.human_units import HUMAN_KEYS, HumanUnitsError, stored_form
from policies.policy_set import PolicySet, diff, load_default, merge
from policies.types import PolicyError
from tools.admin.units import (
    UnitError,
    format_amount,
    format_percent,
    parse_minutes,
    parse_money,
    parse_percent,
    parse_time,
    parse_window,
)
from tools.commitments.plans import plan_terms_facts
from tools.grounding.recheck import draft_send_facts
from tools.ledger.policy_overrides import (
    _deep_merge,
    active_override,
    active_policy_set,
    update_policy,
)
from tools.ledger.users import own_limit
from tools.outreach.nudges import nudge_facts_for

WINDOW_DAYS = 90
EXAMPLES_PER_RULE = 3
_MONEY_SECTIONS = ("approval_limits", "credit_limits")


class PolicyInputError(PolicyError):
    """Human policy values that cannot be stored; ``problems`` lists each with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --- human units -> stored override ---------------------------------------------------------


def _section_fields(section: str) -> set[str]:
    field_info = PolicySet.model_fields.get(section)
    model = getattr(field_info, "annotation", None) if field_info else None
    return set(getattr(model, "model_fields", {}) or {})


def _convert_leaf(section: str, key: str, value: Any, currency: str) -> tuple[str, Any]:
    """One human value -> (stored key, stored value); raises UnitError with what to write."""
    known = _section_fields(section)
    if key in known and not isinstance(value, str):
        return key, value
    if f"{key}_minor" in known or key.endswith("_minor"):
        minor, code = parse_money(str(value), currency)
        if code != currency:
            raise UnitError(f"write it in {currency}, the policy's currency")
        return (key if key.endswith("_minor") else f"{key}_minor"), minor
    if f"{key}_bps" in known or key.endswith("_bps"):
        return (key if key.endswith("_bps") else f"{key}_bps"), parse_percent(str(value))
    if section == "sending" and key == "pause_recheck":
        return "pause_recheck_minutes", parse_minutes(str(value))
    if section == "quiet_hours" and key in ("start", "end"):
        return key, parse_time(str(value))
    if section == "autopilot" and key == "data_ready_threshold":
        text = str(value).strip().rstrip("%")
        if not text.isdigit() or not 0 <= int(text) <= 100:
            raise UnitError(f"{value!r} is not a score from 0 to 100")
        return key, int(text)
    if key in known and str(value).strip().lstrip("-").isdigit():
        number = int(str(value).strip())
        if number < 0:
            raise UnitError(f"{value!r} is negative; write zero or more")
        return key, number
    return key, value


def to_override(human: dict[str, Any], currency: str = "USD") -> dict[str, Any]:
    """A human override (YAML/JSON mapping) -> the stored override; every problem is reported."""
    if not isinstance(human, dict):
        raise PolicyInputError(["the file must be a mapping of sections (plans:, credits:, ...)"])
    out: dict[str, Any] = {}
    problems: list[str] = []
    for section, body in human.items():
        if section in _MONEY_SECTIONS and isinstance(body, dict):
            converted: dict[str, Any] = {}
            for role, value in body.items():
                try:
                    minor, code = parse_money(str(value), currency)
                    if code != currency:
                        raise UnitError(f"write it in {currency}, the policy's currency")
                    converted[role] = minor
                except UnitError as exc:
                    problems.append(f"{section}.{role}: {exc}")
            out[section] = converted
        elif isinstance(body, dict) and section in PolicySet.model_fields:
            out[section] = _convert_section(section, body, currency, problems)
        else:
            out[section] = body
    if problems:
        raise PolicyInputError(problems)
    return out


def _convert_section(
    section: str, body: dict[str, Any], currency: str, problems: list[str]
) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    human = HUMAN_KEYS.get(section, {})
    for key, value in body.items():
        if key in human and isinstance(value, dict):  # amounts per currency: the policy's reader
            try:
                converted.update(stored_form({section: {key: value}}, currency)[section])
            except HumanUnitsError as exc:
                problems.extend(f"{'.'.join(path)}: {message}" for path, message in exc.problems)
            continue
        try:
            if section == "quiet_hours" and key == "window":
                converted["start"], converted["end"] = parse_window(str(value))
                continue
            stored_key, stored = _convert_leaf(section, key, value, currency)
            converted[stored_key] = stored
        except UnitError as exc:
            problems.append(f"{section}.{key}: {exc}")
    return converted


def change_rows(changes: dict[str, dict[str, Any]], currency: str) -> list[tuple[str, str, str]]:
    """The diff as a Controller wrote it: ``(setting, before, after)`` with the setting in words
    and amounts, percentages and switches in the units of the override, not the stored ones."""
    return [
        (_setting(path), _shown(path, c.get("from"), currency), _shown(path, c.get("to"), currency))
        for path, c in changes.items()
    ]


def _setting(path: str) -> str:
    section, _, key = path.partition(".")
    key = key.removesuffix("_minor").removesuffix("_bps")
    head = section.replace("_", " ").capitalize()
    return f"{head}: {key.replace('_', ' ')}" if key else head


def _shown(path: str, value: Any, currency: str) -> str:
    section = path.partition(".")[0]
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and (path.endswith("_minor") or section in _MONEY_SECTIONS):
        return format_amount(value, currency)
    if isinstance(value, int) and path.endswith("_bps"):
        return format_percent(value)
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


@dataclass
class Proposal:
    """A proposed override, the set it makes, and its diff against the active set."""

    override: dict[str, Any]
    proposed: PolicySet
    active: PolicySet
    changes: dict[str, dict[str, Any]]


def propose(session: Session, org_id: int, human: dict[str, Any]) -> Proposal:
    """Validate a human override against the organisation's current one (nothing is written)."""
    active = active_policy_set(session, org_id)
    override = _deep_merge(active_override(session, org_id), to_override(human, active.currency))
    proposed = merge(load_default(), override, source="proposed policy")
    changes = diff(active, proposed)
    if not changes:
        raise PolicyError("The proposal changes nothing in the active policy; nothing to apply.")
    return Proposal(override=override, proposed=proposed, active=active, changes=changes)


# --- the dry run ----------------------------------------------------------------------------


@dataclass
class ReplayedAction:
    """One past action and the facts it was decided on."""

    action: str
    subject: str
    at: datetime
    facts: Any


@dataclass
class RuleDifference:
    rule_id: str
    newly_fired: int = 0
    no_longer_fired: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DryRun:
    since: datetime
    until: datetime
    replayed: Counter[str]
    changed: int
    outcome_changes: Counter[str]
    rules: dict[str, RuleDifference]
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "replayed": dict(self.replayed),
            "changed": self.changed,
            "outcome_changes": dict(self.outcome_changes),
            "rules": [
                {
                    "rule_id": r.rule_id,
                    "newly_fired": r.newly_fired,
                    "no_longer_fired": r.no_longer_fired,
                    "examples": r.examples,
                }
                for r in sorted(self.rules.values(), key=lambda r: r.rule_id)
            ],
            "skipped": self.skipped,
        }


def _draft_actions(
    session: Session, org_id: int, since: datetime, until: datetime
) -> list[ReplayedAction]:

    out = []
    drafts = session.scalars(
        select(Draft)
        .where(Draft.org_id == org_id, Draft.created_at >= since, Draft.created_at <= until)
        .order_by(Draft.created_at, Draft.id)
    ).all()
    for draft in drafts:
        customer = session.get(Customer, draft.customer_id)
        label = f"{draft.kind.value} to {customer.name if customer else 'a customer'}"
        if draft.kind is DraftKind.NUDGE:
            facts = nudge_facts_for(session, draft, draft.created_at, as_creator=True)
            out.append(ReplayedAction("send_nudge", label, draft.created_at, facts))
        else:
            send_facts, _ = draft_send_facts(session, draft, draft.created_at)
            out.append(ReplayedAction("send_draft", label, draft.created_at, send_facts))
    return out


def _plan_actions(
    session: Session, org_id: int, since: datetime, until: datetime
) -> list[ReplayedAction]:

    out = []
    plans = session.scalars(
        select(PaymentPlan)
        .where(
            PaymentPlan.org_id == org_id,
            PaymentPlan.created_at >= since,
            PaymentPlan.created_at <= until,
        )
        .order_by(PaymentPlan.created_at, PaymentPlan.id)
    ).all()
    for plan in plans:
        if not plan.installments:
            continue
        facts = plan_terms_facts(
            total_minor=plan.total_minor + plan.discount_minor,
            currency=plan.currency,
            installments=plan.installments,
            discount_minor=plan.discount_minor,
            non_standard_terms=plan.non_standard_terms,
            start=plan.created_at.date(),
        )
        proposer = session.get(User, plan.proposed_by_user_id) if plan.proposed_by_user_id else None
        if proposer is None:
            facts["proposed_via"] = "portal"
        else:
            facts |= {
                "proposed_via": "staff",
                "actor_role": proposer.role.value,
                "actor_limit_minor": own_limit(proposer, plan.currency),
            }
        customer = session.get(Customer, plan.customer_id)
        out.append(
            ReplayedAction(
                "offer_plan",
                f"payment plan for {customer.name if customer else 'a customer'}",
                plan.created_at,
                facts,
            )
        )
    return out


def _credit_actions(
    session: Session, org_id: int, since: datetime, until: datetime
) -> list[ReplayedAction]:
    """Credits granted or proposed on disputes in the window, as the person who approved them
    (or, before any approval, who opened the dispute)."""
    out = []
    disputes = session.scalars(
        select(Dispute)
        .where(
            Dispute.org_id == org_id,
            Dispute.credit_minor > 0,
            Dispute.status_changed_at >= since,
            Dispute.status_changed_at <= until,
        )
        .order_by(Dispute.status_changed_at, Dispute.id)
    ).all()
    for dispute in disputes:
        approver_id = session.scalar(
            select(Approval.approver_user_id)
            .where(Approval.subject_type == "credit", Approval.subject_id == dispute.id)
            .order_by(Approval.id.desc())
            .limit(1)
        )
        actor_id = approver_id or dispute.opened_by_user_id
        actor = session.get(User, actor_id) if actor_id else None
        invoice = session.get(Invoice, dispute.invoice_id)
        if actor is None or invoice is None:
            continue
        facts = {
            "actor_role": actor.role.value,
            "kind": "credit",
            "amount_minor": dispute.credit_minor,
            "currency": invoice.currency,
            "invoice_amount_minor": invoice.amount_minor,
            "invoice_balance_minor": invoice.balance_minor
            + (dispute.credit_minor if dispute.status is DisputeStatus.RESOLVED_CREDIT else 0),
        }
        label = f"credit on invoice {invoice.number}"
        out.append(ReplayedAction("grant_credit", label, dispute.status_changed_at, facts))
    return out


def past_actions(
    session: Session, org_id: int, until: datetime, days: int = WINDOW_DAYS
) -> list[ReplayedAction]:
    """The organisation's actions of the last ``days`` with the facts to decide them again."""
    since = until - timedelta(days=days)
    return (
        _draft_actions(session, org_id, since, until)
        + _plan_actions(session, org_id, since, until)
        + _credit_actions(session, org_id, since, until)
    )


def compare(
    actions: list[ReplayedAction],
    active: PolicySet,
    proposed: PolicySet,
    since: datetime,
    until: datetime,
) -> DryRun:
    """Decide every action under both sets and fold the differences per rule."""
    result = DryRun(
        since=since, until=until, replayed=Counter(), changed=0, outcome_changes=Counter(), rules={}
    )
    for item in actions:
        before = decide(item.action, item.facts, active)
        after = decide(item.action, item.facts, proposed)
        result.replayed[item.action] += 1
        fired_before, fired_after = set(before.rule_ids), set(after.rule_ids)
        if fired_before == fired_after and before.outcome == after.outcome:
            continue
        result.changed += 1
        if before.outcome != after.outcome:
            result.outcome_changes[f"{before.outcome.value} -> {after.outcome.value}"] += 1
        example = {
            "action": item.action,
            "subject": item.subject,
            "at": item.at.isoformat(),
            "before": before.outcome.value,
            "after": after.outcome.value,
            "now": [r.message for r in after.reasons if r.rule_id not in fired_before],
        }
        for rule_id in sorted(fired_before ^ fired_after):
            diff_row = result.rules.setdefault(rule_id, RuleDifference(rule_id))
            if rule_id in fired_after:
                diff_row.newly_fired += 1
            else:
                diff_row.no_longer_fired += 1
            if len(diff_row.examples) < EXAMPLES_PER_RULE:
                diff_row.examples.append(example)
    return result


def dry_run(
    session: Session, org_id: int, proposal: Proposal, now: datetime, days: int = WINDOW_DAYS
) -> DryRun:
    """Replay the last ``days`` of actions under the active and the proposed set (nothing saved)."""
    since = now - timedelta(days=days)
    actions = past_actions(session, org_id, now, days)
    return compare(actions, proposal.active, proposal.proposed, since, now)


def apply(
    session: Session, org_id: int, actor: User, proposal: Proposal, comment: str | None
) -> PolicySetVersion:
    """Save the proposal as the organisation's new override (versioned, audited, permission
    checked by ``update_policy``); flushes, the caller commits."""
    return update_policy(
        session, org_id, actor, copy.deepcopy(proposal.override), comment=comment, replace=True
    )


def org_currency(session: Session, org_id: int) -> str:
    org = session.get(Organisation, org_id)
    return org.default_currency if org else "USD"
