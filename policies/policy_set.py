"""Loading, validating and merging guardrail policy sets (``default.yaml`` + per-org overrides).

A policy set is data: the engine compiles it into rules. Validation is strict because a typo in a
threshold must never loosen a guardrail silently: unknown keys, wrong types, unknown roles or
permissions and impossible quiet hours are refused with the file, line and key to fix.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from datetime import date, time
from enum import StrEnum
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from policies.access import AccessMatrix, access_matrix
from policies.holidaycal import CONTACT, parse_place
from policies.human_units import HumanUnitsError, stored_form
from policies.types import ActionType, PolicyError
from policies.yamlfile import LineMap, line_for, read_yaml, read_yaml_file

NonNegInt = Annotated[StrictInt, Field(ge=0)]
PosInt = Annotated[StrictInt, Field(ge=1)]
Bps = Annotated[StrictInt, Field(ge=0, le=10_000)]

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class Weekday(StrEnum):
    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"

    @property
    def number(self) -> int:
        """Python's ``date.weekday()`` number (Monday = 0)."""
        return list(Weekday).index(self)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShadowModePolicy(_Section):
    reviewer_min_role: StrictStr = "Collector"


class AutopilotPolicy(_Section):
    data_ready_threshold: Annotated[StrictInt, Field(ge=0, le=100)] = 80
    # Shadow Mode earns its way out: of the segment's last ``shadow_window_drafts`` drafts a
    # person decided, at least ``shadow_min_unchanged_pct`` % approved unchanged (0 and 0: off).
    shadow_min_unchanged_pct: Annotated[StrictInt, Field(ge=0, le=100)] = 95
    shadow_window_drafts: NonNegInt = 200


class SendingPolicy(_Section):
    pause_recheck_minutes: PosInt = 15
    # A new sending domain's warm-up ramp: on day N after it was verified (day 0 is that day) at
    # most ``warmup_daily_caps[N]`` messages leave; after the last entry, no cap. [] = no ramp.
    warmup_daily_caps: list[PosInt] = Field(
        default_factory=lambda: [50, 100, 200, 400, 800, 1600, 3200]
    )

    @field_validator("warmup_daily_caps")
    @classmethod
    def _ramp(cls, value: list[int]) -> list[int]:
        for day, (before, after) in enumerate(zip(value, value[1:], strict=False), start=1):
            if after < before:
                raise ValueError(
                    f"day {day}'s cap {after} is below day {day - 1}'s {before}: a warm-up ramp "
                    "only grows"
                )
        return value


class QuietHoursPolicy(_Section):
    start: StrictStr = "20:00"
    end: StrictStr = "08:00"
    weekend_days: list[Weekday] = Field(default_factory=lambda: [Weekday.SATURDAY, Weekday.SUNDAY])
    holidays: list[date] = Field(default_factory=list)
    # Which public-holiday calendars close a day (``policies.holidaycal``): "contact" for the
    # contact's own country and subdivision, or an ISO code such as "US" or "CH-ZH".
    holiday_calendars: list[StrictStr] = Field(default_factory=lambda: [CONTACT])

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, value: object) -> object:
        if isinstance(value, int):
            raise ValueError(
                "must be a quoted 'HH:MM' string (unquoted 20:00 is read as a number in YAML)"
            )
        if isinstance(value, str) and not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a 24-hour 'HH:MM' time")
        return value

    @field_validator("weekend_days")
    @classmethod
    def _weekend(cls, value: list[Weekday]) -> list[Weekday]:
        if len(set(value)) != len(value):
            raise ValueError("lists a weekday twice")
        if len(value) >= 7:
            raise ValueError("every day is a weekend day: outreach could never be sent")
        return value

    @field_validator("holidays", mode="before")
    @classmethod
    def _holidays(cls, value: object) -> object:
        if isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    try:
                        date.fromisoformat(item)
                    except ValueError as exc:
                        raise ValueError(f"{item!r} is not an ISO date (YYYY-MM-DD)") from exc
                elif not isinstance(item, date):
                    raise ValueError(f"{item!r} is not an ISO date (YYYY-MM-DD)")
        return value

    @field_validator("holiday_calendars")
    @classmethod
    def _calendars(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a calendar twice")
        for entry in value:
            if entry != CONTACT:
                parse_place(entry)  # a ValueError names what to write instead
        return value

    @property
    def start_time(self) -> time:
        return time.fromisoformat(self.start)

    @property
    def end_time(self) -> time:
        return time.fromisoformat(self.end)

    @property
    def start_minute(self) -> int:
        return self.start_time.hour * 60 + self.start_time.minute

    @property
    def end_minute(self) -> int:
        return self.end_time.hour * 60 + self.end_time.minute

    @property
    def weekend_indexes(self) -> frozenset[int]:
        return frozenset(d.number for d in self.weekend_days)


class CadencePolicy(_Section):
    max_touches: PosInt = 3
    window_days: PosInt = 7
    min_gap_hours: NonNegInt = 48
    # Segments whose customers get one message per invoice instead of one per customer.
    one_message_per_invoice_segments: list[StrictStr] = Field(default_factory=list)


class NudgePolicy(_Section):
    min_gap_to_autopilot_hours: NonNegInt = 24
    notify: list[StrictStr] = Field(default_factory=lambda: ["ar_team"])


class PromisePolicy(_Section):
    default_grace_days: NonNegInt = 3


class PlanPolicy(_Section):
    controller_above_minor: NonNegInt = 5_000_000
    max_installments: PosInt = 12
    max_months: PosInt = 12
    max_discount_bps: Bps = 1000
    escalation_role: StrictStr = "Controller"
    legal_role: StrictStr = "Legal"
    portal_approver_role: StrictStr = "Collector"


class CreditPolicy(_Section):
    max_discount_bps: Bps = 1500
    escalation_role: StrictStr = "Controller"


CashMatchKind = Literal[
    "exact", "one_to_many", "short_pay", "over_payment", "installment", "on_account"
]


AUTO_KINDS: tuple[CashMatchKind, ...] = ("exact", "one_to_many", "installment")
WriteOffKind = Literal["discount", "bank_fee"]
WRITE_OFF_KINDS: tuple[WriteOffKind, ...] = ("discount", "bank_fee")


class CashAppPolicy(_Section):
    """Cash App Assist: when plixo may apply a bank line by itself (off by default)."""

    auto_apply: bool = Field(default=False, strict=True)
    min_confidence: Annotated[StrictInt, Field(ge=0, le=100)] = 95
    # Per currency, the largest line auto-apply may post; a currency not listed never auto-applies.
    max_auto_apply_minor: dict[StrictStr, NonNegInt] = Field(default_factory=dict)
    auto_apply_kinds: list[CashMatchKind] = Field(default_factory=lambda: list(AUTO_KINDS))
    # A payment short by at most this much (basis points of the invoices, and at most the
    # amount) is proposed as a short-pay with the difference explained.
    short_pay_tolerance_bps: Bps = 300
    short_pay_max_minor: NonNegInt = 50_000
    reviewer_role: StrictStr = "Collector"
    # The Controller's write-off rule (off by default): a short-pay explained as one of
    # auto_write_off_kinds is applied with no person, the difference written off, when the match
    # is at least auto_write_off_min_confidence and the difference at most its currency's limit
    # and at most auto_write_off_max_bps of the invoices' open balance (a currency not listed
    # never). The rule, not a person, is the write-off's authority; the audit names it.
    auto_write_off: bool = Field(default=False, strict=True)
    auto_write_off_min_confidence: Annotated[StrictInt, Field(ge=0, le=100)] = 90
    auto_write_off_max_minor: dict[StrictStr, NonNegInt] = Field(default_factory=dict)
    auto_write_off_max_bps: Bps = 200
    auto_write_off_kinds: list[WriteOffKind] = Field(default_factory=lambda: list(WRITE_OFF_KINDS))

    # The Controller's over-payment rule (off by default): an over-payment of the invoices its
    # reference names is applied with no person, the surplus kept as credit on account (nothing
    # written off), when the match is at least auto_over_payment_min_confidence and the surplus
    # at most its currency's limit and auto_over_payment_max_bps of the invoices' open balance.
    auto_over_payment: bool = Field(default=False, strict=True)
    auto_over_payment_min_confidence: Annotated[StrictInt, Field(ge=0, le=100)] = 80
    auto_over_payment_max_minor: dict[StrictStr, NonNegInt] = Field(default_factory=dict)
    auto_over_payment_max_bps: Bps = 200

    @field_validator(
        "max_auto_apply_minor", "auto_write_off_max_minor", "auto_over_payment_max_minor"
    )
    @classmethod
    def _currencies(cls, value: dict[str, int]) -> dict[str, int]:
        for cur in value:
            if not re.fullmatch(r"[A-Z]{3}", cur):
                raise ValueError(f"{cur!r} is not an ISO 4217 code such as USD")
        return value


class ContentPolicy(_Section):
    """Phrases a draft may not carry without a person's approval (matched by ``textscan``).

    ``legal_threat_phrases`` are English; ``legal_threat_phrases_by_language`` adds the other
    supported languages. ``concession_phrases`` are offers of discounts, waivers or terms: a draft
    that makes one the ledger does not back (no approved concession on its invoices) needs the
    ``concession_role``. ``payment_demand_phrases`` ask for payment: dispute correspondence
    carrying one about a disputed invoice is blocked (it would dun the disputed amount). Each
    phrase is matched after normalisation and by stem in its own language, so plurals, verb forms,
    hyphens, zero-width and look-alike characters do not hide it.
    """

    legal_role: StrictStr = "Legal"
    legal_threat_phrases: list[StrictStr] = Field(default_factory=list)
    legal_threat_phrases_by_language: dict[StrictStr, list[StrictStr]] = Field(default_factory=dict)
    concession_role: StrictStr = "Controller"
    concession_phrases: dict[StrictStr, list[StrictStr]] = Field(default_factory=dict)
    payment_demand_phrases: dict[StrictStr, list[StrictStr]] = Field(default_factory=dict)

    @field_validator("legal_threat_phrases")
    @classmethod
    def _phrases(cls, value: list[str]) -> list[str]:
        for phrase in value:
            if not phrase.strip():
                raise ValueError("contains an empty phrase")
        return value

    @field_validator(
        "legal_threat_phrases_by_language", "concession_phrases", "payment_demand_phrases"
    )
    @classmethod
    def _by_language(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        from policies.textscan import SUPPORTED_LANGUAGES

        for language, phrases in value.items():
            if language not in SUPPORTED_LANGUAGES:
                raise ValueError(
                    f"language {language!r} has no stemmer: use one of {list(SUPPORTED_LANGUAGES)}"
                )
            cls._phrases(phrases)
        return value

    def threat_phrases(self) -> dict[str, list[str]]:
        """Every legal-threat phrase by language (the English list under ``en``)."""
        out = {k: list(v) for k, v in self.legal_threat_phrases_by_language.items()}
        out["en"] = [*self.legal_threat_phrases, *out.get("en", [])]
        return out


class CurrencyLimits(_Section):
    """A currency's own plan and credit limits (minor units of that currency). Limits are never
    converted from another currency: a currency without an entry has no plans or credits."""

    approval_limits: dict[StrictStr, NonNegInt] = Field(default_factory=dict)
    credit_limits: dict[StrictStr, NonNegInt] = Field(default_factory=dict)
    controller_above_minor: NonNegInt


class PolicySet(_Section):
    """One organisation's guardrails: see :func:`load_default`, :func:`load` and :func:`merge`."""

    name: StrictStr = "plixo guardrails"
    currency: StrictStr = "USD"
    shadow_mode: ShadowModePolicy = ShadowModePolicy()
    autopilot: AutopilotPolicy = AutopilotPolicy()
    sending: SendingPolicy = SendingPolicy()
    quiet_hours: QuietHoursPolicy = QuietHoursPolicy()
    cadence: CadencePolicy = CadencePolicy()
    nudges: NudgePolicy = NudgePolicy()
    promises: PromisePolicy = PromisePolicy()
    plans: PlanPolicy = PlanPolicy()
    credits: CreditPolicy = CreditPolicy()
    content: ContentPolicy = ContentPolicy()
    cash_app: CashAppPolicy = CashAppPolicy()
    approval_limits: dict[StrictStr, NonNegInt] = Field(default_factory=dict)
    credit_limits: dict[StrictStr, NonNegInt] = Field(default_factory=dict)
    # Plans and credits in other currencies: their own limits and threshold, never converted.
    currency_limits: dict[StrictStr, CurrencyLimits] = Field(default_factory=dict)
    # One permission, or a list of which any one suffices (offer_plan: manage_plans, propose_plan).
    action_permissions: dict[ActionType, StrictStr | list[StrictStr]] = Field(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"{value!r} is not an ISO 4217 code such as USD")
        return value

    @field_validator("currency_limits")
    @classmethod
    def _limit_currencies(cls, value: dict[str, CurrencyLimits]) -> dict[str, CurrencyLimits]:
        for cur in value:
            if not re.fullmatch(r"[A-Z]{3}", cur):
                raise ValueError(f"{cur!r} is not an ISO 4217 code such as EUR")
        return value

    @model_validator(mode="after")
    def _known_roles_and_permissions(self) -> PolicySet:
        matrix = access_matrix()
        role_fields = {
            "shadow_mode.reviewer_min_role": self.shadow_mode.reviewer_min_role,
            "plans.escalation_role": self.plans.escalation_role,
            "plans.legal_role": self.plans.legal_role,
            "plans.portal_approver_role": self.plans.portal_approver_role,
            "credits.escalation_role": self.credits.escalation_role,
            "content.legal_role": self.content.legal_role,
            "content.concession_role": self.content.concession_role,
            "cash_app.reviewer_role": self.cash_app.reviewer_role,
        }
        for where, role in role_fields.items():
            if role not in matrix.roles:
                raise ValueError(f"{where}: unknown role {role!r}; use one of {list(matrix.roles)}")
        tables: list[tuple[str, dict[str, int]]] = [
            ("approval_limits", self.approval_limits),
            ("credit_limits", self.credit_limits),
        ]
        for cur, cl in self.currency_limits.items():
            # An entry for the policy currency itself is superseded by the top-level tables (an
            # override that switches `currency` keeps the seed's entry for the new currency).
            tables += [
                (f"currency_limits.{cur}.approval_limits", cl.approval_limits),
                (f"currency_limits.{cur}.credit_limits", cl.credit_limits),
            ]
        for table, limits in tables:
            for role in limits:
                if role not in matrix.roles:
                    raise ValueError(
                        f"{table}: unknown role {role!r}; use one of {list(matrix.roles)}"
                    )
        for action in self.action_permissions:
            for perm in self.permissions_for_action(action):
                if perm not in matrix.permissions:
                    raise ValueError(
                        f"action_permissions.{action.value}: unknown permission {perm!r} "
                        "(see policies/access.yaml)"
                    )
        for action in ACTOR_ACTIONS:
            if action not in self.action_permissions:
                raise ValueError(
                    f"action_permissions: {action.value} has no permission; every action a person "
                    "takes must name the access-matrix permission it needs"
                )
        return self

    @property
    def access(self) -> AccessMatrix:
        return access_matrix()

    def permissions_for_action(self, action: ActionType) -> tuple[str, ...]:
        """The permissions of which any one lets a person take ``action``."""
        perm = self.action_permissions[action]
        return (perm,) if isinstance(perm, str) else tuple(perm)

    def limit_currencies(self) -> tuple[str, ...]:
        """Every currency plans and credits may be in: the policy currency, then the others."""
        return (self.currency, *sorted(c for c in self.currency_limits if c != self.currency))

    def approval_limits_in(self, currency: str) -> dict[str, int]:
        """The plan limits in ``currency`` (empty for a currency without limits)."""
        if currency == self.currency:
            return self.approval_limits
        cl = self.currency_limits.get(currency)
        return cl.approval_limits if cl else {}

    def credit_limits_in(self, currency: str) -> dict[str, int]:
        if currency == self.currency:
            return self.credit_limits
        cl = self.currency_limits.get(currency)
        return cl.credit_limits if cl else {}

    def controller_above_in(self, currency: str) -> int:
        """The total above which a plan in ``currency`` always needs the escalation role."""
        if currency == self.currency:
            return self.plans.controller_above_minor
        return self.currency_limits[currency].controller_above_minor

    def approval_limit(self, role: str, currency: str | None = None) -> int:
        return self.approval_limits_in(currency or self.currency).get(role, 0)

    def credit_limit(self, role: str, currency: str | None = None) -> int:
        return self.credit_limits_in(currency or self.currency).get(role, 0)

    @cached_property
    def digest(self) -> str:
        """A short content hash: stored with each decision so it can be traced to its policy."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Actions a person (or the payer) takes: each needs an access-matrix permission.
ACTOR_ACTIONS = tuple(a for a in ActionType if a is not ActionType.SEND_DRAFT)


def _stored(
    data: dict[str, Any], currency: Any, lines: LineMap | None, source: str
) -> dict[str, Any]:
    """``data`` in human units read into the stored form (``policies.human_units``), or a
    :class:`PolicyError` naming the file, line and setting of every value that cannot be read."""
    try:
        return stored_form(data, currency if isinstance(currency, str) else "USD")
    except HumanUnitsError as exc:
        messages = []
        for path, message in exc.problems:
            line = line_for(lines, list(path)) if lines else None
            where = f"line {line}: " if line else ""
            messages.append(f"{source}: {where}{'.'.join(path)}: {message}")
        raise PolicyError("; ".join(messages)) from exc


def _validate(data: Any, lines: LineMap | None, source: str, root_line: bool = True) -> PolicySet:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy set must be a mapping of sections, got {data!r}.")
    try:
        return PolicySet.model_validate(data)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            line = line_for(lines, loc) if lines else None
            if (
                line is not None
                and not root_line
                and lines
                and not any(tuple(loc[:n]) in lines for n in range(1, len(loc) + 1))
            ):
                line = None  # the key is not in the override file: no line to point at
            where = f"line {line}: " if line else ""
            key = ".".join(loc) or "policy set"
            msg = err["msg"].removeprefix("Value error, ")
            messages.append(f"{source}: {where}{key}: {msg}")
        raise PolicyError("; ".join(messages)) from exc


def parse(text: str, source: str = "<policy>") -> PolicySet:
    """Validate YAML text into a policy set (a full set, not an override)."""
    data, lines = read_yaml(text, source)
    if isinstance(data, dict):
        data = _stored(data, data.get("currency", "USD"), lines, source)
    return _validate(data, lines, source)


def load(path: str | Path) -> PolicySet:
    """Load a complete policy set from a YAML file."""
    p = Path(path)
    data, lines = read_yaml_file(p)
    if isinstance(data, dict):
        data = _stored(data, data.get("currency", "USD"), lines, str(p))
    return _validate(data, lines, str(p))


@lru_cache(maxsize=1)
def load_default() -> PolicySet:
    """The packaged seed policy set (``policies/default.yaml``)."""
    text = resources.files("policies").joinpath("default.yaml").read_text(encoding="utf-8")
    return parse(text, "policies/default.yaml")


def _deep_merge(
    base: dict[str, Any],
    override: dict[str, Any],
    path: str,
    source: str = "override",
    lines: LineMap | None = None,
) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}.{key}" if path else key
        if key not in out and not _open_mapping(path):
            line = (lines or {}).get(tuple(where.split(".")))
            at = f"line {line}: " if line else ""
            raise PolicyError(f"{source}: {at}unknown key {where!r}; check the spelling")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, where, source, lines)
        else:
            out[key] = copy.deepcopy(value)
    return out


# Mappings whose keys are data (role or action names), so an override may add new keys to them.
_OPEN_MAPPINGS = {
    "approval_limits",
    "credit_limits",
    "action_permissions",
    "currency_limits",
    "cash_app.max_auto_apply_minor",
    "cash_app.auto_write_off_max_minor",
    "cash_app.auto_over_payment_max_minor",
}


def _open_mapping(path: str) -> bool:
    """A mapping whose keys are data (also each currency's own limit tables)."""
    return path in _OPEN_MAPPINGS or bool(
        re.fullmatch(r"currency_limits\.[A-Z]{3}\.(approval|credit)_limits", path)
    )


def merge(
    base: PolicySet,
    override: dict[str, Any],
    source: str = "override",
    lines: LineMap | None = None,
) -> PolicySet:
    """``base`` with ``override`` applied (nested mappings merged, lists and values replaced).

    The result is validated as a whole, so an override can never produce an invalid set. Pass the
    override file's ``lines`` (from :func:`load_override`) for errors that name the line. The
    override may be in human units or in the stored form saved versions hold
    (``policies.human_units``).
    """
    if not isinstance(override, dict):
        raise PolicyError(f"{source}: an override must be a mapping, got {type(override).__name__}")
    currency = override.get("currency", base.currency)
    override = _stored(override, currency, lines, source)
    merged = _deep_merge(base.model_dump(mode="json"), override, "", source, lines)
    return _validate(merged, lines, source, root_line=False)


def load_override(path: str | Path, base: PolicySet | None = None) -> PolicySet:
    """``base`` (default: the packaged set) with the override file at ``path`` merged in."""
    p = Path(path)
    data, lines = read_yaml_file(p)
    return merge(base or load_default(), data if data is not None else {}, str(p), lines)


def diff(before: PolicySet, after: PolicySet) -> dict[str, dict[str, Any]]:
    """Changed leaf values as ``{"plans.max_installments": {"from": 12, "to": 6}}``."""
    changes: dict[str, dict[str, Any]] = {}

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b:
            changes[path] = {"from": a, "to": b}

    walk(before.model_dump(mode="json"), after.model_dump(mode="json"), "")
    return changes
