"""Stage messages in and out, without paying twice for the job they all carry.

Every later stage's message embeds the whole job, so that it replays on its own; validating and
serialising that job again at every stage was most of a stage's own CPU. The codec writes a
stage message as the envelope, the job's bytes exactly as this process last validated or wrote
them, then the stage's state:

    {"schemaVersion":1,"jobId":"<id>","job":<job bytes>,<state members>}

Reading one back, a byte comparison tells whether its job is one this process already holds
as a validated model; then only the state is validated. Anything else (a job this process has
not seen or has evicted, an edited or re-formatted body, another layout) takes the full
validation, so what is accepted, and every error, is the same either way.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from schemas.base import UUID_TEXT, WireModel, describe_validation_error
from schemas.errors import ErrorType
from schemas.jobs import STAGE_MESSAGE_TYPES, JobRequest
from worker import constants as c
from worker.errors import InvalidMessage, PermanentError

S = TypeVar("S", bound=WireModel)
M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = 32 * 1024 * 1024

_ENVELOPE_START = b'{"schemaVersion":1,"jobId":"'
_JOB_ID_END = len(_ENVELOPE_START) + 36  # a UUID in its canonical 36-character form
_JOB_MEMBER = b'","job":'
_JOB_START = _JOB_ID_END + len(_JOB_MEMBER)
_COMMA = ord(",")


# The wire's one spelling of a UUID (schemas/base.py UUID_PATTERN, as the JSON Schemas say it).
_UUID_TEXT = re.compile(UUID_TEXT.pattern.encode("ascii"))


def canonical_uuid(value: object) -> str | None:
    """value (str or bytes) as a UUID's canonical text, in lower case, if it is a UUID in the
    wire's spelling (8-4-4-4-12 hex digits, either case), else None: 32 bare digits, urn:uuid:
    and {braces} are not, as the schemas and the parse refuse them."""
    if isinstance(value, str):
        value = value.encode("ascii", "replace")
    if not isinstance(value, bytes) or not _UUID_TEXT.fullmatch(value):
        return None
    return value.decode("ascii").lower()


def job_id_of_body(body: bytes) -> str | None:
    """The body's jobId (a job's identity) as canonical UUID text, or None; never raises.

    A stage message the codec wrote has it at a fixed place; any other body is parsed, after the
    size check, by pydantic-core's parser, whose nesting limit turns a body nested 100,000 deep
    into a ValueError instead of a RecursionError.
    """
    id_start = len(_ENVELOPE_START)
    if body.startswith(_ENVELOPE_START) and _UUID_TEXT.fullmatch(body, id_start, _JOB_ID_END):
        return body[len(_ENVELOPE_START) : _JOB_ID_END].decode("ascii").lower()
    if len(body) > MAX_BODY_BYTES:
        return None
    try:
        decoded = from_json(body, allow_inf_nan=False)
    except ValueError:
        return None
    return canonical_uuid(decoded.get("jobId")) if isinstance(decoded, dict) else None


def job_identity(body: bytes) -> tuple[str | None, str]:
    """A job request's jobId (as job_id_of_body) and its content's fingerprint.

    The fingerprint is a digest of the parsed JSON with sorted keys, so a duplicate publish
    whose serialiser orders or spaces the members differently is still the same job; a body
    that is not JSON is fingerprinted by its bytes."""
    decoded: object = None
    if len(body) <= MAX_BODY_BYTES:
        try:
            decoded = from_json(body, allow_inf_nan=False)
        except ValueError:
            decoded = None
    if isinstance(decoded, dict):
        canonical = json.dumps(decoded, sort_keys=True, separators=(",", ":")).encode()
        job_id = canonical_uuid(decoded.get("jobId"))
    else:
        canonical, job_id = body, None
    return job_id, hashlib.sha256(canonical).hexdigest()[:32]


def _why_not_json(body: bytes, exc: ValueError) -> str:
    """One rule for the encoding: UTF-8 only (RFC 8259 asks it of JSON between systems), no
    byte-order mark; UTF-16 and UTF-32 are refused as such, whatever their own mark says."""
    if "recursion limit" in str(exc):
        return "the body is nested too deeply"
    if body.startswith(codecs.BOM_UTF8):
        return "the body starts with a byte-order mark (send UTF-8 JSON without one)"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8 (JSON bodies are UTF-8 only, README)"
    if 0 in body[:4]:  # UTF-16 or UTF-32 without a mark: RFC 4627's test, NULs among the first 4
        return "the body is not UTF-8 (JSON bodies are UTF-8 only, README)"
    return "the body is not valid JSON"


def parse_message(model: type[M], body: bytes) -> M:
    """The message as model, or an error that says what is wrong without quoting the body.

    Valid messages take pydantic's JSON parser in one pass; only a failure pays for the
    step-by-step diagnosis below. Strict: a JSON value is taken only as the type the JSON
    Schema names ("3" is not a number, 1 is not true), so that both give the same verdict.
    """
    if len(body) > MAX_BODY_BYTES:
        raise InvalidMessage(f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError:
        pass  # diagnosed below, in the order a sender would fix things
    try:
        data = from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise InvalidMessage(_why_not_json(body, exc)) from exc
    if not isinstance(data, dict):
        raise InvalidMessage("the body is not a JSON object")
    version = data.get("schemaVersion", 1)
    if type(version) not in (int, float) or version != 1:  # 1.0 is the JSON number 1; true is not
        shown = version if type(version) is int else "?"
        raise PermanentError(
            ErrorType.UNSUPPORTED_SCHEMA_VERSION, f"schemaVersion {shown} is not supported (use 1)"
        )
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise InvalidMessage(describe_validation_error(exc)) from exc


@dataclass(frozen=True)
class StageInput(Generic[S]):
    job: JobRequest
    state: S


@dataclass(frozen=True)
class _CachedJob:
    wire: bytes
    job: JobRequest


class JobCache:
    """Validated jobs by jobId with the bytes they are written as; least recently used first out.

    Bounded by count and by bytes; jobs larger than max_job_bytes are never kept (each of their
    stages validates and serialises them in full, as without a cache).
    """

    def __init__(self, max_jobs: int, max_bytes: int, max_job_bytes: int) -> None:
        self._max_jobs = max_jobs
        self._max_bytes = max_bytes
        self._max_job_bytes = max_job_bytes
        self._jobs: OrderedDict[str, _CachedJob] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, job_id: str) -> _CachedJob | None:
        cached = self._jobs.get(job_id)
        if cached is not None:
            self._jobs.move_to_end(job_id)
        return cached

    def put(self, job_id: str, wire: bytes, job: JobRequest) -> None:
        self.discard(job_id)
        if len(wire) > self._max_job_bytes:
            return
        self._jobs[job_id] = _CachedJob(wire, job)
        self._bytes += len(wire)
        while len(self._jobs) > self._max_jobs or self._bytes > self._max_bytes:
            _, evicted = self._jobs.popitem(last=False)
            self._bytes -= len(evicted.wire)

    def discard(self, job_id: str) -> None:
        cached = self._jobs.pop(job_id, None)
        if cached is not None:
            self._bytes -= len(cached.wire)


class StageCodec:
    def __init__(self) -> None:
        self._cache = JobCache(
            c.JOB_CACHE_MAX_JOBS, c.JOB_CACHE_MAX_BYTES, c.JOB_CACHE_MAX_JOB_BYTES
        )

    def decode_job(self, body: bytes) -> JobRequest:
        """A job request as published upstream (the transcribe stage's message); encode keeps
        it for the stages after."""
        return parse_message(JobRequest, body)

    def decode(self, state_type: type[S], body: bytes) -> StageInput[S]:
        """A later stage's message: its job and the state the stage before it added."""
        known = self._known_job(body)
        if known is not None:
            cached, state_start = known
            try:
                state = state_type.model_validate_json(b"{" + body[state_start:], strict=True)
            except ValidationError:
                pass  # the full validation below decides, and words the error
            else:
                return StageInput(cached.job, state)
        message = parse_message(STAGE_MESSAGE_TYPES[state_type], body)
        state = state_type.model_validate(
            {name: getattr(message, name) for name in state_type.model_fields}
        )
        return StageInput(message.job, state)

    def encode(self, job: JobRequest, state: WireModel) -> bytes:
        """The next stage's message, laid out so that decode recognises its job."""
        job_id = str(job.job_id)
        cached = self._cache.get(job_id)
        wire = cached.wire if cached is not None and cached.job is job else self._remember(job)
        members = state.to_wire()
        return b"".join((_ENVELOPE_START, job_id.encode(), _JOB_MEMBER, wire, b",", members[1:]))

    def forget(self, job_id: UUID) -> None:
        """The job is finished: no later stage will read it here."""
        self._cache.discard(str(job_id))

    def _remember(self, job: JobRequest) -> bytes:
        """The job's bytes for the next stage's message, kept for the stages after it.

        Compact: fields at their defaults are left out (the schema restores them), which makes
        every later message of a typical job a third smaller for the broker to store.
        """
        wire = job.model_dump_json(by_alias=True, exclude_none=True, exclude_defaults=True).encode()
        self._cache.put(str(job.job_id), wire, job)
        return wire

    def _known_job(self, body: bytes) -> tuple[_CachedJob, int] | None:
        """The cached job whose exact bytes this body embeds where encode puts them, and where
        the state's members start; None for anything else."""
        if len(body) > MAX_BODY_BYTES or not body.startswith(_ENVELOPE_START):
            return None
        if body[_JOB_ID_END:_JOB_START] != _JOB_MEMBER:
            return None
        cached = self._cache.get(body[len(_ENVELOPE_START) : _JOB_ID_END].decode("latin-1"))
        if cached is None or not body.startswith(cached.wire, _JOB_START):
            return None
        state_start = _JOB_START + len(cached.wire)
        if len(body) <= state_start or body[state_start] != _COMMA:
            return None
        return cached, state_start + 1
