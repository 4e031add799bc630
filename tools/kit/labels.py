"""Words, not identifiers: the one home for what people read instead of rule ids, statuses, kinds
and step names, and for counting, dates and money on the panel's pages.

The ledger and the guardrails speak in stable identifiers (``shadow.review_required``,
``pending_review``, ``follow_up``); people read sentences. Every page asks this module, so a label
is changed in one place and no page shows an identifier because someone forgot to prettify it.
An identifier without an entry is still turned into words (``awaiting_customer`` → "Awaiting
customer"), never shown raw.

Dates and times follow the reader's locale (the browser's ``Accept-Language``) in the
organisation's time zone; money is always written with its currency's digits ("$999.00", never
"$999" or a converted figure).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_interval, format_skeleton

from memory.money import format_money

DEFAULT_LOCALE = "en_US"

#: Guardrail rules, by rule id: what the decision panel and the inspector say.
RULES: dict[str, str] = {
    "access.denied": "Not allowed for this persona",
    "access.granted": "Allowed for this persona",
    "action.unknown": "Unknown action",
    "autopilot.allowed": "Autopilot may send",
    "autopilot.domain_unverified": "Sending domain not verified",
    "autopilot.enable_domain_unverified": "Sending domain not verified for Autopilot",
    "autopilot.enable_not_data_ready": "Data not ready for Autopilot",
    "autopilot.enable_shadow_disagreement": "Shadow Mode agreement too low",
    "autopilot.enable_shadow_record_missing": "No Shadow Mode record yet",
    "autopilot.enable_shadow_too_few": "Too few Shadow Mode decisions yet",
    "autopilot.not_data_ready": "Data not ready",
    "autopilot.not_enabled": "Autopilot is off",
    "cadence.max_touches": "Too many touches",
    "cadence.min_gap": "Too soon after the last touch",
    "cash.above_auto_limit": "Above the automatic cash limit",
    "cash.auto_apply": "Cash applied automatically",
    "cash.auto_apply_off": "Automatic cash application is off",
    "cash.kind_needs_review": "This kind of cash needs review",
    "cash.low_confidence": "Match confidence too low",
    "cash.auto_write_off_off": "Automatic write-off of short-pays is off",
    "cash.over_payment_needs_review": "Over-payment needs review",
    "cash.over_payment_on_account": "Over-payment applied, surplus kept on account",
    "cash.short_pay_write_off": "Short-pay applied, difference written off by rule",
    "cash.write_off_needs_review": "Write-off needs review",
    "contact.bounced": "Contact's address bounced",
    "contact.no_consent": "No consent to contact",
    "contact.opted_out": "Contact opted out",
    "content.amount_mismatch": "Amount differs from the ledger",
    "content.date_mismatch": "Date differs from the ledger",
    "content.invoice_mismatch": "Invoice number differs from the ledger",
    "content.legal_threat": "Legal language",
    "content.missing_invoice_reference": "No invoice reference",
    "content.missing_pay_link": "No pay link",
    "content.pay_link_mismatch": "Pay link differs",
    "content.unbacked_concession": "Concession not backed by a plan or credit",
    "credit.currency": "Credit currency",
    "credit.exceeds_balance": "Credit above the open balance",
    "credit.max_discount": "Credit above the maximum discount",
    "default.deny": "No rule allows this",
    "dispute.already_escalated": "Already with Legal",
    "dispute.closed": "Dispute closed",
    "dispute.correspondence": "Dispute correspondence",
    "dispute.correspondence_demand": "Dispute reply asks for payment",
    "dispute.correspondence_pay_link": "Dispute reply carries a pay link",
    "dispute.correspondence_review": "Dispute reply needs review",
    "dispute.escalation_notice": "Escalation to Legal",
    "dispute.no_dunning": "Invoice in dispute: no dunning",
    "engine.error": "Guardrail engine error",
    "facts.invalid": "Facts invalid",
    "facts.missing": "Facts missing",
    "grounding.mismatch": "Does not match the ledger",
    "nudge.autopilot_too_close": "Too close to an Autopilot touch",
    "nudge.notify": "A/R team notified",
    "nudge.template_not_approved": "Nudge template not approved",
    "plan.above_controller_threshold": "Plan needs a Controller",
    "plan.currency": "Plan currency",
    "plan.max_discount": "Plan discount above the maximum",
    "plan.max_installments": "Too many installments",
    "plan.max_months": "Plan too long",
    "plan.non_standard_terms": "Non-standard plan terms",
    "plan.portal_proposal": "Proposed by the payer",
    "promise.missed": "Promise missed",
    "promise.open": "Promise open",
    "promise.reminder_not_open": "Promise no longer open",
    "quiet_hours.holiday": "Quiet hours: public holiday",
    "quiet_hours.weekend": "Quiet hours: weekend",
    "quiet_hours.window": "Quiet hours",
    "review.approved": "Approved by a person",
    "sending.cron_paused": "Scheduled sending paused",
    "sending.maintenance": "Maintenance mode",
    "shadow.review_required": "Shadow Mode: a person reviews",
}

#: Statuses, kinds, outcomes and step names, by their stored value.
WORDS: dict[str, str] = {
    # why Autopilot left a due invoice out of a pass ("Not chased: 4 disputed, ...")
    "disputed": "Disputed",
    "promise_open": "Under an open promise-to-pay",
    "in_payment_plan": "In a payment plan",
    "follow_up_first": "Waiting for a follow-up first",
    "no_reachable_contact": "With no reachable contact",
    "pre_due_step_overdue": "Past due before their pre-due reminder",
    "promise_reminder_nothing_open": "Promise reminders with nothing left open",
    # drafts
    "drafted": "Drafted",
    "blocked": "Blocked",
    "deferred": "Deferred",
    "pending_review": "Waiting for review",
    "approved": "Approved",
    "edited": "Edited",
    "rejected": "Rejected",
    "queued": "Queued for delivery",
    "sent": "Sent",
    "failed": "Failed",
    "held": "Held for a person",
    "superseded": "Replaced by a newer draft",
    "cadence": "Cadence step",
    "nudge": "Nudge",
    "manual": "Written by a person",
    "follow_up": "Follow-up",
    "autopilot": "Autopilot",
    "collector": "Collector",
    "sales_nudge": "Sales nudge",
    "csm_nudge": "CSM nudge",
    # outbox
    "claimed": "Being sent",
    "uncertain": "Delivery uncertain",
    "cancelled": "Cancelled",
    # decisions
    "allow": "Allowed",
    "block": "Blocked",
    "needs_approval": "Needs approval",
    "defer": "Deferred",
    # disputes
    "open": "Open",
    "investigating": "Investigating",
    "awaiting_customer": "Awaiting customer",
    "escalated_legal": "Escalated to Legal",
    "resolved_credit": "Resolved with credit",
    # promises and plans
    "kept": "Kept",
    "missed": "Missed",
    "active": "Active",
    "completed": "Completed",
    "defaulted": "Defaulted",
    "proposed": "Proposed",
    "paid": "Paid",
    "void": "Void",
    # activity
    "email": "E-mail",
    "call": "Call",
    "sms": "Text message",
    "portal_visit": "Portal visit",
    "reply": "Reply",
    "payment": "Payment",
    "note": "Note",
    # channels and directions
    "in": "Received",
    "out": "Sent",
    # cadence step templates
    "pre_due": "Before due",
    "reminder": "Reminder",
    "final": "Final notice",
    "friendly_reminder": "Friendly reminder",
    "generic_reminder": "Reminder",
    # notifications
    "mention": "Mention",
    "approval": "Approval waiting",
    "sla_breach": "Dispute SLA breached",
    "promise_missed": "Promise missed",
    # triage proposals
    "log_promise": "Log a promise-to-pay",
    "open_dispute": "Open a dispute",
    # sources
    "portal": "Mini-portal",
    "reply_triage": "Reply triage",
    "internal": "Internal note",
    "system": "plixo",
    "payer": "From the payer",
    "import": "Imported",
    # aging buckets (the stored values are already the vocabulary; the badge says "days")
    "Current": "Current",
    "1-30": "1-30 days",
    "31-60": "31-60 days",
    "61-90": "61-90 days",
    "90+": "90+ days",
}

#: Promise-to-pay statuses as the commitment pages say them ("cancelled" is the payer's word
#: taken back, so "Withdrawn"); a promise still open past its date and grace is "Broken".
PROMISE_WORDS: dict[str, str] = {
    "open": "Open",
    "kept": "Kept",
    "missed": "Missed",
    "cancelled": "Withdrawn",
    "lapsed": "Broken",
}

#: Payment plan statuses as the commitment pages say them.
PLAN_WORDS: dict[str, str] = {
    "proposed": "Proposed",
    "pending_approval": "Waiting for approval",
    "active": "Active",
    "defaulted": "Behind schedule",
    "completed": "Completed",
    "cancelled": "Cancelled",
    "rejected": "Turned down",
}

#: Plan installment statuses.
INSTALLMENT_WORDS: dict[str, str] = {"due": "Due", "paid": "Paid", "missed": "Missed"}

#: How the payer reads a dispute's status (the mini-portal, dispute replies): no internal names,
#: and no wording the guardrails hold for Legal ("escalated to Legal" reads as a threat).
PAYER_DISPUTE_WORDS: dict[str, str] = {
    "open": "open",
    "investigating": "under investigation",
    "awaiting_customer": "waiting for your documents",
    "escalated_legal": "under senior review",
    "resolved_credit": "resolved with a credit",
    "rejected": "closed",
}


def humanize(value: str) -> str:
    """Words for an identifier with no entry: ``awaiting_customer`` → "Awaiting customer"."""
    text = value.replace(".", ": ").replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:] if text else ""


def rule_label(rule_id: str | None) -> str:
    """The guardrail rule's label ("Shadow Mode: a person reviews")."""
    if not rule_id:
        return ""
    return RULES.get(rule_id) or humanize(rule_id)


def label(value: object, extra: Mapping[str, str] | None = None) -> str:
    """Words for a status, kind, outcome or step (an enum or its value); ``extra`` first."""
    raw = str(getattr(value, "value", value) if value is not None else "")
    if extra and raw in extra:
        return extra[raw]
    if raw in RULES:
        return RULES[raw]
    return WORDS.get(raw) or humanize(raw)


def promise_label(status: object, *, lapsed: bool = False) -> str:
    """A promise's status in words; an open promise past its date and grace reads "Broken"."""
    return PROMISE_WORDS["lapsed"] if lapsed else label(status, PROMISE_WORDS)


def plan_label(status: object) -> str:
    """A payment plan's status in words ("Waiting for approval", "Behind schedule")."""
    return label(status, PLAN_WORDS)


def installment_label(status: object) -> str:
    """A plan installment's status in words."""
    return label(status, INSTALLMENT_WORDS)


def payer_dispute_status(status: object) -> str:
    """A dispute's status in the payer's words (``PAYER_DISPUTE_WORDS``); unknown: "open"."""
    return PAYER_DISPUTE_WORDS.get(str(getattr(status, "value", status)), "open")


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """ "1 draft", "2 drafts", "0 replies" (pass the plural when it is not singular + s)."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count:,} {word}"


def listing(items: Iterable[object]) -> str:
    """Items as a sentence list: "INV-1", "INV-1 and INV-2", "INV-1, INV-2 and INV-3"."""
    words = [str(i) for i in items if i is not None and str(i) != ""]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def money(minor: int | None, currency: str | None) -> str:
    """Money as money: the currency's symbol and digits ("$999.00", "€1,250.50")."""
    if minor is None:
        return ""
    return format_money(int(minor), str(currency or "USD"))


def locale_from_header(accept_language: str | None) -> str:
    """The reader's locale from ``Accept-Language`` (first one Babel knows; en_US otherwise)."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().replace("-", "_")
        if not tag or tag == "*":
            continue
        try:
            loc = Locale.parse(tag)
        except (ValueError, UnknownLocaleError):
            continue
        return str(loc)
    return DEFAULT_LOCALE


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _parsed(value: date | datetime | str) -> date | datetime:
    """A value some records keep as ISO text (a dry run's example, a DNS check's time)."""
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
        return moment.date() if len(value) == 10 else moment
    return value


def when(
    moment: datetime | str | None, *, locale: str = DEFAULT_LOCALE, tz: str | None = None
) -> str:
    """A moment in the reader's locale and the organisation's time zone ("Oct 7, 2025, 2:00 PM");
    a naive moment is UTC, as the ledger stores it."""
    if moment is None or moment == "":
        return ""
    value = _parsed(moment)
    if not isinstance(value, datetime):
        return day(value, locale=locale)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return str(format_datetime(value, format="medium", tzinfo=zone(tz), locale=locale))


def day(
    value: date | datetime | str | None, *, locale: str = DEFAULT_LOCALE, weekday: bool = False
) -> str:
    """A business date in the reader's locale ("Oct 7, 2025", "07.10.2025"); with ``weekday``
    the day's name too ("Tue, Oct 7, 2025", "Di., 7. Okt. 2025"), where it matters which working
    day a promise or an installment falls on."""
    if value is None or value == "":
        return ""
    value = _parsed(value)
    if isinstance(value, datetime):
        value = value.date()
    if weekday:
        return str(format_skeleton("yMMMEd", value, locale=locale))
    return str(format_date(value, format="medium", locale=locale))


def month_short(start: date, *, locale: str = DEFAULT_LOCALE) -> str:
    """A month as short as a chart's axis needs, in the reader's locale ("Dec 26", "Dez. 26")."""
    return str(format_date(start, format="MMM yy", locale=locale))


def period(start: date, end: date, *, locale: str = DEFAULT_LOCALE) -> str:
    """A reporting period in the reader's locale: a whole month by its name ("Dec 2026",
    "Dez. 2026"), any other span as an interval ("Dec 1 – 6, 2026", "1.–6. Dez. 2026")."""
    next_month = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    if start.day == 1 and (next_month - end).days == 1:
        return str(format_skeleton("yMMM", start, locale=locale))
    return str(format_interval(start, end, "yMMMd", locale=locale))


def language(code: str | None, *, locale: str = DEFAULT_LOCALE) -> str:
    """A language code in the reader's words ("en" → "English", "de" → "German"/"Deutsch")."""
    if not code:
        return ""
    try:
        name = Locale.parse(code.replace("-", "_")).get_display_name(locale)
    except (ValueError, UnknownLocaleError):
        return code
    return (name[:1].upper() + name[1:]) if name else code


def hours(value: float | None) -> str:
    """A duration in hours as people say it: "3 hours", "2 days 4 hours", "45 minutes"."""
    if value is None:
        return ""
    minutes = round(abs(value) * 60)
    d, rest = divmod(minutes, 24 * 60)
    h, m = divmod(rest, 60)
    parts = []
    if d:
        parts.append(plural(d, "day"))
    if h:
        parts.append(plural(h, "hour"))
    if not d and not h:
        parts.append(plural(m, "minute"))
    return " ".join(parts)
