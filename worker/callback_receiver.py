"""POST /callbacks/invox/{jobId}/{token}: Invox says a batch transcription is ready.

Served on the worker's HTTP port (SCRIBE_HTTP_PORT, beside /healthz) when
SCRIBE_CALLBACK_BASE_URL is set. The body is never trusted nor logged (the vendor pages do not
describe it): it must be JSON of at most SCRIBE_CALLBACK_MAX_BYTES, and that is all that is read
of it. What the receiver does, in order, each refusal changing nothing:

    401 forged          the token is not one this worker's key made for this jobId
    413 tooLarge        the body is over SCRIBE_CALLBACK_MAX_BYTES (Content-Length or as read)
    408 timedOut        the body did not arrive within SCRIBE_HTTP_TIMEOUT_S
    400 notJson         the body is not JSON
    404 unknown         no ticket for the job (never issued here, not written yet, expired,
                        or an older submission's token)
    409 replayed        this token was redeemed before (each token is single-use)
    409 alreadyAdvanced the poll stage is done for the job (polling got there first, or the job
                        is finished)
    502 confirmFailed   the one confirming get-transcription call failed (polling goes on)
    202 pending         Invox says it is not ready yet (polling goes on)
    202 advanced        Invox confirmed: the poll message is published now
    503 unavailable     the ledger or the broker is down (polling goes on)

The published poll message is the one in the delay tier (worker/stages.py writes both), so the
poll stage treats it like any other: a second copy is dropped as a duplicate by its done-mark,
and the job has one outcome and one paid transcription whichever copy comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import structlog
from aiohttp import web
from pydantic import ValidationError

from schemas.jobs import PollState
from worker.callbacks import CALLBACK_ROUTE_PREFIX, CallbackTicket, CallbackTokens
from worker.codec import StageCodec
from worker.constants import Stage
from worker.delivery import BROKER_ERRORS
from worker.errors import ScribeError
from worker.handles import HandleSigner
from worker.ledger import JobLedger, LedgerUnavailable
from worker.metrics import Metrics
from worker.providers.base import TranscriptionProvider
from worker.providers.http import parse_json

log = structlog.get_logger("scribe.callbacks")

CALLBACK_ROUTE: Final = CALLBACK_ROUTE_PREFIX + "/{job_id}/{token}"
CALLBACK_ENDPOINT: Final = "invox.callback"
OUTCOMES: Final = (
    "forged",
    "tooLarge",
    "timedOut",
    "notJson",
    "unknown",
    "replayed",
    "alreadyAdvanced",
    "confirmFailed",
    "pending",
    "advanced",
    "unavailable",
)
_STATUS: Final = {
    "forged": 401,
    "tooLarge": 413,
    "timedOut": 408,
    "notJson": 400,
    "unknown": 404,
    "replayed": 409,
    "alreadyAdvanced": 409,
    "confirmFailed": 502,
    "pending": 202,
    "advanced": 202,
    "unavailable": 503,
}

Publish = Callable[[Stage, bytes, str, str], Awaitable[None]]


class _Refused(Exception):
    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


@dataclass(frozen=True)
class CallbackReceiver:
    tokens: CallbackTokens
    ledger: JobLedger
    transcriber: TranscriptionProvider
    signer: HandleSigner
    publish: Publish  # Delivery.publish_early
    metrics: Metrics
    max_bytes: int
    read_timeout_s: float

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(CALLBACK_ROUTE, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        nonce = self.tokens.verify(job_id, request.match_info["token"])
        try:
            if nonce is None:
                raise _Refused("forged")  # the path is caller text: nothing of it is logged
            await self._read_json(request)
            outcome = await self._redeem(job_id, nonce)
        except _Refused as refused:
            outcome = refused.outcome
        except LedgerUnavailable:
            outcome = "unavailable"
        self.metrics.callbacks.labels(outcome).inc()
        logged_job = job_id if nonce is not None else None
        log.info("callback.received", job_id=logged_job, stage="poll", outcome=outcome)
        return web.json_response({"status": outcome}, status=_STATUS[outcome])

    async def _read_json(self, request: web.Request) -> None:
        """At most max_bytes within read_timeout_s, and JSON; nothing else is looked at."""
        declared = request.content_length
        if declared is not None and declared > self.max_bytes:
            raise _Refused("tooLarge")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.read_timeout_s):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _Refused("tooLarge")
                    chunks.append(chunk)
        except TimeoutError:
            raise _Refused("timedOut") from None
        try:
            parse_json(b"".join(chunks), CALLBACK_ENDPOINT)
        except ScribeError:
            raise _Refused("notJson") from None

    async def _redeem(self, job_id: str, nonce: str) -> str:
        raw = await self.ledger.callback_ticket(job_id)
        ticket = _ticket(raw)
        if ticket is None or ticket.nonce != nonce:
            return "unknown"
        if not await self.ledger.use_callback(job_id, nonce):
            return "replayed"
        if await self.ledger.done_mark(job_id, "poll") is not None:
            return "alreadyAdvanced"
        body = ticket.poll_body.encode("utf-8")
        try:
            message = StageCodec().decode(PollState, body)
            handle = message.state.transcription
            self.signer.verify(job_id, handle)  # signed by the transcribe stage, for this job
        except ScribeError:
            return "unknown"
        try:
            transcript = await self.transcriber.status(message.job, handle)
        except ScribeError as exc:
            log.warning(
                "callback.confirm_failed", job_id=job_id, stage="poll", error_type=exc.error_type
            )
            return "confirmFailed"
        if transcript is None:
            return "pending"
        try:
            await self.publish("poll", body, job_id, ticket.traceparent)
        except BROKER_ERRORS as exc:
            log.warning("callback.publish_failed", job_id=job_id, error=type(exc).__name__)
            return "unavailable"
        return "advanced"


def _ticket(raw: str | None) -> CallbackTicket | None:
    if raw is None:
        return None
    try:
        return CallbackTicket.model_validate_json(raw)
    except ValidationError:
        return None
