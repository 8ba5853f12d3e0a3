"""Property-based fuzzing: whatever arrives, the worker answers with a specific errorType (a
ScribeError), never another exception, and its message never echoes the input."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.errors import ERROR_CATALOGUE, ErrorType
from schemas.jobs import JobRequest, NoteMessage, PollMessage, SummarizeMessage, TranscriptionHandle
from tests.unit.conftest import _Aiohttp314Response
from worker.codec import job_id_of_body, parse_message
from worker.errors import ScribeError
from worker.providers.http import VendorHttp
from worker.providers.intron import IntronTranscriber
from worker.providers.invox import InvoxClient, InvoxSummarizer, InvoxTranscriber
from worker.providers.invox_auth import InvoxTokenSource
from worker.settings import Settings

KNOWN = {e.value for e in ERROR_CATALOGUE}
MARKER = "Qzmarkerpatient"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
VALID_JOB = {"jobId": str(uuid.uuid4()), "audio": {"url": "https://a.example/x.wav"}}


def mutated_jobs() -> st.SearchStrategy[dict[str, Any]]:
    """A valid job with one field replaced, removed or added. An unknown key shaped like a
    field name is named in the error (names are not patient data); one with a space is the
    sender's free text, and never shown."""
    keys = st.sampled_from(
        ["jobId", "audio", "providers", "summary", "template", "documents", "intron",
         "schemaVersion", "noteLanguage", f"{MARKER} Smith"]
    )  # fmt: skip
    return st.builds(
        lambda key, value, drop: {k: v for k, v in {**VALID_JOB, key: value}.items()
                                  if not (drop and k == key)},
        keys, json_values, st.booleans(),
    )  # fmt: skip


def parsed_or_error(body: bytes, model: type[Any]) -> tuple[Any, ScribeError | None]:
    try:
        return parse_message(model, body), None
    except ScribeError as exc:
        return None, exc


def error_of(body: bytes, model: type[Any] = JobRequest) -> ScribeError | None:
    return parsed_or_error(body, model)[1]


def check(body: bytes, model: type[Any] = JobRequest) -> None:
    """A refusal is a catalogued errorType that does not echo the body; an acceptance is the
    body's own message: a JSON object whose jobId is the parsed message's identity."""
    parsed, error = parsed_or_error(body, model)
    if error is not None:
        assert error.error_type in KNOWN
        assert MARKER.lower() not in error.message.lower()
        return
    assert isinstance(parsed, model)
    assert job_id_of_body(body) == str(parsed.job_id)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(body: bytes) -> None:
    check(body)


@settings(max_examples=300, deadline=None)
@given(mutated_jobs(), st.sampled_from([JobRequest, PollMessage, SummarizeMessage, NoteMessage]))
def test_mutated_messages(data: dict[str, Any], model: type[Any]) -> None:
    check(json.dumps(data).encode(), model)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(min_value=2, max_value=10**6)
    | st.text(max_size=5)
    # NaN, Infinity: not JSON numbers; 1.0 is the JSON number 1, as JSON Schema says too
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda version: version != 1)
    | st.sampled_from([True, "1"])  # equal to 1 in Python, not the JSON number 1
)
def test_unknown_schema_versions(version: object) -> None:
    error = error_of(json.dumps({**VALID_JOB, "schemaVersion": version}).encode())
    assert error is not None
    assert error.error_type == ErrorType.UNSUPPORTED_SCHEMA_VERSION


def test_huge_fields_are_refused_without_echo() -> None:
    huge = MARKER * 200_000
    check(json.dumps({**VALID_JOB, "consultationSessionId": huge}).encode())
    check(json.dumps({**VALID_JOB, "audio": {"url": huge}}).encode())


# --- vendor responses ---------------------------------------------------------------------

SETTINGS = Settings.from_env(
    {
        "SCRIBE_INTRON_BASE_URL": "https://intron.test",
        "SCRIBE_INTRON_API_KEY": "k",
        "SCRIBE_INVOX_BASE_URL": "https://invox.test",
        "SCRIBE_INVOX_ACCESS_TOKEN": "t",
    }
)
JOB = JobRequest.model_validate(VALID_JOB)
bodies = (
    json_values.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=200)
    | st.sampled_from([b"<html><body>502 Bad Gateway</body></html>", b'{"data": {', b""])
    | st.builds(
        lambda status: json.dumps({"data": {"processing_status": status}}).encode(),
        st.text(max_size=30),
    )
    | st.builds(
        lambda status, key: json.dumps({key: status, "transcription": []}).encode(),
        st.text(max_size=20),
        st.sampled_from(["transcriptionStatus", "processingStatus"]),
    )
)
statuses = st.sampled_from([200, 200, 200, 400, 401, 403, 404, 418, 429, 500, 502, 503])


async def call_vendors(status: int, body: bytes) -> None:
    async with aiohttp.ClientSession() as session:
        http = VendorHttp(session, timeout_s=5)
        invox = InvoxClient(SETTINGS.invox, http, InvoxTokenSource(SETTINGS.invox, http))
        handle = TranscriptionHandle(provider="intron", handle="f1", submitted_at=datetime.now(UTC))
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: IntronTranscriber(SETTINGS.intron, http).status(JOB, handle),
            lambda: InvoxTranscriber(invox).status(JOB, handle),
            lambda: InvoxSummarizer(invox).summarize(
                JOB, SummarizeMessage.model_validate(
                    {"jobId": VALID_JOB["jobId"], "job": VALID_JOB,
                     "transcript": {"provider": "invox", "text": "hello"}}
                ).transcript,
            ),
        ]  # fmt: skip
        hits: list[object] = []

        def hit(url: object, **_: object) -> None:
            hits.append(url)  # None: answer with the mock's status and body

        for call in calls:
            hits.clear()
            with aioresponses() as mocked:
                mocked.get(
                    "https://intron.test/file/v1/status/f1?get_structured_post_processing=f",
                    status=status,
                    body=body,
                    callback=hit,
                )
                for path in ("get-transcription", "generate-consultation-summary"):
                    mocked.post(
                        f"https://invox.test/api/v1/{path}", status=status, body=body, callback=hit
                    )
                error: ScribeError | None = None
                try:
                    await call()
                except ScribeError as exc:
                    error = exc
                # An unmatched URL would surface as connectionFailed and pass for the wrong
                # reason: the vendor's answer must have been the mock's.
                assert hits, "no request matched a mocked vendor URL"
                assert error is None or error.error_type in KNOWN


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(statuses, bodies)
def test_vendor_responses_always_map_to_a_scribe_error(status: int, body: bytes) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aioresponses_core, "ClientResponse", _Aiohttp314Response)
        asyncio.run(call_vendors(status, body))
