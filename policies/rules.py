"""The seed guardrails: each a rule compiled from the policy set into durable_rules conditions.

A rule has a public id (shown in reasons), an outcome, a durable_rules condition over a small flat
*payload*, a sentence for ``plixo policy explain`` and a message built from the action's facts when
it fires. The payload is derived from the typed facts here too (:func:`derive`): local clock
readings in the contact's time zone, counts of touches in the window, integer percentages. The
derivation computes facts; the thresholds, limits, roles and calendars live in the compiled
conditions, so the rules (and only the rules) decide. A flag is in the payload only when it holds
(``conditions.holds`` / ``conditions.lacks``): durable_rules returns the whole payload to every
rule that fires, and the flags that do not hold were half of it.

Some rules *grant*: an action is allowed only if at least one granting rule fired (a human review,
Autopilot's gate, the actor's permission). Anything else falls to ``default.deny``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any

from policies import conditions as c
from policies.facts import (
    ApplyCashFacts,
    ApprovePlanFacts,
    ChangeFacts,
    EnableAutopilotFacts,
    EscalateDisputeFacts,
    GrantCreditFacts,
    OfferPlanFacts,
    PromiseFacts,
    SendDraftFacts,
    SendNudgeFacts,
    SetSendingModeFacts,
    _Facts,
)
from policies.holidaycal import CONTACT, place_or_none
from policies.money import format_bps, format_money
from policies.policy_set import ContentPolicy, PolicySet
from policies.textscan import PhraseMatcher, PhraseScan
from policies.timewin import QuietCalendar, clear_of, describe_local, start_of_local_day, zone
from policies.types import ActionType, Outcome

Payload = dict[str, Any]


class Ctx:
    """What a firing rule needs to phrase its message and compute its ``not_before``."""

    __slots__ = ("f", "ps", "d", "_memo")

    def __init__(
        self, facts: Any, ps: PolicySet, derived: dict[str, Any] | None = None, /, **more: Any
    ) -> None:
        self.f = facts
        self.ps = ps
        # ``derived`` is taken as it is (an outreach decision's is large: not copied again)
        self.d = more if derived is None else derived
        self._memo: dict[str, Any] = {}

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` at most once per decision (several rules share e.g. the next open time)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


@dataclass(frozen=True)
class Rule:
    """One guardrail. ``name`` is unique in its ruleset; ``rule_id`` is what reasons show."""

    name: str
    rule_id: str
    outcome: Outcome
    cond: c.Cond
    explain: str
    message: Callable[[Ctx], str]
    approver: str | None = None
    notify: tuple[str, ...] = ()
    grants: bool = False
    not_before: Callable[[Ctx], datetime] | None = None

    def definition(self) -> dict[str, Any]:
        return {"all": [{"m": c.anchor(self.cond)}]}


@dataclass
class RuleBook:
    """All rules of one policy set, by action type, plus what aggregation needs."""

    ps: PolicySet
    by_action: dict[ActionType, list[Rule]] = field(default_factory=dict)

    @cached_property
    def calendar(self) -> QuietCalendar:
        return QuietCalendar(self.ps.quiet_hours)


# --- small helpers ----------------------------------------------------------------------------


def ceil_bps(part: int, whole: int) -> int:
    """``part / whole`` in basis points, rounded up: 15.001 % is 1501, so a 1500 cap blocks it."""
    return -((-part * 10_000) // whole)


# Roles that are one function in an organisation read with "the"; Legal reads as a department.
_DEFINITE = {"Controller"}
_BARE = {"Legal"}
_SPECIAL = {"Sales": "a Sales user"}
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NOTIFY_LABELS = {"ar_team": "the A/R team", "legal": "Legal"}
ACTION_PHRASES = {
    ActionType.SEND_DRAFT: "send drafts",
    ActionType.SEND_NUDGE: "send nudges",
    ActionType.OFFER_PLAN: "offer payment plans",
    ActionType.APPROVE_PLAN: "approve payment plans",
    ActionType.GRANT_CREDIT: "grant credits and discounts",
    ActionType.ESCALATE_DISPUTE: "escalate disputes",
    ActionType.CHANGE_CADENCE: "change cadences",
    ActionType.CHANGE_SEGMENT: "change segments",
    ActionType.CHANGE_POLICY: "change the guardrail policy",
    ActionType.ENABLE_AUTOPILOT: "enable Autopilot",
    ActionType.SET_SENDING_MODE: "switch sending modes",
    ActionType.APPLY_CASH: "apply cash to invoices",
}


def _role_phrase(role: str) -> str:
    """'the Controller', 'Legal', 'an Admin', 'a Collector'."""
    if role in _SPECIAL:
        return _SPECIAL[role]
    if role in _DEFINITE:
        return f"the {role}"
    if role in _BARE:
        return role
    return f"{'an' if role[:1] in 'AEIOU' else 'a'} {role}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _or_above(role: str) -> str:
    return f"{_role_phrase(role)} or above"


def _labels(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(NOTIFY_LABELS.get(n, n) for n in names)


def _money(ps: PolicySet, minor: int) -> str:
    return format_money(minor, ps.currency)


def _hours(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds / 3600:.1f} h"


def _ago(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    if secs < 0:
        return "in the future (clock skew)"
    if secs < 3600:
        return f"{secs // 60} min ago"
    return f"{secs / 3600:.1f} h ago"


class ThreatScanner:
    """Finds legal-threat and concession phrases in a draft (``policies.textscan``).

    Both lists are matched after Unicode normalisation and by stem in each phrase's language, so a
    model's own wording ("our lawyers", "suing", "we'll waive the fee") is caught, not only the
    listed phrase.
    """

    def __init__(self, content: ContentPolicy) -> None:
        self.threats = PhraseMatcher(content.threat_phrases())
        self.concessions = PhraseMatcher(content.concession_phrases)
        self.demands = PhraseMatcher(content.payment_demand_phrases)
        self._both = PhraseScan([self.threats, self.concessions])

    def threat_and_concession(self, text: str) -> tuple[str | None, str | None]:
        """``(search(text), concession(text))`` in one pass (every draft asks both)."""
        threat, concession = self._both.first(text)
        return (threat.found if threat else None, concession.found if concession else None)

    def search(self, text: str) -> str | None:
        """The first legal-threat phrase found (the text's words that matched), or None."""
        hit = self.threats.find(text)
        return hit.found if hit else None

    def concession(self, text: str) -> str | None:
        """The first concession phrase found (the text's words that matched), or None."""
        hit = self.concessions.find(text)
        return hit.found if hit else None

    def demand(self, text: str) -> str | None:
        """The first payment-demand phrase found (the text's words that matched), or None."""
        hit = self.demands.find(text)
        return hit.found if hit else None


# --- derivation: typed facts -> durable_rules payload ------------------------------------------


def _flags(p: Payload, **flags: bool) -> None:
    """Assert the flags that hold; one that does not is left out (``conditions.lacks``)."""
    for name, value in flags.items():
        if value:
            p[name] = True


def _derive_outreach(
    f: SendDraftFacts | SendNudgeFacts, book: RuleBook, p: Payload, d: dict[str, Any]
) -> None:
    ps = book.ps
    tz = zone(f.contact.timezone)
    now = f.now.astimezone(UTC)
    loc = now.astimezone(tz)
    today = loc.date()
    d["tz"], d["now"], d["loc"] = tz, now, loc
    contact = f.contact
    # Dispute correspondence (a reply from the dispute panel) is not dunning: its own rules.
    _flags(
        p,
        maintenance_window=f.maintenance,
        cron_paused=f.cron_paused,
        opted_out=contact.opted_out,
        bounced=contact.bounced,
        consent=contact.consent,
        dispute_correspondence=isinstance(f, SendDraftFacts) and f.dispute_correspondence,
    )
    disputed = [i.number for i in f.invoices if i.disputed]
    d["disputed"] = disputed
    p["disputed"] = len(disputed)
    # The contact's clock.
    p["local_minute_of_day"] = loc.hour * 60 + loc.minute
    p["local_weekday"] = loc.weekday()
    # The contact's holidays: the policy's calendars, "contact" meaning the contact's country.
    cal = book.calendar.for_place(place_or_none(contact.country, contact.subdivision))
    d["cal"] = cal
    d["holiday"] = cal.holiday(today)
    if d["holiday"] is not None:
        p["local_holiday"] = True
    # The organisation's calendar: promise dates are its dates (the contact's only sets when).
    business_day = f.business_date or today
    p["business_day_ordinal"] = business_day.toordinal()
    # Cadence: touches inside the rolling window, and seconds since the latest touch.
    since = now - timedelta(days=ps.cadence.window_days)
    touches = sorted([t.astimezone(UTC) for t in f.touches])
    in_window = [t for t in touches if t > since]
    d["in_window"] = in_window
    p["touches_in_window"] = len(in_window)
    if touches:
        d["last"] = touches[-1]
        p["seconds_since_last_touch"] = math.floor((now - touches[-1]).total_seconds())
    # Promises on the invoices of this action: open ones pause until date + grace (inclusive, on
    # the organisation's calendar: ``business_date``); missed ones, or open ones past their
    # grace, resume the cadence.
    # A reminder about one open promise (send_draft ``about_promise``) is not paused by that
    # promise; it must name an open promise on these invoices that is not past its grace.
    numbers = {i.number for i in f.invoices}
    about = f.about_promise if isinstance(f, SendDraftFacts) else None
    open_ends: list[tuple[int, Any]] = []
    pausing: list[tuple[int, Any]] = []
    missed: list[Any] = []
    reminded = False
    for pr in f.promises:
        if not numbers.intersection(pr.invoice_numbers):
            continue
        grace = pr.grace_days if pr.grace_days is not None else ps.promises.default_grace_days
        end = pr.promised_date + timedelta(days=grace)
        if pr.status == "open":
            open_ends.append((end.toordinal(), pr))
            if not reminded and _reminds(about, pr, grace) and business_day <= end:
                reminded = True
            else:
                pausing.append((end.toordinal(), pr))
        elif pr.status == "missed":
            missed.append(pr)
    if pausing:
        p["promise_pause_end_ordinal"] = max(e for e, _ in pausing)
    if open_ends:
        p["open_promise_end_ordinal"] = min(e for e, _ in open_ends)
    _flags(
        p, promise_missed=bool(missed), promise_reminder_not_open=about is not None and not reminded
    )
    d["open_promises"] = pausing
    d["all_open_promises"] = open_ends
    d["missed_promises"] = missed


def _reminds(about: PromiseFacts | None, pr: PromiseFacts, grace: int) -> bool:
    """Whether ``about`` (a reminder's promise) is the open promise ``pr``, whose grace is given."""
    return (
        about is not None
        and about.status == "open"
        and about.promised_date == pr.promised_date
        and set(about.invoice_numbers) == set(pr.invoice_numbers)
        and (about.grace_days is None or about.grace_days == grace)
    )


def _derive_send_draft(f: SendDraftFacts, book: RuleBook, scanner: ThreatScanner) -> Ctx:
    ps = book.ps
    p: Payload = {"k": 1}
    d: dict[str, Any] = {"payload": p}
    _derive_outreach(f, book, p, d)
    if f.data_ready_score is not None:
        p["data_ready_score"] = f.data_ready_score
    # Three states, not a flag: unknown (absent) blocks Autopilot (fail closed).
    if f.sending_domain_verified is not None:
        p["sending_domain_verified"] = f.sending_domain_verified
    # Who approved this version: the most senior rank (the rule compares it with the reviewer
    # minimum; unknown roles rank -1) and whether Legal is among them.
    ranks = ps.access.roles
    p["reviewer_rank"] = max((ranks.get(r, -1) for r in f.approved_by_roles), default=-1)
    # Content against the ledger.
    s, ledger = f.content, f.ledger
    threat, concession = scanner.threat_and_concession(s.body)
    d["threat"] = threat
    d["concession"] = concession
    # Dunning wording matters only in dispute correspondence (elsewhere asking is the point).
    demand = scanner.demand(s.body) if f.dispute_correspondence else None
    d["payment_demand"] = demand
    link = (s.pay_link or "").strip()
    _flags(
        p,
        org_shadow_mode=f.org_shadow_mode,
        segment_shadow_mode=f.segment_shadow_mode,
        step_shadow_mode=f.step_shadow_mode,
        autopilot_enabled=f.autopilot_enabled,
        approved_by_legal=ps.content.legal_role in f.approved_by_roles,
        threat=threat is not None,
        concession=concession is not None,
        ledger_backs_concession=ledger.concession_approved,
        concession_approved=ps.content.concession_role in f.approved_by_roles,
        payment_demand=demand is not None,
        has_link=bool(link),
        link_ok=bool(link) and link == (ledger.pay_link or "").strip(),
    )
    p["stated_invoices"] = len(s.invoice_numbers)
    known_inv = set(ledger.invoice_numbers)
    bad_inv = [n for n in s.invoice_numbers if n not in known_inv]
    known_amt = {(m.amount_minor, m.currency) for m in ledger.amounts}
    bad_amt = [m for m in s.amounts if (m.amount_minor, m.currency) not in known_amt]
    known_dates = set(ledger.dates)
    bad_dates = [x for x in s.dates if x not in known_dates]
    d.update(wrong_invoice_numbers=bad_inv, wrong_amounts=bad_amt, bad_dates=bad_dates)
    p["wrong_invoice_numbers"] = len(bad_inv)
    p["wrong_amounts"] = len(bad_amt)
    p["wrong_dates"] = len(bad_dates)
    return Ctx(f, ps, d)


def _derive_send_nudge(f: SendNudgeFacts, book: RuleBook) -> Ctx:
    ps = book.ps
    p: Payload = {"k": 1, "role": f.actor_role}
    _flags(p, template_approved=f.template_approved)
    d: dict[str, Any] = {"payload": p}
    _derive_outreach(f, book, p, d)
    now = d["now"]
    scheduled = sorted(t.astimezone(UTC) for t in f.scheduled_autopilot_touches)
    d["scheduled"] = scheduled
    if scheduled:
        nearest = min(scheduled, key=lambda s: abs(s - now))
        d["nearest"] = nearest
        p["seconds_to_scheduled_autopilot"] = math.floor(abs((nearest - now).total_seconds()))
    return Ctx(f, ps, d)


def _derive_plan(f: OfferPlanFacts | ApprovePlanFacts, ps: PolicySet) -> Ctx:
    via = f.proposed_via if isinstance(f, OfferPlanFacts) else "staff"
    role = f.actor_role or ""
    p: Payload = {
        "k": 1,
        "proposed_via": via,
        "role": role,
        "total": f.total_minor,
        "currency": f.currency,
        "installments": f.installments,
        "months": f.months,
        "discount_bps": ceil_bps(f.discount_minor, f.total_minor),
    }
    _flags(p, non_standard_terms=f.non_standard_terms, legal_approved=f.legal_approved)
    if f.actor_limit_minor is not None:
        p["actor_limit_minor"] = f.actor_limit_minor
    return Ctx(f, ps, payload=p)


def _derive_credit(f: GrantCreditFacts, ps: PolicySet) -> Ctx:
    p: Payload = {
        "k": 1,
        "role": f.actor_role,
        "kind": f.kind,
        "amount": f.amount_minor,
        "currency": f.currency,
        "invoice_balance": f.invoice_balance_minor,
        "discount_bps": ceil_bps(f.amount_minor, f.invoice_amount_minor),
    }
    if f.actor_limit_minor is not None:
        p["actor_limit_minor"] = f.actor_limit_minor
    return Ctx(f, ps, payload=p)


def _derive_cash(f: ApplyCashFacts, ps: PolicySet) -> Ctx:
    p: Payload = {
        "k": 1,
        "role": f.actor_role or "",
        "confidence": f.confidence,
        "amount": f.amount_minor,
        "currency": f.currency,
        "kind": f.match_kind,
        "write_off": f.write_off_minor,
        "write_off_kind": f.write_off_kind or "",
        # the write-off against the invoices' open balance, rounded up: 2.001 % never passes 2 %
        "write_off_bps": ceil_bps(f.write_off_minor, f.invoices_minor or 1)
        if f.write_off_minor
        else 0,
        "on_account": f.on_account_minor,
        # the surplus kept on account against the invoices' open balance, rounded up
        "on_account_bps": ceil_bps(f.on_account_minor, f.invoices_minor) if f.invoices_minor else 0,
    }
    _flags(p, auto=f.actor_role is None)
    return Ctx(f, ps, payload=p)


def _derive_actor(f: Any, ps: PolicySet) -> Ctx:
    p: Payload = {"k": 1, "role": f.actor_role}
    if isinstance(f, EscalateDisputeFacts):
        p["dispute_status"] = f.dispute_status
    elif isinstance(f, EnableAutopilotFacts):
        p["data_ready_score"] = f.data_ready_score
        p["sending_domain_verified"] = f.sending_domain_verified
        # a flag, not the count's existence: durable_rules' $ex does not see a 0
        if f.shadow_decided is not None and f.shadow_unchanged is not None:
            p["shadow_recorded"] = True
            p["shadow_decided"] = f.shadow_decided
            # approved unchanged in basis points, rounded down: 94.99 % never passes a 95 % bar
            p["shadow_unchanged_bps"] = (
                (f.shadow_unchanged * 10_000) // f.shadow_decided if f.shadow_decided else 0
            )
    return Ctx(f, ps, payload=p)


def derive(action: ActionType, facts: _Facts, book: RuleBook, scanner: ThreatScanner) -> Ctx:
    """The durable_rules payload (``ctx.d['payload']``) and message context for one action."""
    ps = book.ps
    if isinstance(facts, SendDraftFacts):
        return _derive_send_draft(facts, book, scanner)
    if isinstance(facts, SendNudgeFacts):
        return _derive_send_nudge(facts, book)
    if isinstance(facts, OfferPlanFacts | ApprovePlanFacts):
        return _derive_plan(facts, ps)
    if isinstance(facts, GrantCreditFacts):
        return _derive_credit(facts, ps)
    if isinstance(facts, ChangeFacts | EscalateDisputeFacts | EnableAutopilotFacts):
        return _derive_actor(facts, ps)
    if isinstance(facts, SetSendingModeFacts):
        return _derive_actor(facts, ps)
    if isinstance(facts, ApplyCashFacts):
        return _derive_cash(facts, ps)
    raise TypeError(f"no derivation for {type(facts).__name__} ({action})")


# --- the rules ----------------------------------------------------------------------------------


def _access_rules(ps: PolicySet, action: ActionType, scope: c.Cond = c.ALWAYS) -> list[Rule]:
    perms = ps.permissions_for_action(action)
    matrix = ps.access
    holders = [r for r in matrix.roles if any(matrix.allowed(r, p) for p in perms)]
    perm = " or ".join(perms)
    sentence = "; or ".join(matrix.permissions[p].rstrip(".").lower() for p in perms)
    who = ", ".join(holders) if holders else "no role"
    rules = [
        Rule(
            name="access.denied",
            rule_id="access.denied",
            outcome=Outcome.BLOCK,
            cond=c.all_of(scope, c.none_of("role", holders)),
            explain=f"Only roles with {perm} ({who}) may {ACTION_PHRASES[action]}.",
            message=lambda x: (
                f"{x.f.actor_role or 'This actor'} may not {ACTION_PHRASES[action]}: "
                f"needs the {perm} permission ({sentence})"
            ),
        )
    ]
    if holders:
        rules.append(
            Rule(
                name="access.granted",
                rule_id="access.granted",
                outcome=Outcome.ALLOW,
                cond=c.all_of(scope, c.one_of("role", holders)),
                explain=f"Roles with {perm} may {ACTION_PHRASES[action]}.",
                message=lambda x: (
                    f"{x.f.actor_role} holds the "
                    f"{next(p for p in perms if matrix.allowed(x.f.actor_role, p))} permission"
                ),
                grants=True,
            )
        )
    return rules


def _outreach_rules(ps: PolicySet, cal: QuietCalendar) -> list[Rule]:
    qh = ps.quiet_hours
    cad = ps.cadence
    gap_secs = cad.min_gap_hours * 3600
    window = timedelta(days=cad.window_days)
    recheck = timedelta(minutes=ps.sending.pause_recheck_minutes)

    def quiet_nb(x: Ctx) -> datetime:
        contact_cal: QuietCalendar = x.d["cal"]
        opened: datetime = x.once("next_open", lambda: contact_cal.next_open(x.d["now"], x.d["tz"]))
        return opened

    def quiet_msg(prefix: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
        return lambda x: (
            f"{prefix(x)}: deferred to "
            + x.once("next_open_text", lambda: describe_local(quiet_nb(x), x.d["tz"]))
        )

    def window_nb(x: Ctx) -> datetime:
        in_window: list[datetime] = x.d["in_window"]
        return in_window[len(in_window) - cad.max_touches] + window

    def resume_nb(x: Ctx) -> datetime:
        end = date.fromordinal(x.d["payload"]["promise_pause_end_ordinal"])
        return start_of_local_day(end + timedelta(days=1), x.d["tz"])

    def open_promise_msg(x: Ctx) -> str:
        end = date.fromordinal(x.d["payload"]["promise_pause_end_ordinal"])
        prs = [pr for e, pr in x.d["open_promises"] if e >= x.d["payload"]["business_day_ordinal"]]
        dates = ", ".join(sorted({pr.promised_date.isoformat() for pr in prs}))
        invs = ", ".join(sorted({n for pr in prs for n in pr.invoice_numbers}))
        return (
            f"Open promise-to-pay (due {dates}) covers {invs}: chasing paused through {end} "
            f"(date plus grace), resumes {describe_local(resume_nb(x), x.d['tz'])}"
        )

    def missed_msg(x: Ctx) -> str:
        bday = x.d["payload"]["business_day_ordinal"]
        prs = list(x.d["missed_promises"]) + [pr for e, pr in x.d["all_open_promises"] if e < bday]
        dates = ", ".join(sorted({pr.promised_date.isoformat() for pr in prs}))
        return f"Promise-to-pay due {dates} was missed: the cadence resumes"

    window_cond = None
    if cal.has_window:
        if cal.start > cal.end:
            window_cond = c.any_of(
                c.gte("local_minute_of_day", cal.start), c.lt("local_minute_of_day", cal.end)
            )
        else:
            window_cond = c.all_of(
                c.gte("local_minute_of_day", cal.start), c.lt("local_minute_of_day", cal.end)
            )

    rules = [
        Rule(
            name="contact.opted_out",
            rule_id="contact.opted_out",
            outcome=Outcome.BLOCK,
            cond=c.holds("opted_out"),
            explain="Contacts who opted out of a channel are never contacted on it.",
            message=lambda x: f"Contact opted out of {x.f.channel}: not contacted",
        ),
        Rule(
            name="contact.bounced",
            rule_id="contact.bounced",
            outcome=Outcome.BLOCK,
            cond=c.holds("bounced"),
            explain="Contacts whose address bounced are not contacted on that channel.",
            message=lambda x: f"Contact's {x.f.channel} address bounced: not contacted",
        ),
        Rule(
            name="contact.no_consent",
            rule_id="contact.no_consent",
            outcome=Outcome.BLOCK,
            cond=c.lacks("consent"),
            explain="Contacts without consent for a channel are not contacted on it.",
            message=lambda x: f"No consent to contact by {x.f.channel}: not contacted",
        ),
        Rule(
            name="dispute.no_dunning",
            rule_id="dispute.no_dunning",
            outcome=Outcome.BLOCK,
            cond=c.all_of(c.gt("disputed", 0), c.lacks("dispute_correspondence")),
            explain=(
                "Disputed invoices are never dunned: outreach goes to the dispute workflow (only "
                "dispute correspondence may name them)."
            ),
            message=lambda x: (
                f"Invoice {', '.join(x.d['disputed'])} is disputed: outreach blocked, route it "
                "to the dispute workflow"
            ),
        ),
        Rule(
            name="sending.maintenance",
            rule_id="sending.maintenance",
            outcome=Outcome.DEFER,
            cond=c.holds("maintenance_window"),
            explain=(
                "While the maintenance toggle is on nothing leaves; the action is re-checked "
                f"after {ps.sending.pause_recheck_minutes} minutes."
            ),
            message=lambda x: "Maintenance toggle is on: nothing leaves, re-checked later",
            not_before=lambda x: x.d["now"] + recheck,
        ),
        Rule(
            name="sending.cron_paused",
            rule_id="sending.cron_paused",
            outcome=Outcome.DEFER,
            cond=c.holds("cron_paused"),
            explain=(
                "While the cron pause is on nothing leaves; the action is re-checked after "
                f"{ps.sending.pause_recheck_minutes} minutes."
            ),
            message=lambda x: "Cron pause is on: nothing leaves, re-checked later",
            not_before=lambda x: x.d["now"] + recheck,
        ),
        Rule(
            name="cadence.max_touches",
            rule_id="cadence.max_touches",
            outcome=Outcome.DEFER,
            cond=c.gte("touches_in_window", cad.max_touches),
            explain=(
                f"At most {cad.max_touches} touches per contact in any rolling "
                f"{cad.window_days} days."
            ),
            message=lambda x: (
                f"{len(x.d['in_window'])} touches in the last {cad.window_days} days "
                f"(at most {cad.max_touches}): not before "
                f"{describe_local(window_nb(x), x.d['tz'])}"
            ),
            not_before=window_nb,
        ),
        Rule(
            name="cadence.min_gap",
            rule_id="cadence.min_gap",
            outcome=Outcome.DEFER,
            cond=c.all_of(
                c.present("seconds_since_last_touch"), c.lt("seconds_since_last_touch", gap_secs)
            ),
            explain=f"At least {cad.min_gap_hours} hours between two touches to a contact.",
            message=lambda x: (
                f"Last touch {_ago(x.d['now'] - x.d['last'])} (minimum gap "
                f"{_hours(gap_secs)}): not before "
                f"{describe_local(x.d['last'] + timedelta(seconds=gap_secs), x.d['tz'])}"
            ),
            not_before=lambda x: x.d["last"] + timedelta(seconds=gap_secs),
        ),
        Rule(
            name="promise.open",
            rule_id="promise.open",
            outcome=Outcome.DEFER,
            cond=c.all_of(
                c.present("promise_pause_end_ordinal"),
                c.lte("business_day_ordinal", c.ref("promise_pause_end_ordinal")),
            ),
            explain=(
                "An open promise-to-pay pauses chasing of its invoices until its date plus "
                f"the grace period ({ps.promises.default_grace_days} days unless the promise "
                "says otherwise)."
            ),
            message=open_promise_msg,
            not_before=resume_nb,
        ),
        Rule(
            name="promise.missed",
            rule_id="promise.missed",
            outcome=Outcome.ALLOW,
            cond=c.any_of(  # the branches exclude each other: the rule fires once
                c.holds("promise_missed"),
                c.all_of(
                    c.present("open_promise_end_ordinal"),
                    c.gt("business_day_ordinal", c.ref("open_promise_end_ordinal")),
                    c.lacks("promise_missed"),
                ),
            ),
            explain="A missed promise (or one past its grace) resumes the cadence.",
            message=missed_msg,
        ),
    ]
    if window_cond is not None:
        rules.append(
            Rule(
                name="quiet_hours.window",
                rule_id="quiet_hours.window",
                outcome=Outcome.DEFER,
                cond=window_cond,
                explain=(
                    f"No outreach between {qh.start} and {qh.end} on the contact's own clock; "
                    "deferred to the next allowed moment."
                ),
                message=quiet_msg(
                    lambda x: (
                        f"Quiet hours {qh.start}-{qh.end} for the contact "
                        f"({x.d['loc'].hour:02d}:{x.d['loc'].minute:02d} {x.d['tz'].key})"
                    )
                ),
                not_before=quiet_nb,
            )
        )
    if qh.weekend_days:
        names = ", ".join(d.value.capitalize() for d in qh.weekend_days)
        rules.append(
            Rule(
                name="quiet_hours.weekend",
                rule_id="quiet_hours.weekend",
                outcome=Outcome.DEFER,
                cond=c.one_of("local_weekday", sorted(qh.weekend_indexes)),
                explain=f"No outreach on weekend days ({names}) in the contact's time zone.",
                message=quiet_msg(
                    lambda x: (
                        f"{DAY_NAMES[x.d['loc'].weekday()]} for the contact ({x.d['tz'].key}) "
                        "is a weekend day"
                    )
                ),
                not_before=quiet_nb,
            )
        )
    if qh.holidays or qh.holiday_calendars:
        calendars = ", ".join(
            "the contact's country" if e == CONTACT else e for e in qh.holiday_calendars
        )
        rules.append(
            Rule(
                name="quiet_hours.holiday",
                rule_id="quiet_hours.holiday",
                outcome=Outcome.DEFER,
                cond=c.holds("local_holiday"),
                explain=(
                    "No outreach on "
                    + " or ".join(
                        part
                        for part in (
                            f"a public holiday of {calendars}" if calendars else "",
                            f"the {len(qh.holidays)} listed holidays" if qh.holidays else "",
                        )
                        if part
                    )
                    + " in the contact's time zone."
                ),
                message=quiet_msg(
                    lambda x: (
                        f"{x.d['loc'].date().isoformat()} is a holiday for the contact "
                        f"({x.d['holiday']})"
                    )
                ),
                not_before=quiet_nb,
            )
        )
    return rules


def _reminder_not_open_msg(x: Ctx) -> str:
    pr: PromiseFacts = x.f.about_promise
    return (
        f"Fact about_promise names the promise-to-pay due {pr.promised_date.isoformat()} on "
        f"{', '.join(sorted(set(pr.invoice_numbers)))}, which is not open on this draft's "
        "invoices (missed, past its grace, or not theirs): reminder blocked (fail closed)"
    )


def _send_draft_rules(ps: PolicySet) -> list[Rule]:
    matrix = ps.access
    min_role = ps.shadow_mode.reviewer_min_role
    min_rank = matrix.rank(min_role)
    legal = ps.content.legal_role
    concession_role = ps.content.concession_role
    threshold = ps.autopilot.data_ready_threshold
    unreviewed = c.lt("reviewer_rank", min_rank)
    reviewed = c.gte("reviewer_rank", min_rank)
    no_shadow = c.all_of(
        c.lacks("org_shadow_mode"),
        c.lacks("segment_shadow_mode"),
        c.lacks("step_shadow_mode"),
    )
    autopilot_path = c.all_of(unreviewed, no_shadow)
    review = f"{_or_above(min_role)} must review this draft"

    def shadow_msg(x: Ctx) -> str:
        f: SendDraftFacts = x.f
        where = []
        if f.org_shadow_mode:
            where.append("the organisation")
        if f.segment_shadow_mode:
            where.append(f"segment {f.segment!r}")
        if f.step_shadow_mode:
            where.append("this cadence step")
        return f"Shadow Mode is on for {' and '.join(where)}: {review}"

    rules = [
        Rule(
            name="shadow.review_required",
            rule_id="shadow.review_required",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(
                unreviewed,
                c.any_flag("org_shadow_mode", "segment_shadow_mode", "step_shadow_mode"),
            ),
            explain=(
                "While the organisation, the segment or the cadence step is in Shadow Mode every "
                "outbound draft "
                f"needs human review by {_or_above(min_role)}, whatever else allows it."
            ),
            message=shadow_msg,
            approver=min_role,
        ),
        Rule(
            name="review.approved",
            rule_id="review.approved",
            outcome=Outcome.ALLOW,
            cond=reviewed,
            explain=f"A draft approved by {_or_above(min_role)} may be sent.",
            message=lambda x: (
                "Approved in human review by "
                + ", ".join(r for r in x.f.approved_by_roles if matrix.at_least(r, min_role))
            ),
            grants=True,
        ),
        Rule(
            name="autopilot.not_enabled",
            rule_id="autopilot.not_enabled",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(autopilot_path, c.lacks("autopilot_enabled")),
            explain="Autopilot sends only for segments where it is enabled; else a human reviews.",
            message=lambda x: f"Autopilot is not enabled for segment {x.f.segment!r}: {review}",
            approver=min_role,
        ),
        Rule(
            name="autopilot.not_data_ready",
            rule_id="autopilot.not_data_ready",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(
                autopilot_path, c.present("data_ready_score"), c.lt("data_ready_score", threshold)
            ),
            explain=f"Autopilot sends only while the organisation is Data-Ready (>= {threshold}).",
            message=lambda x: (
                f"Data-Ready score {x.f.data_ready_score} is below {threshold}: Autopilot may not "
                f"send; {review}"
            ),
            approver=min_role,
        ),
        Rule(
            name="autopilot.domain_unverified",
            rule_id="autopilot.domain_unverified",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(autopilot_path, c.eq("sending_domain_verified", False)),
            explain="Autopilot sends only from a verified sending domain.",
            message=lambda x: f"Sending domain is not verified: Autopilot may not send; {review}",
            approver=min_role,
        ),
        Rule(
            name="autopilot.score_missing",
            rule_id="facts.missing",
            outcome=Outcome.BLOCK,
            cond=c.all_of(autopilot_path, c.absent("data_ready_score")),
            explain="Autopilot without a Data-Ready score is blocked (fail closed).",
            message=lambda x: (
                "Missing fact data_ready_score, needed by autopilot.not_data_ready: blocked "
                "(fail closed)"
            ),
        ),
        Rule(
            name="autopilot.domain_missing",
            rule_id="facts.missing",
            outcome=Outcome.BLOCK,
            cond=c.all_of(autopilot_path, c.absent("sending_domain_verified")),
            explain="Autopilot without the sending-domain status is blocked (fail closed).",
            message=lambda x: (
                "Missing fact sending_domain_verified, needed by autopilot.domain_unverified: "
                "blocked (fail closed)"
            ),
        ),
        Rule(
            name="autopilot.allowed",
            rule_id="autopilot.allowed",
            outcome=Outcome.ALLOW,
            cond=c.all_of(
                autopilot_path,
                c.holds("autopilot_enabled"),
                c.gte("data_ready_score", threshold),
                c.eq("sending_domain_verified", True),
            ),
            explain=(
                "Autopilot may send when it is enabled for the segment, the organisation is "
                f"Data-Ready (>= {threshold}), the sending domain is verified and neither Shadow "
                "Mode, the maintenance toggle nor the cron pause is on."
            ),
            message=lambda x: (
                f"Autopilot may send: segment {x.f.segment!r} enabled, Data-Ready "
                f"{x.f.data_ready_score} >= {threshold}, sending domain verified"
            ),
            grants=True,
        ),
        Rule(
            name="content.legal_threat",
            rule_id="content.legal_threat",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(c.holds("threat"), c.lacks("approved_by_legal")),
            explain=(
                f"A draft with legal-threat language ({len(ps.content.legal_threat_phrases)} "
                f"listed phrases) needs {legal} approval."
            ),
            message=lambda x: (
                f"Draft contains legal-threat language ({x.d['threat']!r}): "
                f"{legal} approval required"
            ),
            approver=legal,
        ),
        Rule(
            name="content.unbacked_concession",
            rule_id="content.unbacked_concession",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(
                c.holds("concession"),
                c.lacks("ledger_backs_concession"),
                c.lacks("concession_approved"),
            ),
            explain=(
                "A draft offering a discount, waiver or new terms that the ledger does not back "
                f"(no approved concession on its invoices) needs {concession_role} approval."
            ),
            message=lambda x: (
                f"Draft offers a concession the ledger does not back ({x.d['concession']!r}): "
                f"{concession_role} approval required"
            ),
            approver=concession_role,
        ),
        Rule(
            name="promise.reminder_not_open",
            rule_id="promise.reminder_not_open",
            outcome=Outcome.BLOCK,
            cond=c.holds("promise_reminder_not_open"),
            explain=(
                "A reminder about a promise-to-pay (fact about_promise) goes out only while that "
                "promise is open on the draft's invoices and not past its grace; otherwise it is "
                "blocked (fail closed)."
            ),
            message=_reminder_not_open_msg,
        ),
        Rule(
            name="content.missing_invoice_reference",
            rule_id="content.missing_invoice_reference",
            outcome=Outcome.BLOCK,
            cond=c.eq("stated_invoices", 0),
            explain="A draft without an invoice reference is blocked.",
            message=lambda x: "Draft does not reference an invoice number: blocked",
        ),
        Rule(
            name="content.missing_pay_link",
            rule_id="content.missing_pay_link",
            outcome=Outcome.BLOCK,
            cond=c.all_of(c.lacks("has_link"), c.lacks("dispute_correspondence")),
            explain="A draft without a pay link is blocked (dispute correspondence needs none).",
            message=lambda x: "Draft has no pay link: blocked",
        ),
        Rule(
            name="content.invoice_mismatch",
            rule_id="content.invoice_mismatch",
            outcome=Outcome.BLOCK,
            cond=c.gt("wrong_invoice_numbers", 0),
            explain="A draft stating an invoice number the ledger does not have is blocked.",
            message=lambda x: (
                f"Draft states invoice {', '.join(x.d['wrong_invoice_numbers'])}, "
                "not in the ledger: blocked"
            ),
        ),
        Rule(
            name="content.amount_mismatch",
            rule_id="content.amount_mismatch",
            outcome=Outcome.BLOCK,
            cond=c.gt("wrong_amounts", 0),
            explain="A draft stating an amount that differs from the ledger is blocked.",
            message=lambda x: (
                "Draft states "
                + ", ".join(format_money(m.amount_minor, m.currency) for m in x.d["wrong_amounts"])
                + ", which the ledger does not show: blocked"
            ),
        ),
        Rule(
            name="content.date_mismatch",
            rule_id="content.date_mismatch",
            outcome=Outcome.BLOCK,
            cond=c.gt("wrong_dates", 0),
            explain="A draft stating a date that differs from the ledger is blocked.",
            message=lambda x: (
                "Draft states "
                + ", ".join(dt.isoformat() for dt in x.d["bad_dates"])
                + ", which the ledger does not show: blocked"
            ),
        ),
        Rule(
            name="content.pay_link_mismatch",
            rule_id="content.pay_link_mismatch",
            outcome=Outcome.BLOCK,
            cond=c.all_of(c.holds("has_link"), c.lacks("link_ok")),
            explain="A draft whose pay link differs from the ledger's is blocked.",
            message=lambda x: "Draft's pay link differs from the ledger's: blocked",
        ),
    ]
    return rules + _correspondence_rules(ps)


def _correspondence_rules(ps: PolicySet) -> list[Rule]:
    """Dispute correspondence: a reply from the dispute panel may name the disputed invoice and
    needs no pay link, but never asks for the disputed amount, and a person always reviews it."""
    min_role = ps.shadow_mode.reviewer_min_role
    corr = c.holds("dispute_correspondence")
    about_dispute = c.all_of(corr, c.gt("disputed", 0))

    def invoices(x: Ctx) -> str:
        return ", ".join(x.d["disputed"])

    return [
        Rule(
            name="dispute.correspondence",
            rule_id="dispute.correspondence",
            outcome=Outcome.ALLOW,
            cond=about_dispute,
            explain=(
                "Dispute correspondence (a reply from the dispute panel) may name a disputed "
                "invoice and needs no pay link."
            ),
            message=lambda x: (
                f"Dispute correspondence about {invoices(x)}: it may name the disputed invoice "
                "and needs no pay link, but may not ask for payment"
            ),
        ),
        Rule(
            name="dispute.correspondence_demand",
            rule_id="dispute.correspondence_demand",
            outcome=Outcome.BLOCK,
            cond=c.all_of(about_dispute, c.holds("payment_demand")),
            explain=(
                "Dispute correspondence asking for payment of a disputed invoice (dunning wording, "
                "`content.payment_demand_phrases`) is blocked."
            ),
            message=lambda x: (
                f"Dispute correspondence asks for payment ({x.d['payment_demand']!r}) "
                f"of {invoices(x)}, "
                "which is disputed: blocked"
            ),
        ),
        Rule(
            name="dispute.correspondence_pay_link",
            rule_id="dispute.correspondence_pay_link",
            outcome=Outcome.BLOCK,
            cond=c.all_of(about_dispute, c.holds("has_link")),
            explain="Dispute correspondence carrying a pay link for a disputed invoice is blocked.",
            message=lambda x: (
                f"Dispute correspondence carries a pay link while {invoices(x)} is disputed: "
                "blocked"
            ),
        ),
        Rule(
            name="dispute.correspondence_review",
            rule_id="dispute.correspondence_review",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(corr, c.lt("reviewer_rank", ps.access.rank(min_role))),
            explain=(
                f"Dispute correspondence always needs review by {_or_above(min_role)}, Shadow "
                "Mode or not."
            ),
            message=lambda x: f"Dispute correspondence: {_or_above(min_role)} must review it",
            approver=min_role,
        ),
    ]


def _send_nudge_rules(ps: PolicySet) -> list[Rule]:
    gap = timedelta(hours=ps.nudges.min_gap_to_autopilot_hours)
    gap_secs = int(gap.total_seconds())
    notify = tuple(ps.nudges.notify)
    rules = _access_rules(ps, ActionType.SEND_NUDGE)
    rules += [
        Rule(
            name="nudge.template_not_approved",
            rule_id="nudge.template_not_approved",
            outcome=Outcome.BLOCK,
            cond=c.lacks("template_approved"),
            explain="Nudges use pre-approved templates only.",
            message=lambda x: "Nudge template is not pre-approved: blocked",
        ),
        Rule(
            name="nudge.autopilot_too_close",
            rule_id="nudge.autopilot_too_close",
            outcome=Outcome.DEFER,
            cond=c.all_of(
                c.present("seconds_to_scheduled_autopilot"),
                c.lt("seconds_to_scheduled_autopilot", gap_secs),
            ),
            explain=(
                "A nudge never overrides Autopilot sequencing: within "
                f"{ps.nudges.min_gap_to_autopilot_hours} hours of a scheduled Autopilot touch it "
                "is deferred until that long after it."
            ),
            message=lambda x: (
                f"Autopilot touch scheduled {describe_local(x.d['nearest'], x.d['tz'])}, within "
                f"{_hours(gap_secs)}: nudge deferred to "
                f"{describe_local(clear_of(x.d['now'], x.d['scheduled'], gap), x.d['tz'])}"
            ),
            not_before=lambda x: clear_of(x.d["now"], x.d["scheduled"], gap),
        ),
    ]
    if notify:
        rules.append(
            Rule(
                name="nudge.notify",
                rule_id="nudge.notify",
                outcome=Outcome.ALLOW,
                cond=c.ALWAYS,
                explain=f"Every nudge, whatever its outcome, is reported to {_labels(notify)}.",
                message=lambda x: f"Notified of this nudge: {_labels(notify)}",
                notify=notify,
            )
        )
    return rules


def _over_limit_message(
    noun: str, role: str, limit: int, cur: str, amount: Callable[[Ctx], int], escalation: str
) -> Callable[[Ctx], str]:
    def message(x: Ctx) -> str:
        return (
            f"{_cap(noun)} of {format_money(amount(x), cur)} exceeds the {role} limit of "
            f"{format_money(limit, cur)}: {escalation} approval required"
        )

    return message


def _within_limit_message(
    noun: str, role: str, limit: int, cur: str, amount: Callable[[Ctx], int]
) -> Callable[[Ctx], str]:
    def message(x: Ctx) -> str:
        within = f"is within the {role} limit of {format_money(limit, cur)}"
        return f"{_cap(noun)} of {format_money(amount(x), cur)} {within}"

    return message


def _limit_rules(
    ps: PolicySet,
    prefix: str,
    noun: str,
    plural: str,
    verb: str,
    limits_in: Callable[[str], dict[str, int]],
    amount_field: str,
    escalation: str,
    scope: c.Cond,
) -> list[Rule]:
    """Per-role limit rules compiled from the limits table of each currency the policy sets limits
    in (absent roles have a limit of 0). A limit applies only to amounts in its own currency."""
    matrix = ps.access
    rules: list[Rule] = []
    boss = _role_phrase(escalation)

    def amount(x: Ctx) -> int:
        return int(x.d["payload"][amount_field])

    for cur in ps.limit_currencies():
        limits = limits_in(cur)
        tag = "" if cur == ps.currency else f":{cur}"
        in_cur = c.eq("currency", cur)
        for role in matrix.roles:
            limit = limits.get(role, 0)
            is_role = c.all_of(scope, in_cur, c.eq("role", role))
            if limit:
                above = f"another {escalation}" if role == escalation else boss
                sentence = (
                    f"{_cap(_role_phrase(role))} may {verb} {plural} up to "
                    f"{format_money(limit, cur)} alone; above that {above} must approve."
                )
            elif cur == ps.currency:
                sentence = f"Every {noun} {_role_phrase(role)} {verb}s needs {boss}'s approval."
            else:
                sentence = (
                    f"Every {noun} in {cur} {_role_phrase(role)} {verb}s needs {boss}'s approval."
                )
            rules.append(
                Rule(
                    name=f"{prefix}.above_role_limit[{role}{tag}]",
                    rule_id=f"{prefix}.above_role_limit",
                    outcome=Outcome.NEEDS_APPROVAL,
                    cond=c.all_of(is_role, c.gt(amount_field, limit)),
                    explain=sentence,
                    message=_over_limit_message(noun, role, limit, cur, amount, escalation),
                    approver=escalation,
                )
            )
            rules.append(
                Rule(
                    name=f"{prefix}.within_limit[{role}{tag}]",
                    rule_id=f"{prefix}.within_limit",
                    outcome=Outcome.ALLOW,
                    cond=c.all_of(
                        is_role,
                        c.lte(amount_field, limit),
                        c.any_of(
                            c.absent("actor_limit_minor"),
                            c.lte(amount_field, c.ref("actor_limit_minor")),
                        ),
                    ),
                    explain=sentence,
                    message=_within_limit_message(noun, role, limit, cur, amount),
                )
            )
    rules.append(
        Rule(
            name=f"{prefix}.above_role_limit[unknown]",
            rule_id=f"{prefix}.above_role_limit",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(scope, c.none_of("role", list(matrix.roles))),
            explain=f"Every {noun} by a role the access matrix does not know needs {boss}.",
            message=lambda x: (
                f"Unknown role {x.d['payload']['role']!r} has no {noun} limit: {escalation} "
                "approval required"
            ),
            approver=escalation,
        )
    )
    rules.append(
        Rule(
            name=f"{prefix}.above_user_limit",
            rule_id=f"{prefix}.above_user_limit",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(
                scope,
                c.present("actor_limit_minor"),
                c.gt(amount_field, c.ref("actor_limit_minor")),
            ),
            explain=f"A user's own limit, when lower than their role's, also applies to {plural}.",
            message=lambda x: (
                f"{_cap(noun)} of {format_money(amount(x), x.f.currency)} exceeds this user's "
                f"limit of {format_money(x.d['payload']['actor_limit_minor'], x.f.currency)}: "
                f"{escalation} "
                "approval required"
            ),
            approver=escalation,
        )
    )
    return rules


def _threshold_message(threshold: str, role: str) -> Callable[[Ctx], str]:
    return lambda x: f"Plan exceeds {threshold}: {role} approval required"


def _plan_rules(ps: PolicySet, action: ActionType) -> list[Rule]:
    pl = ps.plans
    staff = c.eq("proposed_via", "staff")
    rules = _access_rules(ps, action, scope=staff)
    verb = "offer" if action is ActionType.OFFER_PLAN else "approve"
    rules += _limit_rules(
        ps,
        "plan",
        "plan",
        "payment plans",
        verb,
        ps.approval_limits_in,
        "total",
        pl.escalation_role,
        scope=staff,
    )
    listed = ", ".join(ps.limit_currencies())
    rules += [
        Rule(
            name="plan.currency",
            rule_id="plan.currency",
            outcome=Outcome.BLOCK,
            cond=c.none_of("currency", list(ps.limit_currencies())),
            explain=(
                f"Plans must be in a currency the policy sets limits in ({listed}); limits are "
                "never converted."
            ),
            message=lambda x: (
                f"The policy sets no plan limits in {x.f.currency} (only {listed}); an Admin must "
                "add them before plans in it: blocked"
            ),
        ),
        Rule(
            name="plan.max_installments",
            rule_id="plan.max_installments",
            outcome=Outcome.BLOCK,
            cond=c.gt("installments", pl.max_installments),
            explain=f"Plans of more than {pl.max_installments} installments are blocked.",
            message=lambda x: (
                f"Plan has {x.f.installments} installments (at most {pl.max_installments}): blocked"
            ),
        ),
        Rule(
            name="plan.max_months",
            rule_id="plan.max_months",
            outcome=Outcome.BLOCK,
            cond=c.gt("months", pl.max_months),
            explain=f"Plans longer than {pl.max_months} months are blocked.",
            message=lambda x: f"Plan runs {x.f.months} months (at most {pl.max_months}): blocked",
        ),
        Rule(
            name="plan.max_discount",
            rule_id="plan.max_discount",
            outcome=Outcome.BLOCK,
            cond=c.gt("discount_bps", pl.max_discount_bps),
            explain=f"Plans discounting more than {format_bps(pl.max_discount_bps)} are blocked.",
            message=lambda x: (
                f"Plan discount of {format_bps(x.d['payload']['discount_bps'])} exceeds "
                f"{format_bps(pl.max_discount_bps)}: blocked"
            ),
        ),
    ]
    for cur in ps.limit_currencies():
        above = ps.controller_above_in(cur)
        threshold = format_money(above, cur)
        tag = "" if cur == ps.currency else f"[{cur}]"
        rules.append(
            Rule(
                name=f"plan.above_controller_threshold{tag}",
                rule_id="plan.above_controller_threshold",
                outcome=Outcome.NEEDS_APPROVAL,
                cond=c.all_of(
                    c.eq("currency", cur), c.gt("total", above), c.ne("role", pl.escalation_role)
                ),
                explain=f"Plans above {threshold} always need {_role_phrase(pl.escalation_role)}.",
                message=_threshold_message(threshold, pl.escalation_role),
                approver=pl.escalation_role,
            )
        )
    rules += [
        Rule(
            name="plan.non_standard_terms",
            rule_id="plan.non_standard_terms",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(
                c.holds("non_standard_terms"),
                c.lacks("legal_approved"),
                c.ne("role", pl.legal_role),
            ),
            explain=f"Plans with non-standard legal terms need {pl.legal_role} approval.",
            message=lambda x: (
                f"Plan has non-standard legal terms: {pl.legal_role} approval required"
            ),
            approver=pl.legal_role,
        ),
    ]
    if action is ActionType.OFFER_PLAN:
        rules.append(
            Rule(
                name="plan.portal_proposal",
                rule_id="plan.portal_proposal",
                outcome=Outcome.NEEDS_APPROVAL,
                cond=c.eq("proposed_via", "portal"),
                explain=(
                    "A plan the payer proposes in the mini-portal needs "
                    f"{_or_above(pl.portal_approver_role)} before the customer sees it as agreed."
                ),
                message=lambda x: (
                    "Plan proposed by the payer in the mini-portal: "
                    f"{pl.portal_approver_role} approval required"
                ),
                approver=pl.portal_approver_role,
            )
        )
    return rules


def _credit_rules(ps: PolicySet) -> list[Rule]:
    cr = ps.credits
    rules = _access_rules(ps, ActionType.GRANT_CREDIT)
    rules += _limit_rules(
        ps,
        "credit",
        "credit",
        "credits and discounts",
        "grant",
        ps.credit_limits_in,
        "amount",
        cr.escalation_role,
        scope=c.ALWAYS,
    )
    rules += [
        Rule(
            name="credit.currency",
            rule_id="credit.currency",
            outcome=Outcome.BLOCK,
            cond=c.none_of("currency", list(ps.limit_currencies())),
            explain=(
                "Credits and discounts must be in a currency the policy sets limits in "
                f"({', '.join(ps.limit_currencies())}); limits are never converted."
            ),
            message=lambda x: (
                f"The policy sets no credit limits in {x.f.currency} (only "
                f"{', '.join(ps.limit_currencies())}): blocked"
            ),
        ),
        Rule(
            name="credit.exceeds_balance",
            rule_id="credit.exceeds_balance",
            outcome=Outcome.BLOCK,
            cond=c.gt("amount", c.ref("invoice_balance")),
            explain="A credit or discount larger than the invoice's open balance is blocked.",
            message=lambda x: (
                f"{x.f.kind.capitalize()} of {format_money(x.f.amount_minor, x.f.currency)} "
                "exceeds the open balance of "
                f"{format_money(x.f.invoice_balance_minor, x.f.currency)}: blocked"
            ),
        ),
        Rule(
            name="credit.max_discount",
            rule_id="credit.max_discount",
            outcome=Outcome.BLOCK,
            cond=c.all_of(c.eq("kind", "discount"), c.gt("discount_bps", cr.max_discount_bps)),
            explain=f"Discounts above {format_bps(cr.max_discount_bps)} of an invoice are blocked.",
            message=lambda x: (
                f"Discount of {format_bps(x.d['payload']['discount_bps'])} of the invoice exceeds "
                f"{format_bps(cr.max_discount_bps)}: blocked"
            ),
        ),
    ]
    return rules


def _dispute_rules(ps: PolicySet) -> list[Rule]:
    rules = _access_rules(ps, ActionType.ESCALATE_DISPUTE)
    rules += [
        Rule(
            name="dispute.closed",
            rule_id="dispute.closed",
            outcome=Outcome.BLOCK,
            cond=c.one_of("dispute_status", ["resolved_credit", "rejected"]),
            explain="A resolved or rejected dispute cannot be escalated.",
            message=lambda x: (
                f"Dispute is {x.f.dispute_status.replace('_', ' ')}: nothing to escalate"
            ),
        ),
        Rule(
            name="dispute.already_escalated",
            rule_id="dispute.already_escalated",
            outcome=Outcome.BLOCK,
            cond=c.eq("dispute_status", "escalated_legal"),
            explain="A dispute already with Legal is not escalated twice.",
            message=lambda x: "Dispute is already escalated to Legal",
        ),
        Rule(
            name="dispute.escalation_notice",
            rule_id="dispute.escalation_notice",
            outcome=Outcome.ALLOW,
            cond=c.one_of("dispute_status", ["open", "investigating", "awaiting_customer"]),
            explain="Legal is notified of every dispute escalation it can take.",
            message=lambda x: "Legal is notified of the escalation",
            notify=("legal",),
        ),
    ]
    return rules


def _enable_autopilot_rules(ps: PolicySet) -> list[Rule]:
    threshold = ps.autopilot.data_ready_threshold
    rules = _access_rules(ps, ActionType.ENABLE_AUTOPILOT)
    rules += [
        Rule(
            name="autopilot.enable_not_data_ready",
            rule_id="autopilot.enable_not_data_ready",
            outcome=Outcome.BLOCK,
            cond=c.lt("data_ready_score", threshold),
            explain=f"Autopilot can be enabled only while Data-Ready (score >= {threshold}).",
            message=lambda x: (
                f"Data-Ready score {x.f.data_ready_score} is below {threshold}: Autopilot cannot "
                f"be enabled for {x.f.segment!r}"
            ),
        ),
        Rule(
            name="autopilot.enable_domain_unverified",
            rule_id="autopilot.enable_domain_unverified",
            outcome=Outcome.BLOCK,
            cond=c.eq("sending_domain_verified", False),
            explain="Autopilot can be enabled only with a verified sending domain.",
            message=lambda x: (
                f"Sending domain is not verified: Autopilot cannot be enabled for {x.f.segment!r}"
            ),
        ),
    ]
    return rules + _shadow_agreement_rules(ps)


def _shadow_record(x: Ctx) -> str:
    n, same = x.f.shadow_decided or 0, x.f.shadow_unchanged or 0
    pct = f"{(same * 1000 // n) / 10:.1f}" if n else "0.0"
    return f"{same} of the last {n} drafts decided in Shadow Mode were approved unchanged ({pct}%)"


def _shadow_agreement_rules(ps: PolicySet) -> list[Rule]:
    """Shadow Mode earns its way out: enough drafts decided by people, enough approved unchanged."""
    pct, window = ps.autopilot.shadow_min_unchanged_pct, ps.autopilot.shadow_window_drafts
    if pct == 0 and window == 0:
        return []
    bar = f"{pct}% approved unchanged over the last {window} drafts decided in Shadow Mode"
    return [
        Rule(
            name="autopilot.enable_shadow_record_missing",
            rule_id="autopilot.enable_shadow_record_missing",
            outcome=Outcome.BLOCK,
            cond=c.lacks("shadow_recorded"),
            explain="Autopilot without the segment's Shadow Mode record is blocked (fail closed).",
            message=lambda x: (
                "Missing facts shadow_decided and shadow_unchanged, needed by "
                f"autopilot.enable_shadow_too_few: Autopilot cannot be enabled for {x.f.segment!r}"
            ),
        ),
        Rule(
            name="autopilot.enable_shadow_too_few",
            rule_id="autopilot.enable_shadow_too_few",
            outcome=Outcome.BLOCK,
            cond=c.all_of(c.holds("shadow_recorded"), c.lt("shadow_decided", window)),
            explain=f"Autopilot can be enabled only after {window} drafts decided in Shadow Mode.",
            message=lambda x: (
                f"Only {x.f.shadow_decided} drafts of {x.f.segment!r} have been decided in Shadow "
                f"Mode; {window} are needed ({bar}): Autopilot cannot be enabled"
            ),
        ),
        Rule(
            name="autopilot.enable_shadow_disagreement",
            rule_id="autopilot.enable_shadow_disagreement",
            outcome=Outcome.BLOCK,
            cond=c.all_of(c.holds("shadow_recorded"), c.lt("shadow_unchanged_bps", pct * 100)),
            explain=f"Autopilot can be enabled only with {bar}.",
            message=lambda x: (
                f"{_cap(_shadow_record(x))} in {x.f.segment!r}; the policy requires {bar}: "
                "Autopilot cannot be enabled"
            ),
        ),
    ]


def _cash_rules(ps: PolicySet) -> list[Rule]:
    """A person applies cash with the permission; plixo alone only inside the Controller's
    limits (confidence, amount per currency, kind of match)."""
    rules = _access_rules(ps, ActionType.APPLY_CASH, scope=c.lacks("auto"))
    rules += _cash_auto_rules(ps) + _cash_write_off_rules(ps)
    return rules + _cash_over_payment_rules(ps)


def _not_judged_by_own_rule(ps: PolicySet) -> c.Cond:
    """Every line but those the Controller's own rules judge (with their own confidence bars)
    when they are on: a short-pay with a difference to write off, an over-payment with a
    surplus kept on account."""
    ca = ps.cash_app
    conds = []
    if ca.auto_write_off:
        conds.append(c.any_of(c.ne("kind", "short_pay"), c.lte("write_off", 0)))
    if ca.auto_over_payment:
        conds.append(c.any_of(c.ne("kind", "over_payment"), c.lte("on_account", 0)))
    return c.all_of(*conds) if conds else c.ALWAYS


def _cash_auto_rules(ps: PolicySet) -> list[Rule]:
    """When plixo may apply a line with no person: auto-apply on, and every limit met."""
    ca = ps.cash_app
    auto = c.holds("auto")
    rules: list[Rule] = []
    reviewer = ca.reviewer_role
    limits = ca.max_auto_apply_minor
    within = [
        c.all_of(c.eq("currency", cur), c.lte("amount", lim)) for cur, lim in sorted(limits.items())
    ]
    listed = ", ".join(f"{format_money(v, k)}" for k, v in sorted(limits.items())) or "none"
    kinds = [str(k) for k in ca.auto_apply_kinds]

    def amount(x: Ctx) -> str:
        return format_money(x.f.amount_minor, x.f.currency)

    above = [
        c.all_of(c.eq("currency", cur), c.gt("amount", lim)) for cur, lim in sorted(limits.items())
    ]
    above_limit = c.any_of(c.none_of("currency", sorted(limits)), *above)
    if not ca.auto_apply:
        rules.append(
            Rule(
                name="cash.auto_apply_off",
                rule_id="cash.auto_apply_off",
                outcome=Outcome.NEEDS_APPROVAL,
                cond=auto,
                explain=f"Auto-apply is off: {_or_above(reviewer)} confirms every match.",
                message=lambda x: (
                    f"Auto-apply is off (Shadow Mode for cash): {reviewer} confirmation required"
                ),
                approver=reviewer,
            )
        )
    rules += _cash_limit_rules(ps, above_limit, listed)
    if ca.auto_apply and kinds and within:
        rules.append(
            Rule(
                name="cash.auto_apply",
                rule_id="cash.auto_apply",
                outcome=Outcome.ALLOW,
                cond=c.all_of(
                    auto,
                    c.gte("confidence", ca.min_confidence),
                    c.one_of("kind", kinds),
                    c.any_of(*within),
                ),
                explain="Within the Controller's confidence, amount and kind limits plixo applies "
                "a line by itself.",
                message=lambda x: (
                    f"Confidence {x.f.confidence} and {amount(x)} are within the auto-apply limits"
                ),
                grants=True,
            )
        )
    return rules


def _cash_limit_rules(ps: PolicySet, above_limit: c.Cond, listed: str) -> list[Rule]:
    """Auto-apply below the confidence, above the currency's limit or of another kind waits."""
    ca = ps.cash_app
    auto = c.holds("auto")
    reviewer = ca.reviewer_role
    kinds = [str(k) for k in ca.auto_apply_kinds]

    def amount(x: Ctx) -> str:
        return format_money(x.f.amount_minor, x.f.currency)

    rules: list[Rule] = []
    rules += [
        Rule(
            name="cash.low_confidence",
            rule_id="cash.low_confidence",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(auto, c.lt("confidence", ca.min_confidence), _not_judged_by_own_rule(ps)),
            explain=(
                f"Plixo applies a line by itself only at confidence {ca.min_confidence} or more."
            ),
            message=lambda x: (
                f"Match confidence {x.f.confidence} is below {ca.min_confidence}: "
                f"{reviewer} confirmation required"
            ),
            approver=reviewer,
        ),
        Rule(
            name="cash.above_auto_limit",
            rule_id="cash.above_auto_limit",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(auto, above_limit),
            explain=f"Plixo applies a line by itself only up to its currency's limit ({listed}).",
            message=lambda x: (
                f"{amount(x)} is above the auto-apply limit for {x.f.currency}: "
                f"{reviewer} confirmation required"
            ),
            approver=reviewer,
        ),
        Rule(
            name="cash.kind_needs_review",
            rule_id="cash.kind_needs_review",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(auto, c.none_of("kind", kinds), _not_judged_by_own_rule(ps)),
            explain=(
                f"Plixo applies only these kinds of match by itself: {', '.join(kinds) or 'none'}."
            ),
            message=lambda x: (
                f"A {x.f.match_kind.replace('_', '-')} match is never applied automatically: "
                f"{reviewer} confirmation required"
            ),
            approver=reviewer,
        ),
    ]
    return rules


def _cash_write_off_rules(ps: PolicySet) -> list[Rule]:
    """The Controller's write-off rule: plixo writes off a short-pay's explained difference
    (discount taken, bank fee) alone only inside its limits; any other write-off waits."""
    ca = ps.cash_app
    auto, wo = c.holds("auto"), c.gt("write_off", 0)
    if not ca.auto_write_off:
        return [_write_off_off(ps)]
    caps = ca.auto_write_off_max_minor
    within_cap = [
        c.all_of(c.eq("currency", cur), c.lte("write_off", v)) for cur, v in sorted(caps.items())
    ]
    wo_kinds = [str(k) for k in ca.auto_write_off_kinds]
    bar, bps = ca.auto_write_off_min_confidence, ca.auto_write_off_max_bps
    limits = ca.max_auto_apply_minor
    within = [
        c.all_of(c.eq("currency", cur), c.lte("amount", lim)) for cur, lim in sorted(limits.items())
    ]
    rules = [_write_off_outside(ps)]
    if ca.auto_apply and within and within_cap and wo_kinds:
        rules.append(
            Rule(
                name="cash.short_pay_write_off",
                rule_id="cash.short_pay_write_off",
                outcome=Outcome.ALLOW,
                cond=c.all_of(
                    auto,
                    c.eq("kind", "short_pay"),
                    wo,
                    c.one_of("write_off_kind", wo_kinds),
                    c.gte("confidence", bar),
                    c.any_of(*within),
                    c.any_of(*within_cap),
                    c.lte("write_off_bps", bps),
                ),
                explain="Within the Controller's write-off rule plixo applies a short-pay by "
                "itself and writes off the difference (the rule is the write-off's authority).",
                message=lambda x: (
                    f"The {(x.f.write_off_kind or '').replace('_', ' ')} of "
                    f"{format_money(x.f.write_off_minor, x.f.currency)} is within the "
                    "Controller's write-off rule: written off by the rule"
                ),
                grants=True,
            )
        )
    return rules


def _write_off_off(ps: PolicySet) -> Rule:
    """The write-off rule off: a line with a difference to write off waits for a person."""
    reviewer = ps.cash_app.reviewer_role
    return Rule(
        name="cash.auto_write_off_off",
        rule_id="cash.auto_write_off_off",
        outcome=Outcome.NEEDS_APPROVAL,
        cond=c.all_of(c.holds("auto"), c.gt("write_off", 0)),
        explain=f"The write-off rule is off: {_or_above(reviewer)} confirms every short-pay "
        "written off.",
        message=lambda x: (
            f"Writing off {format_money(x.f.write_off_minor, x.f.currency)} needs a person "
            f"(the write-off rule is off): {reviewer} confirmation required"
        ),
        approver=reviewer,
    )


def _write_off_outside(ps: PolicySet) -> Rule:
    """A write-off the rule does not cover (not a short-pay, another kind, a lower confidence,
    a currency not listed, above its limit or its share of the invoices) waits for a person."""
    ca = ps.cash_app
    reviewer = ca.reviewer_role
    caps = ca.auto_write_off_max_minor
    over_cap = [
        c.all_of(c.eq("currency", cur), c.gt("write_off", v)) for cur, v in sorted(caps.items())
    ]
    wo_kinds = [str(k) for k in ca.auto_write_off_kinds]
    bar, bps = ca.auto_write_off_min_confidence, ca.auto_write_off_max_bps
    listed = ", ".join(format_money(v, k) for k, v in sorted(caps.items())) or "none"
    return Rule(
        name="cash.write_off_needs_review",
        rule_id="cash.write_off_needs_review",
        outcome=Outcome.NEEDS_APPROVAL,
        cond=c.all_of(
            c.holds("auto"),
            c.gt("write_off", 0),
            c.any_of(
                c.ne("kind", "short_pay"),
                c.none_of("write_off_kind", wo_kinds),
                c.lt("confidence", bar),
                c.none_of("currency", sorted(caps)),
                *over_cap,
                c.gt("write_off_bps", bps),
            ),
        ),
        explain=f"Plixo writes off a short-pay's {' or '.join(wo_kinds) or 'nothing'} alone "
        f"only at confidence {bar} or more, up to its currency's limit ({listed}) and "
        f"{format_bps(bps)} of the invoices.",
        message=lambda x: (
            f"Writing off {format_money(x.f.write_off_minor, x.f.currency)} "
            f"({(x.f.write_off_kind or '').replace('_', ' ')}) is outside the write-off "
            f"rule's limits: {reviewer} confirmation required"
        ),
        approver=reviewer,
    )


def _cash_over_payment_rules(ps: PolicySet) -> list[Rule]:
    """The Controller's over-payment rule: plixo applies an over-payment alone, the surplus kept
    as credit on account (nothing written off), only inside its limits; outside them it waits."""
    ca = ps.cash_app
    if not ca.auto_over_payment:
        return []
    reviewer = ca.reviewer_role
    case = c.all_of(c.holds("auto"), c.eq("kind", "over_payment"), c.gt("on_account", 0))
    caps = ca.auto_over_payment_max_minor
    within_cap = [
        c.all_of(c.eq("currency", cur), c.lte("on_account", v)) for cur, v in sorted(caps.items())
    ]
    over_cap = [
        c.all_of(c.eq("currency", cur), c.gt("on_account", v)) for cur, v in sorted(caps.items())
    ]
    bar, bps = ca.auto_over_payment_min_confidence, ca.auto_over_payment_max_bps
    listed = ", ".join(format_money(v, k) for k, v in sorted(caps.items())) or "none"
    limits = ca.max_auto_apply_minor
    within = [
        c.all_of(c.eq("currency", cur), c.lte("amount", lim)) for cur, lim in sorted(limits.items())
    ]

    def surplus(x: Ctx) -> str:
        return format_money(x.f.on_account_minor, x.f.currency)

    rules = [
        Rule(
            name="cash.over_payment_needs_review",
            rule_id="cash.over_payment_needs_review",
            outcome=Outcome.NEEDS_APPROVAL,
            cond=c.all_of(
                case,
                c.any_of(
                    c.lt("confidence", bar),
                    c.none_of("currency", sorted(caps)),
                    *over_cap,
                    c.gt("on_account_bps", bps),
                ),
            ),
            explain=f"Plixo keeps an over-payment's surplus on account alone only at confidence "
            f"{bar} or more, up to its currency's limit ({listed}) and {format_bps(bps)} of the "
            "invoices.",
            message=lambda x: (
                f"The surplus of {surplus(x)} is outside the over-payment rule's limits: "
                f"{reviewer} confirmation required"
            ),
            approver=reviewer,
        )
    ]
    if ca.auto_apply and within and within_cap:
        rules.append(
            Rule(
                name="cash.over_payment_on_account",
                rule_id="cash.over_payment_on_account",
                outcome=Outcome.ALLOW,
                cond=c.all_of(
                    case,
                    c.gte("confidence", bar),
                    c.any_of(*within),
                    c.any_of(*within_cap),
                    c.lte("on_account_bps", bps),
                ),
                explain="Within the Controller's over-payment rule plixo applies an over-payment "
                "by itself and keeps the surplus as credit on account.",
                message=lambda x: (
                    f"The surplus of {surplus(x)} is within the Controller's over-payment rule: "
                    "kept as credit on account"
                ),
                grants=True,
            )
        )
    return rules


def build(ps: PolicySet) -> RuleBook:
    """Compile every rule of ``ps``, grouped by the action type it guards."""
    book = RuleBook(ps)
    outreach = _outreach_rules(ps, book.calendar)
    book.by_action = {
        ActionType.SEND_DRAFT: outreach + _send_draft_rules(ps),
        ActionType.SEND_NUDGE: outreach + _send_nudge_rules(ps),
        ActionType.OFFER_PLAN: _plan_rules(ps, ActionType.OFFER_PLAN),
        ActionType.APPROVE_PLAN: _plan_rules(ps, ActionType.APPROVE_PLAN),
        ActionType.GRANT_CREDIT: _credit_rules(ps),
        ActionType.ESCALATE_DISPUTE: _dispute_rules(ps),
        ActionType.CHANGE_CADENCE: _access_rules(ps, ActionType.CHANGE_CADENCE),
        ActionType.CHANGE_SEGMENT: _access_rules(ps, ActionType.CHANGE_SEGMENT),
        ActionType.CHANGE_POLICY: _access_rules(ps, ActionType.CHANGE_POLICY),
        ActionType.ENABLE_AUTOPILOT: _enable_autopilot_rules(ps),
        ActionType.SET_SENDING_MODE: _access_rules(ps, ActionType.SET_SENDING_MODE),
        ActionType.APPLY_CASH: _cash_rules(ps),
    }
    for action, rules in book.by_action.items():
        names = [r.name for r in rules]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise AssertionError(f"duplicate rule names {dupes} for {action}")
    return book
