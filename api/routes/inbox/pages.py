"""The in-app inbox: a person's notifications (@mentions, approvals waiting, nudges the A/R team
must know about, breached dispute SLAs, missed promises), marking them read, and the choice of
e-mail and/or Slack as well (``tools.inbox.notifications``). Everyone logged in has an inbox; each
sees
and changes only their own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import Clock, CsrfChecked, DbSession, require
from api.pages import flash as _flash
from api.pages import render_page as _render
from memory.models import User
from tools.inbox import notifications
from tools.kit.labels import plural

router = APIRouter(include_in_schema=False)

#: Every persona holds view_queue; the inbox shows and changes only the reader's own items.
CurrentUser = Annotated[User, Depends(require("view_queue"))]


@router.get("/inbox", response_class=HTMLResponse)
def inbox_page(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    unread: Annotated[bool, Query()] = False,
) -> HTMLResponse:
    """The reader's notifications, newest first. Only reads: breached SLAs and missed promises
    arrive from the worker's schedule (``tools.inbox.notification_schedule``), inbox open or not."""
    items = notifications.inbox(db, user, unread_only=unread)
    return _render(
        request,
        "inbox.html",
        user,
        items=items,
        unread=unread,
        prefs=notifications.preferences(db, user.id),
    )


@router.post("/inbox/{notification_id}/open")
def open_item(
    notification_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    user: CurrentUser,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
) -> Response:
    """Mark one's own item read and go to what it is about."""
    item = next(
        (n for n in notifications.inbox(db, user, limit=500) if n.id == notification_id), None
    )
    notifications.mark_read(db, user, [notification_id], now=clock())
    db.commit()
    target = item.link if item is not None and item.link and item.link.startswith("/") else "/inbox"
    return RedirectResponse(target, status_code=303)


@router.post("/inbox/read")
def read_all(
    request: Request, user: CurrentUser, db: DbSession, clock: Clock, _csrf: CsrfChecked
) -> Response:
    n = notifications.mark_read(db, user, None, now=clock())
    db.commit()
    _flash(request, f"{notifications_word(n)} marked read.")
    return RedirectResponse("/inbox", status_code=303)


def notifications_word(n: int) -> str:

    return plural(n, "notification")


@router.post("/inbox/preferences")
def preferences(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    email: Annotated[str, Form(max_length=5)] = "",
    slack: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    try:
        prefs = notifications.set_preferences(
            db, user, email=email == "on", slack=slack == "on", now=clock()
        )
    except ValueError as exc:
        db.rollback()
        _flash(request, str(exc), "error")
        return RedirectResponse("/inbox", status_code=303)
    db.commit()
    chosen = [w for w, on in (("e-mail", prefs.email), ("Slack", prefs.slack)) if on]
    _flash(
        request,
        "You will also get notifications by " + " and ".join(chosen) + "."
        if chosen
        else "Notifications stay in your plixo inbox only.",
    )
    return RedirectResponse("/inbox", status_code=303)
