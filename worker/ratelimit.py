"""Vendor rate limits as properties of the vendor account, shared by every replica.

GCRA with no burst: calls to one endpoint are spaced at least 60/limit seconds apart (plus a 1 %
margin for network jitter), so no sliding minute ever holds more than the limit and the limiter
never causes a 429 by itself. A caller that would have to wait longer than max_wait_s does not
reserve a slot: its message goes back through a delay queue instead of sleeping in a consumer.
With SCRIBE_REDIS_URL the schedule lives in Redis (server time, one Lua call), else in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from worker import constants as c
from worker.ledger import LedgerUnavailable

JITTER_MARGIN = 1.01


def interval_s(per_minute: int) -> float:
    return 60.0 / per_minute * JITTER_MARGIN


class RateLimiter(Protocol):
    async def reserve(self, key: str, per_minute: int, max_wait_s: float) -> float:
        """Seconds until this call may go. At most max_wait_s: the slot is reserved; more: the
        slot is not reserved and the caller should come back later."""
        ...

    async def hold_off(self, key: str, seconds: float) -> None:
        """The vendor said 429 with Retry-After: nobody calls this endpoint for `seconds`."""
        ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next_free: dict[str, float] = {}

    async def reserve(self, key: str, per_minute: int, max_wait_s: float) -> float:
        now = self._clock()
        start = max(self._next_free.get(key, now), now)
        wait = start - now
        if wait <= max_wait_s:
            self._next_free[key] = start + interval_s(per_minute)
        return wait

    async def hold_off(self, key: str, seconds: float) -> None:
        until = self._clock() + seconds
        self._next_free[key] = max(self._next_free.get(key, until), until)

    async def close(self) -> None:
        return None


_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local start = tonumber(redis.call('GET', KEYS[1]) or '0')
if start < now then start = now end
local wait = start - now
if wait <= tonumber(ARGV[2]) then
  local next_free = start + tonumber(ARGV[1])
  redis.call('SET', KEYS[1], tostring(next_free), 'PX', math.ceil((next_free - now) * 1000) + 1000)
end
return tostring(wait)
"""

_HOLD_OFF = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_s = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < until_s then
  redis.call('SET', KEYS[1], tostring(until_s), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return 1
"""


class RedisRateLimiter:
    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self._redis = client
        self._namespace = namespace
        self._reserve = client.register_script(_RESERVE)
        self._hold_off = client.register_script(_HOLD_OFF)

    @classmethod
    def from_url(cls, url: str, namespace: str) -> RedisRateLimiter:
        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return cls(client, namespace)

    def _key(self, key: str) -> str:
        return f"{self._namespace}:{c.REDIS_RATE_LIMIT_NAMESPACE}:{key}"

    async def reserve(self, key: str, per_minute: int, max_wait_s: float) -> float:
        try:
            wait = await self._reserve(
                keys=[self._key(key)], args=[interval_s(per_minute), max_wait_s]
            )
        except RedisError as exc:
            raise LedgerUnavailable(type(exc).__name__) from None
        return float(wait)

    async def hold_off(self, key: str, seconds: float) -> None:
        try:
            await self._hold_off(keys=[self._key(key)], args=[seconds])
        except RedisError as exc:
            raise LedgerUnavailable(type(exc).__name__) from None

    async def close(self) -> None:
        await self._redis.aclose()
