"""What a stage handler returns, and what it is told about the message it handles.

Stages import these from here, never from worker/delivery.py: the delivery module decides what
to publish, ack or dead-letter, and a stage only states its outcome. Failures stay exceptions
(worker/errors.py): a handler that cannot go on raises TransientError, PermanentError or
Deferred, and the delivery module turns each into a retry, a dead letter or a deferral.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from schemas.events import JobCompleted
from worker.constants import Stage

EVENT_NAMESPACE = uuid.UUID("6f1d3f0e-93a4-4c8e-9b0a-3f1c5e2d7a10")


@dataclass(frozen=True)
class Advance:
    """Publish body to the next stage's queue now."""

    next_stage: Stage
    body: bytes
    provider: str
    delay_ms: int | None = None
    # The chunk of a long recording the next message is about (worker/chunking.py); 0 for the
    # first chunk and for every message of a recording that is not split.
    chunk: int = 0


@dataclass(frozen=True)
class PollLater:
    """Not ready: send the same message back through the poll delay tier."""

    provider: str


@dataclass(frozen=True)
class Complete:
    event: JobCompleted
    provider: str


Outcome = Advance | PollLater | Complete


@dataclass(frozen=True)
class DeliveryContext:
    stage: Stage
    job_id: str | None
    attempts: int
    polls: int
    replays: int
    redelivered: bool
    traceparent: str
    # The job request's content digest (transcribe stage only; "" elsewhere): what tells a
    # duplicate from a conflicting job under the same jobId.
    fingerprint: str = ""
    # The x-chunk header (0 when absent): which chunk of a long recording this message is
    # about. The ledger keeps each chunk's done-mark and claim apart (ledger_key).
    chunk: int = 0


def ledger_key(job_id: str, chunk: int) -> str:
    """The ledger's key for one chunk's work: the jobId itself for the first chunk (and for a
    recording that is not split), "<jobId>#<chunk>" for the others."""
    return job_id if chunk == 0 else f"{job_id}#{chunk}"


Handler = Callable[[bytes, DeliveryContext], Awaitable[Outcome]]


_EVENT_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes


def stage_event_kind(stage: str, chunk: int) -> str:
    """The eventId kind of a job.stage.<stage> event: one per stage, and one per chunk of a long
    recording (each chunk passes through transcribe and poll), so that a consumer dropping
    repeated eventIds keeps every chunk's. The first chunk keeps the unsplit job's kind."""
    return f"stage/{stage}" if chunk == 0 else f"stage/{stage}#{chunk}"


def stable_event_id(job_id: str, kind: str) -> uuid.UUID:
    """uuid5(EVENT_NAMESPACE, "<jobId>/<kind>"), without uuid5's per-call import and bytes."""
    name = _EVENT_NAMESPACE_BYTES + f"{job_id}/{kind}".encode()
    digest = hashlib.sha1(name, usedforsecurity=False).digest()  # what uuid5 is defined with
    return uuid.UUID(bytes=digest[:16], version=5)
