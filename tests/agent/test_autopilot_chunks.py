"""How a real-model pass is cut into chunk workflows (``agent.autopilot_flow.model_chunks``):
whole waves that fill every slot, no chunk above the cap the rate limit allows, the items in
order, each once."""

from __future__ import annotations

from agent.autopilot_flow import MODEL_CHUNK, MODEL_CHUNK_MIN, model_chunk_cap, model_chunks
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
