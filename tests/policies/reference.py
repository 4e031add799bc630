"""An independent, plain-Python reading of the guardrails, for the differential test.

Written from the rule descriptions (README), not from the engine: it works on the raw JSON facts
(no fact models, no payload derivation, no durable_rules), reads the access matrix straight from
``access.yaml``, and finds the next allowed moment by a different algorithm (enumerate every instant
at which the calendar can open - local midnights, quiet-hour boundaries in both folds, DST
transitions found by scanning offsets - and take the first feasible one) rather than the engine's
forward jumps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import yaml

from policies.policy_set import ContentPolicy, PolicySet
from policies.textscan import PhraseMatcher

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
PRECEDENCE = {"allow": 0, "defer": 1, "needs_approval": 2, "block": 3}


def _access() -> dict[str, Any]:
    text = resources.files("policies").joinpath("access.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


ACCESS = _access()
RANKS: dict[str, int] = ACCESS["roles"]
GRANTS: dict[str, list[str]] = ACCESS["grants"]


@dataclass
class Expected:
    outcome: str
    rule_ids: list[str]
    not_before: datetime | None = None
    approver_roles: list[str] = field(default_factory=list)
    notify: list[str] = field(default_factory=list)


@dataclass
class _R:
    rule_id: str
    outcome: str
    not_before: datetime | None = None
    approver: str | None = None
    grants: bool = False
    notify: tuple[str, ...] = ()


def _dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def _d(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# --- the calendar ---------------------------------------------------------------------------------


def _hm(text: str) -> tuple[int, int]:
    h, m = text.split(":")
    return int(h), int(m)


def public_holidays(ps: PolicySet, contact: dict[str, Any]) -> frozenset[date]:
    """Every date closed for ``contact``: the listed ones plus each named calendar's public
    holidays (straight from the ``holidays`` package; "contact" is the contact's country, an
    unknown country adds nothing, an unknown subdivision means the whole country)."""
    out = set(ps.quiet_hours.holidays)
    for entry in ps.quiet_hours.holiday_calendars:
        if entry == "contact":
            country, _, sub = str(contact.get("country") or "").upper().partition("-")
            sub = str(contact.get("subdivision") or sub).upper()
        else:
            country, _, sub = entry.upper().partition("-")
        supported = holidays.list_supported_countries()
        if country not in supported:
            continue
        sub_or_none = sub if sub in supported[country] else None
        out.update(holidays.country_holidays(country, subdiv=sub_or_none, years=range(2024, 2030)))
    return frozenset(out)


def _closed_reasons(
    t: datetime, tz: ZoneInfo, ps: PolicySet, closed: frozenset[date] = frozenset()
) -> set[str]:
    """Which quiet-hour rules hold at instant ``t`` on the contact's clock (``closed``: its
    holidays, from :func:`public_holidays`)."""
    qh = ps.quiet_hours
    loc = t.astimezone(tz)
    out = set()
    if WEEKDAYS[loc.weekday()] in [w.value for w in qh.weekend_days]:
        out.add("quiet_hours.weekend")
    if loc.date() in closed:
        out.add("quiet_hours.holiday")
    sh, sm = _hm(qh.start)
    eh, em = _hm(qh.end)
    now_hm = (loc.hour, loc.minute)
    if (sh, sm) != (eh, em):
        if (sh, sm) > (eh, em):
            inside = now_hm >= (sh, sm) or now_hm < (eh, em)
        else:
            inside = (sh, sm) <= now_hm < (eh, em)
        if inside:
            out.add("quiet_hours.window")
    return out


_SPAN = (datetime(2024, 6, 1, tzinfo=UTC), datetime(2028, 12, 31, tzinfo=UTC))


def _transitions(tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Instants in [start, end] where the zone's UTC offset changes."""
    assert _SPAN[0] <= start and end <= _SPAN[1], "reference calendar span exceeded"
    return [t for t in _zone_transitions(tz.key) if start <= t <= end]


@lru_cache(maxsize=64)
def _zone_transitions(key: str) -> list[datetime]:
    """Every offset change of zone ``key`` in the span (hourly scan, then bisect to the second)."""
    tz = ZoneInfo(key)
    start, end = _SPAN
    found = []
    t = start
    prev = t.astimezone(tz).utcoffset()
    while t < end:
        nxt = t + timedelta(hours=1)
        off = nxt.astimezone(tz).utcoffset()
        if off != prev:
            lo, hi = t, nxt
            while hi - lo > timedelta(seconds=1):
                mid = (lo + (hi - lo) / 2).replace(microsecond=0)
                if mid.astimezone(tz).utcoffset() == prev:
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
        prev, t = off, nxt
    return found


def _earliest_allowed(
    lower: datetime,
    tz: ZoneInfo,
    ps: PolicySet,
    scheduled: list[datetime],
    gap: timedelta,
    horizon_days: int = 60,
    closed: frozenset[date] = frozenset(),
) -> datetime:
    qh = ps.quiet_hours
    candidates = {lower}
    first = lower.astimezone(tz).date()
    walls = {time(0, 0), time(*_hm(qh.start)), time(*_hm(qh.end))}
    for k in range(-1, horizon_days):
        day = first + timedelta(days=k)
        for wall in walls:
            for fold in (0, 1):
                candidates.add(
                    datetime.combine(day, wall, tzinfo=tz).replace(fold=fold).astimezone(UTC)
                )
    candidates.update(
        _transitions(tz, lower - timedelta(days=1), lower + timedelta(days=horizon_days))
    )
    candidates.update(s + gap for s in scheduled)
    for cand in sorted(x for x in candidates if x >= lower):
        if _closed_reasons(cand, tz, ps, closed):
            continue
        if gap > timedelta(0) and any(abs(cand - s) < gap for s in scheduled):
            continue
        return cand
    raise AssertionError("reference found no allowed moment within the horizon")


def _clear_of(t: datetime, scheduled: list[datetime], gap: timedelta) -> datetime:
    """Earliest instant >= t at least ``gap`` from every scheduled touch (candidate search)."""
    if gap <= timedelta(0):
        return t
    for cand in sorted({t, *(s + gap for s in scheduled)}):
        if cand >= t and all(abs(cand - s) >= gap for s in scheduled):
            return cand
    raise AssertionError("unreachable")


def _start_of_day(d: date, tz: ZoneInfo) -> datetime:
    """First instant whose local date is ``d``: search the midnights and the day's transitions."""
    cands = [
        datetime.combine(d, time(0, 0), tzinfo=tz).replace(fold=f).astimezone(UTC) for f in (0, 1)
    ]
    base = min(cands)
    cands += _transitions(tz, base - timedelta(hours=3), base + timedelta(hours=3))
    good = [c for c in cands if c.astimezone(tz).date() == d]
    # Also the instant right after a transition into the day is covered by the transition list.
    return min(good)


# --- rules ----------------------------------------------------------------------------------------


def _has_perm(role: str | None, perm: str) -> bool:
    return role is not None and perm in GRANTS.get(role, [])


def _access_rules(ps: PolicySet, action: str, role: str | None) -> list[_R]:
    perms = ps.permissions_for_action(action)  # type: ignore[arg-type]
    if any(_has_perm(role, perm) for perm in perms):
        return [_R("access.granted", "allow", grants=True)]
    return [_R("access.denied", "block")]


@lru_cache(maxsize=64)
def _matchers(content_json: str) -> tuple[PhraseMatcher, PhraseMatcher, PhraseMatcher]:
    """The phrase matchers for a content policy (the matching itself is tested in test_textscan,
    against generated variant and ordinary corpora; here only the rules around it are checked):
    legal threats, concessions, payment demands."""
    content = ContentPolicy.model_validate_json(content_json)
    return (
        PhraseMatcher(content.threat_phrases()),
        PhraseMatcher(content.concession_phrases),
        PhraseMatcher(content.payment_demand_phrases),
    )


def _same_promise(about: dict[str, Any], p: dict[str, Any], grace: int) -> bool:
    """The reminder's promise is this open one: same date and invoices, status and grace agree."""
    return (
        about["status"] == "open"
        and _d(about["promised_date"]) == _d(p["promised_date"])
        and sorted(set(about["invoice_numbers"])) == sorted(set(p["invoice_numbers"]))
        and about.get("grace_days") in (None, grace)
    )


def _outreach(ps: PolicySet, f: dict[str, Any]) -> tuple[list[_R], dict[str, Any]]:
    tz = ZoneInfo(f["contact"]["timezone"])
    now = _dt(f["now"])
    out: list[_R] = []
    if f["contact"]["opted_out"]:
        out.append(_R("contact.opted_out", "block"))
    if f["contact"]["bounced"]:
        out.append(_R("contact.bounced", "block"))
    if not f["contact"]["consent"]:
        out.append(_R("contact.no_consent", "block"))
    # Dispute correspondence (send_draft only) is judged by its own rules in _send_draft.
    if any(i["disputed"] for i in f["invoices"]) and not f.get("dispute_correspondence", False):
        out.append(_R("dispute.no_dunning", "block"))
    recheck = now + timedelta(minutes=ps.sending.pause_recheck_minutes)
    if f["maintenance"]:
        out.append(_R("sending.maintenance", "defer", recheck))
    if f["cron_paused"]:
        out.append(_R("sending.cron_paused", "defer", recheck))
    holiday_dates = public_holidays(ps, f["contact"])
    closed = _closed_reasons(now, tz, ps, holiday_dates)
    if closed:
        opens = _earliest_allowed(now, tz, ps, [], timedelta(0), closed=holiday_dates)
        for rid in sorted(closed):
            out.append(_R(rid, "defer", opens))
    touches = sorted(_dt(t) for t in f["touches"])
    window = timedelta(days=ps.cadence.window_days)
    recent = [t for t in touches if now - t < window]
    n = ps.cadence.max_touches
    if len(recent) >= n:
        out.append(_R("cadence.max_touches", "defer", recent[len(recent) - n] + window))
    gap = timedelta(hours=ps.cadence.min_gap_hours)
    if touches and now - touches[-1] < gap:
        out.append(_R("cadence.min_gap", "defer", touches[-1] + gap))
    today = now.astimezone(tz).date()
    mine = {i["number"] for i in f["invoices"]}
    paused_until: date | None = None
    missed = False
    # A reminder (send_draft about_promise) is exempt from the pause of the one promise it names,
    # if that promise is open on these invoices and not past its grace; else it is blocked.
    about = f.get("about_promise")
    exempted = False
    for p in f["promises"]:
        if not mine & set(p["invoice_numbers"]):
            continue
        grace = p.get("grace_days")
        grace = ps.promises.default_grace_days if grace is None else grace
        last_day = _d(p["promised_date"]) + timedelta(days=grace)
        if p["status"] == "missed" or (p["status"] == "open" and today > last_day):
            missed = True
        if p["status"] == "open" and today <= last_day:
            if not exempted and about is not None and _same_promise(about, p, grace):
                exempted = True
                continue
            paused_until = last_day if paused_until is None else max(paused_until, last_day)
    if paused_until is not None:
        out.append(_R("promise.open", "defer", _start_of_day(paused_until + timedelta(days=1), tz)))
    if missed:
        out.append(_R("promise.missed", "allow"))
    if about is not None and not exempted:
        out.append(_R("promise.reminder_not_open", "block"))
    return out, {"tz": tz, "now": now, "closed": holiday_dates}


def _send_draft(ps: PolicySet, f: dict[str, Any]) -> tuple[list[_R], dict[str, Any]]:
    out, env = _outreach(ps, f)
    approvers = f.get("approved_by_roles", [])
    need = RANKS[ps.shadow_mode.reviewer_min_role]
    reviewed = any(r in RANKS and RANKS[r] >= need for r in approvers)
    shadow = f["org_shadow_mode"] or f["segment_shadow_mode"] or f.get("step_shadow_mode", False)
    who = ps.shadow_mode.reviewer_min_role
    if reviewed:
        out.append(_R("review.approved", "allow", grants=True))
    elif shadow:
        out.append(_R("shadow.review_required", "needs_approval", approver=who))
    else:
        score = f.get("data_ready_score")
        domain = f.get("sending_domain_verified")
        if not f["autopilot_enabled"]:
            out.append(_R("autopilot.not_enabled", "needs_approval", approver=who))
        if score is None:
            out.append(_R("facts.missing", "block"))
        elif score < ps.autopilot.data_ready_threshold:
            out.append(_R("autopilot.not_data_ready", "needs_approval", approver=who))
        if domain is None:
            out.append(_R("facts.missing", "block"))
        elif domain is False:
            out.append(_R("autopilot.domain_unverified", "needs_approval", approver=who))
        if (
            f["autopilot_enabled"]
            and score is not None
            and score >= ps.autopilot.data_ready_threshold
            and domain is True
        ):
            out.append(_R("autopilot.allowed", "allow", grants=True))
    content, ledger = f["content"], f["ledger"]
    legal = ps.content.legal_role
    threats, concessions, demands = _matchers(ps.content.model_dump_json())
    if legal not in approvers and threats.find(content["body"]) is not None:
        out.append(_R("content.legal_threat", "needs_approval", approver=legal))
    conceder = ps.content.concession_role
    if (
        conceder not in approvers
        and not ledger.get("concession_approved", False)
        and concessions.find(content["body"]) is not None
    ):
        out.append(_R("content.unbacked_concession", "needs_approval", approver=conceder))
    if not content["invoice_numbers"]:
        out.append(_R("content.missing_invoice_reference", "block"))
    link = (content.get("pay_link") or "").strip()
    corr = f.get("dispute_correspondence", False)
    if corr:
        out += _correspondence(ps, f, reviewed, bool(link), demands)
    if not link:
        if not corr:
            out.append(_R("content.missing_pay_link", "block"))
    elif link != (ledger.get("pay_link") or "").strip():
        out.append(_R("content.pay_link_mismatch", "block"))
    if any(n not in ledger["invoice_numbers"] for n in content["invoice_numbers"]):
        out.append(_R("content.invoice_mismatch", "block"))
    ledger_amounts = [(a["amount_minor"], a["currency"]) for a in ledger["amounts"]]
    if any((a["amount_minor"], a["currency"]) not in ledger_amounts for a in content["amounts"]):
        out.append(_R("content.amount_mismatch", "block"))
    ledger_dates = [_d(x) for x in ledger["dates"]]
    if any(_d(x) not in ledger_dates for x in content["dates"]):
        out.append(_R("content.date_mismatch", "block"))
    env["scheduled"], env["gap"] = [], timedelta(0)
    return out, env


def _correspondence(
    ps: PolicySet, f: dict[str, Any], reviewed: bool, has_link: bool, demands: PhraseMatcher
) -> list[_R]:
    """Dispute correspondence: a person reviews it; about a disputed invoice it is allowed
    without a pay link, but neither a pay link nor a payment demand may go with it."""
    out: list[_R] = []
    if not reviewed:
        out.append(
            _R(
                "dispute.correspondence_review",
                "needs_approval",
                approver=ps.shadow_mode.reviewer_min_role,
            )
        )
    if any(i["disputed"] for i in f["invoices"]):
        out.append(_R("dispute.correspondence", "allow"))
        if demands.find(f["content"]["body"]) is not None:
            out.append(_R("dispute.correspondence_demand", "block"))
        if has_link:
            out.append(_R("dispute.correspondence_pay_link", "block"))
    return out


def _send_nudge(ps: PolicySet, f: dict[str, Any]) -> tuple[list[_R], dict[str, Any]]:
    out, env = _outreach(ps, f)
    out += _access_rules(ps, "send_nudge", f["actor_role"])
    if not f["template_approved"]:
        out.append(_R("nudge.template_not_approved", "block"))
    scheduled = [_dt(s) for s in f["scheduled_autopilot_touches"]]
    gap = timedelta(hours=ps.nudges.min_gap_to_autopilot_hours)
    now = env["now"]
    if any(abs(now - s) < gap for s in scheduled):
        out.append(_R("nudge.autopilot_too_close", "defer", _clear_of(now, scheduled, gap)))
    if ps.nudges.notify:
        out.append(_R("nudge.notify", "allow", notify=tuple(ps.nudges.notify)))
    env["scheduled"], env["gap"] = scheduled, gap
    return out, env


def _limits(
    prefix: str, role: str, amount: int, limits: dict[str, int] | None, user: int | None, esc: str
) -> list[_R]:
    """``limits`` None: the currency has no limits in the policy (only its block rule fires)."""
    out = []
    if role not in RANKS:
        out.append(_R(f"{prefix}.above_role_limit", "needs_approval", approver=esc))
    elif limits is not None:
        limit = limits.get(role, 0)
        if amount > limit:
            out.append(_R(f"{prefix}.above_role_limit", "needs_approval", approver=esc))
        elif user is None or amount <= user:
            out.append(_R(f"{prefix}.within_limit", "allow"))
    if user is not None and amount > user:
        out.append(_R(f"{prefix}.above_user_limit", "needs_approval", approver=esc))
    return out


def _bps_over(part: int, whole: int, cap: int) -> bool:
    # part/whole > cap/10000, in exact integer arithmetic.
    return part * 10_000 > cap * whole


def _plan(ps: PolicySet, f: dict[str, Any], action: str) -> tuple[list[_R], dict[str, Any]]:
    pl = ps.plans
    listed = f["currency"] in ps.limit_currencies()
    via = f.get("proposed_via", "staff") if action == "offer_plan" else "staff"
    role = f.get("actor_role") or ""
    out: list[_R] = []
    if via == "staff":
        out += _access_rules(ps, action, role)
        out += _limits(
            "plan",
            role,
            f["total_minor"],
            ps.approval_limits_in(f["currency"]) if listed else None,
            f.get("actor_limit_minor"),
            pl.escalation_role,
        )
    else:
        out.append(_R("plan.portal_proposal", "needs_approval", approver=pl.portal_approver_role))
    if not listed:
        out.append(_R("plan.currency", "block"))
    if f["installments"] > pl.max_installments:
        out.append(_R("plan.max_installments", "block"))
    if f["months"] > pl.max_months:
        out.append(_R("plan.max_months", "block"))
    if _bps_over(f.get("discount_minor", 0), f["total_minor"], pl.max_discount_bps):
        out.append(_R("plan.max_discount", "block"))
    if (
        listed
        and f["total_minor"] > ps.controller_above_in(f["currency"])
        and role != pl.escalation_role
    ):
        out.append(
            _R("plan.above_controller_threshold", "needs_approval", approver=pl.escalation_role)
        )
    legal_ok = f.get("legal_approved", False) or role == pl.legal_role
    if f["non_standard_terms"] and not legal_ok:
        out.append(_R("plan.non_standard_terms", "needs_approval", approver=pl.legal_role))
    return out, {}


def _credit(ps: PolicySet, f: dict[str, Any]) -> tuple[list[_R], dict[str, Any]]:
    cr = ps.credits
    listed = f["currency"] in ps.limit_currencies()
    out = _access_rules(ps, "grant_credit", f["actor_role"])
    out += _limits(
        "credit",
        f["actor_role"],
        f["amount_minor"],
        ps.credit_limits_in(f["currency"]) if listed else None,
        f.get("actor_limit_minor"),
        cr.escalation_role,
    )
    if not listed:
        out.append(_R("credit.currency", "block"))
    if f["amount_minor"] > f["invoice_balance_minor"]:
        out.append(_R("credit.exceeds_balance", "block"))
    if f["kind"] == "discount" and _bps_over(
        f["amount_minor"], f["invoice_amount_minor"], cr.max_discount_bps
    ):
        out.append(_R("credit.max_discount", "block"))
    return out, {}


def _cash(ps: PolicySet, f: dict[str, Any]) -> tuple[list[_R], dict[str, Any]]:
    """A person: the permission decides. Auto-apply: on, confident, within its currency's
    limit (a currency not listed never) and of a listed kind, or it waits for the reviewer.
    A written-off difference: the Controller's write-off rule, when on, judges a short-pay
    with one (its own confidence bar, kinds, per-currency cap and share of the invoices)."""
    if f.get("actor_role") is not None:
        return _access_rules(ps, "apply_cash", f["actor_role"]), {}
    ca = ps.cash_app
    who = ca.reviewer_role
    wo, oa = f.get("write_off_minor", 0), f.get("on_account_minor", 0)
    judged_by_own_rule = (
        ca.auto_write_off
        and f["match_kind"] == "short_pay"
        and wo > 0
        or ca.auto_over_payment
        and f["match_kind"] == "over_payment"
        and oa > 0
    )
    out = []
    if not ca.auto_apply:
        out.append(_R("cash.auto_apply_off", "needs_approval", approver=who))
    if f["confidence"] < ca.min_confidence and not judged_by_own_rule:
        out.append(_R("cash.low_confidence", "needs_approval", approver=who))
    limit = ca.max_auto_apply_minor.get(f["currency"])
    line_within = limit is not None and f["amount_minor"] <= limit
    if not line_within:
        out.append(_R("cash.above_auto_limit", "needs_approval", approver=who))
    if f["match_kind"] not in ca.auto_apply_kinds and not judged_by_own_rule:
        out.append(_R("cash.kind_needs_review", "needs_approval", approver=who))
    if (
        ca.auto_apply
        and f["confidence"] >= ca.min_confidence
        and f["match_kind"] in ca.auto_apply_kinds
        and line_within
    ):
        out.append(_R("cash.auto_apply", "allow", grants=True))
    if wo > 0:
        out += _write_off(ps, f, wo, line_within)
    if ca.auto_over_payment and f["match_kind"] == "over_payment" and oa > 0:
        out += _over_payment(ps, f, oa, line_within)
    return out, {}


def _over_payment(ps: PolicySet, f: dict[str, Any], oa: int, line_within: bool) -> list[_R]:
    ca = ps.cash_app
    cap = ca.auto_over_payment_max_minor.get(f["currency"])
    covered = (
        f["confidence"] >= ca.auto_over_payment_min_confidence
        and cap is not None
        and oa <= cap
        and not _bps_over(oa, f["invoices_minor"], ca.auto_over_payment_max_bps)
    )
    if not covered:
        return [_R("cash.over_payment_needs_review", "needs_approval", approver=ca.reviewer_role)]
    if ca.auto_apply and line_within:
        return [_R("cash.over_payment_on_account", "allow", grants=True)]
    return []


def _write_off(ps: PolicySet, f: dict[str, Any], wo: int, line_within: bool) -> list[_R]:
    ca = ps.cash_app
    who = ca.reviewer_role
    if not ca.auto_write_off:
        return [_R("cash.auto_write_off_off", "needs_approval", approver=who)]
    cap = ca.auto_write_off_max_minor.get(f["currency"])
    covered = (
        f["match_kind"] == "short_pay"
        and f["write_off_kind"] in ca.auto_write_off_kinds
        and f["confidence"] >= ca.auto_write_off_min_confidence
        and cap is not None
        and wo <= cap
        and not _bps_over(wo, f["invoices_minor"], ca.auto_write_off_max_bps)
    )
    if not covered:
        return [_R("cash.write_off_needs_review", "needs_approval", approver=who)]
    if ca.auto_apply and line_within:
        return [_R("cash.short_pay_write_off", "allow", grants=True)]
    return []


def _dispute(ps: PolicySet, f: dict[str, Any]) -> tuple[list[_R], dict[str, Any]]:
    out = _access_rules(ps, "escalate_dispute", f["actor_role"])
    status = f["dispute_status"]
    if status in ("resolved_credit", "rejected"):
        out.append(_R("dispute.closed", "block"))
    elif status == "escalated_legal":
        out.append(_R("dispute.already_escalated", "block"))
    else:
        out.append(_R("dispute.escalation_notice", "allow", notify=("legal",)))
    return out, {}


def _enable(ps: PolicySet, f: dict[str, Any]) -> tuple[list[_R], dict[str, Any]]:
    out = _access_rules(ps, "enable_autopilot", f["actor_role"])
    if f["data_ready_score"] < ps.autopilot.data_ready_threshold:
        out.append(_R("autopilot.enable_not_data_ready", "block"))
    if not f["sending_domain_verified"]:
        out.append(_R("autopilot.enable_domain_unverified", "block"))
    pct, window = ps.autopilot.shadow_min_unchanged_pct, ps.autopilot.shadow_window_drafts
    if pct or window:
        decided, same = f.get("shadow_decided"), f.get("shadow_unchanged")
        if decided is None:
            out.append(_R("autopilot.enable_shadow_record_missing", "block"))
        else:
            if decided < window:
                out.append(_R("autopilot.enable_shadow_too_few", "block"))
            # 100 * same / decided < pct, in exact integers (no rounding up to the bar)
            if decided == 0 or same * 100 < pct * decided:
                out.append(_R("autopilot.enable_shadow_disagreement", "block"))
    return out, {}


def reference_decide(action: str, facts: dict[str, Any], ps: PolicySet) -> Expected:
    """What the guardrails must answer for valid ``facts`` (or an unknown ``action``)."""
    if action == "send_draft":
        fired, env = _send_draft(ps, facts)
    elif action == "send_nudge":
        fired, env = _send_nudge(ps, facts)
    elif action in ("offer_plan", "approve_plan"):
        fired, env = _plan(ps, facts, action)
    elif action == "grant_credit":
        fired, env = _credit(ps, facts)
    elif action == "escalate_dispute":
        fired, env = _dispute(ps, facts)
    elif action == "apply_cash":
        fired, env = _cash(ps, facts)
    elif action == "enable_autopilot":
        fired, env = _enable(ps, facts)
    elif action in ("change_cadence", "change_segment", "change_policy", "set_sending_mode"):
        fired, env = _access_rules(ps, action, facts["actor_role"]), {}
    else:
        return Expected("block", ["action.unknown"])

    outcome = max((r.outcome for r in fired), key=PRECEDENCE.__getitem__, default="allow")
    if outcome == "allow" and not any(r.grants for r in fired):
        fired.append(_R("default.deny", "block"))
        outcome = "block"
    expected = Expected(outcome, sorted(r.rule_id for r in fired))
    expected.notify = sorted({n for r in fired for n in r.notify})
    if outcome == "defer":
        lower = max(
            [env["now"], *(r.not_before for r in fired if r.outcome == "defer" and r.not_before)]
        )
        expected.not_before = _earliest_allowed(
            lower,
            env["tz"],
            ps,
            env.get("scheduled", []),
            env.get("gap", timedelta(0)),
            closed=env.get("closed", frozenset()),
        )
    if outcome == "needs_approval":
        roles = {r.approver for r in fired if r.outcome == "needs_approval" and r.approver}
        expected.approver_roles = sorted(roles, key=lambda x: (-RANKS[x], x))
    return expected
