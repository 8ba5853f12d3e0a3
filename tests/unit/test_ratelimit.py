"""The shared vendor rate limiter: spacing, no reservation past max_wait, Retry-After hold-off."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.fakes import FakeClock
from worker.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter, interval_s


async def test_calls_are_spaced_by_the_interval() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    waits = [await limiter.reserve("intron.upload", 30, max_wait_s=10) for _ in range(4)]
    step = interval_s(30)
    assert waits == pytest.approx([0, step, 2 * step, 3 * step])


async def test_no_minute_holds_more_than_the_limit() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    starts = []
    for _ in range(200):
        wait = await limiter.reserve("intron.status", 100, max_wait_s=0.5)
        if wait <= 0.5:
            starts.append(clock.now + wait)
        clock.now += 0.05
    for first in starts:
        assert sum(1 for s in starts if first <= s < first + 60) <= 100


async def test_a_far_slot_is_not_reserved() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    assert await limiter.reserve("k", 6, max_wait_s=1) == 0  # next slot 10.1 s away
    assert await limiter.reserve("k", 6, max_wait_s=1) == pytest.approx(interval_s(6))
    clock.now += interval_s(6) - 0.5
    assert await limiter.reserve("k", 6, max_wait_s=1) == pytest.approx(0.5)


async def test_hold_off_blocks_until_retry_after() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    await limiter.hold_off("k", 30)
    assert await limiter.reserve("k", 600, max_wait_s=1) == pytest.approx(30)
    clock.now += 30
    assert await limiter.reserve("k", 600, max_wait_s=1) == 0


# --- one contract, both limiters ------------------------------------------------------------
# MemoryRateLimiter (one worker) and RedisRateLimiter (shared, on Redis's clock) answer the
# same; the memory one's clock stands still, Redis's moves a little during a test.


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        memory = MemoryRateLimiter(FakeClock())
        yield memory
        await memory.close()
        return
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    redis = RedisRateLimiter.from_url("redis://127.0.0.1:6379/15", namespace)
    yield redis
    await redis.close()
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/15")
    keys = [key async for key in client.scan_iter(f"{namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_calls_get_successive_slots_and_a_refusal_reserves_none(
    limiter: RateLimiter,
) -> None:
    first = await limiter.reserve("intron.upload", 30, max_wait_s=10)
    second = await limiter.reserve("intron.upload", 30, max_wait_s=10)
    too_far = await limiter.reserve("intron.upload", 30, max_wait_s=1)
    assert first == pytest.approx(0, abs=0.05)
    assert second == pytest.approx(interval_s(30), abs=0.05)
    assert too_far == pytest.approx(2 * interval_s(30), abs=0.05)  # more than max_wait_s
    # The refused call reserved nothing: the next one still gets the third slot.
    assert await limiter.reserve("intron.upload", 30, max_wait_s=10) == pytest.approx(
        2 * interval_s(30), abs=0.05
    )


async def test_keys_are_limited_apart(limiter: RateLimiter) -> None:
    assert await limiter.reserve("intron.upload", 6, max_wait_s=1) == pytest.approx(0, abs=0.05)
    assert await limiter.reserve("invox.summary", 6, max_wait_s=1) == pytest.approx(0, abs=0.05)


async def test_hold_off_delays_the_next_reservation(limiter: RateLimiter) -> None:
    await limiter.hold_off("invox.summary", 20)
    assert await limiter.reserve("invox.summary", 600, max_wait_s=1) == pytest.approx(20, abs=0.1)
