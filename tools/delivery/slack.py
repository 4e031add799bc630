"""Slack as a transport: the Web API client and posting a plain direct message.

Why here, in delivery: the outbox's delivery workflow sends Slack notifications like e-mail
(``outbox.smtp_sender``), and the outreach domain's nudge suggestions (above) use the same client
and error; the piece both need lives in the lower one.
"""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from memory.config import Settings
from tools.delivery.smtp import DeliveryError


class SlackError(RuntimeError):
    """Slack is not configured or refused the call; the message names the setting or the error."""


def client(settings: Settings) -> WebClient:
    if settings.slack_bot_token is None:
        raise SlackError("Slack is not configured: set PLIXO_SLACK_BOT_TOKEN.")
    base = settings.slack_base_url or "https://slack.com/api/"
    if not base.endswith("/"):
        base += "/"
    return WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=base, timeout=10)


#: Slack's answers a later attempt can get past (with HTTP 429 and 5xx); any other refusal is final.
TEMPORARY_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
     "request_timeout"}
)  # fmt: skip


def send_text(settings: Settings, slack_user_id: str, text: str) -> str:
    """Post a plain direct message (a notification from the person's plixo inbox) and return its
    ``ts``. The outbox's delivery workflow calls this; it raises ``DeliveryError``, temporary for
    a rate limit, a Slack outage or a lost connection (the workflow retries with back-off),
    permanent for a refusal no retry fixes (an unknown user, a revoked token). The error names
    Slack's answer, never the token."""

    try:
        response = client(settings).chat_postMessage(channel=slack_user_id, text=text[:3000])
    except SlackError as exc:
        raise DeliveryError(str(exc), permanent=True) from exc
    except SlackApiError as exc:
        status = int(getattr(exc.response, "status_code", 0) or 0)
        error = str(exc.response.get("error") or "unknown") if exc.response is not None else ""
        temporary = status == 429 or status >= 500 or error in TEMPORARY_ERRORS
        wait = exc.response.headers.get("retry-after") if exc.response is not None else None
        reason = f"Slack answered {status} ({error[:200]})"
        if temporary and wait:
            reason += f"; it asks to wait {wait} s"
        elif not temporary:
            reason += (
                f" for {slack_user_id}: check the person's Slack user id on People and the "
                "scopes of PLIXO_SLACK_BOT_TOKEN"
            )
        raise DeliveryError(reason, permanent=not temporary) from exc
    except (SlackClientError, OSError) as exc:
        raise DeliveryError(f"Cannot reach Slack: {type(exc).__name__}", permanent=False) from exc
    return str(response.get("ts") or "")
