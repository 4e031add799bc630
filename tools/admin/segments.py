"""Segments (rules that place customers) and cadences (the steps before and after due), versioned.

A segment rule matches on size (invoiced in the last 365 days, in the organisation's currency),
region (the customer's country), tags and owner (the collector); segments are tried in priority
order and a customer moves to the first whose rule matches (a customer no rule matches keeps its
segment, so hand-placed accounts stay put). Each save is put to the guardrails (``change_segment``
/ ``change_cadence``: the access matrix decides), written as a :class:`ConfigVersion` with who and
when, and audited. Functions flush; the caller commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from memory.errors import PlixoError
from memory.models import (
    Cadence,
    CadenceStep,
    CadenceStepMode,
    Channel,
    ConfigVersion,
    Customer,
    CustomerTag,
    Invoice,
    Organisation,
    Segment,
    SegmentRule,
    User,
)
from policies.engine import decide
from tools.admin.units import UnitError, format_amount, parse_money
from tools.kit import audit
from tools.ledger.policy_overrides import policy_set_for

TEMPLATES = (
    "pre_due_courtesy",
    "due_today",
    "friendly_reminder",
    "second_reminder",
    "firm_reminder",
    "final_notice",
    "account_review_call",
)
TONES = ("warm", "friendly", "professional", "firm")
MODES = ("autopilot", "shadow")
_RULE_KEYS = {"min_size", "max_size", "regions", "tags", "owners"}


class ConfigError(PlixoError, ValueError):
    """A segment or cadence that cannot be saved as given; nothing was written."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message, http_status=status_code)


def _authorize(session: Session, org_id: int, actor: User, action: str, target: str) -> None:
    if actor.org_id != org_id:
        raise ConfigError("You may only change your own organisation.", 403)
    decision = decide(
        action, {"actor_role": actor.role.value, "target": target}, policy_set_for(session, org_id)
    )
    if not decision.allowed:
        raise ConfigError(decision.summary(), 403)


def _version(
    session: Session, org_id: int, kind: str, subject_id: int, content: dict[str, Any], actor: User
) -> int:
    latest = session.scalar(
        select(func.max(ConfigVersion.version)).where(
            ConfigVersion.org_id == org_id,
            ConfigVersion.kind == kind,
            ConfigVersion.subject_id == subject_id,
        )
    )
    version = (latest or 0) + 1
    session.add(
        ConfigVersion(
            org_id=org_id,
            kind=kind,
            subject_id=subject_id,
            version=version,
            content=content,
            changed_by_user_id=actor.id,
        )
    )
    return version


# --- segment rules --------------------------------------------------------------------------


def parse_rule(session: Session, org: Organisation, raw: dict[str, Any]) -> dict[str, Any]:
    """Human rule -> stored rule: sizes as minor units, regions upper-case, owners checked."""
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ConfigError(f"Unknown rule fields {sorted(unknown)}; use {sorted(_RULE_KEYS)}.")
    rule: dict[str, Any] = {}
    for key in ("min_size", "max_size"):
        if raw.get(key) not in (None, ""):
            try:
                minor, currency = parse_money(str(raw[key]), org.default_currency)
            except UnitError as exc:
                raise ConfigError(f"{key}: {exc}") from None
            if currency != org.default_currency:
                raise ConfigError(
                    f"{key} must be in {org.default_currency}, the organisation's currency."
                )
            rule[key] = minor
    if "min_size" in rule and "max_size" in rule and rule["min_size"] > rule["max_size"]:
        raise ConfigError("min_size is above max_size; no customer could match.")
    regions = [str(r).strip().upper() for r in raw.get("regions") or [] if str(r).strip()]
    if any(len(r) != 2 or not r.isalpha() for r in regions):
        raise ConfigError("regions are two-letter country codes such as US or DE.")
    if regions:
        rule["regions"] = sorted(set(regions))
    tags = [str(t).strip().lower() for t in raw.get("tags") or [] if str(t).strip()]
    if tags:
        rule["tags"] = sorted(set(tags))
    try:
        owners = [int(o) for o in raw.get("owners") or []]
    except (TypeError, ValueError):
        raise ConfigError("owners are people's ids from the People page.") from None
    if any(not 1 <= o < 2**31 for o in owners):
        raise ConfigError("An owner in the rule is not a person in this organisation.")
    if owners:
        found = session.scalars(
            select(User.id).where(User.org_id == org.id, User.id.in_(owners))
        ).all()
        if len(set(found)) != len(set(owners)):
            raise ConfigError("An owner in the rule is not a person in this organisation.")
        rule["owners"] = sorted(set(owners))
    return rule


def describe_rule(rule: dict[str, Any], currency: str) -> str:
    parts = []
    if "min_size" in rule:
        parts.append(f"invoiced at least {format_amount(rule['min_size'], currency)} in 12 months")
    if "max_size" in rule:
        parts.append(f"invoiced at most {format_amount(rule['max_size'], currency)} in 12 months")
    if rule.get("regions"):
        parts.append("in " + ", ".join(rule["regions"]))
    if rule.get("tags"):
        parts.append("tagged " + " or ".join(rule["tags"]))
    if rule.get("owners"):
        parts.append(f"owned by one of {len(rule['owners'])} people")
    return "; ".join(parts) or "every customer"


def save_segment(
    session: Session,
    org_id: int,
    actor: User,
    *,
    name: str,
    rule: dict[str, Any],
    priority: int = 100,
    cadence_id: int | None = None,
    segment_id: int | None = None,
) -> Segment:
    """Create (``segment_id`` None) or edit a segment and its rule; a new version is recorded."""
    _authorize(session, org_id, actor, "change_segment", name)
    org = session.get(Organisation, org_id)
    assert org is not None
    if not name.strip():
        raise ConfigError("Give the segment a name.")
    stored = parse_rule(session, org, rule)
    clash = session.scalars(
        select(Segment).where(Segment.org_id == org_id, Segment.name == name.strip())
    ).first()
    if clash is not None and clash.id != segment_id:
        raise ConfigError(f"A segment named {name!r} already exists; choose another name.", 409)
    if cadence_id is not None:
        cad = session.get(Cadence, cadence_id)
        if cad is None or cad.org_id != org_id:
            raise ConfigError("The chosen cadence is not in this organisation.", 404)
    if segment_id is None:
        segment = Segment(org_id=org_id, name=name.strip(), cadence_id=cadence_id)
        session.add(segment)
        session.flush()
        session.add(
            SegmentRule(segment_id=segment.id, org_id=org_id, priority=priority, rule=stored)
        )
    else:
        segment = _segment(session, org_id, segment_id)
        segment.name, segment.cadence_id = name.strip(), cadence_id
        row = session.get(SegmentRule, segment.id)
        if row is None:
            session.add(
                SegmentRule(segment_id=segment.id, org_id=org_id, priority=priority, rule=stored)
            )
        else:
            row.rule, row.priority = stored, priority
    content = {"name": segment.name, "rule": stored, "priority": priority, "cadence_id": cadence_id}
    version = _version(session, org_id, "segment", segment.id, content, actor)
    audit.record(
        session,
        org_id,
        actor=actor,
        action="segment.saved",
        subject_type="segment",
        subject_id=segment.id,
        detail={"version": version, **content},
    )
    session.flush()
    return segment


def _segment(session: Session, org_id: int, segment_id: int) -> Segment:
    segment = session.get(Segment, segment_id)
    if segment is None or segment.org_id != org_id:
        raise ConfigError("No such segment in this organisation.", 404)
    return segment


def _sizes(session: Session, org: Organisation, now: datetime) -> dict[int, int]:
    since = (now - timedelta(days=365)).date()
    rows = session.execute(
        select(Invoice.customer_id, func.sum(Invoice.amount_minor))
        .where(
            Invoice.org_id == org.id,
            Invoice.currency == org.default_currency,
            Invoice.issue_date >= since,
        )
        .group_by(Invoice.customer_id)
    ).all()
    return {int(c): int(s or 0) for c, s in rows}


def matches(rule: dict[str, Any], customer: Customer, size: int, tags: set[str]) -> bool:
    if "min_size" in rule and size < rule["min_size"]:
        return False
    if "max_size" in rule and size > rule["max_size"]:
        return False
    if rule.get("regions") and (customer.country_code or "").upper() not in rule["regions"]:
        return False
    if rule.get("tags") and not tags & set(rule["tags"]):
        return False
    return not (rule.get("owners") and customer.collector_user_id not in rule["owners"])


def place_customers(
    session: Session, org_id: int, actor: User | str, now: datetime
) -> list[dict[str, Any]]:
    """Move every customer to the first segment whose rule matches; returns the moves made.

    A person needs the same right as for editing a segment (``change_segment``): moving customers
    changes which cadence and sending mode reach them."""
    if isinstance(actor, User):
        _authorize(session, org_id, actor, "change_segment", "customer placement")
    org = session.get(Organisation, org_id)
    assert org is not None
    rules = session.execute(
        select(SegmentRule, Segment.name)
        .join(Segment, Segment.id == SegmentRule.segment_id)
        .where(SegmentRule.org_id == org_id)
        .order_by(SegmentRule.priority, Segment.name)
    ).all()
    if not rules:
        return []
    sizes = _sizes(session, org, now)
    tags: dict[int, set[str]] = {}
    for cid, tag in session.execute(
        select(CustomerTag.customer_id, CustomerTag.tag).where(CustomerTag.org_id == org_id)
    ):
        tags.setdefault(cid, set()).add(tag)
    moves = []
    for customer in session.scalars(select(Customer).where(Customer.org_id == org_id)):
        target = next(
            (
                (r.segment_id, seg_name)
                for r, seg_name in rules
                if matches(
                    r.rule, customer, sizes.get(customer.id, 0), tags.get(customer.id, set())
                )
            ),
            None,
        )
        if target is None or target[0] == customer.segment_id:
            continue
        moves.append({"customer": customer.name, "from": customer.segment_id, "to": target[1]})
        audit.record(
            session,
            org_id,
            actor=actor,
            action="customer.segment_changed",
            subject_type="customer",
            subject_id=customer.id,
            from_state=str(customer.segment_id),
            to_state=str(target[0]),
        )
        customer.segment_id = target[0]
    session.flush()
    return moves


def set_tags(session: Session, org_id: int, actor: User, customer_id: int, tags: list[str]) -> None:
    _authorize(session, org_id, actor, "change_segment", "customer tags")
    customer = session.get(Customer, customer_id)
    if customer is None or customer.org_id != org_id:
        raise ConfigError("No such customer in this organisation.", 404)
    session.execute(delete(CustomerTag).where(CustomerTag.customer_id == customer_id))
    for tag in sorted({t.strip().lower() for t in tags if t.strip()}):
        session.add(CustomerTag(org_id=org_id, customer_id=customer_id, tag=tag[:60]))
    session.flush()


# --- cadences -------------------------------------------------------------------------------


def parse_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate steps: an offset used twice or an unknown channel, template, tone, mode: refused."""
    if not steps:
        raise ConfigError("A cadence needs at least one step.")
    seen: dict[int, int] = {}
    out = []
    for i, step in enumerate(steps, start=1):
        try:
            offset = int(step["offset"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"Step {i}: offset must be a whole number of days (-5 = 5 before due)."
            ) from None
        if not -90 <= offset <= 365:
            raise ConfigError(f"Step {i}: offset {offset} is outside -90 to 365 days.")
        if offset in seen:
            raise ConfigError(
                f"Step {i}: offset {offset:+d} days is already used by step {seen[offset]}; "
                "give each step its own day."
            )
        seen[offset] = i
        channel = str(step.get("channel", "email")).lower()
        if channel not in {c.value for c in Channel}:
            raise ConfigError(
                f"Step {i}: channel {channel!r} is not one of {[c.value for c in Channel]}."
            )
        template = str(step.get("template", ""))
        if template not in TEMPLATES:
            raise ConfigError(f"Step {i}: template {template!r} is not one of {list(TEMPLATES)}.")
        tone = str(step.get("tone", "friendly")).lower()
        if tone not in TONES:
            raise ConfigError(f"Step {i}: tone {tone!r} is not one of {list(TONES)}.")
        mode = str(step.get("mode", "shadow")).lower()
        if mode not in MODES:
            raise ConfigError(f"Step {i}: mode {mode!r} is not autopilot or shadow.")
        out.append(
            {"offset": offset, "channel": channel, "template": template, "tone": tone, "mode": mode}
        )
    return sorted(out, key=lambda s: s["offset"])


def save_cadence(
    session: Session,
    org_id: int,
    actor: User,
    *,
    name: str,
    steps: list[dict[str, Any]],
    cadence_id: int | None = None,
) -> Cadence:
    """Create or edit a cadence with its steps (replaced as a whole); a new version is recorded."""
    _authorize(session, org_id, actor, "change_cadence", name)
    if not name.strip():
        raise ConfigError("Give the cadence a name.")
    parsed = parse_steps(steps)
    clash = session.scalars(
        select(Cadence).where(Cadence.org_id == org_id, Cadence.name == name.strip())
    ).first()
    if clash is not None and clash.id != cadence_id:
        raise ConfigError(f"A cadence named {name!r} already exists; choose another name.", 409)
    if cadence_id is None:
        cadence = Cadence(org_id=org_id, name=name.strip())
        session.add(cadence)
    else:
        found = session.get(Cadence, cadence_id)
        if found is None or found.org_id != org_id:
            raise ConfigError("No such cadence in this organisation.", 404)
        cadence = found
        old_ids = [s.id for s in cadence.steps]
        session.execute(delete(CadenceStepMode).where(CadenceStepMode.step_id.in_(old_ids)))
        cadence.name = name.strip()
        cadence.steps.clear()
        session.flush()
    cadence.steps.extend(
        CadenceStep(
            position=i,
            day_offset=s["offset"],
            channel=Channel(s["channel"]),
            template=s["template"],
            tone=s["tone"],
        )
        for i, s in enumerate(parsed, start=1)
    )
    session.flush()
    for step, s in zip(cadence.steps, parsed, strict=True):
        session.add(CadenceStepMode(step_id=step.id, org_id=org_id, mode=s["mode"]))
    version = _version(
        session, org_id, "cadence", cadence.id, {"name": cadence.name, "steps": parsed}, actor
    )
    audit.record(
        session,
        org_id,
        actor=actor,
        action="cadence.saved",
        subject_type="cadence",
        subject_id=cadence.id,
        detail={"version": version, "steps": parsed},
    )
    session.flush()
    return cadence


def step_modes(session: Session, org_id: int) -> dict[int, str]:
    return dict(
        session.execute(
            select(CadenceStepMode.step_id, CadenceStepMode.mode).where(
                CadenceStepMode.org_id == org_id
            )
        ).all()
    )


def versions(session: Session, org_id: int, kind: str, subject_id: int) -> list[ConfigVersion]:
    return list(
        session.scalars(
            select(ConfigVersion)
            .where(
                ConfigVersion.org_id == org_id,
                ConfigVersion.kind == kind,
                ConfigVersion.subject_id == subject_id,
            )
            .order_by(ConfigVersion.version.desc())
        )
    )
