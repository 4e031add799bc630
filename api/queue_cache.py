"""Serialized review-queue pages, cached per organisation and query, valid for one queue version.

Many operators of one organisation look at the same queue, and it changes far less often than it
is read. A page is built once per ``organisation.queue_version`` (see ``memory/queue_version.py``:
bumped in the same transaction as any change to what the queue shows) and served as bytes until
the version moves. The version is read with the caller, in the same statement, on every request,
so a page is never staler than the ledger, across processes and workers alike.

Two places serve from the cache:

* ``GET /api/queue`` (``api/routes/review/endpoints.py``) builds and stores pages: FastAPI
validates the
  query, the access matrix is checked, and a miss runs the queue query;
* :class:`QueueCacheMiddleware` answers a *bearer-token* request for a page that is already cached
  before routing, after the same token lookup and access-matrix check. On anything else (no or
  malformed token, unknown token, a persona without ``view_queue``, a page not cached at this
  version) it steps aside and the route answers, errors included. FastAPI's per-request
  dependency and parameter resolution is most of this endpoint's cost (about 170 of 270 µs
  in-process, measured), and a cached page needs none of it: a query is only ever cached after
  the route has validated it, under the same key.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from cachetools import LRUCache
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import bearer_token, db_slots
from policies.access import allowed
from tools.ledger.users import CallerSnapshot, snapshot_for_token

QUEUE_PATH = "/api/queue"
QUEUE_PERMISSION = "view_queue"

DEFAULT_PAGES = 512  # ~50 kB per 50-row page: at most ~25 MB per process


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    body: bytes


class QueuePageCache:
    """An LRU of serialized pages keyed by (organisation, query), each tagged with its version."""

    def __init__(self, max_pages: int = DEFAULT_PAGES) -> None:
        self._pages: LRUCache[Hashable, _Entry] = LRUCache(maxsize=max_pages)
        self._lock = threading.Lock()  # routes may run in worker threads
        self.hits = 0
        self.builds = 0

    def get(self, key: Hashable, version: int) -> bytes | None:
        """The cached page for ``key`` if it was built at ``version``; None otherwise."""
        with self._lock:
            entry = self._pages.get(key)
            if entry is not None and entry.version == version:
                self.hits += 1
                return entry.body
            return None

    def put(self, key: Hashable, version: int, body: bytes) -> None:
        """Keep a page the route has just built (and counts it: hits / builds is the hit rate)."""
        with self._lock:
            self.builds += 1
            current = self._pages.get(key)
            # A slower request that read an older version must not replace a newer page.
            if current is None or current.version <= version:
                self._pages[key] = _Entry(version, body)

    def __len__(self) -> int:
        return len(self._pages)


def page_key(caller: CallerSnapshot, raw_query: bytes) -> Hashable:
    """The cache key of a queue request: organisation, decoded and sorted query parameters, and
    the caller when the query names ``mine`` (a personal page, never shared)."""
    params = tuple(sorted(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)))
    personal = any(name == "mine" for name, _ in params)
    return (caller.org_id, caller.id if personal else None, params)


class QueueCacheMiddleware:
    """Answer bearer-token requests for an already cached queue page before routing (see above)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == QUEUE_PATH:
            body = await self._cached_page(scope)
            if body is not None:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-length", str(len(body)).encode()),
                            (b"content-type", b"application/json"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    async def _cached_page(self, scope: Scope) -> bytes | None:
        token = _bearer_token(scope)
        if token is None:
            return None
        state = scope["app"].state
        async with db_slots(state):
            # One statement, no transaction to open or roll back (a round trip each on a server).
            with state.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                caller = snapshot_for_token(conn, token)
        if caller is None or not allowed(caller.role.value, QUEUE_PERMISSION):
            return None
        cache: QueuePageCache = state.queue_cache
        return cache.get(page_key(caller, scope.get("query_string", b"")), caller.queue_version)


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None
