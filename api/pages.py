"""The panel's pages: one Jinja environment, one way to render a page, one flash message.

Why one home: every route module used to carry its own copy of "render with the header's words and
pop the flash" (five copies, two of which forgot that some requests have no session) and imported
the templates from ``api.app`` inside a function to dodge an import cycle. Routes import this
module; ``api.app`` imports it too, so the app and its routers share the same environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from api.deps import template_context
from memory.models import Draft, User
from tools.kit import labels

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
# Money as money on every page: the currency's own digits ("$999.00", never "$999").
templates.env.filters["money"] = lambda minor, currency="USD": labels.money(minor, currency)


def render_page(
    request: Request, name: str, user: User | None, status_code: int = 200, **ctx: Any
) -> HTMLResponse:
    """A panel page with the header's words (labels, the reader's locale, unread count) and the
    flash message the last action left, shown once. A ``flash`` passed in wins over a stored one."""
    stored = request.session.pop("flash", None) if "session" in request.scope else None
    flash_msg = ctx.pop("flash", None) or stored
    return templates.TemplateResponse(
        request,
        name,
        template_context(request, user, flash=flash_msg, **ctx),
        status_code=status_code,
    )


def flash(
    request: Request, message: str, kind: str = "ok", reasons: list[str] | None = None
) -> None:
    """The message the next page shows once: what happened, and why (the rules' reasons)."""
    request.session["flash"] = {"message": message, "kind": kind, "reasons": reasons or []}


def checked_message(request: Request, draft: Draft) -> RedirectResponse:
    """Tell the person what grounding and the guardrails decided, and land on the draft."""
    outcome = labels.label(draft.status).lower()
    kind = "ok" if draft.status.value == "pending_review" else "warn"
    reasons = [
        f"{labels.rule_label(r.get('rule_id'))}: {r.get('message')}"
        for r in (draft.decision or {}).get("reasons", [])
        if r.get("outcome") == draft.decision_outcome and draft.decision_outcome != "allow"
    ]
    flash(
        request,
        f"Your message was checked against the ledger and the guardrails: {outcome}.",
        kind,
        reasons,
    )
    return RedirectResponse(f"/drafts/{draft.id}", status_code=303)
