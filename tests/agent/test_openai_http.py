"""The OpenAI-compatible path over real HTTP: a local server in the test speaks Chat Completions
(tool calls, a final structured answer, a malformed answer, a transient 503). Only loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic_ai.models import override_allow_model_requests
from sqlalchemy.orm import Session

from agent.casefile import build_task, render, stated_facts
from agent.deps import AgentDeps
from agent.drafter import draft_outreach
from agent.models import build_model
from memory.models import DraftStatus
from tests.agent.factories import AS_OF, NOW, Ledger, settings_for

Reply = Callable[[dict[str, Any]], tuple[int, Any]]


class ChatServer:
    """A tiny Chat Completions server: answers request k with ``script[k]`` (last repeats)."""

    def __init__(self, script: list[Reply]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append({"path": self.path, "body": body})
                k = min(len(server.requests) - 1, len(server.script) - 1)
                status, payload = server.script[k](body)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(message: dict[str, Any], finish: str) -> tuple[int, Any]:
    return 200, {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_760_000_000,
        "model": "local-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 321, "completion_tokens": 45, "total_tokens": 366},
    }


def _tool_call(name: str, arguments: str, call_id: str = "call_1") -> tuple[int, Any]:
    return _completion(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        },
        "tool_calls",
    )


@pytest.fixture
def correct_args(session: Session, ledger: Ledger) -> dict[str, Any]:
    task = build_task(
        session, ledger.org.id, settings_for(), as_of=AS_OF, invoice_ids=[ledger.invoice.id]
    )
    subject, body, _ = render(task.case)
    facts = stated_facts(task.case)
    return {
        "channel": "email",
        "recipient": task.case.recipient,
        "subject": subject,
        "body": body,
        "invoice_numbers": facts["invoice_numbers"],
        "amounts": facts["amounts"],
        "dates": [d.isoformat() for d in facts["dates"]],
        "pay_link": facts["pay_link"],
        "language": "en",
        "tone": "friendly",
    }


@pytest.fixture
def allow_local_http() -> Iterator[None]:
    with override_allow_model_requests(True):
        yield


def _deps(session: Session, ledger: Ledger, url: str, retries: int = 0) -> AgentDeps:
    settings = settings_for(
        model="openai-compatible:local-model",
        model_base_url=url,
        model_retries=retries,
        model_timeout_s=5,
    )
    return AgentDeps(session=session, org_id=ledger.org.id, settings=settings, as_of=AS_OF, now=NOW)


def test_tool_call_then_structured_answer(
    session: Session, ledger: Ledger, correct_args: dict[str, Any], allow_local_http: None
) -> None:
    script: list[Reply] = [
        lambda body: _tool_call("invoice_detail", json.dumps({"invoice_number": "INV-1042"})),
        lambda body: _tool_call("submit_draft", json.dumps(correct_args), "call_2"),
    ]
    with ChatServer(script) as server:
        deps = _deps(session, ledger, server.url)
        result = draft_outreach(deps, invoice_id=ledger.invoice.id)
    assert result.status is DraftStatus.PENDING_REVIEW, result.hold_reason
    assert result.grounding["ok"] and result.model_name == "openai:local-model"
    assert result.usage.input_tokens == 642 and result.usage.output_tokens == 90
    first, second = (r["body"] for r in server.requests)
    assert server.requests[0]["path"] == "/v1/chat/completions"
    offered = {t["function"]["name"] for t in first["tools"]}
    assert {"invoice_detail", "account_360", "pay_link", "submit_draft"} <= offered
    assert first["model"] == "local-model"
    assert any("<case_file>" in str(m.get("content")) for m in first["messages"])
    tool_msgs = [m for m in second["messages"] if m["role"] == "tool"]
    assert tool_msgs and '"balance_minor":125000' in tool_msgs[0]["content"].replace(" ", "")


def test_malformed_answers_are_held(
    session: Session, ledger: Ledger, allow_local_http: None
) -> None:
    script: list[Reply] = [lambda body: _tool_call("submit_draft", '{"subject": "Hi", "body": ')]
    with ChatServer(script) as server:
        result = draft_outreach(_deps(session, ledger, server.url), invoice_id=ledger.invoice.id)
    assert result.status is DraftStatus.HELD and result.body == ""
    assert "unusable" in (result.hold_reason or "") or "failed" in (result.hold_reason or "")
    assert len(server.requests) >= 2  # the validation error was sent back before giving up


def test_a_non_json_response_is_held(
    session: Session, ledger: Ledger, allow_local_http: None
) -> None:
    with ChatServer([lambda body: (200, b"<html>gateway</html>")]) as server:
        result = draft_outreach(_deps(session, ledger, server.url), invoice_id=ledger.invoice.id)
    assert result.status is DraftStatus.HELD and result.hold_reason


def test_a_transient_error_is_retried_with_backoff(
    session: Session, ledger: Ledger, correct_args: dict[str, Any], allow_local_http: None
) -> None:
    script: list[Reply] = [
        lambda body: (503, {"error": {"message": "overloaded", "type": "server_error"}}),
        lambda body: _tool_call("submit_draft", json.dumps(correct_args)),
    ]
    with ChatServer(script) as server:
        result = draft_outreach(
            _deps(session, ledger, server.url, retries=1), invoice_id=ledger.invoice.id
        )
    assert result.status is DraftStatus.PENDING_REVIEW, result.hold_reason
    assert len(server.requests) == 2


def test_build_model_points_at_the_base_url() -> None:
    model = build_model(
        settings_for(model="openai-compatible:m", model_base_url="http://127.0.0.1:9/v1")
    )
    assert "127.0.0.1:9" in str(getattr(model, "wrapped", model).base_url)  # type: ignore[attr-defined]


# --- issue 19 item 7: one request, a refusal, a truncated answer, the wrong language -----------


def test_a_typical_draft_is_one_request(
    session: Session, ledger: Ledger, correct_args: dict[str, Any], allow_local_http: None
) -> None:
    """The case file is in the prompt, so the model answers at once: one request, no tool round."""
    script: list[Reply] = [lambda body: _tool_call("submit_draft", json.dumps(correct_args))]
    with ChatServer(script) as server:
        result = draft_outreach(_deps(session, ledger, server.url), invoice_id=ledger.invoice.id)
    assert result.status is DraftStatus.PENDING_REVIEW, result.hold_reason
    assert len(server.requests) == 1
    assert result.usage.requests == 1 and result.usage.input_tokens == 321


def test_a_refusal_is_held_with_the_models_words(
    session: Session, ledger: Ledger, allow_local_http: None
) -> None:
    refusal = "I'm sorry, but I can't help with debt collection messages."
    script: list[Reply] = [
        lambda body: _completion({"role": "assistant", "content": None, "refusal": refusal}, "stop")
    ]
    with ChatServer(script) as server:
        result = draft_outreach(_deps(session, ledger, server.url), invoice_id=ledger.invoice.id)
    assert result.status is DraftStatus.HELD and result.body == ""
    assert (result.hold_reason or "").startswith("The model refused"), result.hold_reason
    assert len(server.requests) == 1  # a refusal is not argued with


def test_a_truncated_answer_is_sent_back_then_held(
    session: Session, ledger: Ledger, correct_args: dict[str, Any], allow_local_http: None
) -> None:
    cut = json.dumps(correct_args)[:120]
    script: list[Reply] = [
        lambda body: _completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "submit_draft", "arguments": cut},
                    }
                ],
            },
            "length",
        )  # fmt: skip
    ]
    with ChatServer(script) as server:
        result = draft_outreach(_deps(session, ledger, server.url), invoice_id=ledger.invoice.id)
    assert result.status is DraftStatus.HELD and result.body == ""
    assert (result.hold_reason or "").startswith("The model's answer was cut off"), (
        result.hold_reason
    )
    assert len(server.requests) == 3  # sent back up to the agent's retries, then held


def _german(args: dict[str, Any]) -> dict[str, Any]:
    """The same figures in a German letter, declared as English."""
    amount = args["body"].split(" for ")[1].split(" ")[0] if " for " in args["body"] else ""
    body = (
        "Guten Tag,\n\nbitte beachten Sie, dass die Rechnung "
        f"{args['invoice_numbers'][0]} über {amount} noch offen ist. Sie können sie hier "
        f"bezahlen: {args['pay_link']}\n\nVielen Dank und freundliche Grüße\nIhre Buchhaltung"
    )
    return {**args, "subject": "Offene Rechnung", "body": body, "dates": []}


def test_an_answer_in_the_wrong_language_is_sent_back_once_then_held(
    session: Session, ledger: Ledger, correct_args: dict[str, Any], allow_local_http: None
) -> None:
    german = _german(correct_args)
    script: list[Reply] = [lambda body: _tool_call("submit_draft", json.dumps(german))]
    with ChatServer(script) as server:
        result = draft_outreach(_deps(session, ledger, server.url), invoice_id=ledger.invoice.id)
    assert result.status is DraftStatus.HELD, result.hold_reason
    assert "reads as 'de' but must be in 'en'" in (result.hold_reason or "")
    assert len(server.requests) == 2  # the problem went back to the model once
    retry = server.requests[1]["body"]["messages"]
    assert any("reads as 'de'" in str(m.get("content")) for m in retry)


def test_an_answer_in_the_wrong_language_corrected_on_retry_is_a_draft(
    session: Session, ledger: Ledger, correct_args: dict[str, Any], allow_local_http: None
) -> None:
    german = _german(correct_args)
    script: list[Reply] = [
        lambda body: _tool_call("submit_draft", json.dumps(german)),
        lambda body: _tool_call("submit_draft", json.dumps(correct_args), "call_2"),
    ]
    with ChatServer(script) as server:
        result = draft_outreach(_deps(session, ledger, server.url), invoice_id=ledger.invoice.id)
    assert result.status is DraftStatus.PENDING_REVIEW, result.hold_reason
    assert len(server.requests) == 2
