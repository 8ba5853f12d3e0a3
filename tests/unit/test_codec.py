"""The stage codec: a job this process already validated is not validated again, and yet every
body is accepted or refused exactly as the full validation would."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.base import WireModel
from schemas.jobs import (
    STAGE_MESSAGE_TYPES,
    JobRequest,
    NoteState,
    PollState,
    SummarizeState,
    Summary,
    Transcript,
    TranscriptionHandle,
)
from worker.codec import JobCache, StageCodec, StageInput
from worker.errors import ScribeError

JOB_ID = "0b7e4a4e-3f57-4a55-9d43-5d0c7b6f1a21"
JOB: dict[str, Any] = {
    "jobId": JOB_ID,
    "audio": {"path": "clinic/a.wav", "mimeType": "audio/wav"},
    "providers": {"transcriber": "intron", "summarizer": "invox", "note": "invox"},
    "template": {
        "id": "soap",
        "template_name": "SOAP",
        "template_language": "en",
        "fields": [{"id": "f1", "name": "Assessment", "type": "string"}],
    },
    "noteLanguage": "en",
}
HANDLE = TranscriptionHandle(provider="intron", handle="f-1", submitted_at=datetime.now(UTC))
TRANSCRIPT = Transcript(provider="intron", text="Patient reports knee pain.")
SUMMARY = Summary(provider="invox", output_format="SUMMARY", text="Knee pain.")
STATES: list[WireModel] = [
    PollState(transcription=HANDLE),
    SummarizeState(transcript=TRANSCRIPT),
    NoteState(transcript=TRANSCRIPT, summary=SUMMARY),
]


def _job(**changes: Any) -> JobRequest:
    return JobRequest.model_validate({**JOB, **changes})


def _outcome(codec: StageCodec, state_type: type[Any], body: bytes) -> object:
    """The decoded job and state as plain data, or the error as (errorType, message)."""
    try:
        decoded = codec.decode(state_type, body)
    except ScribeError as exc:
        return (exc.error_type, exc.message)
    return (decoded.job.model_dump(), decoded.state.model_dump())


@pytest.mark.parametrize("state", STATES, ids=lambda s: type(s).__name__)
def test_the_next_stage_reuses_the_validated_job(state: WireModel) -> None:
    codec = StageCodec()
    job = codec.decode_job(json.dumps(JOB).encode())
    body = codec.encode(job, state)
    decoded = codec.decode(type(state), body)
    assert decoded.job is job
    assert decoded.state == state


@pytest.mark.parametrize("state", STATES, ids=lambda s: type(s).__name__)
def test_the_encoded_message_is_the_documented_wire_message(state: WireModel) -> None:
    job = _job()
    body = StageCodec().encode(job, state)
    message_type = STAGE_MESSAGE_TYPES[type(state)]
    expected = message_type.model_validate(
        {"jobId": job.job_id, "job": job, **state.model_dump(by_alias=True)}
    )
    assert message_type.model_validate_json(body) == expected
    wire = json.loads(body)
    assert list(wire)[:3] == ["schemaVersion", "jobId", "job"]
    assert {key: wire[key] for key in list(wire)[3:]} == json.loads(state.to_wire())
    assert "intron" not in wire["job"]  # at its defaults, so left out: the schema restores it


@pytest.mark.parametrize("state", STATES, ids=lambda s: type(s).__name__)
def test_another_process_decodes_the_same_message_by_full_validation(state: WireModel) -> None:
    job = _job()
    body = StageCodec().encode(job, state)
    decoded = StageCodec().decode(type(state), body)
    assert decoded == StageInput(job, state)
    assert decoded.job is not job  # a job of its own, validated from the body


def test_an_edited_job_is_validated_not_taken_from_the_cache() -> None:
    codec = StageCodec()
    job = _job()
    body = codec.encode(job, PollState(transcription=HANDLE))
    edited = body.replace(b"clinic/a.wav", b"clinic/b.wav")
    assert len(edited) == len(body)
    decoded = codec.decode(PollState, edited)
    assert decoded.job.audio.path == "clinic/b.wav"
    assert decoded.job == _job(audio={**JOB["audio"], "path": "clinic/b.wav"})


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda body: json.dumps(json.loads(body), indent=2).encode(),  # re-formatted
        lambda body: body.replace(JOB_ID.encode(), JOB_ID.upper().encode(), 1),
        lambda body: body[:-1] + b',"job":' + json.dumps(JOB).encode() + b"}",  # a second job
        lambda body: body[:-1] + b',"jobId":"' + str(uuid.uuid4()).encode() + b'"}',
        lambda body: body[:-1] + b',"schemaVersion":2}',
        lambda body: body[:-1] + b',"surprise":1}',
        lambda body: body.replace(b'"provider":"intron","handle"', b'"provider":"nope","handle"'),
        lambda body: body.replace(b'"job":{', b'"job":{"schemaVersion":1.0,', 1),
    ],
)
def test_anything_but_the_exact_layout_gets_the_full_validation_and_its_verdict(
    rewrite: Any,
) -> None:
    warm = StageCodec()
    job = warm.decode_job(json.dumps(JOB).encode())
    body = rewrite(warm.encode(job, PollState(transcription=HANDLE)))
    assert _outcome(warm, PollState, body) == _outcome(StageCodec(), PollState, body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(range(len(STATES))),
    st.integers(min_value=0, max_value=10_000),
    st.binary(min_size=1, max_size=3),
    st.booleans(),
)
def test_a_damaged_body_gets_the_same_verdict_warm_or_cold(
    which: int, position: int, patch: bytes, insert: bool
) -> None:
    warm = StageCodec()
    state = STATES[which]
    body = warm.encode(warm.decode_job(json.dumps(JOB).encode()), state)
    at = position % len(body)
    damaged = body[:at] + patch + body[at + (0 if insert else len(patch)) :]
    state_type = type(state)
    assert _outcome(warm, state_type, damaged) == _outcome(StageCodec(), state_type, damaged)


def test_a_finished_job_is_forgotten() -> None:
    codec = StageCodec()
    job = _job()
    body = codec.encode(job, SummarizeState(transcript=TRANSCRIPT))
    codec.forget(job.job_id)
    decoded = codec.decode(SummarizeState, body).job
    assert decoded == job
    assert decoded is not job  # not the cached object: validated again from the body


def test_the_cache_is_bounded_by_count_and_bytes_least_recently_used_first() -> None:
    jobs = [_job(jobId=str(uuid.uuid4())) for _ in range(4)]
    wire = jobs[0].to_wire()
    cache = JobCache(max_jobs=3, max_bytes=10 * len(wire), max_job_bytes=len(wire) + 10)
    for job in jobs[:3]:
        cache.put(str(job.job_id), job.to_wire(), job)
    assert cache.get(str(jobs[0].job_id)) is not None  # now the most recently used
    cache.put(str(jobs[3].job_id), jobs[3].to_wire(), jobs[3])
    assert len(cache) == 3
    assert cache.get(str(jobs[1].job_id)) is None  # the least recently used went
    assert cache.get(str(jobs[0].job_id)) is not None

    by_bytes = JobCache(max_jobs=100, max_bytes=2 * len(wire), max_job_bytes=len(wire) + 10)
    for job in jobs:
        by_bytes.put(str(job.job_id), job.to_wire(), job)
    assert len(by_bytes) == 2
    assert by_bytes.size_bytes <= 2 * len(wire)
    big = _job(consultationSessionId="x" * 100)
    by_bytes.put(str(big.job_id), big.to_wire(), big)
    assert by_bytes.get(str(big.job_id)) is None  # larger than max_job_bytes: never kept
    by_bytes.discard(str(jobs[3].job_id))
    assert len(by_bytes) == 1
    assert by_bytes.size_bytes == len(jobs[2].to_wire())


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_refused_at_the_door(value: str) -> None:
    template = json.dumps(JOB["template"]).replace('"type": "string"}', '"type": "number"}')
    body = json.dumps({**JOB, "template": "TEMPLATE"}).replace(
        '"TEMPLATE"', template.replace('"number"}', f'"number", "value": {value}}}')
    )
    with pytest.raises(ScribeError) as caught:
        StageCodec().decode_job(body.encode())
    assert caught.value.error_type == "invalidMessage"
