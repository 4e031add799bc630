"""Autopilot drafting on DBOS: the due items of a pass become workflows on a queue that any number
of worker processes share, partitioned per organisation.

Why: a pass over ten thousand invoices must survive a killed process without drafting anything
twice, and must spread over several processes (offline drafting is CPU-bound: one core each) or
machines. Two shapes, by what a crash would waste:

* **offline model**: drafting costs CPU only, so items go in chunks (``CHUNK`` items per workflow,
  smaller towards the pass's end: ``offline_chunks``) to keep DBOS's per-workflow cost (a few
  checkpoints, ~3-5 ms each) and a chunk's own reads small against ~10 ms per draft.
  The chunk is one step; killed half-way, it runs again and skips what it already stored.
* **a real model**: chunks too (``model_chunk_cap`` items at most, in whole waves of one chunk per
  slot: ``model_chunks``), each a workflow drafting its items in a thread of its own, one
  model request at a time (two items in hand: one is set up, checkpointed, grounded and decided
  while the other waits for the model, ``LANE_DEPTH``), whose model requests
  run through pydantic-ai's DBOS integration (``DBOSModel``: each request is a checkpointed step,
  so a model call completed before a crash is replayed from the system database, never paid for
  twice) at step ids reserved per item when the chunk starts (``_LanedModel``). One workflow per
  item cost ~60 ms of CPU per draft in queue dispatch, checkpoints and per-item setup.

Workflow ids are deterministic: a chunk's is ``autopilot:<ledger>:<org>:<as of>:<hash of its run
keys>`` (``m<hash>`` for a real model's), so a pass started twice enqueues each once (one-item
workflows of earlier versions, ``autopilot:<ledger>:<org>:<run key>``, still recover). Whatever
the path, the ledger's unique run key per organisation is the last word: a draft is stored once
even if two workflows wrote it.

The queue is partitioned per organisation (one large organisation cannot starve the rest) with a
per-organisation concurrency limit (``PLIXO_AUTOPILOT_CONCURRENCY``: chunks at once, so as many
real-model requests in flight) and, for real models, ``PLIXO_MODEL_REQUESTS_PER_MINUTE`` (chunk
starts across processes, requests per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from datetime import date, datetime
from itertools import islice
from typing import Any, TypeVar

from dbos import DBOS, SetEnqueueOptions, SetWorkflowID
from pydantic_ai.durable_exec.dbos import DBOSModel
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.settings import ModelSettings
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from agent.autopilot_batch import ACTOR, AutopilotSummary, draft_items
from agent.drafter import Drafter, run_sync
from agent.models import build_model, is_offline, model_name_of
from agent.schemas import OFFLINE_MODEL_NAME
from memory import durable
from memory.config import Settings
from memory.db import make_engine, session_factory, wait_for_ledger
from policies.engine import engine_for
from prompts.registry import template_books, templates
from tools.kit.gc_pauses import fewer_gc_pauses
from tools.outreach.due import DueItem

log = logging.getLogger("plixo.autopilot")
_T = TypeVar("_T")

CHUNK_QUEUE = "plixo_autopilot"
MODEL_QUEUE = "plixo_autopilot_model"
#: Offline items per chunk workflow, at most: a chunk's fixed cost (its reads of the ledger, its
#: first batch's queries, its workflow's checkpoints, a new event loop) came to ~1 ms per draft
#: at 50 items. The pass's last items go in smaller chunks (``offline_chunks``).
CHUNK = 100
#: The smallest offline chunk (the last ones of a pass).
CHUNK_MIN = 20
#: Real-model items per chunk workflow: at most, and at least when the rate limit allows it
#: (``model_chunk_cap``).
MODEL_CHUNK = 100
MODEL_CHUNK_MIN = 25
CHUNK_POLL_S = 0.2
#: Offline chunks one process drafts at once (``register_queues``).
CHUNKS_PER_PROCESS = 3
MODEL_POLL_S = 0.5
#: A real-model chunk stores its drafts every few (chunks running side by side then spread
#: their writes instead of all storing at their end).
MODEL_STORE_EVERY = 25
#: Model requests one item may make (the drafter's request limit is 8): step ids reserved per item.
REQUESTS_PER_ITEM = 10
#: Items a real-model chunk has in hand at once, behind its one-request gate: while one waits
#: for the model, the other is set up, checkpointed, grounded and decided, so the chunk's model
#: requests follow one another with no gap (one at a time added ~30-90 ms per 300 ms request).
LANE_DEPTH = 2

_models: dict[str, Model] = {}
_lent: dict[str, Model] = {}
_drafters: dict[tuple[int, str, bool], tuple[Settings, Any]] = {}
_models_lock = threading.Lock()


def register_queues(settings: Settings) -> None:
    """The two Autopilot queues. Their polling does not follow ``PLIXO_WORKER_POLL_S`` down:
    a chunk drafts for a second or more, and each poll of a partitioned queue costs about six
    system-database queries in every process (at 0.05 s, two queues took a fifth of a core per
    idle process, and as much again of PostgreSQL's). Each process keeps three offline chunks
    in hand (``worker_concurrency``), so it rarely waits for the next poll."""
    DBOS.register_queue(
        CHUNK_QUEUE,
        partition_concurrency=settings.autopilot_concurrency,
        # CPU-bound threads share one interpreter lock: a second chunk drafts while the first
        # waits on the database. Two, taken in one poll, ended together and left the process
        # idle until the next poll: over a 4,000-invoice pass on two processes, each had no
        # chunk for 1.1-1.7 s and one only for 2.6-5.5 s of its ~28 s; with three, 0.2-0.7 s
        # and 0.5-0.8 s. More would wait for the same interpreter lock.
        worker_concurrency=max(1, min(CHUNKS_PER_PROCESS, settings.worker_concurrency)),
        polling_interval_sec=max(settings.worker_poll_s, CHUNK_POLL_S),
        on_conflict="always_update",
    )
    DBOS.register_queue(
        MODEL_QUEUE,
        partition_concurrency=settings.autopilot_concurrency,
        # chunks one process drafts at once (``PLIXO_WORKER_CONCURRENCY``): with several
        # processes sharing an organisation's slots, each takes its share of the CPU work
        worker_concurrency=settings.worker_concurrency,
        # chunk workflows started per minute: each may make a chunk's worth of requests (the
        # requests themselves are paced per process, ``_Pace``)
        partition_limiter={
            "limit": max(1, settings.model_requests_per_minute // model_chunk_cap(settings)),
            "period": 60.0,
        },
        polling_interval_sec=max(settings.worker_poll_s, MODEL_POLL_S),
        on_conflict="always_update",
    )


durable.on_launch(register_queues)


def ensure_launched(settings: Settings, sessions: sessionmaker[Session]) -> str:
    """Launch DBOS in this process if no command did (embedded mode); the executor id.

    Embedded, the process takes work from the Autopilot queues only: no delivery and no
    scheduled workflow (a sweep or a mailbox sync picked up as the command ends would hold its
    exit); workers run those."""
    # lazy: DBOS registration; the delivery workflows are registered before launch, here only
    import tools.delivery.flow  # noqa: F401 - every workflow registered before launch

    ident = durable.launch(settings, sessions, kind="embedded", listen=[CHUNK_QUEUE, MODEL_QUEUE])
    with sessions() as session:
        durable.beat(session, ident, kind="embedded")
    # e.g. the previous run of this command, killed: its workflows go back to the queue
    durable.recover_dead(sessions, settings.worker_stale_s, mine=ident)
    return ident


def warm_up(settings: Settings) -> None:
    """Build, before this process takes its first chunk, what every process builds once for its
    first drafts: the default policy set and its compiled engine (with the guardrails' phrase
    tables and stems), the drafter's templates in every language, and, for the offline model, the
    drafter itself (a real model is built when a chunk needs it: a missing key must not stop a
    worker that also delivers mail).

    Why: a long-running worker (``plixo worker``) otherwise builds them inside the first chunk
    of the first pass it serves, while the other processes draft: measured on a fresh process,
    the first chunk of 50 offline drafts took 0.8-2.0 s of CPU and the next ones 0.4-0.7 s.
    The organisation's own reads (its switches, Data-Ready, its policy override) stay per pass
    (``org_reads``)."""
    engine_for(None)
    for language, version in template_books():
        templates(language, version)
    if is_offline(settings):
        for shadow in (False, True):
            _drafter(settings, None, shadow)


def lend_model(model: Model, name: str | None = None) -> str:
    """Make a model object (a test's FunctionModel, a benchmark's slow model) usable by this
    process's workflows under a name (wrapped like a real model: its requests are DBOS steps);
    only a process that lent a model under that name can run them.

    ``name``: lend it under that name (a benchmark lends the same model in each of its
    processes, so any of them can draft the pass's chunks); by default the name it was lent
    under before, or one of its own."""

    with _models_lock:
        if name is None:
            name = next((k for k, v in _lent.items() if v is model), f"lent:{id(model)}")
        if _lent.get(name) is not model:  # a new object may reuse a collected one's id
            _lent[name] = model
            offline = model_name_of(model) == OFFLINE_MODEL_NAME
            _models[name] = model if offline else _durable_model(name, model)
    return name


def _drafter(settings: Settings, model_ref: str | None, shadow: bool) -> Any:
    """A Drafter for this chunk or item; a real model is wrapped (once per process and model)
    so each of its requests is a DBOS step, checkpointed in the system database."""

    ref = model_ref or settings.model
    with _models_lock:
        model = _models.get(ref)
    if model is None:
        if model_ref is not None:
            raise RuntimeError(
                f"Model {model_ref} was lent to another process; run this pass embedded."
            )
        model = build_model(settings)
        if not is_offline(settings):
            model = _durable_model(ref, model)
        with _models_lock:
            _models[ref] = model
    key = (id(settings), ref, shadow)
    with _models_lock:
        cached = _drafters.get(key)
        if cached is not None and cached[0] is settings and cached[1].model is model:
            return cached[1]
    drafter = Drafter(settings, model=model, shadow=True if shadow else None, actor=ACTOR)
    with _models_lock:  # one per settings object, model and Shadow flag: built once per process
        if len(_drafters) > 64:
            _drafters.clear()
        _drafters[key] = (settings, drafter)
    return drafter


def _durable_model(ref: str, model: Model) -> Model:
    # Step names are what a recovered workflow replays by: stable for a configured model
    # (``PLIXO_MODEL``); a lent model's differ per object (tests), and duplicates only warn.
    prefix = "plixo_drafter_" + hashlib.sha256(ref.encode()).hexdigest()[:8]
    return _LanedModel(
        model, step_name_prefix=prefix, step_config={}, get_event_stream_handler=lambda: None
    )


class _Lane:
    """One item's model requests in a chunk workflow: the step ids reserved for them, in order,
    the organisation whose pace they keep, and the chunk's gate (``gate``: one model request of
    the chunk in flight at a time, set when the chunk starts drafting)."""

    __slots__ = ("gate", "org_id", "steps")

    def __init__(self, org_id: int, steps: list[Any]) -> None:
        self.org_id = org_id
        self.steps = steps
        self.gate: asyncio.Lock | None = None


_LANE: ContextVar[_Lane | None] = ContextVar("plixo_autopilot_lane", default=None)


class _Pace:
    """At most ``limit`` model requests per rolling minute, per organisation, in this process
    (``PLIXO_MODEL_REQUESTS_PER_MINUTE``; the queue's limiter bounds chunk starts across
    processes). Chunks run in threads of their own: locked."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.lock = threading.Lock()

    async def wait(self, limit: int) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                while self.times and now - self.times[0] >= 60.0:
                    self.times.popleft()
                if len(self.times) < limit:
                    self.times.append(now)
                    return
                pause = 60.0 - (now - self.times[0]) + 0.001
            await asyncio.sleep(pause)


_paces: dict[int, _Pace] = {}


class _LanedModel(DBOSModel):
    """pydantic-ai's ``DBOSModel`` (each request a checkpointed DBOS step), whose requests,
    in a chunk workflow, run at step ids reserved for their item (``_Lane``) when the chunk
    started: items draft concurrently, so the order in which their requests reach DBOS
    differs from run to run, and an item already stored is skipped after a crash; a step id
    drawn on the fly would then replay one item's answer to another."""

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        lane = _LANE.get()
        if lane is None:  # outside a chunk (a one-item workflow, a direct call)
            return await super().request(messages, model_settings, model_request_parameters)
        if not lane.steps:
            raise RuntimeError(
                f"more than {REQUESTS_PER_ITEM} model requests for one draft: not replayable"
            )
        step = lane.steps.pop(0)
        result: ModelResponse = await step.run_async(
            {"name": f"{self._step_name_prefix}__model.request", **self.step_config},
            self._raw_request,
            messages,
            model_settings,
            model_request_parameters,
        )
        return result

    async def _raw_request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        """The wrapped model's request, on the process's one model loop, through the chunk's
        gate and the organisation's pace (a request replayed from its checkpoint never gets
        here: it neither waits nor counts).

        Only the request holds the gate: the step's checkpoints (a system-database round trip
        each side), the agent's set-up, grounding and decision of the chunk's other item in
        hand run meanwhile, so the chunk's next request leaves as soon as this one returns."""
        lane = _LANE.get()
        gate = lane.gate if lane is not None else None
        async with gate if gate is not None else contextlib.nullcontext():
            if lane is not None:
                await _paces.setdefault(lane.org_id, _Pace()).wait(
                    durable.ledger_settings().model_requests_per_minute
                )
            request = self.wrapped.request(messages, model_settings, model_request_parameters)
            future = asyncio.run_coroutine_threadsafe(request, _model_loop.get())
            return await asyncio.wrap_future(future)


class _LanedDrafterProxy:
    """The drafter a chunk workflow drafts with: each item composes in its own lane."""

    def __init__(self, drafter: Any, lanes: dict[str, _Lane]) -> None:
        self._drafter = drafter
        self._lanes = lanes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._drafter, name)

    async def compose(self, deps: Any, task: Any, **kwargs: Any) -> Any:
        token = _LANE.set(self._lanes.get(task.run_key))
        try:
            return await self._drafter.compose(deps, task, **kwargs)
        finally:
            _LANE.reset(token)


async def _adraft(
    org_id: int,
    items: list[dict[str, Any]],
    args: dict[str, Any],
    *,
    item_of: str | None = None,
    lanes: dict[str, _Lane] | None = None,
) -> dict[str, Any]:
    """Draft and store ``items`` for one organisation; the partial summary (JSON). ``item_of``:
    the ledger key when these are real-model items (their own ledger sessions); ``lanes``: the
    step ids reserved for each item's model requests (a real-model chunk: one item at a time,
    stored every few drafts)."""

    settings = durable.ledger_settings()
    shadow = bool(args["shadow"])
    now = datetime.fromisoformat(args["now"])
    sessions = durable.ledger_sessions()
    if item_of is not None:
        sessions = _item_ledger(settings)[0]
    drafter = _drafter(settings, args.get("model_ref"), shadow)
    concurrency, batch_size = int(args["concurrency"]), int(args["batch_size"])
    drafting: Any = drafter
    first_batch: int | None = None
    read_size: int | None = None
    if lanes is not None:
        drafting = _LanedDrafterProxy(drafter, lanes)
        gate = asyncio.Lock()  # this chunk's: one model request in flight
        for lane in lanes.values():
            lane.gate = gate
        read_size = batch_size
        concurrency, batch_size = LANE_DEPTH, min(batch_size, MODEL_STORE_EVERY)
        first_batch = LANE_DEPTH
    part = AutopilotSummary(
        org_id=org_id,
        as_of=date.fromisoformat(args["as_of"]),
        shadow=shadow,
        model_name=drafter.model_name,
        offline_model=drafter.offline,
    )
    cpu = time.thread_time()
    await draft_items(
        sessions,
        org_id,
        [DueItem.from_dict(d) for d in items],
        as_of=part.as_of,
        now=now,
        settings=settings,
        drafter=drafting,
        summary=part,
        concurrency=concurrency,
        batch_size=batch_size,
        progress=None,
        pass_id=args.get("pass_id"),
        first_batch=first_batch,
        read_size=read_size,
    )
    part.worker_cpu_s = round(time.thread_time() - cpu, 3)
    return part.model_dump(mode="json")


def _draft(org_id: int, items: list[dict[str, Any]], args: dict[str, Any]) -> dict[str, Any]:
    """``_adraft`` from a worker thread (its own event loop), with fewer GC pauses.

    A ledger that goes away half-way (a restart, a failover) pauses the chunk until it is back,
    then the chunk carries on, skipping the drafts it stored: an outage spends none of the
    step's attempts (five within ~15 s), which ended the chunks in flight with errors when
    PostgreSQL was away for a minute. Any other database error is the step's to retry."""

    with fewer_gc_pauses():
        return _through_outages(lambda: run_sync(_adraft(org_id, items, args)))


def _through_outages(run: Callable[[], _T]) -> _T:
    """``run()``, and again each time it fails because the ledger went away, once the ledger is
    back (``wait_for_ledger``); another database error is raised."""
    while True:
        try:
            return run()
        except OperationalError:
            if not wait_for_ledger(durable.ledger_sessions().kw["bind"]):
                raise


@DBOS.step(name="plixo.autopilot.draft_chunk", retries_allowed=True, max_attempts=5)
def _draft_chunk_step(org_id: int, items: list[dict[str, Any]], args: dict[str, Any]) -> Any:
    return _draft(org_id, items, args)


@DBOS.workflow(name="plixo.autopilot.chunk", max_recovery_attempts=50)
def draft_chunk(
    ledger: str, org_id: int, items: list[dict[str, Any]], args: dict[str, Any]
) -> dict[str, Any]:
    """Draft a chunk of due items (offline model): one step, skipping items already stored."""
    result: dict[str, Any] = _draft_chunk_step(org_id, items, args)
    return result


@DBOS.workflow(name="plixo.autopilot.item", max_recovery_attempts=50)
async def draft_item(
    ledger: str, org_id: int, item: dict[str, Any], args: dict[str, Any]
) -> dict[str, Any]:
    """Draft one due item with a real model; its model requests are checkpointed steps. Async:
    every item workflow of a process shares DBOS's event loop, and so the model's client and
    its concurrency limit."""
    async with _item_ledger(durable.ledger_settings())[1]:
        return await _adraft(org_id, [item], args, item_of=ledger)


@DBOS.workflow(name="plixo.autopilot.model_chunk", max_recovery_attempts=50)
def draft_model_chunk(
    ledger: str, org_id: int, items: list[dict[str, Any]], args: dict[str, Any]
) -> dict[str, Any]:
    """Draft a chunk of due items with a real model, one request at a time (``LANE_DEPTH`` items
    in hand, so the next request leaves as the previous answer arrives); each model request is
    a checkpointed step (a request answered before a crash is replayed, never paid twice) at a
    step id reserved for its item before anything runs (``_LanedModel``), so an item skipped
    after a crash (already stored) never shifts another's.

    Many chunks run side by side (``PLIXO_AUTOPILOT_CONCURRENCY`` per organisation: as many
    requests in flight), each in its own thread and event loop: the ledger reads and writes of
    drafting block only their own chunk (on one shared loop, sixteen chunks' database round trips
    queued every model answer behind them: 0.7 s per 0.3 s request). The requests themselves all
    run on one loop (``_model_loop``), so a model's HTTP client is shared as before."""

    lanes: dict[str, _Lane] = {}
    for d in items:  # in the input's order: the same step ids on every run of this workflow
        steps = [DBOS.reserve_step() for _ in range(REQUESTS_PER_ITEM)]
        lanes.setdefault(DueItem.from_dict(d).run_key, _Lane(org_id, steps))
    with fewer_gc_pauses():  # an outage: the items stored are skipped, the others drafted
        result: dict[str, Any] = _through_outages(  # with their lanes' next reserved steps
            lambda: run_sync(_adraft(org_id, items, args, item_of=ledger, lanes=lanes))
        )
    return result


class _ModelLoop:
    """One event loop thread for every model request of laned chunks in this process."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="plixo-model-loop", daemon=True
                ).start()
                self._loop = loop
            return self._loop


_model_loop = _ModelLoop()


_Pool = tuple[sessionmaker[Session], sessionmaker[Session], int, asyncio.Semaphore]
_item_ledgers: dict[int, _Pool] = {}


def _item_ledger(settings: Settings) -> tuple[sessionmaker[Session], asyncio.Semaphore]:
    """The sessions real-model item workflows use, and how many may draft at once.

    Item workflows share DBOS's event loop and each holds a ledger connection while its model
    answers, so a checkout that had to wait would stall the loop every holder needs to finish.
    They get their own pool, sized to the organisation's concurrency
    (``PLIXO_AUTOPILOT_CONCURRENCY``, plus as much overflow again: a chunk reads its next batch
    on a second connection while it drafts, ``_prepare_aside``), with as many slots:
    with the command's pool (5 + 10 connections) only 7 drafted at once, whatever the setting.
    The command's pool stays for chunk threads, the heartbeat and dispatch. A ledger whose pool
    is not a ``QueuePool`` (no fixed size) is used as it is.
    """
    with _models_lock:  # chunks build it from their own threads
        return _item_ledger_locked(settings)


def _item_ledger_locked(settings: Settings) -> tuple[sessionmaker[Session], asyncio.Semaphore]:
    ledger = durable.ledger_sessions()
    slots = max(2, settings.autopilot_concurrency)
    found = _item_ledgers.get(id(ledger))
    if found is not None and found[0] is ledger and found[2] == slots:
        return found[1], found[3]
    engine = ledger.kw.get("bind")
    sessions = ledger
    if isinstance(getattr(engine, "pool", None), QueuePool):
        own = make_engine(
            engine.url.render_as_string(hide_password=False),  # type: ignore[union-attr]
            pool_size=slots,
            max_overflow=slots + 2,
        )
        sessions = session_factory(own)
    for old, old_sessions, _, _ in _item_ledgers.values():  # re-pointed (tests), or resized
        if old_sessions is not old:
            old_sessions.kw["bind"].dispose()
    _item_ledgers.clear()
    _item_ledgers[id(ledger)] = (ledger, sessions, slots, asyncio.Semaphore(slots))
    return sessions, _item_ledgers[id(ledger)][3]


def model_chunk_cap(settings: Settings) -> int:
    """Items per real-model chunk at most: ``MODEL_CHUNK``, less when the rate limit is low
    against the concurrency (``MODEL_CHUNK_MIN`` at least).

    The queue's limiter bounds chunk starts per minute (``PLIXO_MODEL_REQUESTS_PER_MINUTE``
    over this cap: a minute's starts never carry more items than the limit allows requests,
    across processes), and must let two waves of chunks (two per slot) start within a minute,
    or a second pass of the same organisation would wait for the first's window to pass."""
    slots = max(1, settings.autopilot_concurrency)
    return min(MODEL_CHUNK, max(MODEL_CHUNK_MIN, settings.model_requests_per_minute // (2 * slots)))


def model_chunks(items: list[_T], settings: Settings) -> list[list[_T]]:
    """A pass's items cut into real-model chunks, in order, with as many chunks at once as the
    organisation's concurrency: as few waves of chunks as ``model_chunk_cap`` items per chunk
    allow, every wave filling every slot (sizes differ by one at most).

    Why: a chunk costs ~1 s of a slot beyond its model requests (dispatch, its first reads
    and checkpoints before the first request, the last store after the last answer), 15% of a
    25-item chunk; and a last wave of a few chunks leaves the other slots idle."""
    n, slots = len(items), max(1, settings.autopilot_concurrency)
    waves = max(1, -(-n // (slots * model_chunk_cap(settings))))
    count = min(n, slots * waves)
    out: list[list[_T]] = []
    start = 0
    for k in range(count):
        size = n // count + (1 if k < n % count else 0)
        out.append(items[start : start + size])
        start += size
    return out


def offline_chunks(items: list[_T], settings: Settings) -> list[list[_T]]:
    """A pass's items cut into offline chunks, in order: ``CHUNK`` items each while many are
    left, then smaller ones (down to ``CHUNK_MIN``) as the pass nears its end, each at most
    1/(2 x slots) of what is left (slots: the organisation's ``PLIXO_AUTOPILOT_CONCURRENCY``).

    Why shrinking: the queue hands chunks out in order, so the last ones decide when the pass
    ends; with equal chunks one process drafted its last whole chunk while the others had
    nothing left (the larger the chunk, the longer). Guided self-scheduling keeps the big
    chunks' low cost per draft for the bulk of the pass and an even finish."""
    slots = max(1, settings.autopilot_concurrency)
    out: list[list[_T]] = []
    start, n = 0, len(items)
    while start < n:
        size = min(CHUNK, max(CHUNK_MIN, -(-(n - start) // (2 * slots))))
        out.append(items[start : start + size])
        start += size
    return out


def _key(ledger: str, org_id: int, items: list[DueItem], as_of: date, kind: str = "") -> str:
    digest = hashlib.sha256("\n".join(i.run_key for i in items).encode()).hexdigest()[:20]
    return f"autopilot:{ledger}:{org_id}:{as_of.isoformat()}:{kind}{digest}"


def adopt_unfinished(
    ledger: str, org_id: int, as_of: date, items: list[DueItem]
) -> tuple[list[DueItem], list[tuple[str, int]], int]:
    """The items no unfinished chunk of an earlier pass (same organisation and date) holds; the
    chunks that hold the others, with how many of this pass's items each holds; and how many of
    their items are not this pass's (stored before: already counted by the selection).

    Why: a pass killed half-way leaves chunks behind that its next run recovers, but that run
    selects only what is not stored yet, so its own chunks differ from the killed run's (other
    ids) and, without this, both drafted the same items (one stored, the other skipped): with a
    real model, paying twice. The same holds for two passes started side by side. Adopted, the
    earlier chunk drafts them and this pass waits for it."""
    prefix = f"autopilot:{ledger}:{org_id}:{as_of.isoformat()}:"
    mine = {i.run_key for i in items}
    taken: set[str] = set()
    adopted: list[tuple[str, int]] = []
    outside = 0
    for w in DBOS.list_workflows(
        workflow_id_prefix=prefix, status=["ENQUEUED", "PENDING", "DELAYED"], load_input=True
    ):
        args = w.input["args"] if w.input else ()
        if len(args) < 3 or not isinstance(args[2], list):  # a one-item workflow (older)
            continue
        keys = {DueItem.from_dict(d).run_key for d in args[2]}
        if keys & mine:
            adopted.append((w.workflow_id, len(keys & mine)))
            taken |= keys & mine
            outside += len(keys - mine)
    return [i for i in items if i.run_key not in taken], adopted, outside


def enqueue_pass(
    sessions: sessionmaker[Session],
    org_id: int,
    items: list[DueItem],
    args: dict[str, Any],
    *,
    per_item: bool,
) -> tuple[list[tuple[str, int]], int]:
    """Enqueue the pass's workflows (idempotent by id), adopting an earlier pass's unfinished
    chunks (``adopt_unfinished``); the ids and item counts to wait for, and how many items of
    adopted chunks the selection already counted as stored."""
    with sessions() as session:
        ledger = durable.ledger_key(session)
    as_of = date.fromisoformat(args["as_of"])
    items, out, outside = adopt_unfinished(ledger, org_id, as_of, items)
    adopted = len(out)
    with SetEnqueueOptions(queue_partition_key=str(org_id)):
        if per_item:  # a real model: whole waves of chunks
            for chunk in model_chunks(items, durable.ledger_settings()):
                wid = _key(ledger, org_id, chunk, as_of, kind="m")
                with SetWorkflowID(wid):
                    DBOS.enqueue_workflow(
                        MODEL_QUEUE,
                        draft_model_chunk,
                        ledger,
                        org_id,
                        [i.to_dict() for i in chunk],
                        args,
                    )
                out.append((wid, len(chunk)))
            _resume_cancelled([w for w, _ in out[adopted:]])
            return out, outside
        for chunk in offline_chunks(items, durable.ledger_settings()):
            wid = _key(ledger, org_id, chunk, as_of)
            with SetWorkflowID(wid):
                DBOS.enqueue_workflow(
                    CHUNK_QUEUE, draft_chunk, ledger, org_id, [i.to_dict() for i in chunk], args
                )
            out.append((wid, len(chunk)))
    _resume_cancelled([w for w, _ in out[adopted:]])
    return out, outside


def _resume_cancelled(ids: list[str]) -> None:
    """A pass stopped with Ctrl-C cancelled its unstarted workflows; the same items enqueued
    again (same ids) resume them instead of finding them cancelled."""
    for w in DBOS.list_workflows(workflow_ids=ids, status="CANCELLED", load_input=False):
        DBOS.resume_workflow(w.workflow_id)


def cancel_unfinished(ids: list[str]) -> None:
    """Ctrl-C: stop what has not finished (a running step completes; nothing is half-stored)."""
    for w in DBOS.list_workflows(
        workflow_ids=ids, status=["ENQUEUED", "PENDING", "DELAYED"], load_input=False
    ):
        DBOS.cancel_workflow(w.workflow_id)


_DONE = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


def wait_for(
    flows: list[tuple[str, int]],
    *,
    progress: Callable[[int], None] | None,
    on_part: Callable[[dict[str, Any]], None],
    on_error: Callable[[str], None],
    poll_s: float = 0.1,
    window: int = 256,
    on_poll: Callable[[], None] | None = None,
) -> None:
    """Wait until every workflow is done; parts and errors are handed over as they finish;
    ``on_poll`` runs between polls.

    Each poll asks about the oldest ``window`` unfinished workflows only (queues start them in
    order) and reads the finished ones' results in the same query: a poll costs the same for a
    pass of ten items or ten thousand (asking about all of them, 10 times a second, cost a
    pass of 2,000 real-model items more CPU than its drafting's bookkeeping)."""
    left = dict(flows)
    while left:
        ids = list(islice(left, window))
        for w in DBOS.list_workflows(
            workflow_ids=ids, status=list(_DONE), load_input=False, load_output=True
        ):
            size = left.pop(w.workflow_id)
            if w.status == "SUCCESS":
                on_part(dict(w.output or {}))
            else:
                on_error(f"{w.workflow_id}: {w.status} {w.error or ''}"[:300])
            if progress:
                progress(size)
        if left:
            if on_poll is not None:
                on_poll()
            time.sleep(poll_s)
