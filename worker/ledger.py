"""What the worker has already done for a job, so that a redelivery or a duplicate publish never
repeats a paid vendor call.

The in-memory ledger protects one process; the Redis ledger (SCRIBE_REDIS_URL) protects every
replica and survives a worker crash, which is the case that matters for billing. Without Redis,
a message redelivered to another replica after a crash repeats the stage's vendor call.

A paid transcription submission is written down twice: its intent before the vendor call (Invox:
the requestId and presigned URL before the PUT; Intron: that an upload started), and its handle
once the vendor took it. A redelivery that finds an intent without a handle knows the earlier
delivery died inside that window, and the transcriber resumes from it (worker/providers) instead
of paying blindly a second time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from schemas.errors import ErrorType
from schemas.jobs import TranscriptionHandle
from worker import constants as c
from worker.constants import Stage
from worker.errors import TransientError

LEDGER_TTL_S = 7 * 24 * 3600
# The value of a done-mark without a fingerprint (and of every mark older versions wrote).
_UNFINGERPRINTED = "1"


class LedgerUnavailable(TransientError):
    def __init__(self, problem: str) -> None:
        super().__init__(ErrorType.LEDGER_UNAVAILABLE, f"job ledger unavailable ({problem})")


class SubmissionIntent(BaseModel):
    """A paid submission started for a job, written before the vendor call.

    upload_url is Invox's presigned URL: a credential for the upload, so it is never printed
    (repr=False) and lives only in the ledger, like the handle."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    provider: str
    started_at: datetime
    # x-replays of the delivery that wrote it: a higher one is a person's replay of its dead letter.
    replays: int = 0
    # Uploads started for this job so far (Intron re-uploads count up).
    uploads: int = 1
    request_id: str | None = None
    upload_url: str | None = Field(default=None, repr=False)
    # The nonce of the callbackUrl sent with the presign (worker/callbacks.py), if any.
    callback_nonce: str | None = Field(default=None, repr=False)


class JobLedger(Protocol):
    async def transcription_handle(self, job_id: str) -> TranscriptionHandle | None: ...

    async def record_transcription_handle(self, job_id: str, handle: TranscriptionHandle) -> None:
        """Called before the transcribe message is acked: a redelivery polls this handle. The
        handle supersedes the job's submission intent, which goes with this write."""
        ...

    async def submission_intent(self, job_id: str) -> SubmissionIntent | None: ...

    async def record_submission_intent(self, job_id: str, intent: SubmissionIntent) -> None:
        """Written before a paid submission; raises LedgerUnavailable, and then the submission
        must not be made (nothing is paid yet, the message waits for the ledger)."""
        ...

    async def clear_submission_intent(self, job_id: str) -> None:
        """The vendor answered that it did not take the submission: nothing to resume."""
        ...

    async def is_done(self, job_id: str, stage: Stage) -> bool: ...

    async def done_mark(self, job_id: str, stage: Stage) -> str | None:
        """None while the stage is not done for the job; else what mark_done recorded with it
        (the transcribe stage records the job's fingerprint, to tell a duplicate from a
        different job under the same jobId)."""
        ...

    async def mark_done(self, job_id: str, stage: Stage, fingerprint: str = "") -> None: ...

    async def claim(self, job_id: str, stage: Stage, ttl_s: float) -> bool:
        """True if no other delivery of this job is in this stage (the claim expires)."""
        ...

    async def release(self, job_id: str, stage: Stage) -> None: ...

    async def record_callback_ticket(self, job_id: str, ticket: str, ttl_s: float) -> None:
        """The job's Invox callback ticket (worker/callbacks.py: its nonce and poll message),
        kept ttl_s; a new submission's ticket replaces the old one."""
        ...

    async def callback_ticket(self, job_id: str) -> str | None: ...

    async def use_callback(self, job_id: str, nonce: str) -> bool:
        """True the first time a callback token (job, nonce) is redeemed, False ever after."""
        ...

    async def close(self) -> None: ...


class SubmissionJournal:
    """One job's submission intent as its transcriber sees it: what an earlier delivery started
    and never saw through, and where this delivery writes what it starts.

    `actions` collects what a redelivery found and did about an unfinished submission ("resumed",
    "reput", "reupload", "deadLetter", "replayed"); the transcribe stage counts them in
    scribe_submission_redeliveries_total. Without a ledger (unit tests) it remembers nothing."""

    def __init__(self, ledger: JobLedger | None, job_id: str, replays: int = 0) -> None:
        self._ledger = ledger
        self._job_id = job_id
        self.replays = replays
        self.actions: list[str] = []

    async def recorded(self) -> SubmissionIntent | None:
        if self._ledger is None:
            return None
        return await self._ledger.submission_intent(self._job_id)

    async def record(self, intent: SubmissionIntent) -> None:
        """Raises LedgerUnavailable: then the submission must not be made."""
        if self._ledger is not None:
            await self._ledger.record_submission_intent(self._job_id, intent)

    async def clear(self) -> None:
        """The vendor refused the submission, so there is nothing to resume. Best effort: if the
        ledger is down the intent stays, and the next delivery treats it as unfinished."""
        if self._ledger is None:
            return
        try:
            await self._ledger.clear_submission_intent(self._job_id)
        except LedgerUnavailable:
            return

    def note(self, action: str) -> None:
        self.actions.append(action)


MEMORY_LEDGER_MAX_ENTRIES = 100_000


class MemoryLedger:
    """One process's record, bounded: the oldest handles and done-marks go first once
    max_entries is reached (a long-running worker must not grow without end). A redelivery of
    a stage forgotten that way repeats it, as it would on another replica without Redis."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MEMORY_LEDGER_MAX_ENTRIES,
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._handles: OrderedDict[str, str] = OrderedDict()
        self._intents: OrderedDict[str, str] = OrderedDict()
        self._done: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._claims: dict[tuple[str, str], float] = {}
        self._tickets: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._used_callbacks: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def transcription_handle(self, job_id: str) -> TranscriptionHandle | None:
        raw = self._handles.get(job_id)
        return TranscriptionHandle.model_validate_json(raw) if raw else None

    async def record_transcription_handle(self, job_id: str, handle: TranscriptionHandle) -> None:
        self._handles[job_id] = handle.model_dump_json(by_alias=True)
        self._intents.pop(job_id, None)
        _trim(self._handles, self._max_entries)

    async def submission_intent(self, job_id: str) -> SubmissionIntent | None:
        raw = self._intents.get(job_id)
        return SubmissionIntent.model_validate_json(raw) if raw else None

    async def record_submission_intent(self, job_id: str, intent: SubmissionIntent) -> None:
        self._intents[job_id] = intent.model_dump_json()
        _trim(self._intents, self._max_entries)

    async def clear_submission_intent(self, job_id: str) -> None:
        self._intents.pop(job_id, None)

    async def is_done(self, job_id: str, stage: Stage) -> bool:
        return (job_id, stage) in self._done

    async def done_mark(self, job_id: str, stage: Stage) -> str | None:
        return self._done.get((job_id, stage))

    async def mark_done(self, job_id: str, stage: Stage, fingerprint: str = "") -> None:
        self._done[(job_id, stage)] = fingerprint
        _trim(self._done, self._max_entries)

    async def claim(self, job_id: str, stage: Stage, ttl_s: float) -> bool:
        now = self._clock()
        expires = self._claims.get((job_id, stage))
        if expires is not None and expires > now:
            return False
        self._claims[(job_id, stage)] = now + ttl_s
        return True

    async def release(self, job_id: str, stage: Stage) -> None:
        self._claims.pop((job_id, stage), None)

    async def record_callback_ticket(self, job_id: str, ticket: str, ttl_s: float) -> None:
        self._tickets[job_id] = (ticket, self._clock() + ttl_s)
        self._tickets.move_to_end(job_id)
        _trim(self._tickets, self._max_entries)

    async def callback_ticket(self, job_id: str) -> str | None:
        found = self._tickets.get(job_id)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    async def use_callback(self, job_id: str, nonce: str) -> bool:
        if (job_id, nonce) in self._used_callbacks:
            return False
        self._used_callbacks[(job_id, nonce)] = None
        _trim(self._used_callbacks, self._max_entries)
        return True

    async def close(self) -> None:
        return None


def _trim(entries: OrderedDict[Any, Any], max_entries: int) -> None:
    while len(entries) > max_entries:
        entries.popitem(last=False)


class RedisLedger:
    """Keys live under <prefix>:ledger: and expire after a week."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisLedger:
        return cls(aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), prefix)

    def _key(self, kind: str, job_id: str, stage: str = "") -> str:
        return f"{self._prefix}:{c.REDIS_LEDGER_NAMESPACE}:{kind}:{job_id}:{stage}"

    async def transcription_handle(self, job_id: str) -> TranscriptionHandle | None:
        try:
            raw = await self._redis.get(self._key("handle", job_id))
        except RedisError as exc:
            raise LedgerUnavailable(type(exc).__name__) from None
        return TranscriptionHandle.model_validate_json(raw) if raw else None

    async def record_transcription_handle(self, job_id: str, handle: TranscriptionHandle) -> None:
        value = handle.model_dump_json(by_alias=True)
        # One transaction: the handle in, the intent it supersedes out.
        pipeline = self._redis.pipeline(transaction=True)
        pipeline.set(self._key("handle", job_id), value, ex=LEDGER_TTL_S)
        pipeline.delete(self._key("intent", job_id))
        await self._call(pipeline.execute())

    async def submission_intent(self, job_id: str) -> SubmissionIntent | None:
        raw = await self._call(self._redis.get(self._key("intent", job_id)))
        if not isinstance(raw, bytes | str):
            return None
        return SubmissionIntent.model_validate_json(raw)

    async def record_submission_intent(self, job_id: str, intent: SubmissionIntent) -> None:
        value = intent.model_dump_json()
        await self._call(self._redis.set(self._key("intent", job_id), value, ex=LEDGER_TTL_S))

    async def clear_submission_intent(self, job_id: str) -> None:
        await self._call(self._redis.delete(self._key("intent", job_id)))

    async def is_done(self, job_id: str, stage: Stage) -> bool:
        return bool(await self._call(self._redis.exists(self._key("done", job_id, stage))))

    async def done_mark(self, job_id: str, stage: Stage) -> str | None:
        raw = await self._call(self._redis.get(self._key("done", job_id, stage)))
        if raw is None:
            return None
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
        return "" if text == _UNFINGERPRINTED else text

    async def mark_done(self, job_id: str, stage: Stage, fingerprint: str = "") -> None:
        value = fingerprint or _UNFINGERPRINTED
        await self._call(self._redis.set(self._key("done", job_id, stage), value, ex=LEDGER_TTL_S))

    async def claim(self, job_id: str, stage: Stage, ttl_s: float) -> bool:
        key = self._key("claim", job_id, stage)
        ttl_ms = max(1, int(ttl_s * 1000))
        return bool(await self._call(self._redis.set(key, "1", nx=True, px=ttl_ms)))

    async def release(self, job_id: str, stage: Stage) -> None:
        await self._call(self._redis.delete(self._key("claim", job_id, stage)))

    async def record_callback_ticket(self, job_id: str, ticket: str, ttl_s: float) -> None:
        ttl_ms = max(1, int(ttl_s * 1000))
        await self._call(self._redis.set(self._key("callback", job_id), ticket, px=ttl_ms))

    async def callback_ticket(self, job_id: str) -> str | None:
        raw = await self._call(self._redis.get(self._key("callback", job_id)))
        if isinstance(raw, bytes):
            return raw.decode("utf-8", "replace")
        return raw if isinstance(raw, str) else None

    async def use_callback(self, job_id: str, nonce: str) -> bool:
        key = self._key("callback-used", job_id, nonce)
        return bool(await self._call(self._redis.set(key, "1", nx=True, ex=LEDGER_TTL_S)))

    async def _call(self, pending: object) -> object:
        try:
            return await pending  # type: ignore[misc]
        except RedisError as exc:
            raise LedgerUnavailable(type(exc).__name__) from None

    async def close(self) -> None:
        await self._redis.aclose()
