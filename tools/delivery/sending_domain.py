"""The organisation's sending domain: the DNS records to publish, and checking them.

plixo generates a DKIM key pair (RSA 2048) with a selector, and the three TXT records receivers
look for: SPF (the relay's ``include:``), DKIM (the public key) and DMARC. :func:`check` reads them
back through DNS (dnspython; a resolver of your choice via ``PLIXO_DNS_NAMESERVER``) and names each
problem precisely: a record missing, two SPF records (a permanent error for receivers), an SPF that
omits the relay, a DKIM key too short or not the one plixo signs with, a DMARC record that does not
parse. ``sending_domain_verified`` is set only when every check passes; a failing check turns
Autopilot off on every segment with the reason (audited). :func:`recheck_if_due` re-checks once a
day and is called before Autopilot is switched on.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import dns.exception
import dns.resolver
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory import business_day, clock
from memory.config import get_settings
from memory.errors import PlixoError
from memory.models import (
    Channel,
    Organisation,
    OutboxMessage,
    OutboxStatus,
    Segment,
    SendingDomain,
    User,
)
from policies.access import allowed
from tools.kit import audit
from tools.ledger.policy_overrides import active_policy_set

MIN_DKIM_BITS = 1024
RECHECK_EVERY = timedelta(days=1)
#: Messages that count against a warm-up day: handed over, being handed over, or maybe handed.
_COUNTED = (OutboxStatus.CLAIMED, OutboxStatus.SENT, OutboxStatus.UNCERTAIN)
_DOMAIN = re.compile(r"^(?=.{4,200}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class DomainError(PlixoError, ValueError):
    """A sending-domain request that cannot be carried out; nothing was saved."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message, http_status=status_code)


@dataclass(frozen=True)
class DnsRecord:
    name: str
    type: str
    value: str


@dataclass
class CheckResult:
    ok: bool
    reasons: list[str] = field(default_factory=list)
    paused_segments: list[str] = field(default_factory=list)


def records(row: SendingDomain) -> list[DnsRecord]:
    """The three TXT records to publish at the DNS provider."""
    return [
        DnsRecord(row.domain, "TXT", f"v=spf1 include:{row.spf_include} ~all"),
        DnsRecord(
            f"{row.selector}._domainkey.{row.domain}",
            "TXT",
            f"v=DKIM1; k=rsa; p={row.public_key_b64}",
        ),
        DnsRecord(
            f"_dmarc.{row.domain}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{row.domain}"
        ),
    ]


def _check_domain_name(value: str, what: str) -> str:
    name = value.strip().lower().rstrip(".")
    if not _DOMAIN.match(name):
        raise DomainError(
            f"{value!r} is not a domain name for {what}; write it like mail.acme.com."
        )
    return name


def _key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(der).decode()


def set_up(
    session: Session, org_id: int, actor: User, *, domain: str, spf_include: str, now: datetime
) -> SendingDomain:
    """Choose the sending domain: a new key pair and selector; the domain is unverified until
    :func:`check` passes (switching domain un-verifies the organisation)."""
    if actor.org_id != org_id or not allowed(actor.role.value, "set_sending_mode"):
        raise DomainError(f"{actor.role.value} may not change the sending domain.", 403)
    name = _check_domain_name(domain, "the sending domain")
    include = _check_domain_name(spf_include, "the SPF include")
    pem, public = _key_pair()
    row = session.get(SendingDomain, org_id)
    selector = f"plixo{now:%Y%m}{secrets.token_hex(2)}"
    if row is None:
        row = SendingDomain(
            org_id=org_id,
            domain=name,
            selector=selector,
            spf_include=include,
            private_key_pem=pem,
            public_key_b64=public,
            created_at=now,
        )
        session.add(row)
    else:
        row.domain, row.selector, row.spf_include = name, selector, include
        row.private_key_pem, row.public_key_b64 = pem, public
        row.check_ok, row.checked_at, row.check_reasons, row.verified_since = False, None, [], None
    org = session.get(Organisation, org_id)
    assert org is not None
    org.sending_domain, org.sending_domain_verified = name, False
    audit.record(
        session,
        org_id,
        actor=actor,
        action="sending_domain.set_up",
        subject_type="organisation",
        subject_id=org_id,
        detail={"domain": name, "selector": selector},
    )
    session.flush()
    return row


def resolver_for(nameserver: str | None) -> dns.resolver.Resolver:
    """The system resolver, or ``host:port`` (a local server in tests)."""
    if not nameserver:
        return dns.resolver.Resolver()
    resolver = dns.resolver.Resolver(configure=False)
    host, _, port = nameserver.partition(":")
    resolver.nameservers = [host]
    resolver.port = int(port or 53)
    resolver.lifetime = resolver.timeout = 3.0
    return resolver


def _txt(resolver: dns.resolver.Resolver, name: str) -> list[str] | str:
    """TXT strings at ``name`` ([] when none), or a sentence when DNS itself failed."""
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        return f"DNS lookup of {name} failed ({exc.__class__.__name__}); try again later."
    return [b"".join(r.strings).decode(errors="replace") for r in answer]


def _spf_reasons(resolver: dns.resolver.Resolver, row: SendingDomain) -> list[str]:
    found = _txt(resolver, row.domain)
    if isinstance(found, str):
        return [found]
    spf = [t for t in found if t.lower().startswith("v=spf1")]
    if not spf:
        return [
            f'No SPF record at {row.domain}: publish TXT "v=spf1 include:{row.spf_include} ~all".'
        ]
    if len(spf) > 1:
        return [
            f"{row.domain} has {len(spf)} SPF records; receivers reject that as a permanent "
            "error. Merge them into one v=spf1 record."
        ]
    if f"include:{row.spf_include}" not in spf[0].split():
        return [
            f"The SPF record at {row.domain} does not include {row.spf_include}; add "
            f"include:{row.spf_include} before the all mechanism."
        ]
    return []


def _dkim_key_bits(p_value: str) -> int | None:
    try:
        key = serialization.load_der_public_key(base64.b64decode(p_value))
    except (ValueError, TypeError):
        return None
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else None


def _dkim_reasons(resolver: dns.resolver.Resolver, row: SendingDomain) -> list[str]:
    name = f"{row.selector}._domainkey.{row.domain}"
    found = _txt(resolver, name)
    if isinstance(found, str):
        return [found]
    if not found:
        return [f"No DKIM record at {name}: publish the TXT record plixo shows for it."]
    tags = dict(
        (k.strip(), v.strip()) for k, _, v in (t.partition("=") for t in found[0].split(";")) if k
    )
    published = re.sub(r"\s+", "", tags.get("p", ""))
    bits = _dkim_key_bits(published)
    if bits is None:
        return [f"The DKIM record at {name} holds no readable RSA public key (p=)."]
    if bits < MIN_DKIM_BITS:
        return [
            f"The DKIM key at {name} is {bits} bits; receivers ignore keys under "
            f"{MIN_DKIM_BITS} bits. Publish the 2048-bit key plixo generated."
        ]
    if published != row.public_key_b64:
        return [f"The DKIM key at {name} is not the one plixo signs with; publish the current one."]
    return []


def _dmarc_reasons(resolver: dns.resolver.Resolver, row: SendingDomain) -> list[str]:
    name = f"_dmarc.{row.domain}"
    found = _txt(resolver, name)
    if isinstance(found, str):
        return [found]
    dmarc = [t for t in found if t.replace(" ", "").upper().startswith("V=DMARC1")]
    if not dmarc:
        return [f'No DMARC record at {name}: publish TXT "v=DMARC1; p=quarantine".']
    if len(dmarc) > 1:
        return [f"{name} has {len(dmarc)} DMARC records; keep exactly one."]
    policy = re.search(r"(?:^|;)\s*p\s*=\s*(\w+)", dmarc[0])
    if policy is None or policy.group(1).lower() not in ("none", "quarantine", "reject"):
        return [f"The DMARC record at {name} has no valid p= (none, quarantine or reject)."]
    return []


def check(
    session: Session, org_id: int, *, nameserver: str | None, now: datetime, actor: User | str
) -> CheckResult:
    """Check the three records; verified only if all pass, otherwise Autopilot pauses (audited).

    A person needs ``set_sending_mode`` (a failed check pauses Autopilot); the daily schedule
    checks as plixo itself."""
    if isinstance(actor, User) and (
        actor.org_id != org_id or not allowed(actor.role.value, "set_sending_mode")
    ):
        raise DomainError(f"{actor.role.value} may not check the sending domain.", 403)
    row = session.get(SendingDomain, org_id)
    if row is None:
        raise DomainError("Set up a sending domain first (its records are generated then).", 409)
    resolver = resolver_for(nameserver)
    reasons = (
        _spf_reasons(resolver, row) + _dkim_reasons(resolver, row) + _dmarc_reasons(resolver, row)
    )
    org = session.get(Organisation, org_id)
    assert org is not None
    was = org.sending_domain_verified
    row.checked_at, row.check_ok, row.check_reasons = now, not reasons, reasons
    org.sending_domain_verified = not reasons
    if not reasons and row.verified_since is None:
        row.verified_since = now.date()
    result = CheckResult(ok=not reasons, reasons=reasons)
    if reasons:
        row.verified_since = None
        result.paused_segments = _pause_autopilot(session, org_id, reasons, actor)
    audit.record(
        session,
        org_id,
        actor=actor,
        action="sending_domain.checked",
        subject_type="organisation",
        subject_id=org_id,
        from_state=str(was),
        to_state=str(not reasons),
        detail={"domain": row.domain, "reasons": reasons},
    )
    session.flush()
    return result


def _pause_autopilot(
    session: Session, org_id: int, reasons: list[str], actor: User | str
) -> list[str]:
    paused = []
    for segment in session.scalars(
        select(Segment).where(Segment.org_id == org_id, Segment.autopilot_enabled.is_(True))
    ):
        segment.autopilot_enabled = False
        paused.append(segment.name)
        audit.record(
            session,
            org_id,
            actor=actor,
            action="sending_mode.autopilot_paused",
            subject_type="segment",
            subject_id=segment.id,
            from_state="on",
            to_state="off",
            detail={"reason": "sending domain check failed", "reasons": reasons},
        )
    return paused


def recheck_if_due(
    session: Session, org_id: int, *, nameserver: str | None, now: datetime, force: bool = False
) -> CheckResult | None:
    """Re-check when the last check is a day old (or ``force``, before Autopilot is switched on);
    None when there is no sending domain or the last check is recent."""
    row = session.get(SendingDomain, org_id)
    if row is None:
        return None
    if not force and row.checked_at is not None and now - row.checked_at < RECHECK_EVERY:
        return None
    return check(session, org_id, nameserver=nameserver, now=now, actor="daily domain check")


def recheck_before_autopilot(session: Session, org_id: int, now: datetime) -> None:
    """Called before Autopilot is switched on: a fresh check (through ``PLIXO_DNS_NAMESERVER``),
    so ``sending_domain_verified`` is current when the guardrails read it."""

    recheck_if_due(session, org_id, nameserver=get_settings().dns_nameserver, now=now, force=True)


# --- the warm-up ramp: a new domain's daily send cap ------------------------------------------
#
# Why: receivers judge a domain by its history; a domain that goes from silence to thousands of
# messages a day lands in spam folders. The policy's ``sending.warmup_daily_caps`` grows the
# allowance day by day from the date the domain's check first passed (``verified_since``).


def warmup_cap(caps: list[int], verified_since: date, today: date) -> int | None:
    """Today's cap for a domain verified on ``verified_since``; None once the ramp is over."""
    day = max(0, (today - verified_since).days)
    return caps[day] if day < len(caps) else None


def warmup_hold(session: Session, org_id: int, now: datetime) -> str | None:
    """Why one more message may not leave now (today's cap reached), or None when it may.

    Called inside the transaction that claims the message (``outbox.begin_attempt``), after
    locking the domain row, so two workers cannot both take the last place of the day. Counted:
    messages of the organisation (Slack excepted) claimed or sent since the start of its business
    day."""
    row = session.scalars(
        select(SendingDomain).where(SendingDomain.org_id == org_id).with_for_update()
    ).first()
    if row is None or row.verified_since is None:
        return None
    tz = business_day.org_zone(session, org_id)
    today = clock.business_date(tz, now)
    caps = active_policy_set(session, org_id).sending.warmup_daily_caps
    cap = warmup_cap(caps, row.verified_since, today)
    if cap is None:
        return None
    start = clock.start_of_business_day(today, tz)
    sent = session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(
            OutboxMessage.org_id == org_id,
            OutboxMessage.status.in_(_COUNTED),
            OutboxMessage.channel != Channel.SLACK,  # Slack messages never use the domain
            func.coalesce(OutboxMessage.sent_at, OutboxMessage.claimed_at) >= start,
        )
    )
    if int(sent or 0) < cap:
        return None
    day = (today - row.verified_since).days
    return (
        f"{row.domain} is warming up (day {day} since its check passed): today's cap of {cap} "
        f"messages is reached; the rest leave from {(today + timedelta(days=1)).isoformat()}"
    )


def next_send_day(session: Session, org_id: int, now: datetime) -> datetime:
    """The first instant of the organisation's next business day (when a capped day ends)."""
    tz = business_day.org_zone(session, org_id)
    return clock.start_of_business_day(clock.business_date(tz, now) + timedelta(days=1), tz)
