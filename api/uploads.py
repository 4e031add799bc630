"""Mini-portal uploads are refused before their body is read when the token or the size is wrong.

FastAPI parses a multipart form before the route runs, so a route cannot refuse an anonymous
24 MiB upload without first receiving it. This middleware looks at the two things known from the
request line and headers alone: the portal token in the path (unknown, revoked or expired: the
refusal is logged like any other portal refusal) and the declared ``Content-Length`` (over the
evidence limit plus room for the form's other fields: 413). Only then does the body get read.
"""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.routes.portal.endpoints import _render
from tools.commitments import disputes
from tools.portal import access as portal
from tools.portal.access import PortalDenied

UPLOAD_PATH = re.compile(r"^/portal/([^/]+)/disputes(?:/\d+/evidence)?/?$")
FORM_OVERHEAD = 64 * 1024  # the form's other fields and the multipart boundaries
MAX_UPLOAD_REQUEST = disputes.MAX_EVIDENCE_BYTES + FORM_OVERHEAD


class PortalUploadGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            UPLOAD_PATH.match(scope.get("path", ""))
            if scope["type"] == "http" and scope.get("method") == "POST"
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        refusal = await run_in_threadpool(self._refusal, scope, match.group(1))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, token: str) -> Response | None:
        headers = dict(scope.get("headers", []))
        state = scope["app"].state
        with state.sessions() as session:
            if not portal.token_is_live(session, token):
                request = Request(scope)
                client = request.client.host if request.client else None
                try:
                    portal.authenticate(session, token, client=client, action="upload")
                except PortalDenied as exc:
                    session.commit()  # keep the refusal on the record
                    return _page(request, exc.status_code, exc.public)
        declared = headers.get(b"content-length")
        if declared is None:
            return HTMLResponse("Send the file with a Content-Length.", status_code=411)
        try:
            size = int(declared)
        except ValueError:
            return HTMLResponse("Content-Length is not a number.", status_code=400)
        if size > MAX_UPLOAD_REQUEST:
            mb = disputes.MAX_EVIDENCE_BYTES // (1024 * 1024)
            return _page(Request(scope), 413, f"The file is too large; send at most {mb} MB.")
        return None


def _page(request: Request, status_code: int, message: str) -> Response:
    return _render(request, "portal_error.html", status_code, message=message)
