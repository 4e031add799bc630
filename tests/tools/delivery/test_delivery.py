"""SMTP delivery against a real local SMTP server (aiosmtpd): plain, AUTH, STARTTLS, refusals."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from memory.config import Settings
from tests.api.smtp_server import SmtpSink, free_port, start_smtp
from tools.delivery.smtp import DeliveryError, build_message, send_email

MID = "<plixo.1.abc123@mail.acme.test>"


def _settings(port: int, **kw: object) -> Settings:
    return Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_from="ar@acme.test", **kw)  # type: ignore[arg-type]


@pytest.fixture
def smtp() -> Iterator[tuple[int, SmtpSink]]:
    controller, sink = start_smtp()
    yield controller.port, sink
    controller.stop()


def test_send_email_delivers_once_with_our_message_id(smtp: tuple[int, SmtpSink]) -> None:
    port, sink = smtp
    out = send_email(
        _settings(port), to="ap@payer.test", subject="Invoice INV-1", body="Hello", message_id=MID
    )
    assert out == MID
    assert len(sink.received) == 1
    got = sink.received[0]
    assert got.rcpt_tos == ["ap@payer.test"]
    assert got.message_id == MID
    assert got.message["Subject"] == "Invoice INV-1"
    assert got.message["From"] == "ar@acme.test"
    assert str(got.message.get_payload()).strip() == "Hello"


def test_refused_recipient_is_permanent(smtp: tuple[int, SmtpSink]) -> None:
    port, sink = smtp
    sink.refuse.add("gone@payer.test")
    with pytest.raises(DeliveryError) as err:
        send_email(_settings(port), to="gone@payer.test", subject="x", body="y", message_id=MID)
    assert err.value.permanent
    assert sink.received == []


def test_unreachable_relay_is_transient() -> None:
    port = free_port()  # nothing listens here
    with pytest.raises(DeliveryError) as err:
        send_email(_settings(port), to="a@b.test", subject="x", body="y", message_id=MID, timeout=2)
    assert not err.value.permanent
    assert f"127.0.0.1:{port}" in str(err.value)


@pytest.mark.parametrize(
    ("to", "subject", "mid"),
    [
        ("not-an-address", "x", MID),
        ("a@b.test\r\nBcc: evil@x.test", "x", MID),
        ("a@b.test", "x\r\nBcc: evil@x.test", MID),
        ("a@b.test", "x", "no-angle-brackets"),
    ],
)
def test_header_injection_and_bad_ids_are_refused_before_connecting(
    to: str, subject: str, mid: str
) -> None:
    with pytest.raises(DeliveryError) as err:
        build_message(_settings(1), to=to, subject=subject, body="b", message_id=mid)
    assert err.value.permanent


def test_auth_credentials_from_settings() -> None:
    controller, sink = start_smtp(credentials=("plixo", "s3cret"))
    try:
        good = _settings(controller.port, smtp_username="plixo", smtp_password=SecretStr("s3cret"))
        send_email(good, to="a@b.test", subject="s", body="b", message_id=MID)
        assert sink.message_ids() == [MID]
        bad = _settings(controller.port, smtp_username="plixo", smtp_password=SecretStr("nope"))
        with pytest.raises(DeliveryError) as err:
            send_email(bad, to="a@b.test", subject="s", body="b", message_id="<x.2@acme.test>")
        assert "credentials" in str(err.value)
        assert sink.message_ids() == [MID]
    finally:
        controller.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a cert")
def test_starttls_with_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts our self-signed cert
    controller, sink = start_smtp(credentials=("plixo", "pw"), tls_context=server_ctx)
    try:
        plain = _settings(controller.port, smtp_username="plixo", smtp_password=SecretStr("pw"))
        with pytest.raises(DeliveryError):  # the server requires STARTTLS
            send_email(plain, to="a@b.test", subject="s", body="b", message_id=MID)
        tls = _settings(
            controller.port,
            smtp_starttls=True,
            smtp_username="plixo",
            smtp_password=SecretStr("pw"),
        )
        send_email(tls, to="a@b.test", subject="s", body="b", message_id=MID)
        assert sink.message_ids() == [MID]
    finally:
        controller.stop()
