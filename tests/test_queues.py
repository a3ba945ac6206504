"""Bounded queues between stages: drop the oldest and count it; lossless mode waits; END survives."""

from __future__ import annotations

import asyncio

from vehicle_agent.queues import END, StageQueue


async def test_full_queue_drops_oldest_and_counts() -> None:
    q: StageQueue[int] = StageQueue("q", 3)
    for i in range(10):
        await q.put(i)
    assert q.dropped == 7
    assert [await q.get() for _ in range(3)] == [7, 8, 9]


async def test_end_is_never_dropped_even_when_full() -> None:
    q: StageQueue[int] = StageQueue("q", 2)
    await q.put(1)
    await q.put(2)
    await q.close()
    assert q.dropped == 1
    assert await q.get() == 2
    assert await q.get() is END


async def test_lossless_queue_waits_for_room_instead_of_dropping() -> None:
    q: StageQueue[int] = StageQueue("q", 1, lossless=True)
    await q.put(1)
    blocked = asyncio.create_task(q.put(2))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    assert await q.get() == 1
    await blocked
    assert await q.get() == 2
    assert q.dropped == 0
