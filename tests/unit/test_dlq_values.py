"""scribe-dlq's value handling on what tolerant AMQP decoding and hostile bodies can hand it
(issue 12, item 1): every function is total and bounded, and its output is plain JSON."""

from __future__ import annotations

import dataclasses
import io
import json
import typing
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from ops import cli_dlq, dlq
from schemas.jobs import ChunkMessage, JobRequest, NoteMessage, PollMessage, SummarizeMessage


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"n": value}
    return value


def test_jsonable_is_bounded_on_deep_tables() -> None:
    shown = dlq.jsonable(nested(5_000))
    depth = 0
    while isinstance(shown, dict):
        shown = shown["n"]
        depth += 1
    assert depth == dlq.MAX_SHOWN_DEPTH
    assert shown == dlq.TOO_DEEP


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\xff", {"base64": "/w=="}),
        (bytearray(b"\xff"), {"base64": "/w=="}),
        (bytearray(b"ok"), "ok"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (Decimal("-2147483648E-255"), "-2.147483648E-246"),
        (datetime.max.replace(tzinfo=UTC), "9999-12-31T23:59:59.999999+00:00"),
        ({b"\xffk": 1}, {"b'\\xffk'": 1}),
    ],
)
def test_jsonable_gives_plain_json(value: object, expected: object) -> None:
    shown = dlq.jsonable(value)
    assert shown == expected
    json.dumps(shown, allow_nan=False)


@pytest.mark.parametrize(
    "text", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "not a time", "x" * 10_000]
)
def test_parse_time_never_raises(text: str) -> None:
    assert dlq.parse_time(text) is None
    assert dlq.parse_time(text.encode()) is None


def test_decode_body_is_bounded_on_deep_bodies() -> None:
    deep = b'{"jobId":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    redacted = dlq.decode_body(deep, redacted=True)
    assert isinstance(redacted, str)
    assert redacted.startswith(dlq.REDACTED)
    assert dlq.decode_body(deep, redacted=False) == {"text": deep.decode()}


def test_decode_body_gives_plain_json() -> None:
    shown = dlq.decode_body(b'{"a": 1e400, "b": [-1e400]}', redacted=False)
    assert shown == {"a": "inf", "b": ["-inf"]}
    json.dumps(shown, allow_nan=False)


# --- issue 13, item 10: redaction by allow-list, refused filters, the redelivery warning ------

SECRET = "Jane Doe reports chest pain"
JOB_ID = "7d0c31f6-52c5-4f53-a1b4-2a3c0dfc6a4e"


def _job(**extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 1,
        "jobId": JOB_ID,
        "consultationSessionId": "visit-1234",
        "audio": {"url": "https://storage.example/a.wav", "mimeType": "audio/wav"},
        "providers": {"transcriber": "intron", "summarizer": "invox", "note": "invox"},
        "summary": {"outputFormat": "SOAP_TEMPLATE", "outputLanguage": "en"},
        "template": {
            "id": "t1",
            "template_name": "Outpatient",
            "template_description": SECRET,
            "template_language": "en",
            "fields": [
                {"id": "f1", "name": "Diagnosis", "type": "string", "value": SECRET},
            ],
        },
        "documents": [{"path": "/data/jane.pdf", "documentType": "PDF", "documentName": "j.pdf"}],
        "intron": {"uploadMode": "auto", "postProcessing": ["get_summary"]},
        **extra,
    }


def test_redact_shows_only_fields_known_to_carry_no_patient_text() -> None:
    body = {
        **_job(),
        "job": _job(notes=SECRET),
        "transcript": {
            "provider": "intron",
            "text": SECRET,
            "segments": [{"start": 0.0, "end": 1.5, "text": SECRET, "speaker": "Jane"}],
            "postProcessing": {"get_summary": SECRET, SECRET: "x"},
        },
        "transcription": {"provider": "invox", "handle": "req-1", "submittedAt": "2026-01-01"},
        # Fields no schema has: their values and their names may be anything.
        "comment": SECRET,
        SECRET: 1,
        "extra": {"nested": [SECRET]},
    }
    shown = dlq.redact(body)
    text = json.dumps(shown)
    assert SECRET not in text
    assert "Jane" not in text
    assert "storage.example" not in text
    assert shown["jobId"] == JOB_ID
    assert shown["consultationSessionId"] == "visit-1234"
    assert shown["providers"] == {"transcriber": "intron", "summarizer": "invox", "note": "invox"}
    assert shown["audio"] == {"url": dlq.REDACTED, "mimeType": "audio/wav"}
    assert shown["template"]["fields"] == [
        {"id": "f1", "name": "Diagnosis", "type": "string", "value": dlq.REDACTED}
    ]
    assert shown["template"]["template_description"] == dlq.REDACTED
    assert shown["intron"] == {"uploadMode": "auto", "postProcessing": ["get_summary"]}
    assert shown["documents"] == [
        {"path": dlq.REDACTED, "documentType": "PDF", "documentName": dlq.REDACTED}
    ]
    assert shown["transcript"]["segments"] == [
        {"start": 0.0, "end": 1.5, "text": dlq.REDACTED, "speaker": dlq.REDACTED}
    ]
    assert shown["transcript"]["postProcessing"] == {
        "get_summary": dlq.REDACTED,
        dlq.UNKNOWN_FIELDS: 1,
    }
    assert shown["transcription"]["handle"] == "req-1"
    assert shown[dlq.UNKNOWN_FIELDS] == 3  # comment, the secret key, extra
    assert shown["job"][dlq.UNKNOWN_FIELDS] == 1


@pytest.mark.parametrize(
    "value",
    ["https://storage.example/jane.wav", "jane@example.com", "Jane Doe", "x" * 200, ["a"], {}],
)
def test_redact_hides_identifier_fields_that_do_not_hold_an_identifier(value: object) -> None:
    shown = dlq.redact({"jobId": value, "consultationSessionId": value})
    assert shown["jobId"] == shown["consultationSessionId"]
    assert shown["jobId"] in (dlq.REDACTED, [dlq.REDACTED], {})


@pytest.mark.parametrize("body", [[SECRET], SECRET, 3])
def test_redact_hides_bodies_that_are_not_objects(body: object) -> None:
    assert SECRET not in json.dumps(dlq.redact(body))


def _letter(headers: dict[str, Any], made_by: str = "worker") -> dlq.DeadLetter:
    return dlq.DeadLetter(
        identity="i",
        routing_key="transcribe.invalidMessage",
        job_id=None,
        stage="transcribe",
        error_type="invalidMessage",
        error_message="",
        http_status=None,
        attempts=None,
        first_failure_at=None,
        last_failure_at=None,
        replays=0,
        delivery_count=0,
        correlation_id=SECRET,
        message_id=SECRET,
        content_type="application/json",
        made_by=made_by,
        property_problem=None,
        headers=headers,
        body=b"{}",
    )


def test_redacted_headers_hide_unknown_header_names() -> None:
    letter = _letter({"x-error-type": "invalidMessage", SECRET: "v", "x-patient": SECRET})
    shown = dlq.shown_headers(letter, redacted=True)
    assert SECRET not in json.dumps(shown)
    assert shown == {"x-error-type": "invalidMessage", dlq.UNKNOWN_FIELDS: 2}
    assert SECRET in json.dumps(dlq.shown_headers(letter, redacted=False))


def test_redacted_properties_are_identifiers_only() -> None:
    from ops.cli_dlq import show_record

    record = show_record(_letter({}), redacted=True)
    assert SECRET not in json.dumps(record)
    assert record["contentType"] == "application/json"
    assert SECRET in json.dumps(show_record(_letter({}), redacted=False))


def test_filter_other_matches_error_types_outside_the_catalogue() -> None:
    filters = dlq.Filters(error_types=frozenset({"other"}))
    assert filters.matches(dataclasses.replace(_letter({}), error_type="missingPermission"))
    assert not filters.matches(_letter({}))


@pytest.mark.parametrize("command", ["list", "stats", "purge", "replay"])
async def test_error_types_outside_the_catalogue_are_refused(command: str) -> None:
    """Before any connection (the AMQP URL points nowhere): a typo is a usage error, exit 2."""
    out, err = io.StringIO(), io.StringIO()
    env = {"SCRIBE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
    argv = [command, "--error-type", "upstreamTimout"]
    code = await cli_dlq.run(argv, env, stdout=out, stderr=err)
    assert code == cli_dlq.EXIT_USAGE
    assert "upstreamTimout" in err.getvalue()
    assert "upstreamTimeout" in err.getvalue()  # the close match is suggested
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("version", "applies"),
    [
        ("3.10.7", False),
        ("3.13.2", False),
        ("4.0.0", True),
        ("4.1.4", True),
        ("4.2.9", True),
        ("4.3.0", False),
        ("5.0.0", False),
        (b"4.1.0", True),
        (None, True),  # unknown: the warning may apply
        ("garbage", True),
    ],
)
def test_the_redelivery_warning_applies_to_rabbitmq_4_0_to_4_2(
    version: object, applies: bool
) -> None:
    assert dlq.drops_redelivered_dead_letters(version) is applies


@pytest.mark.parametrize(("count", "warns"), [(0, False), (14, False), (15, True), (16, False)])
def test_the_redelivery_warning_is_given_once_per_dead_letter(count: int, warns: bool) -> None:
    """Every read returns each dead letter once: only the read that takes one to the threshold
    warns, not every later command."""
    assert dlq.reaches_redelivery_warning(count) is warns


def _field_bodies(model: type[BaseModel]) -> Iterator[tuple[str, Any]]:
    """(dotted path, a body holding just that field) for every field of a wire model, nested
    models included (a field of a list of models sits in a one-item list)."""
    for name, info in model.model_fields.items():
        key = info.alias or name
        annotation = info.annotation
        nested = [
            arg
            for arg in (annotation, *typing.get_args(annotation))
            if isinstance(arg, type) and issubclass(arg, BaseModel)
        ]
        listed = typing.get_origin(annotation) is tuple or any(
            typing.get_origin(arg) is tuple for arg in typing.get_args(annotation)
        )
        if not nested:
            for arg in typing.get_args(annotation):
                nested += [
                    inner
                    for inner in typing.get_args(arg)
                    if isinstance(inner, type) and issubclass(inner, BaseModel)
                ]
        yield key, {key: "x"}
        for inner in nested:
            for path, body in _field_bodies(inner):
                yield f"{key}.{path}", {key: [body] if listed else body}


@pytest.mark.parametrize(
    "model", [JobRequest, PollMessage, SummarizeMessage, NoteMessage, ChunkMessage]
)
def test_every_field_of_the_wire_models_has_a_redaction_rule(model: type[BaseModel]) -> None:
    """A field added to schemas/jobs.py must be classified here (shown or hidden), or --redact
    counts it as unknown: this names it."""
    unknown = [
        path
        for path, body in _field_bodies(model)
        if dlq.UNKNOWN_FIELDS in json.dumps(dlq.redact(body))
    ]
    assert unknown == []


def test_redact_hides_the_fhir_references() -> None:
    """A job's FHIR references identify a patient, a visit and a clinician in the EHR."""
    fhir = {
        "patient": "Patient/123",
        "encounter": "Encounter/9",
        "practitioner": "Practitioner/7",
        "documentType": "11506-3",
    }
    shown = dlq.redact({"jobId": "j", "fhir": fhir, "job": {"fhir": fhir}})
    hidden = {key: dlq.REDACTED for key in ("patient", "encounter", "practitioner")}
    assert shown["fhir"] == shown["job"]["fhir"] == {**hidden, "documentType": "11506-3"}
