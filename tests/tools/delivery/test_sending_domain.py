"""The sending domain against a real DNS server on loopback: good, missing and broken records,
each failure with its precise reason; Autopilot pauses on failure; mail is DKIM-signed."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.orm import Session

from memory.models import Organisation, Persona, Segment, SendingDomain
from tests.api.factories import NOW, make_users, settings_for
from tests.dns_server import ZoneResolver, dns_server
from tools.delivery import sending_domain as sd
from tools.delivery.dkim import sign_message
from tools.delivery.smtp import build_message


@pytest.fixture
def zone() -> Iterator[tuple[str, ZoneResolver]]:
    with dns_server() as server:
        yield server


@pytest.fixture
def domain(session: Session, org: Organisation) -> SendingDomain:
    users, _ = make_users(session, org)
    return sd.set_up(
        session,
        org.id,
        users[Persona.ADMIN],
        domain="Mail.Acme.test",
        spf_include="spf.relay.test",
        now=NOW,
    )


def publish(resolver: ZoneResolver, row: SendingDomain) -> None:
    for rec in sd.records(row):
        resolver.txt[rec.name] = [rec.value]


def _short_key() -> str:
    # a 512-bit modulus (cryptography refuses to generate one; a public key is all DNS holds)
    modulus = (1 << 511) | 0xC0FFEE_D15EA5E_BADC0DE | 1
    key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def test_good_records_verify_and_mail_is_signed(
    session: Session, org: Organisation, domain: SendingDomain, zone
) -> None:  # type: ignore[no-untyped-def]
    nameserver, resolver = zone
    assert [r.name for r in sd.records(domain)] == [
        "mail.acme.test",
        f"{domain.selector}._domainkey.mail.acme.test",
        "_dmarc.mail.acme.test",
    ]
    assert org.sending_domain_verified is False
    publish(resolver, domain)
    result = sd.check(session, org.id, nameserver=nameserver, now=NOW, actor="test")
    assert result.ok and result.reasons == [] and org.sending_domain_verified is True
    msg = build_message(
        settings_for(),
        to="ap@payer.test",
        subject="Invoice INV-1",
        body="Hello\n",
        message_id="<m1@plixo>",
    )
    signed = sign_message(msg, org)
    assert "DKIM-Signature" in signed and f"s={domain.selector}" in str(signed["DKIM-Signature"])
    txt = resolver.txt[f"{domain.selector}._domainkey.mail.acme.test"][0].encode()
    assert dkim.verify(signed.as_bytes(), dnsfunc=lambda name, timeout=5: txt)
    assert not dkim.verify(
        signed.as_bytes().replace(b"Hello", b"Hallo"), dnsfunc=lambda name, timeout=5: txt
    )


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("no_spf", "No SPF record at mail.acme.test"),
        ("two_spf", "mail.acme.test has 2 SPF records; receivers reject that as a permanent error"),
        ("spf_without_relay", "does not include spf.relay.test"),
        ("no_dkim", "No DKIM record at plixo"),
        ("short_dkim", "is 512 bits; receivers ignore keys under 1024 bits"),
        ("other_dkim", "is not the one plixo signs with"),
        ("no_dmarc", "No DMARC record at _dmarc.mail.acme.test"),
        ("bad_dmarc", "has no valid p="),
    ],
)
def test_each_broken_record_has_its_precise_reason(
    session: Session,
    org: Organisation,
    domain: SendingDomain,
    zone,
    breakage: str,
    reason: str,  # type: ignore[no-untyped-def]
) -> None:
    nameserver, resolver = zone
    publish(resolver, domain)
    dkim_name = f"{domain.selector}._domainkey.mail.acme.test"
    other = sd._key_pair()[1]
    edits = {
        "no_spf": lambda: resolver.txt.pop("mail.acme.test"),
        "two_spf": lambda: resolver.txt["mail.acme.test"].append("v=spf1 include:other.test -all"),
        "spf_without_relay": lambda: resolver.txt.__setitem__("mail.acme.test", ["v=spf1 mx -all"]),
        "no_dkim": lambda: resolver.txt.pop(dkim_name),
        "short_dkim": lambda: resolver.txt.__setitem__(
            dkim_name, [f"v=DKIM1; k=rsa; p={_short_key()}"]
        ),
        "other_dkim": lambda: resolver.txt.__setitem__(dkim_name, [f"v=DKIM1; k=rsa; p={other}"]),
        "no_dmarc": lambda: resolver.txt.pop("_dmarc.mail.acme.test"),
        "bad_dmarc": lambda: resolver.txt.__setitem__(
            "_dmarc.mail.acme.test", ["v=DMARC1; rua=mailto:x@y.test"]
        ),
    }
    edits[breakage]()
    segment = Segment(org_id=org.id, name="SMB", autopilot_enabled=True, shadow_mode=False)
    session.add(segment)
    org.sending_domain_verified = True
    session.flush()
    result = sd.check(session, org.id, nameserver=nameserver, now=NOW, actor="test")
    assert not result.ok and len(result.reasons) == 1
    assert reason in result.reasons[0]
    assert org.sending_domain_verified is False
    assert segment.autopilot_enabled is False and result.paused_segments == ["SMB"]
    assert (
        sign_message(
            build_message(
                settings_for(), to="a@b.test", subject="s", body="b\n", message_id="<m@p>"
            ),
            org,
        ).get("DKIM-Signature")
        is None
    )


def test_daily_recheck_and_bad_input(
    session: Session, org: Organisation, domain: SendingDomain, zone
) -> None:  # type: ignore[no-untyped-def]
    nameserver, resolver = zone
    publish(resolver, domain)
    assert sd.recheck_if_due(session, org.id, nameserver=nameserver, now=NOW).ok  # type: ignore[union-attr]
    assert (
        sd.recheck_if_due(session, org.id, nameserver=nameserver, now=NOW + timedelta(hours=3))
        is None
    )
    resolver.txt.pop("_dmarc.mail.acme.test")
    later = sd.recheck_if_due(
        session, org.id, nameserver=nameserver, now=NOW + timedelta(days=1, minutes=1)
    )
    assert later is not None and not later.ok and org.sending_domain_verified is False
    users = {u.role: u for u in org_users(session, org)}
    with pytest.raises(sd.DomainError, match="not a domain name"):
        sd.set_up(
            session,
            org.id,
            users[Persona.ADMIN],
            domain="not a domain",
            spf_include="spf.relay.test",
            now=NOW,
        )
    with pytest.raises(sd.DomainError, match="may not change the sending domain"):
        sd.set_up(
            session,
            org.id,
            users[Persona.COLLECTOR],
            domain="x.test",
            spf_include="spf.relay.test",
            now=NOW,
        )


def org_users(session: Session, org: Organisation):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from memory.models import User

    return session.scalars(select(User).where(User.org_id == org.id)).all()
