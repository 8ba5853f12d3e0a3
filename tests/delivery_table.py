"""The delivery rules as one table: what a stage's handler returns or raises, with which
headers in, and what Delivery then publishes where, with which headers, and whether it acks.

Run twice: against tests/recorder.py (tests/unit/test_delivery_table.py, milliseconds) and
against RabbitMQ (tests/integration/test_delivery_table_broker.py), so the in-memory seam is
known to tell the truth about the real one.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.errors import ErrorType
from schemas.events import JobCompleted
from worker import constants as c
from worker.constants import Stage
from worker.delivery import Delivery
from worker.errors import Deferred, PermanentError, TransientError
from worker.ledger import MemoryLedger
from worker.metrics import Metrics
from worker.outcomes import Advance, Complete, DeliveryContext, Outcome, PollLater
from worker.ports import Publishing, Settling
from worker.settings import RetrySettings
from worker.topology import Names

JOB_ID = "5b0c7c1e-2f4a-4d89-9a57-0d7e6b1f3c42"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
BODY = json.dumps({"schemaVersion": 1, "jobId": JOB_ID, "state": "in"}).encode()
NEXT_BODY = json.dumps({"schemaVersion": 1, "jobId": JOB_ID, "state": "next"}).encode()

# Tiers long enough that nothing sent to a delay queue comes back while a test reads.
RETRY = RetrySettings(
    delay_tiers_ms=(10_000, 20_000, 40_000, 80_000),
    max_attempts=3,
    retry_base_ms=10_000,
    poll_interval_ms=10_000,
    poll_deadline_s=600,
    delivery_limit=10,
    stage_claim_ttl_s=300,
)


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


ABSENT: Any = _Marker("ABSENT")  # the header must not be there
ANY: Any = _Marker("ANY")  # the header must be there, whatever its value
SAME: Any = _Marker("SAME")  # the body published is the consumed one, unchanged
NOT_RUN: Any = _Marker("NOT_RUN")  # the handler must not be called


@dataclass(frozen=True)
class Sent:
    """One expected publication; exchange is "jobs", "delay", "dead" or "events"."""

    exchange: str
    routing_key: str
    headers: dict[str, Any] = field(default_factory=dict)
    body: Any = None  # None: not checked; SAME; or the exact bytes
    fields: dict[str, Any] = field(default_factory=dict)  # members of the JSON body
    mandatory: bool = True


@dataclass(frozen=True)
class Row:
    name: str
    stage: Stage
    script: Any  # an Outcome to return, an exception to raise, or NOT_RUN
    sent: tuple[Sent, ...]
    settled: str = "ack"  # or "nack(requeue=True)"
    headers: dict[str, Any] = field(default_factory=dict)
    body: bytes = BODY
    done: str | None = None  # a done-mark already in the ledger, with this fingerprint
    problem: str | None = None  # why the message's AMQP properties are unusable
    publish_fails: bool = False  # the broker refuses every publish (channel gone)
    ledger_fault: bool = False  # the ledger raises a bug: outside the handler


def _completed() -> JobCompleted:
    return JobCompleted.model_validate(
        {
            "eventId": "9a6f0a3e-1a48-5b7e-8a5a-5c1b9a6e2f10",
            "jobId": JOB_ID,
            "consultationSessionId": "session-1",
            "occurredAt": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
            "transcript": {"provider": "invox", "text": "t"},
            "summary": {"provider": "invox", "outputFormat": "SUMMARY", "text": "s"},
        }
    )


def _stage_event(stage: Stage) -> Sent:
    return Sent(
        "events",
        f"{c.EVENT_STAGE_PREFIX}{stage}",
        {c.HEADER_TRACEPARENT: TRACEPARENT},
        fields={"type": "job.stage", "jobId": JOB_ID, "stage": stage},
        mandatory=False,
    )


def _failed(stage: Stage, error_type: str, attempts: int, traceparent: Any = TRACEPARENT) -> Sent:
    return Sent(
        "events",
        c.EVENT_FAILED,
        {c.HEADER_TRACEPARENT: traceparent},
        fields={
            "type": "job.failed",
            "stage": stage,
            "errorType": error_type,
            "attempts": attempts,
        },
        mandatory=False,
    )


def _dead(stage: Stage, error_type: str, attempts: int, **headers: Any) -> Sent:
    return Sent(
        "dead",
        f"{stage}.{error_type}",
        {
            c.HEADER_ERROR_TYPE: error_type,
            c.HEADER_STAGE: stage,
            c.HEADER_ATTEMPTS: attempts,
            c.HEADER_JOB_ID: JOB_ID,
            c.HEADER_ERROR_MESSAGE: ANY,
            c.HEADER_FIRST_FAILURE_AT: ANY,
            c.HEADER_DELAY_TIER_MS: ABSENT,
            c.HEADER_TRACEPARENT: TRACEPARENT,
            **headers,
        },
        body=SAME,
    )


def _retry(stage: Stage, error_type: str, attempts: int, tier_ms: int) -> Sent:
    return Sent(
        "delay",
        stage,
        {
            c.HEADER_ATTEMPTS: attempts,
            c.HEADER_ERROR_TYPE: error_type,
            c.HEADER_DELAY_TIER_MS: str(tier_ms),
            c.HEADER_FIRST_FAILURE_AT: ANY,
            c.HEADER_LAST_FAILURE_AT: ANY,
            c.HEADER_TRACEPARENT: TRACEPARENT,
        },
        body=SAME,
    )


TP = {c.HEADER_TRACEPARENT: TRACEPARENT}
UPSTREAM = ErrorType.UPSTREAM_UNAVAILABLE
EARLIER = "2026-01-01T00:00:00+00:00"
LAST_RESORT_HEADERS = {c.HEADER_FIRST_FAILURE_AT: ABSENT, c.HEADER_TRACEPARENT: ANY}

ROWS: tuple[Row, ...] = (
    Row(
        "advance: the next stage's queue, failure bookkeeping dropped, progress event first",
        "summarize",
        Advance("note", NEXT_BODY, "invox"),
        headers={
            **TP,
            c.HEADER_ATTEMPTS: 2,
            c.HEADER_ERROR_TYPE: UPSTREAM,
            c.HEADER_FIRST_FAILURE_AT: EARLIER,
        },
        sent=(
            _stage_event("summarize"),
            Sent(
                "jobs",
                "note",
                {
                    **TP,
                    c.HEADER_ATTEMPTS: ABSENT,
                    c.HEADER_ERROR_TYPE: ABSENT,
                    c.HEADER_FIRST_FAILURE_AT: ABSENT,
                    c.HEADER_DELAY_TIER_MS: ABSENT,
                },
                body=NEXT_BODY,
            ),
        ),
    ),
    Row(
        "advance with a delay: through the smallest delay tier that waits long enough",
        "transcribe",
        Advance("poll", NEXT_BODY, "invox", delay_ms=15_000),
        headers=TP,
        sent=(
            _stage_event("transcribe"),
            Sent("delay", "poll", {**TP, c.HEADER_DELAY_TIER_MS: "20000"}, body=NEXT_BODY),
        ),
    ),
    Row(
        "poll later: the same message back through the poll tier, x-polls counted, attempts reset",
        "poll",
        PollLater("invox"),
        headers={**TP, c.HEADER_POLLS: 3, c.HEADER_ATTEMPTS: 1},
        sent=(
            Sent(
                "delay",
                "poll",
                {
                    **TP,
                    c.HEADER_POLLS: 4,
                    c.HEADER_ATTEMPTS: ABSENT,
                    c.HEADER_DELAY_TIER_MS: "10000",
                },
                body=SAME,
            ),
        ),
    ),
    Row(
        "complete: the stage's progress, then job.completed last",
        "note",
        Complete(_completed(), "invox"),
        headers=TP,
        sent=(
            _stage_event("note"),
            Sent(
                "events", c.EVENT_COMPLETED, TP, fields={"type": "job.completed"}, mandatory=False
            ),
        ),
    ),
    Row(
        "transient failure: retried through a delay tier, x-attempts counted",
        "summarize",
        TransientError(UPSTREAM, "the vendor is down"),
        headers=TP,
        sent=(_retry("summarize", UPSTREAM, 1, 10_000),),
    ),
    Row(
        "transient failure with Retry-After: the tier waits at least that long",
        "summarize",
        TransientError(ErrorType.RATE_LIMITED, "slow down", http_status=429, retry_after_s=30),
        headers={**TP, c.HEADER_ATTEMPTS: 1, c.HEADER_FIRST_FAILURE_AT: EARLIER},
        sent=(_retry("summarize", ErrorType.RATE_LIMITED, 2, 40_000),),
    ),
    Row(
        "retries exhausted: dead letter with the last errorType, then job.failed",
        "summarize",
        TransientError(UPSTREAM, "the vendor is down", http_status=503),
        headers={**TP, c.HEADER_ATTEMPTS: 2, c.HEADER_FIRST_FAILURE_AT: EARLIER},
        sent=(
            _dead(
                "summarize",
                UPSTREAM,
                3,
                **{c.HEADER_HTTP_STATUS: 503, c.HEADER_FIRST_FAILURE_AT: EARLIER},
            ),
            _failed("summarize", UPSTREAM, 3),
        ),
    ),
    Row(
        "permanent failure: dead letter at once, then job.failed",
        "note",
        PermanentError(ErrorType.INVALID_TEMPLATE, "the template is invalid", http_status=400),
        headers=TP,
        sent=(
            _dead("note", ErrorType.INVALID_TEMPLATE, 1, **{c.HEADER_HTTP_STATUS: 400}),
            _failed("note", ErrorType.INVALID_TEMPLATE, 1),
        ),
    ),
    Row(
        "deferred (rate limit): back no later than its slot, not counted as an attempt",
        "summarize",
        Deferred("rate limit", delay_s=25.0),
        headers={**TP, c.HEADER_ATTEMPTS: 1},
        sent=(
            Sent(
                "delay",
                "summarize",
                {**TP, c.HEADER_ATTEMPTS: 1, c.HEADER_DELAY_TIER_MS: "20000"},
                body=SAME,
            ),
        ),
    ),
    Row(
        "duplicate: the stage is done for this job, the copy is dropped unrun",
        "summarize",
        NOT_RUN,
        headers=TP,
        done="",
        sent=(),
    ),
    Row(
        "conflicting job: other content under a done jobId, dead-lettered, no job.failed",
        "transcribe",
        NOT_RUN,
        headers=TP,
        done="another-fingerprint",
        sent=(_dead("transcribe", ErrorType.CONFLICTING_JOB, 1),),
    ),
    Row(
        "unusable AMQP properties: invalidMessage dead letter unrun, then job.failed",
        "summarize",
        NOT_RUN,
        headers=TP,
        problem="the AMQP property message_id is not valid UTF-8",
        sent=(
            _dead("summarize", ErrorType.INVALID_MESSAGE, 1),
            _failed("summarize", ErrorType.INVALID_MESSAGE, 1),
        ),
    ),
    Row(
        "a bug in the handler: internalError, retried like a transient failure",
        "summarize",
        KeyError("field"),
        headers=TP,
        sent=(_retry("summarize", ErrorType.INTERNAL_ERROR, 1, 10_000),),
    ),
    Row(
        "a bug outside the handler (the last resort): internalError dead letter at once",
        "summarize",
        NOT_RUN,
        headers={**TP, c.HEADER_ATTEMPTS: 2},
        ledger_fault=True,
        sent=(
            # A fresh trace and count: the consumed headers are not trusted on this path.
            _dead("summarize", ErrorType.INTERNAL_ERROR, 1, **LAST_RESORT_HEADERS),
            _failed("summarize", ErrorType.INTERNAL_ERROR, 1, traceparent=ANY),
        ),
    ),
    Row(
        "the broker refuses the publish: nothing is acked, the message is nacked back",
        "summarize",
        Advance("note", NEXT_BODY, "invox"),
        headers=TP,
        publish_fails=True,
        sent=(),
        settled="nack(requeue=True)",
    ),
)


class FaultyLedger(MemoryLedger):
    """A ledger with a bug (not LedgerUnavailable): what only the last resort catches."""

    async def done_mark(self, job_id: str, stage: str) -> str | None:
        raise RuntimeError("a bug in the ledger")


async def ledger_for(row: Row) -> MemoryLedger:
    ledger = FaultyLedger() if row.ledger_fault else MemoryLedger()
    if row.done is not None:
        await ledger.mark_done(JOB_ID, row.stage, row.done)
    return ledger


@dataclass
class ScriptedHandler:
    """Returns or raises what the row says, and counts its calls."""

    script: Any
    calls: int = 0

    async def __call__(self, body: bytes, ctx: DeliveryContext) -> Outcome:
        self.calls += 1
        if isinstance(self.script, BaseException):
            raise self.script
        assert self.script is not NOT_RUN, "the handler ran"
        outcome: Outcome = self.script
        return outcome


async def run_row(row: Row, publisher: Publishing, message: Settling, names: Names) -> int:
    """Delivery.process on one message, as the worker runs it; the handler's call count."""
    handler = ScriptedHandler(row.script)
    delivery = Delivery(publisher, names, RETRY, await ledger_for(row), Metrics(), random.Random(0))
    await delivery.process(row.stage, handler, message)
    return handler.calls


@dataclass(frozen=True)
class Arrived:
    """A publication as observed: exchange is already "jobs", "delay", "dead" or "events"."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    mandatory: bool | None  # None where it cannot be observed (a real broker)


def exchange_kind(names: Names, exchange: str) -> str:
    kinds = {
        names.jobs_exchange: "jobs",
        names.delay_exchange: "delay",
        names.dead_exchange: "dead",
        names.events_exchange: "events",
    }
    return kinds.get(exchange, exchange)


def mismatches(row: Row, arrived: Sequence[Arrived], consumed_body: bytes) -> list[str]:
    """What differs between the row's expectation and what was published, in words."""
    got = [(a.exchange, a.routing_key) for a in arrived]
    want = [(s.exchange, s.routing_key) for s in row.sent]
    if got != want:
        return [f"published {got}, expected {want}"]
    problems: list[str] = []
    for sent, actual in zip(row.sent, arrived, strict=True):
        where = f"{sent.exchange}/{sent.routing_key}"
        for name, expected in sent.headers.items():
            if expected is ABSENT:
                if name in actual.headers:
                    problems.append(f"{where}: header {name} should be absent")
            elif name not in actual.headers:
                problems.append(f"{where}: header {name} missing")
            elif expected is not ANY and actual.headers[name] != expected:
                problems.append(f"{where}: {name}={actual.headers[name]!r}, expected {expected!r}")
        body = consumed_body if sent.body is SAME else sent.body
        if body is not None and actual.body != body:
            problems.append(f"{where}: body differs")
        if sent.fields:
            decoded = json.loads(actual.body)
            for name, value in sent.fields.items():
                if decoded.get(name) != value:
                    problems.append(f"{where}: body {name}={decoded.get(name)!r}, not {value!r}")
        if actual.mandatory is not None and actual.mandatory != sent.mandatory:
            problems.append(f"{where}: mandatory={actual.mandatory}")
    return problems


def row_id(row: Row) -> str:
    return row.name.split(":")[0].replace(" ", "-")
