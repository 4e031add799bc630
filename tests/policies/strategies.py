"""Hypothesis strategies for guardrail actions, biased towards the boundaries that matter.

Facts are generated as JSON-like dicts (ISO strings for dates and times), exactly what
``plixo policy check`` reads, and cover every action type. Times cluster on quiet-hour edges, DST
transitions and cadence windows; amounts on role limits, the $50,000 line and the discount caps.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from policies.policy_set import PolicySet, load_default, merge

ROLES = [
    "Admin",
    "Controller",
    "Collections Manager",
    "Collector",
    "Billing Admin",
    "Sales",
    "CSM",
    "Legal",
    "Viewer",
]
ROLES_PLUS = [*ROLES, "Payer", "collector"]  # unknown roles must fail closed
# Where a contact is, for the public-holiday calendars: unknown, a country, a subdivision (given
# both ways), a subdivision the package does not know and a country it does not know.
CONTACT_PLACES: list[dict[str, Any]] = [
    {},
    {"country": "US"},
    {"country": "CH", "subdivision": "BE"},
    {"country": "GB-SCT"},
    {"country": "US", "subdivision": "QQ"},
    {"country": "ZZ"},
]
ZONES = [
    "UTC",
    "America/New_York",
    "America/Los_Angeles",
    "America/St_Johns",
    "America/Havana",  # DST at midnight
    "America/Santiago",  # DST at midnight, southern hemisphere
    "Europe/London",
    "Europe/Berlin",
    "Africa/Casablanca",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Australia/Lord_Howe",  # 30-minute DST
    "Pacific/Kiritimati",  # UTC+14
    "Pacific/Pago_Pago",  # UTC-11
]
START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2026, 12, 31, tzinfo=UTC)


def _variants() -> list[PolicySet]:
    base = load_default()
    return [
        base,
        merge(
            base,
            {
                "currency": "EUR",
                "quiet_hours": {
                    "start": "12:00",
                    "end": "13:30",
                    "weekend_days": ["friday", "saturday"],
                    "holidays": ["2025-03-09", "2025-11-02", "2026-03-29", "2025-12-31"],
                    "holiday_calendars": ["contact", "DE-BY"],
                },
                "cadence": {"max_touches": 2, "window_days": 3, "min_gap_hours": 12},
                "nudges": {"min_gap_to_autopilot_hours": 6, "notify": ["ar_team", "csm_lead"]},
                "autopilot": {"data_ready_threshold": 50},
                "promises": {"default_grace_days": 0},
                "plans": {
                    "controller_above_minor": 1_000_000,
                    "max_installments": 6,
                    "max_months": 6,
                    "max_discount_bps": 500,
                },
                "approval_limits": {"Collector": 250_000, "Sales": 10_000},
                "credits": {"max_discount_bps": 1000},
                "credit_limits": {"Collector": 0},
                "content": {"legal_threat_phrases": ["sue", "legal action", "bailiff"]},
                "cash_app": {
                    "auto_apply": True,
                    "min_confidence": 90,
                    "max_auto_apply_minor": {"USD": 500_000, "EUR": 100},
                    "auto_apply_kinds": ["exact", "short_pay"],
                    "auto_write_off": True,
                    "auto_write_off_min_confidence": 85,
                    "auto_write_off_max_minor": {"USD": 3_000, "JPY": 500},
                    "auto_write_off_max_bps": 250,
                    "auto_write_off_kinds": ["bank_fee"],
                },
            },
        ),
        merge(
            base,
            {
                "quiet_hours": {
                    "start": "22:00",
                    "end": "02:30",
                    "weekend_days": [],
                    "holidays": [],
                    "holiday_calendars": [],
                },
                "cadence": {"max_touches": 5, "window_days": 14, "min_gap_hours": 0},
                "nudges": {"min_gap_to_autopilot_hours": 0},
                "sending": {"pause_recheck_minutes": 60},
                # the write-off rule on, short-pays not among the auto-apply kinds
                "cash_app": {
                    "auto_apply": True,
                    "auto_write_off": True,
                    "auto_over_payment": True,
                    "auto_over_payment_max_minor": {"USD": 2_500, "EUR": 700},
                    "max_auto_apply_minor": {"USD": 500_000, "JPY": 100_000},
                },
            },
        ),
        merge(
            base,
            {
                "quiet_hours": {
                    "start": "00:00",
                    "end": "00:00",
                    "weekend_days": ["sunday"],
                    "holidays": ["2025-12-25", "2025-12-26", "2026-01-01"],
                },
                "cadence": {"max_touches": 1, "window_days": 1, "min_gap_hours": 1},
                "nudges": {"notify": []},
                "shadow_mode": {"reviewer_min_role": "Collections Manager"},
                "content": {"legal_threat_phrases": []},
            },
        ),
    ]


@lru_cache(maxsize=1)
def variants() -> tuple[PolicySet, ...]:
    return tuple(_variants())


@lru_cache(maxsize=64)
def _transitions(zone: str) -> list[datetime]:
    tz = ZoneInfo(zone)
    out = []
    t = START - timedelta(days=2)
    prev = t.astimezone(tz).utcoffset()
    while t < END:
        t += timedelta(hours=1)
        off = t.astimezone(tz).utcoffset()
        if off != prev:
            out.append(t)
        prev = off
    return out


# --- cheap draws: constant strategies only (building strategies inside a draw costs ~20x) -------


@cache
def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


BOOL = st.booleans()
UNIT = st.floats(0, 1, allow_nan=False)


def pick(draw: st.DrawFn, seq: list[Any] | tuple[Any, ...]) -> Any:
    return seq[draw(_ints(0, len(seq) - 1))]


def some(draw: st.DrawFn, seq: list[Any], most: int, unique: bool = False) -> list[Any]:
    n = draw(_ints(0, most))
    if unique:
        pool = list(seq)
        out = []
        for _ in range(min(n, len(pool))):
            out.append(pool.pop(draw(_ints(0, len(pool) - 1))))
        return out
    return [pick(draw, seq) for _ in range(n)]


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@st.composite
def moments(draw: st.DrawFn, ps: PolicySet, zone: str) -> datetime:
    """A UTC instant: anywhere, on a quiet-hour edge in ``zone``, or near a DST transition."""
    tz = ZoneInfo(zone)
    mode = pick(draw, ["any", "edge", "edge", "dst", "dst_near"])
    transitions = _transitions(zone)
    if mode == "any":
        span = int((END - START).total_seconds())
        return START + timedelta(seconds=draw(_ints(0, span)), microseconds=draw(_ints(0, 999_999)))
    if mode.startswith("dst") and transitions:
        base = pick(draw, transitions)
        lo, hi = (-26 * 60, 26 * 60) if mode == "dst" else (-6 * 60, 90)
        return base + timedelta(minutes=draw(_ints(lo, hi)), seconds=draw(_ints(0, 59)))
    day = START.date() + timedelta(days=draw(_ints(0, (END - START).days - 1)))
    walls = sorted({ps.quiet_hours.start_time, ps.quiet_hours.end_time, time(0, 0), time(2, 30)})
    wall = pick(draw, walls)
    shift = pick(draw, [-60, -1, 0, 0, 0, 1])
    second = pick(draw, [0, 0, 30, 59])
    local = datetime.combine(day, wall, tzinfo=tz).replace(fold=draw(_ints(0, 1)))
    return (local + timedelta(minutes=shift, seconds=second)).astimezone(UTC)


def _offset(draw: st.DrawFn, ps: PolicySet) -> timedelta:
    """How long before ``now`` an earlier touch happened (on the cadence boundaries, often)."""
    gap = ps.cadence.min_gap_hours * 3600
    win = ps.cadence.window_days * 86400
    mode = draw(_ints(0, 2))
    if mode == 0:
        return timedelta(
            seconds=pick(draw, [1, gap - 1, gap, gap + 1, win - 1, win, win + 1, -3600])
        )
    if mode == 1:
        return timedelta(seconds=draw(_ints(0, 20 * 86400)))
    return timedelta(seconds=draw(UNIT) * 3 * 86400)


INVOICES = ["INV-1", "INV-2", "INV-3"]
LINKS = ["https://pay.example.com/t/abc", "https://pay.example.com/t/xyz"]
BODY_PARTS = [
    "Hello, a friendly reminder about invoice INV-1.",
    "Please pay here.",
    "We may take LEGAL\n action.",
    "we will sue",
    "pursue",
    "lawsuits are costly",
    "our Collection Agency partner",
    "a bailiff may visit",
    "Sué",
    "we can w\u200baive the late balance",
    "Thanks!",
    "We have received your query about INV-1.",
    "The balance is overdue.",
]
STATUSES = ["open", "open", "kept", "missed", "cancelled"]


def _money(draw: st.DrawFn, ps: PolicySet) -> dict[str, Any]:
    return {
        "amount_minor": pick(draw, [100, 1_240_000, 5_000_000, 999]),
        "currency": pick(draw, [ps.currency, "USD", "GBP"]),
    }


@st.composite
def _about_promise(
    draw: st.DrawFn, promises: list[dict[str, Any]], invoices: list[str], local_today: date
) -> dict[str, Any] | None:
    """A promise reminder's ``about_promise``: none, one of the listed promises as the agent sends
    it (no grace_days) or with a grace, a near-miss copy (other date, invoices, grace or status),
    or a foreign promise. Half the time an open promise on the draft's invoices is listed first
    (appended to ``promises``), so the exemption itself is exercised, at its grace boundary too."""
    kind = draw(_ints(0, 5))
    if kind == 0:
        return None
    if kind <= 2:
        grace = draw(_ints(-1, 3))
        own: dict[str, Any] = {
            "promised_date": (local_today + timedelta(days=draw(_ints(-4, 6)))).isoformat(),
            "status": "open",
            "invoice_numbers": some(draw, [*invoices, "INV-7"], 2, unique=True) or invoices[:1],
        }
        if grace >= 0:
            own["grace_days"] = grace
        promises.insert(draw(_ints(0, len(promises))), own)
    if kind <= 3 and promises:
        listed = own if kind <= 2 else pick(draw, promises)
        about = {k: v for k, v in listed.items() if k != "grace_days"}
        about["status"] = "open"
        tweak = draw(_ints(0, 5))
        if tweak == 1:
            about["promised_date"] = (
                date.fromisoformat(about["promised_date"]) + timedelta(days=pick(draw, [-1, 1]))
            ).isoformat()
        elif tweak == 2:
            about["invoice_numbers"] = [*about["invoice_numbers"], "INV-8"]
        elif tweak == 3:
            about["grace_days"] = draw(_ints(0, 4))
        elif tweak == 4:
            about["status"] = pick(draw, STATUSES)
        return about
    return {
        "promised_date": (local_today + timedelta(days=draw(_ints(-8, 8)))).isoformat(),
        "status": pick(draw, STATUSES),
        "invoice_numbers": some(draw, [*INVOICES, "INV-7"], 2, unique=True) or ["INV-7"],
    }


@st.composite
def outreach_facts(draw: st.DrawFn, ps: PolicySet, kind: str) -> dict[str, Any]:
    zone = pick(draw, ZONES)
    tz = ZoneInfo(zone)
    now = draw(moments(ps, zone))
    # Half of the actions are "clean" (no blocking fact), so defers and approvals get exercised too.
    risky = draw(BOOL)

    def ok(good: bool) -> bool:
        """``good`` for clean actions; for risky ones, the opposite one time in four."""
        return (draw(_ints(0, 3)) != 0) == good if risky else good

    invoices = some(draw, INVOICES, 3, unique=True) or ["INV-1"]
    local_today = now.astimezone(tz).date()
    promises = []
    for _ in range(draw(_ints(0, 3))):
        promise: dict[str, Any] = {
            "promised_date": (local_today + timedelta(days=draw(_ints(-8, 8)))).isoformat(),
            "status": pick(draw, STATUSES),
            "invoice_numbers": some(draw, [*INVOICES, "INV-7"], 2, unique=True) or ["INV-7"],
        }
        grace = draw(_ints(-2, 4))
        if grace >= -1:
            promise["grace_days"] = None if grace == -1 else grace
        promises.append(promise)
    touches = [iso(now - _offset(draw, ps)) for _ in range(draw(_ints(0, 6)))]
    facts: dict[str, Any] = {
        "now": iso(now) if draw(BOOL) else now.astimezone(tz).isoformat(),
        "channel": pick(draw, ["email", "sms", "call"]),
        "maintenance": draw(_ints(0, 3)) == 0,
        "cron_paused": draw(_ints(0, 5)) == 0,
        "contact": {
            "timezone": zone,
            "opted_out": ok(False),
            "bounced": ok(False),
            "consent": ok(True),
        }
        | pick(draw, CONTACT_PLACES),
        "invoices": [{"number": n, "disputed": ok(False)} for n in invoices],
        "promises": promises,
        "touches": touches,
    }
    if kind == "send_draft":
        ledger_numbers = some(draw, INVOICES, 3, unique=True)
        ledger_amounts = [_money(draw, ps) for _ in range(draw(_ints(0, 3)))]
        ledger_dates = [
            (local_today - timedelta(days=draw(_ints(0, 40)))).isoformat()
            for _ in range(draw(_ints(0, 3)))
        ]
        ledger_link = pick(draw, [*LINKS, None])
        body = " ".join(some(draw, BODY_PARTS, 4))
        if risky:
            content = {
                "body": body,
                "invoice_numbers": some(draw, [*INVOICES, "INV-9"], 2),
                "amounts": ledger_amounts[:1]
                if draw(BOOL)
                else [_money(draw, ps) for _ in range(draw(_ints(0, 2)))],
                "dates": ledger_dates[:1]
                if draw(BOOL)
                else [
                    (local_today - timedelta(days=draw(_ints(0, 40)))).isoformat()
                    for _ in range(draw(_ints(0, 2)))
                ],
                "pay_link": pick(draw, [ledger_link, ledger_link, *LINKS, None, "", "  "]),
            }
            ledger = {
                "invoice_numbers": ledger_numbers,
                "amounts": ledger_amounts,
                "dates": ledger_dates,
                "pay_link": ledger_link,
            }
            if draw(BOOL):
                ledger["concession_approved"] = draw(BOOL)
        else:
            content = {
                "body": body,
                "invoice_numbers": ledger_numbers[:1] or ["INV-1"],
                "amounts": ledger_amounts[:2],
                "dates": ledger_dates[:1],
                "pay_link": ledger_link or LINKS[0],
            }
            ledger = {
                "invoice_numbers": ledger_numbers or ["INV-1"],
                "amounts": ledger_amounts,
                "dates": ledger_dates,
                "pay_link": ledger_link or LINKS[0],
            }
        facts.update(
            {
                "segment": pick(draw, ["SMB", "Enterprise"]),
                "org_shadow_mode": draw(BOOL),
                "segment_shadow_mode": draw(BOOL),
                **({"step_shadow_mode": draw(BOOL)} if draw(BOOL) else {}),
                "autopilot_enabled": draw(BOOL),
                "approved_by_roles": some(draw, ROLES_PLUS, 3),
                "content": content,
                "ledger": ledger,
            }
        )
        t = ps.autopilot.data_ready_threshold
        score = pick(draw, [None, t - 1, t, 100, 0])
        if score is not None:
            facts["data_ready_score"] = score
        domain = pick(draw, [True, True, False, None])
        if domain is not None:
            facts["sending_domain_verified"] = domain
        if draw(_ints(0, 3)) == 0:
            facts["dispute_correspondence"] = draw(BOOL)
        about = draw(_about_promise(promises, invoices, local_today))
        if about is not None:
            facts["about_promise"] = about
    else:
        gap = ps.nudges.min_gap_to_autopilot_hours * 3600
        scheduled = []
        for _ in range(draw(_ints(0, 3))):
            if draw(BOOL):
                secs = pick(draw, [gap - 1, gap, gap + 1, -gap + 1, -gap, 0, 3600])
            else:
                secs = draw(_ints(-3 * 86400, 5 * 86400))
            scheduled.append(iso(now + timedelta(seconds=secs)))
        facts.update(
            {
                "actor_role": pick(draw, ROLES_PLUS),
                "template_approved": ok(True),
                "scheduled_autopilot_touches": scheduled,
            }
        )
    return facts


def _amount(draw: st.DrawFn, limits: list[int]) -> int:
    if draw(BOOL):
        return max(1, pick(draw, limits) + draw(_ints(-1, 1)))
    return int(draw(_ints(1, 200_000_000)))


@st.composite
def plan_facts(draw: st.DrawFn, ps: PolicySet, action: str) -> dict[str, Any]:
    pl = ps.plans
    other = [v for cl in ps.currency_limits.values() for v in cl.approval_limits.values()]
    other += [cl.controller_above_minor for cl in ps.currency_limits.values()]
    total = _amount(draw, [*ps.approval_limits.values(), pl.controller_above_minor, *other])
    cap = pl.max_discount_bps
    edge_discount = max(0, min(total, total * cap // 10_000 + draw(_ints(-1, 1))))
    if draw(BOOL):  # clean terms: only limits and approvals decide
        facts: dict[str, Any] = {
            "total_minor": total,
            "currency": ps.currency,
            "installments": pick(draw, [1, 3, pl.max_installments]),
            "months": pick(draw, [1, pl.max_months]),
            "discount_minor": pick(draw, [0, max(0, total * cap // 10_000)]),
            "non_standard_terms": draw(BOOL),
        }
    else:
        facts = {
            "total_minor": total,
            "currency": pick(draw, [ps.currency, ps.currency, "GBP", "EUR", "JPY"]),
            "installments": pick(draw, [1, pl.max_installments, pl.max_installments + 1, 3]),
            "months": pick(draw, [1, pl.max_months, pl.max_months + 1, 6]),
            "discount_minor": pick(draw, [0, edge_discount, min(total, 1)]),
            "non_standard_terms": draw(BOOL),
        }
    if draw(BOOL):
        facts["legal_approved"] = draw(BOOL)
    if draw(BOOL):
        facts["actor_limit_minor"] = pick(draw, [0, total - 1, total, 10_000_000])
    if action == "offer_plan" and draw(_ints(0, 4)) == 0:
        facts["proposed_via"] = "portal"
        facts.pop("actor_limit_minor", None)
        if draw(BOOL):
            facts["actor_role"] = pick(draw, ROLES)
    else:
        facts["actor_role"] = pick(draw, ROLES_PLUS)
    return facts


@st.composite
def credit_facts(draw: st.DrawFn, ps: PolicySet) -> dict[str, Any]:
    invoice = pick(draw, [1_000_000, 1_240_000, 333, 10_000_000])
    cap = ps.credits.max_discount_bps
    edge = max(1, invoice * cap // 10_000 + draw(_ints(-1, 1)))
    amount = edge if draw(BOOL) else _amount(draw, list(ps.credit_limits.values()))
    facts: dict[str, Any] = {
        "actor_role": pick(draw, ROLES_PLUS),
        "kind": pick(draw, ["discount", "credit"]),
        "amount_minor": amount,
        "currency": pick(draw, [ps.currency, ps.currency, "GBP", "JPY"]),
        "invoice_amount_minor": invoice,
        "invoice_balance_minor": pick(draw, [invoice, amount, amount - 1, 0]),
    }
    if draw(BOOL):
        facts["actor_limit_minor"] = pick(draw, [0, amount, amount - 1])
    return facts


CASH_KINDS = [
    "exact",
    "one_to_many",
    "short_pay",
    "over_payment",
    "installment",
    "on_account",
    "copilot_split",
]


@st.composite
def cash_facts(draw: st.DrawFn, ps: PolicySet) -> dict[str, Any]:
    """apply_cash by a person (any role) or by auto-apply, around every threshold."""
    ca = ps.cash_app
    limits = list(ca.max_auto_apply_minor.values()) or [500_000]
    edges = [max(1, v + d) for v in limits for d in (-1, 0, 1)]
    facts: dict[str, Any] = {
        "confidence": pick(draw, [0, 50, ca.min_confidence - 1, ca.min_confidence, 100]),
        "amount_minor": pick(draw, [1, *edges, 10**12]),
        "currency": pick(draw, [ps.currency, "EUR", "JPY"]),
        "match_kind": pick(draw, CASH_KINDS),
    }
    if draw(BOOL):
        facts["actor_role"] = pick(draw, ROLES_PLUS)
    if draw(BOOL):
        facts.update(draw(write_off_facts(ps)))
    elif draw(BOOL):
        facts.update(draw(on_account_facts(ps, facts["amount_minor"])))
    return facts


@st.composite
def on_account_facts(draw: st.DrawFn, ps: PolicySet, amount: int) -> dict[str, Any]:
    """A surplus kept on account around the over-payment rule's bar, caps and share."""
    ca = ps.cash_app
    caps = list(ca.auto_over_payment_max_minor.values()) or [2_500]
    oa = min(amount, pick(draw, [1, *(max(1, v + d) for v in caps for d in (-1, 0, 1))]))
    bps = ca.auto_over_payment_max_bps or 1
    at_share = max(1, -(-oa * 10_000 // bps))
    out: dict[str, Any] = {
        "on_account_minor": oa,
        "invoices_minor": pick(draw, [1, max(1, at_share - 1), at_share, at_share + 1]),
        "match_kind": pick(draw, ["over_payment", "over_payment", "on_account", "exact"]),
    }
    if draw(BOOL):
        bar = ca.auto_over_payment_min_confidence
        out["confidence"] = pick(draw, [bar - 1, bar, 100])
    return out


@st.composite
def write_off_facts(draw: st.DrawFn, ps: PolicySet) -> dict[str, Any]:
    """A written-off difference around the write-off rule's confidence bar, caps and share."""
    ca = ps.cash_app
    caps = list(ca.auto_write_off_max_minor.values()) or [2_500]
    wo = pick(draw, [1, *(max(1, v + d) for v in caps for d in (-1, 0, 1)), 10**9])
    bps = ca.auto_write_off_max_bps or 1
    # invoices around the share: wo is bps of them exactly, or a little less or more
    at_share = max(wo, -(-wo * 10_000 // bps))
    invoices = pick(draw, [wo, max(wo, at_share - 1), at_share, at_share + 1, wo * 1_000])
    out: dict[str, Any] = {
        "write_off_minor": wo,
        "write_off_kind": pick(draw, ["discount", "bank_fee"]),
        "invoices_minor": invoices,
    }
    if draw(BOOL):
        bar = ca.auto_write_off_min_confidence
        out["confidence"] = pick(draw, [bar - 1, bar, 100])
    return out


DISPUTE_STATUSES = [
    "open",
    "investigating",
    "awaiting_customer",
    "escalated_legal",
    "resolved_credit",
    "rejected",
]


@st.composite
def actor_facts(draw: st.DrawFn, ps: PolicySet, action: str) -> dict[str, Any]:
    role = pick(draw, ROLES_PLUS)
    if action == "escalate_dispute":
        return {"actor_role": role, "dispute_status": pick(draw, DISPUTE_STATUSES)}
    if action == "enable_autopilot":
        t = ps.autopilot.data_ready_threshold
        out = {
            "actor_role": role,
            "segment": "SMB",
            "data_ready_score": pick(draw, [t - 1, t, 100, 0]),
            "sending_domain_verified": draw(BOOL),
        }
        if draw(st.integers(0, 5)):  # mostly with the Shadow Mode record, sometimes without
            w, pct = ps.autopilot.shadow_window_drafts, ps.autopilot.shadow_min_unchanged_pct
            decided = pick(draw, [0, 1, max(w - 1, 0), w, w + 7])
            # around the bar: the least share that passes, one fewer, all, none
            least = -((-pct * decided) // 100)
            same = pick(draw, [least, max(least - 1, 0), decided, 0])
            out |= {"shadow_decided": decided, "shadow_unchanged": min(same, decided)}
        return out
    if action == "set_sending_mode":
        scope = pick(draw, ["org", "segment"])
        out = {
            "actor_role": role,
            "switch": pick(draw, ["shadow_mode", "maintenance", "cron_pause"]),
            "value": draw(BOOL),
            "scope": scope,
        }
        if scope == "segment":
            out["segment"] = "SMB"
        return out
    facts: dict[str, Any] = {"actor_role": role}
    if draw(BOOL):
        facts["target"] = "thing"
    return facts


ACTIONS = [
    "send_draft",
    "send_nudge",
    "offer_plan",
    "approve_plan",
    "grant_credit",
    "escalate_dispute",
    "change_cadence",
    "change_segment",
    "change_policy",
    "enable_autopilot",
    "set_sending_mode",
    "apply_cash",
]
# Outreach carries most of the logic, so it gets most of the examples.
WEIGHTED = ["send_draft"] * 5 + ["send_nudge"] * 3 + ["offer_plan", "approve_plan"] * 2 + ACTIONS


def facts_for(ps: PolicySet, action: str) -> st.SearchStrategy[dict[str, Any]]:
    if action in ("send_draft", "send_nudge"):
        return outreach_facts(ps, action)
    if action in ("offer_plan", "approve_plan"):
        return plan_facts(ps, action)
    if action == "grant_credit":
        return credit_facts(ps)
    if action == "apply_cash":
        return cash_facts(ps)
    return actor_facts(ps, action)


@st.composite
def actions(draw: st.DrawFn) -> tuple[int, str, dict[str, Any]]:
    """(policy variant index, action type, facts) across every action type and variant."""
    index = draw(_ints(0, len(variants()) - 1))
    action = pick(draw, WEIGHTED)
    return index, action, draw(facts_for(variants()[index], action))


@st.composite
def drafts(draw: st.DrawFn) -> tuple[int, dict[str, Any]]:
    """(policy variant index, send_draft facts)."""
    index = draw(_ints(0, len(variants()) - 1))
    return index, draw(outreach_facts(variants()[index], "send_draft"))
