"""How a pass is cut into chunk workflows: a real model's (``agent.autopilot_flow.model_chunks``)
in whole waves that fill every slot, no chunk above the cap the rate limit allows; the offline
model's (``offline_chunks``) at most ``CHUNK`` items, shrinking towards the pass's end; the items
in order, each once."""

from __future__ import annotations

from agent.autopilot_flow import (
    CHUNK,
    CHUNK_MIN,
    MODEL_CHUNK,
    MODEL_CHUNK_MIN,
    model_chunk_cap,
    model_chunks,
    offline_chunks,
)
from memory.config import Settings


def _cut(n: int, concurrency: int, rpm: int) -> tuple[list[list[int]], Settings]:
    settings = Settings(autopilot_concurrency=concurrency, model_requests_per_minute=rpm)
    items = list(range(n))
    chunks = model_chunks(items, settings)
    assert [i for c in chunks for i in c] == items  # in order, each once
    return chunks, settings


def test_a_pass_is_cut_into_whole_waves_that_fill_every_slot() -> None:
    chunks, _ = _cut(2000, 16, 1_000_000)
    assert len(chunks) == 32  # two waves of 16, not 20 chunks of 100 (a last wave of 4)
    assert {len(c) for c in chunks} == {62, 63}
    chunks, _ = _cut(14, 10, 600)
    assert len(chunks) == 10 and {len(c) for c in chunks} == {1, 2}  # every slot drafts
    chunks, _ = _cut(3, 8, 600)
    assert [len(c) for c in chunks] == [1, 1, 1]
    assert _cut(0, 8, 600)[0] == []


def test_no_chunk_carries_more_items_than_the_rate_limit_allows_per_start() -> None:
    for n, concurrency, rpm in ((10_000, 16, 1_000_000), (2000, 8, 600), (500, 16, 100)):
        chunks, settings = _cut(n, concurrency, rpm)
        cap = model_chunk_cap(settings)
        assert MODEL_CHUNK_MIN <= cap <= MODEL_CHUNK
        assert max(len(c) for c in chunks) <= cap
        # the queue's limiter lets two waves start within a minute when the limit allows it
        if rpm // (2 * concurrency) >= MODEL_CHUNK_MIN:
            assert rpm // cap >= 2 * concurrency
    assert model_chunk_cap(Settings(autopilot_concurrency=8, model_requests_per_minute=600)) == 37


def test_an_offline_pass_is_cut_into_large_chunks_that_shrink_towards_its_end() -> None:
    """The bulk goes in ``CHUNK``-item chunks (a chunk's fixed cost is per chunk); the last
    ones shrink, each at most 1/(2 x slots) of what is left and ``CHUNK_MIN`` at least, so no
    process drafts a whole large chunk alone at the end while the others have nothing left."""
    settings = Settings(autopilot_concurrency=8)
    items = list(range(10_000))
    chunks = offline_chunks(items, settings)
    assert [i for c in chunks for i in c] == items  # in order, each once
    sizes = [len(c) for c in chunks]
    assert sizes[: len(sizes) // 2] == [CHUNK] * (len(sizes) // 2)
    assert sizes == sorted(sizes, reverse=True)  # never growing again
    assert sizes[-1] <= CHUNK_MIN and min(sizes[:-1]) == CHUNK_MIN
    left = len(items)
    for size in sizes:  # each one at most its share of what was left, or the floor
        assert size <= max(CHUNK_MIN, -(-left // 16))
        left -= size
    # more slots: the shrinking starts earlier; a small pass is cut as finely as the floor allows
    wide = offline_chunks(items, Settings(autopilot_concurrency=32))
    assert sum(len(c) < CHUNK for c in wide) > sum(len(c) < CHUNK for c in chunks)
    assert [len(c) for c in offline_chunks(list(range(45)), settings)] == [CHUNK_MIN] * 2 + [5]
    assert offline_chunks([], settings) == []


def test_a_worker_is_ready_to_draft_before_its_first_chunk_and_needs_no_key_to_start() -> None:
    """``warm_up`` (``plixo worker`` before it takes work): the default engine, every language's
    templates and the offline drafter are built once, here, not inside the first chunk; with a
    real model and no key it still returns (the worker also delivers mail), building nothing a
    chunk would have to rebuild."""
    from agent import autopilot_flow
    from policies import engine as policy_engine
    from policies.policy_set import load_default
    from prompts.registry import template_books, templates

    autopilot_flow.warm_up(Settings(model="openai:gpt-4o-mini"))  # no key: nothing raised
    offline = Settings(model="offline")
    policy_engine._engines.clear()
    templates.cache_clear()
    autopilot_flow.warm_up(offline)
    assert load_default().digest in policy_engine._engines
    assert templates.cache_info().currsize == len(template_books()) >= 8
    for shadow in (False, True):
        built = autopilot_flow._drafter(offline, None, shadow)
        assert built.offline and autopilot_flow._drafter(offline, None, shadow) is built
        assert templates.cache_info().misses == len(template_books())  # none loaded again
