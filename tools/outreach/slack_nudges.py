"""Slack nudge suggestions: a Block Kit message to the account owner with Approve / Dismiss.

The owner decides in Slack; Slack calls plixo's interactivity endpoint, which must prove the call
came from Slack (``verify_request`` with the signing secret and a five-minute timestamp window,
slack_sdk's ``SignatureVerifier``) before anything changes. The button values carry only ids and the
draft version; who pressed is read from the signed payload and mapped to a plixo user of the same
organisation, so a forwarded or replayed message cannot act for someone else.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import SignatureVerifier

from memory.config import Settings
from memory.models import Customer, Draft, Invoice, User
from tools.delivery.slack import SlackError, client
from tools.kit.formatting import format_amount

APPROVE = "plixo_nudge_approve"
DISMISS = "plixo_nudge_dismiss"
ACTIONS = (APPROVE, DISMISS)


class SlackRequestInvalid(ValueError):
    """An interactivity request that is unsigned, forged, stale or malformed."""


@dataclass(frozen=True)
class NudgeAction:
    action: str
    org_id: int
    draft_id: int
    version: int
    slack_user_id: str
    team_id: str | None
    channel_id: str | None
    message_ts: str | None


def suggestion_blocks(
    *, draft: Draft, customer: Customer, invoice: Invoice, amount_text: str
) -> list[dict[str, Any]]:
    """The Block Kit layout: what, to whom, the text, and the two buttons."""
    value = f"{draft.org_id}:{draft.id}:{draft.version}"
    preview = draft.body if len(draft.body) <= 2800 else draft.body[:2797] + "..."
    return [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (
                    f"*Nudge suggestion for {customer.name}*\n"
                    f"Invoice {invoice.number}, {amount_text} open, due {invoice.due_date}. "
                    "The A/R team suggests a personal reminder from you."
                ),
            },
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{draft.subject}*\n>>> {preview}"},
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "Pre-approved template. It respects quiet hours and never goes out "
                    "next to an Autopilot touch; the A/R team is told either way.",
                }
            ],
        },
        {
            "type": "actions",
            "block_id": f"plixo_nudge_{draft.id}",
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE,
                    "text": {"type": "plain_text", "text": "Approve"},
                    "style": "primary",
                    "value": value,
                },
                {
                    "type": "button",
                    "action_id": DISMISS,
                    "text": {"type": "plain_text", "text": "Dismiss"},
                    "value": value,
                },
            ],
        },
    ]


def post_suggestion(
    settings: Settings, *, owner: User, draft: Draft, customer: Customer, invoice: Invoice
) -> str:
    """Post the suggestion as a direct message to the owner; returns the message ``ts``."""

    if not owner.slack_user_id:
        raise SlackError(f"{owner.name} has no Slack user id in plixo.")
    blocks = suggestion_blocks(
        draft=draft,
        customer=customer,
        invoice=invoice,
        amount_text=format_amount(invoice.balance_minor, invoice.currency),
    )
    try:
        response = client(settings).chat_postMessage(
            channel=owner.slack_user_id,
            text=f"Nudge suggestion for {customer.name}: {draft.subject}",
            blocks=blocks,
        )
    except (SlackApiError, SlackClientError, OSError) as exc:
        raise SlackError(f"Slack refused the nudge suggestion: {exc}") from exc
    return str(response.get("ts") or "")


def update_outcome(settings: Settings, action: NudgeAction, text: str) -> None:
    """Replace the buttons with the outcome, so nobody presses them twice."""
    if not action.channel_id or not action.message_ts:
        return
    # The decision is recorded in plixo either way; updating the Slack message is a courtesy.
    with contextlib.suppress(SlackApiError, SlackClientError, OSError, SlackError):
        client(settings).chat_update(
            channel=action.channel_id,
            ts=action.message_ts,
            text=text,
            blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        )


def verify_request(settings: Settings, body: bytes, headers: dict[str, str]) -> None:
    """Raise ``SlackRequestInvalid`` unless the body is signed by Slack within five minutes."""
    if settings.slack_signing_secret is None:
        raise SlackError("Slack interactivity is not configured: set PLIXO_SLACK_SIGNING_SECRET.")
    verifier = SignatureVerifier(settings.slack_signing_secret.get_secret_value())
    timestamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    if not timestamp or not signature:
        raise SlackRequestInvalid("The request is not signed by Slack.")
    if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
        raise SlackRequestInvalid("The Slack signature is invalid or the request is too old.")


def _obj(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, dict) else {}


def parse_action(body: bytes) -> NudgeAction:
    """The button press in a verified ``block_actions`` payload."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
        raise SlackRequestInvalid("Expected a form field 'payload' with Slack's JSON.") from exc
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise SlackRequestInvalid("Only block_actions payloads are handled here.")
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise SlackRequestInvalid("The payload has no action.")
    pressed = actions[0]
    action_id = pressed.get("action_id")
    if action_id not in ACTIONS:
        raise SlackRequestInvalid(f"Unknown action {action_id!r}.")
    try:
        org_s, draft_s, version_s = str(pressed.get("value", "")).split(":")
        org_id, draft_id, version = int(org_s), int(draft_s), int(version_s)
    except ValueError as exc:
        raise SlackRequestInvalid("The button value is malformed.") from exc
    user = _obj(payload, "user")
    slack_user = str(user.get("id") or "")
    if not slack_user:
        raise SlackRequestInvalid("The payload does not say who pressed the button.")
    team, channel, message = (
        _obj(payload, "team"),
        _obj(payload, "channel"),
        _obj(payload, "message"),
    )
    return NudgeAction(
        action=str(action_id),
        org_id=org_id,
        draft_id=draft_id,
        version=version,
        slack_user_id=slack_user,
        team_id=str(team.get("id")) if team.get("id") else None,
        channel_id=str(channel.get("id")) if channel.get("id") else None,
        message_ts=str(message.get("ts")) if message.get("ts") else None,
    )
