"""Real local servers for the payment tests: localstripe (a stateful Stripe fake from the package
registry) and an aiosmtpd SMTP sink. Nothing here reaches the network.

``localstripe`` is started as a subprocess on a free port (``localstripe --port N --from-scratch``)
and polled until it answers; the official ``stripe`` SDK is pointed at it through
``Settings.stripe_api_base``. localstripe keeps its state in memory (it also pickles it to
``/tmp/localstripe.pickle`` on every write; ``--from-scratch`` means we never read that file back,
so concurrent runs cannot see each other's objects).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller

LOCALSTRIPE_KEY = "sk_test_plixo_localstripe"
START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _localstripe_command(port: int) -> list[str]:
    exe = shutil.which("localstripe", path=str(Path(sys.executable).parent)) or shutil.which(
        "localstripe"
    )
    base = [exe] if exe else [sys.executable, "-m", "localstripe"]
    return [*base, "--port", str(port), "--from-scratch"]


@dataclass
class LocalStripe:
    url: str
    process: subprocess.Popen[bytes]

    def register_webhook(self, name: str, url: str, secret: str) -> None:
        """localstripe's own webhook delivery (it signs like Stripe: ``t=...,v1=...``)."""
        r = httpx.post(f"{self.url}/_config/webhooks/{name}", data={"url": url, "secret": secret})
        r.raise_for_status()


def start_localstripe() -> LocalStripe:
    port = free_port()
    proc = subprocess.Popen(
        _localstripe_command(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"localstripe exited with {proc.returncode}: {err[-2000:]}")
        try:
            r = httpx.get(f"{url}/v1/customers", auth=(LOCALSTRIPE_KEY, ""), timeout=1.0)
            if r.status_code == 200:
                return LocalStripe(url, proc)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"localstripe did not answer on {url} within {START_TIMEOUT_S}s")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    if proc.stderr:
        proc.stderr.close()


@contextmanager
def run_localstripe() -> Iterator[LocalStripe]:
    """A localstripe process for the block (wrap it in a session-scoped fixture: one per run)."""
    server = start_localstripe()
    try:
        yield server
    finally:
        stop(server.process)


# --- SMTP -------------------------------------------------------------------------------------


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self._lock:
            self.messages.append(message_from_bytes(envelope.content))
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)


@contextmanager
def run_smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on a free local port, collecting what it receives."""
    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
