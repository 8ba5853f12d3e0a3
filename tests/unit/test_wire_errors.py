"""What a refused body is told (issue 13, item 6): the field by name, never its value; one rule
for the encoding (UTF-8, as RFC 8259 asks of JSON between systems), said in the error and in
the README together with the body's size limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.errors import ErrorType
from schemas.jobs import JobRequest, PollState
from worker.codec import MAX_BODY_BYTES, StageCodec, parse_message
from worker.errors import ScribeError

README = Path(__file__).parents[2] / "README.md"
JOB: dict[str, Any] = {
    "jobId": "7d0c31f6-52c5-4f53-a1b4-2a3c0dfc6a4e",
    "audio": {"path": "a/visit.wav"},
}
PATIENT = "Qzpatient"


def refusal(body: bytes) -> ScribeError:
    with pytest.raises(ScribeError) as caught:
        parse_message(JobRequest, body)
    return caught.value


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"audioo": {"path": "a/visit.wav"}}, "audioo: extra_forbidden"),
        (
            {"audio": {"path": "a/visit.wav", "mimetype": PATIENT}},
            "audio.mimetype: extra_forbidden",
        ),
        ({"intron": {"postprocessing": []}}, "intron.postprocessing: extra_forbidden"),
    ],
)
def test_an_unknown_field_is_named(change: dict[str, Any], named: str) -> None:
    error = refusal(json.dumps({**JOB, **change}).encode())
    assert error.error_type == ErrorType.INVALID_MESSAGE
    assert named in error.message
    assert PATIENT not in error.message


@pytest.mark.parametrize("key", [f"{PATIENT} Smith", "x" * 100, "a.b", "näme", "a\nb"])
def test_an_unknown_key_that_is_not_a_field_name_is_not_echoed(key: str) -> None:
    """A key shaped like no field name is the sender's text, which could be anything."""
    error = refusal(json.dumps({**JOB, key: 1}).encode())
    assert error.message == "(unknown field): extra_forbidden"


def test_an_unknown_field_in_a_stage_message_is_named() -> None:
    body = json.dumps(
        {
            "jobId": JOB["jobId"],
            "job": JOB,
            "transcription": {"provider": "intron"},
            "extraState": 1,
        }
    ).encode()
    with pytest.raises(ScribeError) as caught:
        StageCodec().decode(PollState, body)
    assert "extraState: extra_forbidden" in caught.value.message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_utf16_and_utf32_bodies_are_refused_as_not_utf8(encoding: str) -> None:
    error = refusal(json.dumps(JOB).encode(encoding))
    assert error.error_type == ErrorType.INVALID_MESSAGE
    assert error.message == "the body is not UTF-8 (JSON bodies are UTF-8 only, README)"


def test_a_byte_order_mark_is_refused_and_said() -> None:
    error = refusal(json.dumps(JOB).encode("utf-8-sig"))
    assert error.message == "the body starts with a byte-order mark (send UTF-8 JSON without one)"


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"jobId": }', b'"\\ud800"'])
def test_utf8_that_is_not_json_is_said_to_be_not_json(body: bytes) -> None:
    assert refusal(body).message == "the body is not valid JSON"


def test_the_readme_states_the_encoding_rule_and_the_size_limit() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert f"{MAX_BODY_BYTES // 2**20} MiB ({MAX_BODY_BYTES:,} bytes)" in text
    assert "UTF-8 only" in text
