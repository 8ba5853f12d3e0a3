"""What the worker has already done for a job, so that a redelivery never repeats a paid call.

The in-memory ledger protects one process; the Redis ledger (SCRIBE_REDIS_URL) protects every
replica and survives a worker crash, which is the case that matters for billing.
"""

from __future__ import annotations

from typing import Protocol

import redis.asyncio as aioredis

from schemas.jobs import TranscriptionHandle
from worker.constants import Stage

LEDGER_TTL_S = 7 * 24 * 3600


class JobLedger(Protocol):
    async def transcription_handle(self, job_id: str) -> TranscriptionHandle | None: ...

    async def record_transcription_handle(
        self, job_id: str, handle: TranscriptionHandle
    ) -> None: ...

    async def is_done(self, job_id: str, stage: Stage) -> bool: ...

    async def mark_done(self, job_id: str, stage: Stage) -> None: ...

    async def close(self) -> None: ...


class MemoryLedger:
    def __init__(self) -> None:
        self._handles: dict[str, str] = {}
        self._done: set[tuple[str, str]] = set()

    async def transcription_handle(self, job_id: str) -> TranscriptionHandle | None:
        raw = self._handles.get(job_id)
        return TranscriptionHandle.model_validate_json(raw) if raw else None

    async def record_transcription_handle(self, job_id: str, handle: TranscriptionHandle) -> None:
        self._handles[job_id] = handle.model_dump_json(by_alias=True)

    async def is_done(self, job_id: str, stage: Stage) -> bool:
        return (job_id, stage) in self._done

    async def mark_done(self, job_id: str, stage: Stage) -> None:
        self._done.add((job_id, stage))

    async def close(self) -> None:
        return None


class RedisLedger:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisLedger:
        return cls(aioredis.Redis.from_url(url), prefix)

    def _key(self, kind: str, job_id: str, stage: str = "") -> str:
        return f"{self._prefix}:ledger:{kind}:{job_id}:{stage}"

    async def transcription_handle(self, job_id: str) -> TranscriptionHandle | None:
        raw = await self._redis.get(self._key("handle", job_id))
        return TranscriptionHandle.model_validate_json(raw) if raw else None

    async def record_transcription_handle(self, job_id: str, handle: TranscriptionHandle) -> None:
        await self._redis.set(
            self._key("handle", job_id), handle.model_dump_json(by_alias=True), ex=LEDGER_TTL_S
        )

    async def is_done(self, job_id: str, stage: Stage) -> bool:
        return bool(await self._redis.exists(self._key("done", job_id, stage)))

    async def mark_done(self, job_id: str, stage: Stage) -> None:
        await self._redis.set(self._key("done", job_id, stage), "1", ex=LEDGER_TTL_S)

    async def close(self) -> None:
        await self._redis.aclose()
