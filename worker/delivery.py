"""The one place that decides what happens to a consumed message: advance, poll later, complete,
retry through a delay tier, or dead-letter, and only then ack.

Rule: a message is acked only after everything it caused is confirmed by the broker. If any of
that fails, it is nacked back to its queue (or, if the channel is gone, redelivered by the
broker); the quorum queue's delivery limit turns an endless loop into deliveryLimitExceeded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from aio_pika.exceptions import AMQPError
from aiormq.exceptions import ChannelInvalidStateError

from schemas.errors import ErrorType
from schemas.events import JobFailed, StageProgress
from schemas.status import TransitionKind
from worker import constants as c
from worker.broker import (
    Outgoing,
    Publication,
    bounded_count,
    build_message,
    carried_headers,
)
from worker.codec import job_id_of_body, job_identity
from worker.constants import FAILURE_HEADERS, STAGES, Stage
from worker.errors import Deferred, InvalidMessage, PermanentError, ScribeError, TransientError
from worker.jobindex import IndexEntry, Indexing
from worker.ledger import JobLedger, LedgerUnavailable
from worker.metrics import Metrics, error_label
from worker.outcomes import (
    EVENT_NAMESPACE,
    Advance,
    Complete,
    DeliveryContext,
    Handler,
    Outcome,
    PollLater,
    ledger_key,
    stable_event_id,
    stage_event_kind,
)
from worker.payload_crypto import (
    STAGE_PURPOSE,
    PayloadCipher,
    PayloadUndecryptable,
    seal_headers,
)
from worker.ports import Publishing, Settling
from worker.settings import RetrySettings
from worker.topology import (
    Names,
    broker_death_stage,
    dead_letter_routing_key,
    parse_dead_letter_routing_key,
)
from worker.tracing import new_traceparent

log = structlog.get_logger("scribe.delivery")

# What a broker operation raises when the connection or channel is gone (aiormq's
# ChannelInvalidStateError is a RuntimeError, not an AMQPError).
BROKER_ERRORS = (TimeoutError, AMQPError, ConnectionError, ChannelInvalidStateError)


class MessageLog:
    """A consumed message's logger, bound to its job, stage, attempt and trace on first use.

    Binding copies the context into a new logger; most messages log nothing at or above the
    configured level, so they never pay for it.
    """

    __slots__ = ("_base", "_bound", "_fields")

    def __init__(self, base: structlog.typing.FilteringBoundLogger, **fields: Any) -> None:
        self._base = base
        self._fields = fields
        self._bound: structlog.typing.FilteringBoundLogger | None = None

    def with_fields(self, **fields: Any) -> MessageLog:
        return MessageLog(self._base, **self._fields, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        if self._base.is_enabled_for(logging.DEBUG):
            self._logger().debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._logger().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._logger().warning(event, **fields)

    def _logger(self) -> structlog.typing.FilteringBoundLogger:
        if self._bound is None:
            self._bound = self._base.bind(**self._fields)
        return self._bound


@dataclass(frozen=True)
class _Run:
    """One consumed message on its way to its outcome: the delivery, the headers it will carry
    on (each checked), what the worker knows of it, and its logger. Every decision below reads
    and extends this one object; duration_ms is set once its handler has returned or raised."""

    message: Settling
    headers: dict[str, Any]
    ctx: DeliveryContext
    log: MessageLog
    duration_ms: float = 0.0
    # The body in clear (opened if it was sealed); None: sealed and not opened here, so what is
    # passed on (a dead letter) is the bytes as consumed, with their seal and correlation_id.
    plain: bytes | None = None
    # Why a sealed body could not be opened (it is dead-lettered as such, unread).
    unopened: PayloadUndecryptable | None = None


Action = Callable[[_Run], Awaitable[None]]


def job_id_of(message: Settling) -> str | None:
    """The job's identity: the body's jobId (a UUID), and nothing else.

    correlation_id is informational. It is never a fallback: a body without a readable jobId
    that named another job in its correlation_id would otherwise be dropped as that job's
    duplicate, or announce a false job.failed for it (found by scribe-fuzz)."""
    return job_id_of_body(message.body)


def choose_tier_ms(tiers_ms: tuple[int, ...], wanted_ms: float) -> int:
    """The smallest tier that waits at least wanted_ms (the largest if none does)."""
    for tier in tiers_ms:
        if tier >= wanted_ms:
            return tier
    return tiers_ms[-1]


def choose_tier_at_most_ms(tiers_ms: tuple[int, ...], wanted_ms: float) -> int:
    """The largest tier that waits no longer than wanted_ms (the smallest if none does)."""
    fitting = [tier for tier in tiers_ms if tier <= wanted_ms]
    return fitting[-1] if fitting else tiers_ms[0]


def retry_delay_ms(
    retry: RetrySettings, attempts: int, retry_after_s: float | None, rng: random.Random
) -> int:
    """Exponential backoff with jitter, never shorter than the vendor's Retry-After."""
    backoff = retry.retry_base_ms * (2 ** max(0, attempts - 1))
    jittered = backoff * rng.uniform(0.5, 1.0)
    floor_ms = (retry_after_s or 0.0) * 1000
    return choose_tier_ms(retry.delay_tiers_ms, max(jittered, floor_ms))


def _failure_location(exc: BaseException) -> str:
    """file:line of a bug, without the exception's text (which may quote patient data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown location"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


class Delivery:
    def __init__(
        self,
        publisher: Publishing,
        names: Names,
        retry: RetrySettings,
        ledger: JobLedger,
        metrics: Metrics,
        rng: random.Random | None = None,
        claim_ttl_s: float = 300.0,
        stage_events: frozenset[Stage] = frozenset(STAGES),
        index: Indexing | None = None,
        cipher: PayloadCipher | None = None,
    ) -> None:
        self._stage_events = stage_events
        # Payload encryption (worker/payload_crypto.py): sealed bodies are opened before
        # anything reads them; what the worker publishes is sealed when a key is current.
        self._cipher = cipher or PayloadCipher(None)
        # The job index (SCRIBE_DATABASE_URL): told of a transition once the broker has
        # confirmed what it caused; record() never waits and never raises.
        self._index = index
        # Bound once, with the logging configured at start: binding the module's lazy proxy
        # would look the configuration up again for every message.
        self._log: structlog.typing.FilteringBoundLogger = log.bind()
        self._publisher = publisher
        self._names = names
        self._retry = retry
        self._ledger = ledger
        self._metrics = metrics
        self._claim_ttl_s = claim_ttl_s
        self._rng = rng or random.Random()

    async def process(self, stage: Stage, handler: Handler, message: Settling) -> None:
        """Bring one delivery to exactly one outcome, whatever it holds.

        Everything that can go wrong with a message is decided below; an exception that still
        escapes is a bug in the consume path, which would repeat on every redelivery and, left
        unsettled, hold a prefetch slot for good: it is dead-lettered at once as internalError
        (or, if even that fails, nacked back for the delivery limit to end).
        """
        figures = self._metrics.stage(stage)
        figures.took(time.monotonic())
        try:
            await self._process(stage, handler, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the last resort described above
            await self._last_resort(stage, message, exc)
        finally:
            figures.settled(time.monotonic())

    async def _process(self, stage: Stage, handler: Handler, message: Settling) -> None:
        """The decision, top to bottom: unusable properties, then the ledger (done, busy), then
        the handler and what its outcome or failure means."""
        run = self._context(stage, message)
        self._metrics.stage(stage).consumed += 1
        job_id = run.ctx.job_id
        try:
            if message.problem is not None:
                await self._reject(run, InvalidMessage(message.problem))
                return
            if run.unopened is not None:
                await self._reject(run, run.unopened)
                return
            if job_id is None:
                await self._run(handler, run)
                return
            # Each chunk of a long recording is its own unit of work: its own done-mark and claim.
            key = ledger_key(job_id, run.ctx.chunk)
            done = await self._ledger.done_mark(key, stage)
            if done is not None:
                await self._already_done(run, done)
                return
            if not await self._ledger.claim(key, stage, self._claim_ttl_s):
                # Another delivery of this job is in this stage right now (a duplicate publish,
                # or a crashed worker whose claim has not expired yet): come back later.
                await self._defer(run, "busy")
                return
            try:
                await self._run(handler, run)
            finally:
                await self._advise(self._ledger.release(key, stage), run.log)
        except LedgerUnavailable:  # before the handler ran: nothing happened yet
            await self._defer(run, "ledger_unavailable")
        except BROKER_ERRORS as exc:
            run.log.warning("stage.publish_failed", outcome="requeued", error=type(exc).__name__)
            await self._requeue(message)

    async def _already_done(self, run: _Run, done_fingerprint: str) -> None:
        """A delivery of a stage already done for its jobId: the same job again (a duplicate
        publish or a redelivery) is dropped; a job with other content under that jobId is
        dead-lettered as conflictingJob, so that it does not vanish."""
        fingerprint = run.ctx.fingerprint
        if done_fingerprint and fingerprint and done_fingerprint != fingerprint:
            error = PermanentError(
                ErrorType.CONFLICTING_JOB,
                "a job with this jobId and other content is already done; "
                "publish a new jobId for a new consultation",
            )
            await self._reject(run, error)
            return
        self._metrics.duplicates.labels(run.ctx.stage).inc()
        run.log.info("stage.duplicate_dropped", outcome="duplicate")
        await run.message.ack()

    async def _reject(self, run: _Run, error: ScribeError) -> None:
        """Dead-letter without running the handler (the message itself is unusable), then ack."""
        await self._failure_action(error)(run)
        await run.message.ack()

    async def _last_resort(self, stage: Stage, message: Settling, exc: Exception) -> None:
        where = _failure_location(exc)
        log.warning("stage.consume_failed", stage=stage, error=type(exc).__name__, at=where)
        error = PermanentError(
            ErrorType.INTERNAL_ERROR, f"the consume path failed: {type(exc).__name__} at {where}"
        )
        try:
            ctx = DeliveryContext(stage, _safe_job_id(message), 0, 0, 0, False, new_traceparent())
            headers = {c.HEADER_TRACEPARENT: ctx.traceparent}
            bare = _Run(message, headers, ctx, MessageLog(self._log, stage=stage))
            await self._dead_letter(bare, error, attempts=1)
            self._metrics.dead_lettered.labels(stage, error.error_type).inc()
            await message.ack()
        except Exception as again:  # noqa: BLE001 - the delivery limit ends what this cannot
            log.warning("stage.last_resort_failed", stage=stage, error=type(again).__name__)
            await self._requeue(message)

    async def announce_broker_dead_letter(self, message: Settling) -> None:
        """job.failed for a message the broker dead-lettered itself (deliveryLimitExceeded).

        The stage is the one the broker's newest x-death entry and the routing key agree on
        (topology.broker_death_stage), never a header a sender could have set on the job; the
        dead letter itself is in <prefix>.dead-letters. A copy whose stage the ledger has done
        (a duplicate left by a worker killed between its publish and its ack, returned to the
        queue by every later kill until the delivery limit) is stale: its job went on, so no
        job.failed is announced for it, and it is counted as a duplicate.
        """
        try:
            headers = carried_headers(message.headers)
            key_stage, _ = parse_dead_letter_routing_key(message.routing_key)
            stage = broker_death_stage(message.headers or {}, self._names, key_stage)
            plain, _ = self._open(message)
            job_id = job_id_of_body(plain) if plain is not None else None
            if stage is not None and job_id is not None:
                key = ledger_key(job_id, headers.get(c.HEADER_CHUNK, 0))
                if await self._ledger.done_mark(key, stage) is not None:
                    self._metrics.duplicates.labels(stage).inc()
                    log.info("broker_dead_letter.stale_copy", job_id=job_id, stage=stage)
                    await message.ack()
                    return
                ctx = DeliveryContext(
                    stage,
                    job_id,
                    attempts=0,
                    polls=0,
                    replays=headers.get(c.HEADER_REPLAYS, 0),
                    redelivered=False,
                    traceparent=headers.get(c.HEADER_TRACEPARENT) or new_traceparent(),
                )
                deliveries = bounded_count((message.headers or {}).get("x-delivery-count"))
                event = self._failed_event(ctx, _DELIVERY_LIMIT, deliveries)
                await self._publisher.publish_in_order(event)
                self._record(ctx, "failed", deliveries, error_type=_DELIVERY_LIMIT.error_type)
                self._metrics.dead_lettered.labels(stage, _DELIVERY_LIMIT.error_type).inc()
            await message.ack()
        except (*BROKER_ERRORS, LedgerUnavailable) as exc:
            log.warning("broker_dead_letter.publish_failed", error=type(exc).__name__)
            await self._requeue(message)
        except Exception as exc:  # noqa: BLE001 - an announcement that cannot be made is dropped
            log.warning("broker_dead_letter.unreadable", error=type(exc).__name__)
            await message.ack()

    async def publish_early(self, stage: Stage, body: bytes, job_id: str, traceparent: str) -> None:
        """A stage message sent now rather than from a delay tier (an Invox callback's poll
        message, worker/callback_receiver.py): the same exchange, properties and confirm as
        an advance, with no bookkeeping headers, so x-polls and attempts start afresh. Nothing
        is settled here: the copy still in the delay tier arrives later and is dropped as a
        duplicate once this one has advanced the job. Raises what a publish raises."""
        sealed, headers = self._seal(body, {c.HEADER_TRACEPARENT: traceparent}, job_id)
        message = build_message(sealed, correlation_id=job_id, headers=headers)
        await self._publisher.publish(self._names.jobs_exchange, stage, message)

    def _open(self, message: Settling) -> tuple[bytes | None, PayloadUndecryptable | None]:
        """The body in clear (as it is when it carries no seal), or why its seal cannot be
        opened. Bounded: the cipher refuses a sealed body over the codec's size limit."""
        try:
            plain = self._cipher.open(
                message.body,
                message.headers,
                purpose=STAGE_PURPOSE,
                binding=message.correlation_id,
            )
        except PayloadUndecryptable as exc:
            return None, exc
        return plain, None

    def _context(self, stage: Stage, message: Settling) -> _Run:
        headers = carried_headers(message.headers)
        traceparent = headers.get(c.HEADER_TRACEPARENT) or new_traceparent()
        headers[c.HEADER_TRACEPARENT] = traceparent
        plain, unopened = self._open(message)
        if plain is None:
            job_id, fingerprint = None, ""
        elif stage == "transcribe":
            job_id, fingerprint = job_identity(plain)
        else:
            job_id, fingerprint = job_id_of_body(plain), ""
        ctx = DeliveryContext(
            stage=stage,
            job_id=job_id,
            fingerprint=fingerprint,
            attempts=headers.get(c.HEADER_ATTEMPTS, 0),
            polls=headers.get(c.HEADER_POLLS, 0),
            replays=headers.get(c.HEADER_REPLAYS, 0),
            redelivered=bool(message.redelivered),
            traceparent=traceparent,
            chunk=headers.get(c.HEADER_CHUNK, 0),
        )
        bound = MessageLog(
            self._log,
            job_id=ctx.job_id,
            stage=stage,
            attempt=ctx.attempts + 1,
            trace_id=traceparent[3:35],
        )
        return _Run(message, headers, ctx, bound, plain=plain, unopened=unopened)

    async def _run(self, handler: Handler, run: _Run) -> None:
        """Handle the message, carry out the decision (all confirmed), then ack."""
        started = time.monotonic()
        metrics = self._metrics.stage(run.ctx.stage)
        metrics.in_flight += 1
        try:
            body = run.plain if run.plain is not None else run.message.body
            action = await self._decide(handler, body, run.ctx)
        finally:
            metrics.in_flight -= 1
        duration_s = time.monotonic() - started
        metrics.observe_duration(duration_s)
        duration_ms = round(duration_s * 1000, 1)
        timed = replace(
            run, log=run.log.with_fields(duration_ms=duration_ms), duration_ms=duration_ms
        )
        await action(timed)
        await run.message.ack()

    async def _defer(self, run: _Run, reason: str) -> None:
        """Send the message back unprocessed, through the poll-interval tier, then ack."""
        try:
            await self._send_back(run, reason, delay_s=0.0)
            await run.message.ack()
        except BROKER_ERRORS as exc:
            run.log.warning("stage.publish_failed", outcome="requeued", error=type(exc).__name__)
            await self._requeue(run.message)

    async def _send_back(self, run: _Run, reason: str, delay_s: float) -> None:
        """Unchanged, through a delay tier; not a failed attempt.

        With a known wait (a rate-limit slot delay_s away) the message comes back no later than
        its slot, at the largest tier that fits, so that a free slot always finds a taker; it may
        be sent back again, closer each time. Otherwise it waits one poll interval.
        """
        if delay_s > 0:
            tier = choose_tier_at_most_ms(self._retry.delay_tiers_ms, delay_s * 1000)
        else:
            tier = choose_tier_ms(self._retry.delay_tiers_ms, self._retry.poll_interval_ms)
        await self._to_delay(run, tier)
        self._metrics.deferred.labels(run.ctx.stage, reason).inc()
        run.log.info("stage.deferred", outcome="deferred", reason=reason, delay_ms=tier)

    async def _decide(self, handler: Handler, body: bytes, ctx: DeliveryContext) -> Action:
        try:
            outcome = await handler(body, ctx)
        except Deferred as deferred:
            return self._deferral_action(deferred)
        except ScribeError as exc:
            return self._failure_action(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: keep the message, retry, then dead-letter
            internal = TransientError(
                ErrorType.INTERNAL_ERROR, f"{type(exc).__name__} at {_failure_location(exc)}"
            )
            return self._failure_action(internal)
        return self._outcome_action(outcome)

    def _deferral_action(self, deferred: Deferred) -> Action:
        async def act(run: _Run) -> None:
            await self._send_back(run, "rate_limit", deferred.delay_s)

        return act

    def _outcome_action(self, outcome: Outcome) -> Action:
        async def act(run: _Run) -> None:
            ctx, bound = run.ctx, run.log
            if isinstance(outcome, PollLater):
                await self._poll_later(run)
                bound.debug(
                    "stage.pending",
                    provider=outcome.provider,
                    outcome="poll_later",
                    polls=ctx.polls + 1,
                )
                return
            # Progress first, then the next message, both written in that order and confirmed
            # together: a job's events arrive in stage order, job.completed last.
            publications = [*self._progress(ctx, outcome.provider, run.duration_ms)]
            if isinstance(outcome, Advance):
                publications.append(self._advance(outcome, run))
            else:
                publications.append(self._event(c.EVENT_COMPLETED, outcome.event.to_wire(), ctx))
            await self._publisher.publish_in_order(*publications)
            kind: TransitionKind = "completed" if isinstance(outcome, Complete) else "done"
            self._record(ctx, kind, ctx.attempts + 1, outcome.provider, run.duration_ms)
            if ctx.stage == "poll":
                self._metrics.polls_per_job.observe(ctx.polls + 1)
            if ctx.job_id:
                key = ledger_key(ctx.job_id, ctx.chunk)
                done = self._ledger.mark_done(key, ctx.stage, ctx.fingerprint)
                await self._advise(done, bound)
            # One info line per job (its end); each stage's line is debug, like each poll's.
            completed = isinstance(outcome, Complete)
            stage_metrics = self._metrics.stage(ctx.stage)
            if completed:
                stage_metrics.completed += 1
            else:
                stage_metrics.advanced += 1
            (bound.info if completed else bound.debug)(
                "stage.done",
                provider=outcome.provider,
                outcome="completed" if completed else "advanced",
            )

        return act

    def _failure_action(self, error: ScribeError) -> Action:
        async def act(run: _Run) -> None:
            headers, ctx, bound = run.headers, run.ctx, run.log
            attempts = ctx.attempts + 1
            now = datetime.now(UTC).isoformat()
            headers.setdefault(c.HEADER_FIRST_FAILURE_AT, now)
            headers[c.HEADER_LAST_FAILURE_AT] = now
            headers[c.HEADER_ATTEMPTS] = attempts
            fields = {"error_type": error.error_type, "http_status": error.http_status}
            if error.retryable and attempts < self._retry.max_attempts:
                tier = retry_delay_ms(self._retry, attempts, error.retry_after_s, self._rng)
                headers[c.HEADER_ERROR_TYPE] = error.error_type
                await self._to_delay(run, tier)
                self._record(ctx, "retry", attempts, error_type=error.error_type)
                self._metrics.retried.labels(ctx.stage, error_label(error.error_type)).inc()
                bound.warning("stage.retry", outcome="retry", delay_ms=tier, **fields)
                return
            await self._dead_letter(run, error, attempts)
            self._metrics.dead_lettered.labels(ctx.stage, error_label(error.error_type)).inc()
            bound.warning("stage.dead_lettered", outcome="dead_letter", **fields)

        return act

    def _advance(self, outcome: Advance, run: _Run) -> Publication:
        headers, ctx = run.headers, run.ctx
        _drop(headers, *FAILURE_HEADERS, c.HEADER_POLLS, c.HEADER_DELAY_TIER_MS, c.HEADER_CHUNK)
        if outcome.chunk:
            headers[c.HEADER_CHUNK] = outcome.chunk
        if outcome.delay_ms is not None:
            tier = choose_tier_ms(self._retry.delay_tiers_ms, outcome.delay_ms)
            headers[c.HEADER_DELAY_TIER_MS] = str(tier)
            exchange = self._names.delay_exchange
        else:
            exchange = self._names.jobs_exchange
        body, sealed = self._seal(outcome.body, headers, ctx.job_id)
        next_message = build_message(body, correlation_id=ctx.job_id, headers=sealed)
        return Publication(exchange, outcome.next_stage, next_message)

    async def _poll_later(self, run: _Run) -> None:
        _drop(run.headers, *FAILURE_HEADERS)  # a pending answer is a success: attempts restart
        run.headers[c.HEADER_POLLS] = run.ctx.polls + 1
        tier = choose_tier_ms(self._retry.delay_tiers_ms, self._retry.poll_interval_ms)
        await self._to_delay(run, tier)

    async def _to_delay(self, run: _Run, tier_ms: int) -> None:
        message, headers, ctx = run.message, run.headers, run.ctx
        headers[c.HEADER_DELAY_TIER_MS] = str(tier_ms)
        delayed = self._passed_on(run, message_id=message.message_id)
        await self._publisher.publish(self._names.delay_exchange, ctx.stage, delayed)

    async def _dead_letter(self, run: _Run, error: ScribeError, attempts: int) -> None:
        message, headers, ctx = run.message, run.headers, run.ctx
        headers.pop(c.HEADER_DELAY_TIER_MS, None)
        headers.update(
            {
                c.HEADER_ERROR_TYPE: error.error_type,
                c.HEADER_STAGE: ctx.stage,
                c.HEADER_ERROR_MESSAGE: error.message,
                c.HEADER_ATTEMPTS: attempts,
                c.HEADER_JOB_ID: ctx.job_id or "",
            }
        )
        if error.http_status is not None:
            headers[c.HEADER_HTTP_STATUS] = error.http_status
        dead = self._passed_on(
            run,
            message_id=message.message_id,
            content_type=message.content_type or "application/json",
        )
        await self._publisher.publish(
            self._names.dead_exchange, dead_letter_routing_key(ctx.stage, error.error_type), dead
        )
        if ctx.job_id is None or error.error_type == ErrorType.CONFLICTING_JOB:
            return  # a conflicting job's jobId belongs to the job that is done: its outcome stands
        await self._publisher.publish_in_order(self._failed_event(ctx, error, attempts))
        self._record(ctx, "failed", attempts, error_type=error.error_type)

    def _seal(
        self, body: bytes, headers: dict[str, Any], job_id: str | None, purpose: str = STAGE_PURPOSE
    ) -> tuple[bytes, dict[str, Any]]:
        """body and headers as published: sealed under the current key (bound to the jobId,
        which is the message's correlation_id), or as they are when no key is current."""
        sealed, seal = self._cipher.seal(body, purpose=purpose, binding=job_id)
        return sealed, {**headers, **seal} if seal else headers

    def _passed_on(
        self, run: _Run, *, message_id: str | None, content_type: str | None = None
    ) -> Outgoing:
        """The consumed message's body on its way to a delay tier or the dead letters. Read here:
        sealed again under the current key. Sealed and not opened here: the bytes as consumed,
        with their seal headers and correlation_id, so that a key configured later opens them."""
        message = run.message
        kept = seal_headers(message.headers) if run.plain is None else {}
        if kept:
            body, headers = message.body, {**run.headers, **kept}
            correlation_id = message.correlation_id
        else:
            plain = run.plain if run.plain is not None else message.body
            correlation_id = run.ctx.job_id
            body, headers = self._seal(plain, run.headers, correlation_id)
        extra = {"content_type": content_type} if content_type is not None else {}
        return build_message(
            body, correlation_id=correlation_id, headers=headers, message_id=message_id, **extra
        )

    def _failed_event(self, ctx: DeliveryContext, error: ScribeError, attempts: int) -> Publication:
        assert ctx.job_id is not None
        event = JobFailed(
            event_id=stable_event_id(ctx.job_id, f"failed/{ctx.replays}"),
            job_id=_as_uuid(ctx.job_id),
            stage=ctx.stage,
            error_type=error.error_type,
            message=error.message,
            http_status=error.http_status,
            attempts=attempts,
            occurred_at=datetime.now(UTC),
        )
        return self._event(c.EVENT_FAILED, event.to_wire(), ctx)

    def _record(
        self,
        ctx: DeliveryContext,
        kind: TransitionKind,
        attempts: int,
        provider: str | None = None,
        duration_ms: float | None = None,
        *,
        error_type: str | None = None,
    ) -> None:
        """Tell the job index (if any) of a transition whose publishes are confirmed."""
        if self._index is None or ctx.job_id is None:
            return
        at = datetime.now(UTC)
        job_id = str(_as_uuid(ctx.job_id))
        entry = IndexEntry(job_id, ctx.stage, kind, at, provider, attempts, error_type, duration_ms)
        self._index.record(replace(entry, replays=ctx.replays))

    def _progress(
        self, ctx: DeliveryContext, provider: str, duration_ms: float
    ) -> tuple[Publication, ...]:
        if ctx.job_id is None or ctx.stage not in self._stage_events:
            return ()
        event = StageProgress(
            event_id=stable_event_id(ctx.job_id, stage_event_kind(ctx.stage, ctx.chunk)),
            job_id=_as_uuid(ctx.job_id),
            stage=ctx.stage,
            provider=provider,
            duration_ms=duration_ms,
            occurred_at=datetime.now(UTC),
        )
        return (self._event(f"{c.EVENT_STAGE_PREFIX}{ctx.stage}", event.to_wire(), ctx),)

    def _event(self, routing_key: str, body: bytes, ctx: DeliveryContext) -> Publication:
        # Events may have no subscriber yet, so they are not mandatory; they are still confirmed.
        # No message_id: the client assigns a random one to every publish (eventId in the body
        # is stable per outcome), so a consumer can tell a broker redelivery (same message_id)
        # from a re-emission.
        headers: dict[str, Any] = {c.HEADER_TRACEPARENT: ctx.traceparent}
        if self._cipher.encrypt_events:  # SCRIBE_ENCRYPT_EVENTS: the consumers hold the keys
            body, headers = self._seal(body, headers, ctx.job_id, purpose=routing_key)
        event = build_message(body, correlation_id=ctx.job_id, headers=headers)
        return Publication(self._names.events_exchange, routing_key, event, mandatory=False)

    async def _advise(self, ledger_call: Awaitable[None], bound: MessageLog) -> None:
        """A ledger write after the outcome is published: if Redis is down, go on (the claim
        expires by itself; a missed 'done' only matters if the message comes back)."""
        try:
            await ledger_call
        except LedgerUnavailable:
            bound.warning("ledger.write_failed", outcome="continued")

    async def _requeue(self, message: Settling) -> None:
        try:
            await message.nack(requeue=True)
        except (AMQPError, ConnectionError, RuntimeError) as exc:
            # The channel is gone; the broker redelivers unacked messages by itself.
            log.warning("stage.nack_failed", error=type(exc).__name__)


_DELIVERY_LIMIT = PermanentError(
    ErrorType.DELIVERY_LIMIT_EXCEEDED,
    "the broker dead-lettered the message after too many deliveries (a crash loop or a message "
    "the worker could not settle)",
)


def _safe_job_id(message: Settling) -> str | None:
    try:
        return job_id_of(message)
    except Exception:  # noqa: BLE001 - used only on the last-resort path, which must not fail
        return None


def _drop(headers: dict[str, Any], *names: str) -> None:
    for name in names:
        headers.pop(name, None)


def _as_uuid(job_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(job_id)
    except ValueError:
        return uuid.uuid5(EVENT_NAMESPACE, job_id)
