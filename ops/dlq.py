"""Reading, filtering, replaying and purging <prefix>.dead-letters (the library behind scribe-dlq).

Safety rules, each covered by tests/integration/test_dlq.py against the real broker:

* Reading never removes anything. Messages are taken with basic.get and manual acks on a
  dedicated channel and *held* unacked while the scan goes on (so the scan reaches every message
  exactly once, however the queue orders returns), then handed back with basic.nack(requeue=True).
  A scan stops when basic.get finds the queue empty (everything it took is held, so it never
  gets a message twice) or at the first message it has already seen (returned under it by
  another client). The message count of queue.declare-ok is not used to stop: for quorum
  queues it is a lagging statistic (a scan right after another one saw 1 of 4 messages), while
  basic.get goes through the queue's state machine and sees every returned message.
* Replay publishes each matching message to <prefix>.jobs with publisher confirms and only then
  acks the dead letter, one message at a time. Messages that do not match stay held and go back
  to the queue at the end. A crash (kill -9) returns every unacked message to the queue, so
  nothing is lost; the only duplicate possible is the one message whose publish was confirmed
  but whose ack had not reached the broker (at most one per interruption).
* With SCRIBE_REDIS_URL set, every replayed identity is recorded in Redis between the confirm and
  the ack; a later run that finds the identity recorded acks the dead letter without publishing
  it again. That narrows the duplicate window to the single Redis round trip after the confirm.
  Each replayed message also carries x-replay-of=<identity>, so a duplicate is recognisable.
* Purge counts the matching messages, asks, then acks exactly the identities it counted.

The identity of a dead letter is a sha256 over its properties, headers (minus the broker's
per-delivery counters), routing key and body. message_id alone is not enough: the worker copies
the consumed message's message_id onto its dead letters, so a message that fails again after a
replay would reuse it, and a Redis ledger keyed by message_id would then ack it unpublished.

Hostile dead letters (issue 12): the reader takes aiormq's deliveries as they come, with the
worker's tolerant AMQP decoding installed (worker/amqp_decoding.py, by cli_dlq), so properties
that are not UTF-8 stay bytes instead of becoming "b'...'" text, and nothing here assumes a type.
Every value shown is bounded in depth and plain JSON. A replay publishes fresh properties: the
body's jobId (a UUID) as correlation_id, or none. What a dead letter says about itself depends
on who made it: on the worker's own (no x-death), x-stage, x-job-id and x-error-message are the
worker's words (it drops such headers from what it consumes); on one the broker made
(deliveryLimitExceeded), every header but the broker's own came from the sender, so its stage is
the queue the broker recorded and its jobId the body's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, get_args

import redis.asyncio as aioredis
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import AMQPError, ChannelClosed
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from pydantic_core import from_json

from schemas.errors import ErrorType
from schemas.jobs import IntronPostProcessing
from worker import constants as c
from worker.broker import (
    BasicProperties,
    Outgoing,
    Publisher,
    bounded_count,
    build_message,
    carried_headers,
    property_problem,
)
from worker.codec import MAX_BODY_BYTES, canonical_uuid, job_id_of_body
from worker.constants import STAGES, Stage
from worker.payload_crypto import (
    STAGE_PURPOSE,
    PayloadCipher,
    PayloadUndecryptable,
    is_sealed,
    seal_headers,
)
from worker.topology import Names, broker_death_stage, parse_dead_letter_routing_key

# What --error-type accepts: the catalogue, and "other" for any value outside it (a vendor's
# 403 errorType), as metrics.error_label names them.
CATALOGUE_ERROR_TYPES = frozenset(error_type.value for error_type in ErrorType)
OTHER_ERROR_TYPE = "other"
FILTER_ERROR_TYPES = CATALOGUE_ERROR_TYPES | {OTHER_ERROR_TYPE}
REPLAY_LEDGER_TTL_S = 30 * 24 * 3600
# RabbitMQ 4.0-4.2 drop a quorum-queue message returned more than 20 times (the default
# delivery limit); every read of the dead letters returns each message once.
DELIVERY_COUNT_WARNING = 15
_DROPPING_VERSIONS = ((4, 0), (4, 1), (4, 2))
_VERSION = re.compile(r"(\d+)\.(\d+)")


def broker_version(connection: AbstractConnection) -> object:
    """The version the broker announced in connection.start (server_properties), or None."""
    transport = connection.transport
    if transport is None:
        return None
    properties: object = transport.connection.server_properties
    return properties.get("version") if isinstance(properties, Mapping) else None


def drops_redelivered_dead_letters(version: object) -> bool:
    """Whether the broker may drop a dead letter read about 20 times: RabbitMQ 4.0 to 4.2
    (3.x has no default delivery limit; 4.3+ does not count basic.nack). A version that
    cannot be read may be one of them."""
    if isinstance(version, bytes):
        version = version.decode("ascii", "replace")
    found = _VERSION.match(version) if isinstance(version, str) else None
    if found is None:
        return True
    return (int(found.group(1)), int(found.group(2))) in _DROPPING_VERSIONS


def reaches_redelivery_warning(delivery_count: int) -> bool:
    """A dead letter read at this x-delivery-count warrants the warning. Each read returns each
    dead letter once, so exactly one run sees a given letter at the count: the warning is given
    once, not again by every later command."""
    return delivery_count == DELIVERY_COUNT_WARNING


# basic.get waits this long for the broker's answer (aio-pika's default is 5 s; a large body
# on a busy broker may take longer).
GET_TIMEOUT_S = 30.0
# Values shown are cut below this many levels of tables and lists (the tolerant decoder already
# cuts header tables at 16; bodies are parsed with pydantic-core's nesting limit).
MAX_SHOWN_DEPTH = 32
TOO_DEEP = "(nested too deeply)"
# Our words on a dead letter the broker made: its x-error-message, if any, is the sender's.
BROKER_DEAD_LETTER_MESSAGE = "dead-lettered by the broker: more deliveries than the queue allows"
_DELIVERY_LIMIT = ErrorType.DELIVERY_LIMIT_EXCEEDED.value


class DeadLetterQueueMissing(Exception):
    def __init__(self, queue: str) -> None:
        super().__init__(f"queue {queue!r} does not exist (wrong SCRIBE_PREFIX?)")


def jsonable(value: Any, depth: int = 0) -> Any:
    """Header and property values (datetimes, bytes, byte arrays, decimals, tables) as plain
    JSON: bytes that are not UTF-8 as {"base64": ...}, non-finite floats as text, anything
    nested deeper than MAX_SHOWN_DEPTH as TOO_DEEP (so a hostile table cannot recurse)."""
    if isinstance(value, Mapping | list | tuple):
        if depth >= MAX_SHOWN_DEPTH:
            return TOO_DEEP
        if isinstance(value, Mapping):
            items = sorted(value.items(), key=lambda item: str(item[0]))
            return {str(key): jsonable(item, depth + 1) for key, item in items}
        return [jsonable(item, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_time(value: Any) -> datetime | None:
    """A header's time as UTC, or None; never raises (an offset next to year 1 or 9999 cannot
    be converted to UTC)."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    try:
        if isinstance(value, datetime):
            return _utc(value)
        if isinstance(value, str) and len(value) <= 64:
            return _utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        return None
    return None


def _count_or_none(value: Any) -> int | None:
    """A counter or status header, clamped like the worker's own (None when absent)."""
    return None if value is None else bounded_count(value)


def _header_text(headers: Mapping[str, Any], name: str) -> str | None:
    """A header that is text, as it is; anything else (bytes, tables, numbers) is not text."""
    value = headers.get(name)
    return value if isinstance(value, str) and value else None


def _property(value: object) -> str | bytes | None:
    """A short-string property as decoded: text, or bytes when it is not UTF-8."""
    return value if isinstance(value, str | bytes) else None


def _routing_key(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value if isinstance(value, str) else ""


def dead_letter_identity(
    properties: BasicProperties, routing_key: str, headers: Mapping[str, Any], body: bytes
) -> str:
    """The same for every read of one dead letter, whatever its properties hold."""
    kept = {key: value for key, value in headers.items() if key not in c.VOLATILE_BROKER_HEADERS}
    canonical = {
        "messageId": jsonable(_property(properties.message_id)),
        "correlationId": jsonable(_property(properties.correlation_id)),
        "timestamp": jsonable(_timestamp(properties)),
        "routingKey": routing_key,
        "headers": jsonable(kept),
        "body": hashlib.sha256(body).hexdigest(),
    }
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def _timestamp(properties: BasicProperties) -> datetime | None:
    value: object = properties.timestamp
    return _utc(value) if isinstance(value, datetime) else None


def _death_times(headers: Mapping[str, Any]) -> list[datetime]:
    """When the broker dead-lettered the message (its x-death entries), oldest first."""
    deaths = headers.get(c.BROKER_HEADER_DEATH)
    times = [
        parse_time(death.get("time"))
        for death in (deaths if isinstance(deaths, list) else [])
        if isinstance(death, Mapping)
    ]
    return sorted(moment for moment in times if moment is not None)


def made_by_broker(headers: Mapping[str, Any]) -> bool:
    """The broker dead-lettered it (deliveryLimitExceeded): the worker drops x-death and
    x-first-death-* from what it consumes, so its own dead letters never carry them."""
    return c.BROKER_HEADER_DEATH in headers or c.BROKER_HEADER_FIRST_DEATH_QUEUE in headers


@dataclass(frozen=True)
class _Account:
    """What a dead letter tells about its failure, from the headers its maker can vouch for."""

    stage: str | None
    job_id: str | None
    error_type: str | None
    error_message: str
    http_status: int | None
    attempts: int | None
    first_failure_at: datetime | None
    last_failure_at: datetime | None


def _worker_account(
    headers: Mapping[str, Any], key_stage: str, key_error: str, body: bytes, correlation: object
) -> _Account:
    """A dead letter the worker wrote: its x-* headers are its own words."""
    header_stage = _header_text(headers, c.HEADER_STAGE)
    last = parse_time(headers.get(c.HEADER_LAST_FAILURE_AT))
    return _Account(
        stage=next((s for s in STAGES if s == header_stage), None) or key_stage or None,
        job_id=canonical_uuid(headers.get(c.HEADER_JOB_ID))
        or job_id_of_body(body)
        or canonical_uuid(correlation),
        # The routing key decides the errorType; x-error-type is only a fallback.
        error_type=key_error or _header_text(headers, c.HEADER_ERROR_TYPE),
        error_message=_header_text(headers, c.HEADER_ERROR_MESSAGE) or "",
        http_status=_count_or_none(headers.get(c.HEADER_HTTP_STATUS)),
        attempts=_count_or_none(headers.get(c.HEADER_ATTEMPTS)),
        first_failure_at=parse_time(headers.get(c.HEADER_FIRST_FAILURE_AT)) or last,
        last_failure_at=last,
    )


def _broker_account(
    headers: Mapping[str, Any],
    names: Names,
    key_stage: str,
    key_error: str,
    body: bytes,
    correlation: object,
) -> _Account:
    """A dead letter the broker made: every header but its own death record is the sender's
    (x-stage, x-job-id, x-error-message, x-attempts, x-http-status, failure times)."""
    deaths = _death_times(headers)
    return _Account(
        stage=broker_death_stage(headers, names, key_stage),
        job_id=job_id_of_body(body) or canonical_uuid(correlation),
        error_type=key_error or None,
        error_message=BROKER_DEAD_LETTER_MESSAGE if key_error == _DELIVERY_LIMIT else "",
        http_status=None,
        attempts=None,
        first_failure_at=deaths[0] if deaths else None,
        last_failure_at=deaths[-1] if deaths else None,
    )


def _open(
    body: bytes, headers: Mapping[str, Any], correlation: object, cipher: PayloadCipher | None
) -> tuple[bytes | None, str | None]:
    """A sealed body opened with the configured keys (None and why not otherwise); (None,
    None) for a body that is not sealed."""
    if not is_sealed(headers):
        return None, None
    binding = correlation if isinstance(correlation, str) else None
    try:
        return (cipher or PayloadCipher(None)).open(
            body, headers, purpose=STAGE_PURPOSE, binding=binding
        ), None
    except PayloadUndecryptable as exc:
        return None, exc.message


@dataclass(frozen=True)
class DeadLetter:
    """What a dead letter says about itself; the body is kept as consumed.

    correlation_id, message_id and content_type are as decoded: bytes when not UTF-8
    (property_problem says so); made_by is "broker" or "worker" (see made_by_broker).
    """

    identity: str
    routing_key: str
    job_id: str | None
    stage: str | None
    error_type: str | None
    error_message: str
    http_status: int | None
    attempts: int | None
    first_failure_at: datetime | None
    last_failure_at: datetime | None
    replays: int
    delivery_count: int
    correlation_id: str | bytes | None
    message_id: str | bytes | None
    content_type: str | bytes | None
    made_by: str
    property_problem: str | None
    headers: dict[str, Any]
    body: bytes
    # Payload encryption (worker/payload_crypto.py): whether the body is sealed, the clear body
    # when a configured key opened it, and why it could not be opened otherwise.
    sealed: bool = False
    opened: bytes | None = None
    seal_problem: str | None = None

    @property
    def clear_body(self) -> bytes | None:
        """The body in clear: as kept, or opened; None when it is sealed and no key here opens
        it (seal_problem says why)."""
        return self.opened if self.sealed else self.body

    @classmethod
    def from_delivery(
        cls, delivery: DeliveredMessage, names: Names, cipher: PayloadCipher | None = None
    ) -> DeadLetter:
        properties = delivery.header.properties
        raw_headers: object = properties.headers
        headers: dict[str, Any] = dict(raw_headers) if isinstance(raw_headers, Mapping) else {}
        routing_key = _routing_key(delivery.routing_key)
        key_stage, key_error = parse_dead_letter_routing_key(routing_key)
        correlation = _property(properties.correlation_id)
        opened, seal_problem = _open(delivery.body, headers, correlation, cipher)
        body = opened if opened is not None else delivery.body
        by_broker = made_by_broker(headers)
        if by_broker:
            account = _broker_account(headers, names, key_stage, key_error, body, correlation)
        else:
            account = _worker_account(headers, key_stage, key_error, body, correlation)
        timestamp = _timestamp(properties)
        return cls(
            identity=dead_letter_identity(properties, routing_key, headers, delivery.body),
            routing_key=routing_key,
            job_id=account.job_id,
            stage=account.stage,
            error_type=account.error_type,
            error_message=account.error_message,
            http_status=account.http_status,
            attempts=account.attempts,
            first_failure_at=account.first_failure_at or timestamp,
            last_failure_at=account.last_failure_at or timestamp,
            replays=bounded_count(headers.get(c.HEADER_REPLAYS)),
            delivery_count=bounded_count(headers.get(c.BROKER_HEADER_DELIVERY_COUNT)),
            correlation_id=correlation,
            message_id=_property(properties.message_id),
            content_type=_property(properties.content_type),
            made_by="broker" if by_broker else "worker",
            property_problem=property_problem(properties),
            headers=headers,
            body=delivery.body,
            sealed=is_sealed(headers),
            opened=opened,
            seal_problem=seal_problem,
        )

    def summary(self) -> dict[str, Any]:
        """One line of `scribe-dlq list --json`: no body, nothing patient-identifying."""
        return {
            "jobId": self.job_id,
            "stage": self.stage,
            "errorType": self.error_type,
            "attempts": self.attempts,
            "httpStatus": self.http_status,
            "firstFailureAt": jsonable(self.first_failure_at),
            "lastFailureAt": jsonable(self.last_failure_at),
            "message": self.error_message,
            "replays": self.replays,
            "routingKey": self.routing_key,
            "deadLetteredBy": self.made_by,
            "identity": self.identity,
        }


@dataclass(frozen=True)
class Filters:
    """Empty sets match everything; several values of one filter are alternatives."""

    error_types: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    job_ids: frozenset[str] = frozenset()
    since: datetime | None = None
    # Dead-lettered before this moment (scribe-dlq --older-than: retention by death time).
    before: datetime | None = None
    # Exactly these dead letters (the console's confirmation replays and purges what its dry
    # run showed, never a letter that arrived since).
    identities: frozenset[str] = frozenset()

    def matches(self, letter: DeadLetter) -> bool:
        if self.identities and letter.identity not in self.identities:
            return False
        if self.error_types and not self._error_type_matches(letter.error_type):
            return False
        if self.stages and letter.stage not in self.stages:
            return False
        if self.job_ids and letter.job_id not in self.job_ids:
            return False
        if self.before is not None and not (
            letter.last_failure_at is not None and letter.last_failure_at < self.before
        ):
            return False
        if self.since is not None:
            return letter.last_failure_at is not None and letter.last_failure_at >= self.since
        return True

    def _error_type_matches(self, error_type: str | None) -> bool:
        if error_type in self.error_types:
            return True
        # "other", as in the metrics: an errorType outside the catalogue (a vendor's 403 value).
        return OTHER_ERROR_TYPE in self.error_types and error_type not in CATALOGUE_ERROR_TYPES


class Unsettled:
    """A dead letter taken with basic.get (aiormq's delivery as it came: aio-pika's
    IncomingMessage turns bytes properties into "b'...'" text), settled at most once."""

    __slots__ = ("_channel", "_settled", "_tag")

    def __init__(self, delivery: DeliveredMessage) -> None:
        self._channel = delivery.channel
        self._tag = delivery.delivery_tag
        self._settled = False

    async def ack(self) -> None:
        if self._tag is not None and not self._settled:
            self._settled = True
            await self._channel.basic_ack(self._tag)

    async def nack(self, requeue: bool = True) -> None:
        if self._tag is not None and not self._settled:
            self._settled = True
            await self._channel.basic_nack(self._tag, requeue=requeue)


@dataclass(frozen=True)
class Taken:
    message: Unsettled
    letter: DeadLetter


class DeadLetterReader:
    """A dedicated channel on <prefix>.dead-letters. Everything taken and not acked is held and
    handed back (nack, requeue) by release(); if the process dies, the broker hands it back."""

    def __init__(
        self,
        channel: AbstractChannel,
        names: Names,
        start_count: int,
        cipher: PayloadCipher | None = None,
    ) -> None:
        self._channel = channel
        self._names = names
        self._cipher = cipher
        self.start_count = start_count
        self._held: list[Unsettled] = []
        # A dead letter taken reached the redelivery warning's count (in this run only).
        self.reached_redelivery_warning = False

    @classmethod
    async def open(
        cls, connection: AbstractConnection, names: Names, cipher: PayloadCipher | None = None
    ) -> DeadLetterReader:
        """cipher: the keys that open sealed bodies (SCRIBE_PAYLOAD_KEYS) and seal replays."""
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(names.dead_letter_queue, passive=True)
        except ChannelClosed as exc:
            raise DeadLetterQueueMissing(names.dead_letter_queue) from exc
        result = queue.declaration_result
        return cls(channel, names, int(result.message_count or 0), cipher)

    async def _get(self) -> DeliveredMessage | None:
        channel = await self._channel.get_underlay_channel()
        delivery = await channel.basic_get(
            self._names.dead_letter_queue, no_ack=False, timeout=GET_TIMEOUT_S
        )
        return None if isinstance(delivery.delivery, Basic.GetEmpty) else delivery

    async def taken(self) -> AsyncIterator[Taken]:
        """Every message in the queue, once; stop early by breaking out. start_count (from
        queue.declare-ok) is only an estimate for progress display."""
        seen: set[str] = set()
        while True:
            delivery = await self._get()
            if delivery is None:
                return
            message = Unsettled(delivery)
            letter = DeadLetter.from_delivery(delivery, self._names, self._cipher)
            if reaches_redelivery_warning(letter.delivery_count):
                self.reached_redelivery_warning = True
            if letter.identity in seen:  # returned under us by another client: a full lap
                self.hold(message)
                return
            seen.add(letter.identity)
            yield Taken(message, letter)

    def hold(self, message: Unsettled) -> None:
        self._held.append(message)

    async def release(self) -> None:
        """Hand held messages back. basic.nack (not reject): RabbitMQ 4.3+ does not count it as
        a failed delivery."""
        held, self._held = self._held, []
        for message in held:
            try:
                await message.nack(requeue=True)
            except (AMQPError, ConnectionError, RuntimeError):
                return  # the channel is gone: the broker returns unacked messages by itself

    async def close(self) -> None:
        await self.release()
        if not self._channel.is_closed:
            await self._channel.close()


async def read_matching(
    reader: DeadLetterReader, filters: Filters, stop: asyncio.Event | None = None
) -> list[DeadLetter]:
    """Every matching dead letter, leaving all of them in the queue."""
    found: list[DeadLetter] = []
    try:
        async for item in reader.taken():
            reader.hold(item.message)
            if filters.matches(item.letter):
                found.append(item.letter)
            if stop is not None and stop.is_set():
                break
    finally:
        await reader.release()
    return found


def stats(letters: list[DeadLetter]) -> dict[str, Any]:
    by_error: dict[str, int] = {}
    by_stage: dict[str, int] = {}
    by_pair: dict[tuple[str, str], int] = {}
    for letter in letters:
        error = letter.error_type or "?"
        stage = letter.stage or "?"
        by_error[error] = by_error.get(error, 0) + 1
        by_stage[stage] = by_stage.get(stage, 0) + 1
        by_pair[(stage, error)] = by_pair.get((stage, error), 0) + 1
    return {
        "total": len(letters),
        "byErrorType": dict(sorted(by_error.items(), key=lambda kv: (-kv[1], kv[0]))),
        "byStage": dict(sorted(by_stage.items(), key=lambda kv: (-kv[1], kv[0]))),
        "byStageAndErrorType": [
            {"stage": stage, "errorType": error, "count": count}
            for (stage, error), count in sorted(by_pair.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }


# --- redaction -------------------------------------------------------------------------------

REDACTED = "[redacted]"
# Under --redact, fields no rule knows are not shown at all: their names may be patient text
# too. A table or object shows how many it had under this key instead.
UNKNOWN_FIELDS = "[unknown fields]"


# Bodies are parsed by pydantic-core, whose nesting limit (about 200 levels) keeps the
# recursive walks below far from Python's recursion limit; this bound is only a second guard.
_MAX_BODY_DEPTH = 256


def _redact_all(value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict | list) and depth >= _MAX_BODY_DEPTH:
        return REDACTED
    if isinstance(value, dict):
        return {key: _redact_all(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_all(item, depth + 1) for item in value]
    if value is None:
        return None
    return REDACTED


# Redaction by allow-list (issue 13, item 10): a body is shown through rules that follow the
# wire models (schemas/jobs.py); whatever no rule names is hidden, name and value.
# An identifier, enum value, number or time: no spaces, no "/" or "@" (URLs, paths, addresses).
_BODY_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+=-]{0,127}")
_MIME_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}"
)
_LABEL_MAX_CHARS = 120


@dataclass(frozen=True)
class _Leaf:
    """A scalar field. "token": identifiers, enums, numbers, times; "mime": a media type
    (type/subtype, no parameters); "label": the names of
    template fields and summary sections (a template's design, not what the patient said);
    "hidden": patient text, locations, file names, and free text of any kind."""

    kind: str


@dataclass(frozen=True)
class _Object:
    fields: Mapping[str, _Rule]


@dataclass(frozen=True)
class _Items:
    item: _Rule


@dataclass(frozen=True)
class _Keyed:
    """An object whose keys come from a closed set (Intron's post-processing options)."""

    keys: frozenset[str]
    value: _Rule


_Rule = _Leaf | _Object | _Items | _Keyed

_TOKEN, _MIME, _LABEL, _HIDDEN = _Leaf("token"), _Leaf("mime"), _Leaf("label"), _Leaf("hidden")
_POST_PROCESSING_OPTIONS = frozenset(get_args(IntronPostProcessing))
_JOB_FIELDS: dict[str, _Rule] = {
    "schemaVersion": _TOKEN,
    "jobId": _TOKEN,
    "consultationSessionId": _TOKEN,
    "submittedAt": _TOKEN,
    "audio": _Object({"url": _HIDDEN, "path": _HIDDEN, "mimeType": _MIME, "fileName": _HIDDEN}),
    "providers": _Object({"transcriber": _TOKEN, "summarizer": _TOKEN, "note": _TOKEN}),
    "summary": _Object({"outputFormat": _TOKEN, "outputLanguage": _TOKEN}),
    "template": _Object(
        {
            "id": _TOKEN,
            "template_name": _LABEL,
            "template_description": _HIDDEN,
            "template_language": _TOKEN,
            "fields": _Items(
                _Object(
                    {
                        "id": _TOKEN,
                        "name": _LABEL,
                        "description": _HIDDEN,
                        "type": _TOKEN,
                        "enumerableOptions": _HIDDEN,
                        "value": _HIDDEN,
                    }
                )
            ),
        }
    ),
    "noteLanguage": _TOKEN,
    "documents": _Items(
        _Object({"url": _HIDDEN, "path": _HIDDEN, "documentType": _TOKEN, "documentName": _HIDDEN})
    ),
    "intron": _Object(
        {
            "uploadMode": _TOKEN,
            "useDiarization": _TOKEN,
            "category": _TOKEN,
            "postProcessing": _Items(_TOKEN),
            "summarySource": _TOKEN,
        }
    ),
    # References into the EHR identify a patient, a visit, a clinician: hidden like a path.
    "fhir": _Object(
        {"patient": _HIDDEN, "encounter": _HIDDEN, "practitioner": _HIDDEN, "documentType": _TOKEN}
    ),
}
_TRANSCRIPT_RULE = _Object(
    {
        "provider": _TOKEN,
        "text": _HIDDEN,
        "segments": _Items(
            _Object(
                {
                    "start": _TOKEN,
                    "end": _TOKEN,
                    "text": _HIDDEN,
                    "speaker": _HIDDEN,
                    "role": _TOKEN,
                }
            )
        ),
        "durationS": _TOKEN,
        "postProcessing": _Keyed(_POST_PROCESSING_OPTIONS, _HIDDEN),
    }
)
# Evidence (issue 16): offsets, segment ids, times and a flag; no text of the consultation.
_EVIDENCE_RULE = _Items(
    _Object(
        {
            "item": _TOKEN,
            "textStart": _TOKEN,
            "textEnd": _TOKEN,
            "segmentIds": _Items(_TOKEN),
            "start": _TOKEN,
            "end": _TOKEN,
            "supported": _TOKEN,
        }
    )
)
# A stage message: the envelope (jobId, the whole job) and the stage's state. Its "summary"
# is the Summary model; a job request's is SummaryOptions: one rule serves both.
_BODY_RULE = _Object(
    {
        **_JOB_FIELDS,
        "job": _Object(_JOB_FIELDS),
        "transcription": _Object(
            {"provider": _TOKEN, "handle": _TOKEN, "submittedAt": _TOKEN, "signature": _TOKEN}
        ),
        "transcript": _TRANSCRIPT_RULE,
        # A long recording's chunk (worker/chunk_flow.py): where it is, and the transcript so far.
        "chunks": _Object(
            {
                "index": _TOKEN,
                "count": _TOKEN,
                "startS": _TOKEN,
                "endS": _TOKEN,
                "soFar": _TRANSCRIPT_RULE,
            }
        ),
        "summary": _Object(
            {
                "outputFormat": _TOKEN,
                "outputLanguage": _TOKEN,
                "provider": _TOKEN,
                "text": _HIDDEN,
                "fields": _Items(
                    _Object(
                        {
                            "name": _LABEL,
                            "description": _HIDDEN,
                            "value": _HIDDEN,
                            "evidence": _EVIDENCE_RULE,
                        }
                    )
                ),
                "evidence": _EVIDENCE_RULE,
            }
        ),
    }
)


def _shown_leaf(kind: str, value: Any) -> Any:
    if value is None or (isinstance(value, bool | int | float) and kind != "hidden"):
        return value
    if isinstance(value, str):
        if kind == "token" and _BODY_TOKEN.fullmatch(value):
            return value
        if kind == "mime" and _MIME_TYPE.fullmatch(value):
            return value
        if kind == "label" and len(value) <= _LABEL_MAX_CHARS and value.isprintable():
            return value
    return REDACTED


def _known_fields(
    value: dict[str, Any], rule_of: Callable[[str], _Rule | None], depth: int
) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    unknown = 0
    for key, item in value.items():
        rule = rule_of(key)
        if rule is None:
            unknown += 1
        else:
            shown[key] = _by_rule(item, rule, depth + 1)
    if unknown:
        shown[UNKNOWN_FIELDS] = unknown
    return shown


def _by_rule(value: Any, rule: _Rule, depth: int) -> Any:
    if depth >= _MAX_BODY_DEPTH:
        return REDACTED
    if isinstance(rule, _Leaf):
        return (
            _redact_all(value, depth)
            if isinstance(value, dict | list)
            else _shown_leaf(rule.kind, value)
        )
    if isinstance(rule, _Items):
        if not isinstance(value, list):
            return _redact_all(value, depth)
        return [_by_rule(item, rule.item, depth + 1) for item in value]
    if not isinstance(value, dict):
        return _redact_all(value, depth)
    if isinstance(rule, _Keyed):
        keyed = rule
        return _known_fields(value, lambda key: keyed.value if key in keyed.keys else None, depth)
    return _known_fields(value, rule.fields.get, depth)


def redact(value: Any) -> Any:
    """What --redact shows of a parsed body: only the fields the wire models define as carrying
    no patient text (identifiers, enums, numbers, times, template and section names), each
    only when its value has that shape; every other value is "[redacted]" (structure kept),
    and fields no model defines are only counted (UNKNOWN_FIELDS)."""
    return _by_rule(value, _BODY_RULE, 0)


def _finite(value: Any, depth: int = 0) -> Any:
    """Parsed JSON with non-finite numbers (1e400 parses as inf) as text: output stays JSON."""
    if isinstance(value, dict | list) and depth >= _MAX_BODY_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {key: _finite(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item, depth + 1) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def decode_body(body: bytes, *, redacted: bool) -> Any:
    """The body as JSON when it is JSON (and not nested deeper than pydantic-core's limit, nor
    over the worker's size limit); otherwise text, or base64 for non-UTF-8 bytes."""
    try:
        if len(body) > MAX_BODY_BYTES:
            raise ValueError("too large to parse")
        decoded = _finite(from_json(body, allow_inf_nan=False))
    except ValueError:
        if redacted:
            return f"{REDACTED} ({len(body)} bytes, not readable as JSON)"
        try:
            return {"text": body.decode("utf-8")}
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(body).decode("ascii")}
    return redact(decoded) if redacted else decoded


def shown_body(letter: DeadLetter, *, redacted: bool) -> Any:
    """The body as decode_body shows it, opened first when sealed; a sealed body no key here
    opens is shown as such, with the reason (never its bytes)."""
    clear = letter.clear_body
    if clear is None:
        key_id = letter.headers.get(c.HEADER_PAYLOAD_KEY_ID)
        return {
            "sealed": {
                "keyId": key_id if isinstance(key_id, str) else None,
                "readable": False,
                "problem": letter.seal_problem,
            }
        }
    return decode_body(clear, redacted=redacted)


# The worker's own words on its own dead letters (worker/delivery.py), shown as they are.
_WORKER_OWN_HEADERS = frozenset(
    {
        c.HEADER_ERROR_TYPE,
        c.HEADER_ERROR_MESSAGE,
        c.HEADER_HTTP_STATUS,
        c.HEADER_ATTEMPTS,
        c.HEADER_FIRST_FAILURE_AT,
        c.HEADER_LAST_FAILURE_AT,
        c.HEADER_STAGE,
        c.HEADER_JOB_ID,
    }
)
# Headers whose values are identifiers, counters and times when honest.
_KNOWN_HEADERS = _WORKER_OWN_HEADERS | {
    c.HEADER_POLLS,
    c.HEADER_REPLAYS,
    c.HEADER_REPLAY_OF,
    c.HEADER_TRACEPARENT,
    c.HEADER_DELAY_TIER_MS,
    c.HEADER_PAYLOAD_ENCRYPTION,
    c.HEADER_PAYLOAD_KEY_ID,
    c.BROKER_HEADER_DEATH,
    *c.VOLATILE_BROKER_HEADERS,
}
_BROKER_HEADER_PREFIXES = (c.BROKER_HEADER_FIRST_DEATH_PREFIX, c.BROKER_HEADER_LAST_DEATH_PREFIX)
_SHOWN_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+/@=-]{0,63}")


def _tokens_only(value: Any) -> Any:
    """Shown (jsonable) values with anything but identifiers, numbers and times redacted."""
    if isinstance(value, dict):
        if set(value) == {"base64"}:
            return REDACTED
        return {key: _tokens_only(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_tokens_only(item) for item in value]
    if isinstance(value, str):
        return value if _SHOWN_TOKEN.fullmatch(value) else REDACTED
    return value


def shown_headers(letter: DeadLetter, *, redacted: bool) -> dict[str, Any]:
    """The headers as plain JSON. Redacted: the worker's own words on its own dead letters as
    they are; free text in any other known header replaced (on a dead letter the broker made,
    the sender wrote those); unknown headers only counted (UNKNOWN_FIELDS): a sender's header
    name can be as telling as its value."""
    shown: dict[str, Any] = jsonable(letter.headers)
    if not redacted:
        return shown
    result: dict[str, Any] = {}
    unknown = 0
    for name, value in shown.items():
        if letter.made_by == "worker" and name in _WORKER_OWN_HEADERS:
            result[name] = value
        elif name in _KNOWN_HEADERS or name.startswith(_BROKER_HEADER_PREFIXES):
            result[name] = _tokens_only(value)
        else:
            unknown += 1
    if unknown:
        result[UNKNOWN_FIELDS] = unknown
    return result


def shown_property(value: str | bytes | None, *, redacted: bool) -> Any:
    """An AMQP property (correlation_id, message_id, content_type) as plain JSON; redacted, only
    when it is an identifier: the sender chose it."""
    shown = jsonable(value)
    return _tokens_only(shown) if redacted else shown


# --- replay ----------------------------------------------------------------------------------


class ReplayLedger(Protocol):
    """Identities already replayed: consulted before publishing, written after the confirm."""

    async def was_replayed(self, identity: str) -> bool: ...

    async def record(self, identity: str) -> None: ...

    async def close(self) -> None: ...


class NoReplayLedger:
    async def was_replayed(self, identity: str) -> bool:
        return False

    async def record(self, identity: str) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisReplayLedger:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    @classmethod
    async def connect(cls, url: str, prefix: str) -> RedisReplayLedger:
        ledger = cls(aioredis.Redis.from_url(url), prefix)
        await ledger._redis.ping()  # fail before touching the queue, not half-way
        return ledger

    def key(self, identity: str) -> str:
        return f"{self._prefix}:{c.REDIS_DLQ_REPLAYED_NAMESPACE}:{identity}"

    async def was_replayed(self, identity: str) -> bool:
        return bool(await self._redis.exists(self.key(identity)))

    async def record(self, identity: str) -> None:
        await self._redis.set(self.key(identity), "1", ex=REPLAY_LEDGER_TTL_S)

    async def close(self) -> None:
        await self._redis.aclose()


def replay_headers(letter: DeadLetter) -> dict[str, Any]:
    """The dead letter's headers without failure bookkeeping, plus x-replays and x-replay-of."""
    headers = {
        key: value
        for key, value in carried_headers(letter.headers).items()
        if key not in c.REPLAY_DROPPED_HEADERS
        and not key.startswith(c.REPLAY_DROPPED_HEADER_PREFIXES)
    }
    headers[c.HEADER_REPLAYS] = letter.replays + 1
    headers[c.HEADER_REPLAY_OF] = letter.identity
    return headers


def _replayed_body(
    letter: DeadLetter, cipher: PayloadCipher | None
) -> tuple[bytes, dict[str, Any], str | None]:
    """Body, seal headers and correlation_id of a replay. A body in clear (as kept, or opened
    here) is sealed again under the current key, if any (a replay moves a dead letter to the
    newest key). A sealed body no key here opens goes as it is, with its seal and its
    correlation_id, for a worker that holds the key."""
    clear = letter.clear_body
    if clear is None:
        correlation = letter.correlation_id
        kept = correlation if isinstance(correlation, str) and correlation.isprintable() else None
        return letter.body, seal_headers(letter.headers), kept
    job_id = job_id_of_body(clear)
    body, seal = (cipher or PayloadCipher(None)).seal(clear, purpose=STAGE_PURPOSE, binding=job_id)
    return body, seal, job_id


def replay_message(letter: DeadLetter, cipher: PayloadCipher | None = None) -> Outgoing:
    """The body as it was, with fresh properties: none of a dead letter's own (they may not
    even be text) is published again but a message_id that is printable text."""
    message_id = letter.message_id
    clean_id = isinstance(message_id, str) and message_id.isprintable()
    body, seal, correlation_id = _replayed_body(letter, cipher)
    return build_message(
        body,
        correlation_id=correlation_id,
        headers={**replay_headers(letter), **seal},
        message_id=message_id if clean_id and isinstance(message_id, str) else None,
        content_type="application/json",
    )


def target_stage(letter: DeadLetter, to_stage: Stage | None) -> Stage | None:
    if to_stage is not None:
        return to_stage
    for stage in STAGES:
        if stage == letter.stage:
            return stage
    return None


@dataclass(frozen=True)
class ReplayOptions:
    filters: Filters = Filters()
    to_stage: Stage | None = None
    limit: int | None = None
    rate: float | None = None
    dry_run: bool = False
    # Seals what is replayed under the current key (None: replayed in clear, as kept).
    cipher: PayloadCipher | None = None


@dataclass
class ReplaySummary:
    replayed: int = 0
    would_replay: int = 0
    skipped: int = 0
    already_replayed: int = 0
    scanned: int = 0
    total: int = 0
    dry_run: bool = False
    interrupted: bool = False
    planned: list[tuple[DeadLetter, Stage]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"replayed={self.replayed} would_replay={self.would_replay} skipped={self.skipped} "
            f"already_replayed={self.already_replayed} dry_run={str(self.dry_run).lower()} "
            f"interrupted={str(self.interrupted).lower()}"
        )


class _Pacer:
    """At most `rate` publishes per second, without sleeping past a stop request."""

    def __init__(self, rate: float | None, stop: asyncio.Event) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()
        self._stop = stop

    async def wait(self) -> None:
        if not self._interval:
            return
        delay = self._next - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        self._next = max(self._next, time.monotonic()) + self._interval


async def replay(
    reader: DeadLetterReader,
    publisher: Publisher,
    names: Names,
    options: ReplayOptions,
    ledger: ReplayLedger,
    *,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[ReplaySummary], None] | None = None,
) -> ReplaySummary:
    """Publish-confirm, record, then ack: one message at a time (see the module docstring)."""
    stop = stop or asyncio.Event()
    summary = ReplaySummary(dry_run=options.dry_run, total=reader.start_count)
    pacer = _Pacer(options.rate, stop)
    published: set[str] = set()
    try:
        async for item in reader.taken():
            summary.scanned += 1
            letter = item.letter
            stage = target_stage(letter, options.to_stage)
            # A replay of this run that failed again (workers are running) is a new dead letter
            # carrying our x-replay-of: leave it for a later run instead of looping on it.
            again = _header_text(letter.headers, c.HEADER_REPLAY_OF) in published
            if again or not options.filters.matches(letter) or stage is None:
                reader.hold(item.message)
                summary.skipped += 1
            elif options.dry_run:
                reader.hold(item.message)
                summary.would_replay += 1
                summary.planned.append((letter, stage))
            else:
                message = replay_message(letter, options.cipher)
                await _replay_one(
                    item, (stage, message), publisher, names, ledger, pacer, reader, summary
                )
                published.add(letter.identity)
            if on_progress is not None:
                on_progress(summary)
            done = summary.replayed + summary.already_replayed + summary.would_replay
            if options.limit is not None and done >= options.limit:
                break
            if stop.is_set():
                summary.interrupted = True
                break
    finally:
        await reader.release()
    return summary


async def _replay_one(
    item: Taken,
    target: tuple[Stage, Outgoing],
    publisher: Publisher,
    names: Names,
    ledger: ReplayLedger,
    pacer: _Pacer,
    reader: DeadLetterReader,
    summary: ReplaySummary,
) -> None:
    letter = item.letter
    try:
        if await ledger.was_replayed(letter.identity):
            # An earlier run published it (confirmed) and died before the ack.
            await item.message.ack()
            summary.already_replayed += 1
            return
        await pacer.wait()
        stage, message = target
        await publisher.publish(names.jobs_exchange, stage, message)
    except BaseException:
        reader.hold(item.message)  # not replayed: it goes back to the queue
        raise
    await ledger.record(letter.identity)
    await item.message.ack()
    summary.replayed += 1


# --- purge -----------------------------------------------------------------------------------


async def purge(reader: DeadLetterReader, identities: set[str]) -> int:
    """Ack exactly the dead letters with these identities (counted and confirmed earlier)."""
    purged = 0
    try:
        async for item in reader.taken():
            if item.letter.identity in identities:
                await item.message.ack()
                purged += 1
            else:
                reader.hold(item.message)
            if purged == len(identities):
                break
    finally:
        await reader.release()
    return purged
