"""The published JSON Schemas and the worker give every body the same verdict.

Outside clients check their messages with a JSON Schema validator before they publish (and
consumers check our events the same way): a body the schema accepts and the worker refuses is a
job dead-lettered for a reason its publisher could not see; the reverse is a client refusing a
message the worker would have taken. So for every schema in schemas/json/ a schema-driven
generator makes bodies near the schema's edges (each value valid, or one of the ways senders
get it wrong: another type, 1.0 for 1, "1" for 1, a UUID in another spelling, a time without
its offset, a missing or an unknown field, a string one character too long, a trailing newline),
and a third-party validator (the `jsonschema` package, with and without format checks) and the
worker's own parser (worker/codec.py) must agree on each.

What no JSON Schema can say, and so is checked here by name instead: a stage message's jobId
equals its job's jobId. What the generator leaves out, on purpose: strings near the 5,000,000
character cap and bodies over 32 MiB (both in the worker's limits, the first in the schema too),
calendar dates that do not exist (2023-02-29: the pattern takes them, `format: date-time`
refuses them where a validator checks formats) and lone UTF-16 surrogates (not UTF-8: refused
before any schema is consulted, README).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from schemas import export
from schemas.base import WireModel
from schemas.jobs import STAGE_MESSAGE_TYPES, JobRequest
from worker.codec import StageCodec, parse_message
from worker.errors import ScribeError

Json = Any
SCHEMAS: dict[str, dict[str, Json]] = {
    name: json.loads((export.JSON_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    for name in export.MODELS
}
STAGE_SCHEMAS = {"poll-message", "summarize-message", "note-message", "chunk-message"}
STATE_OF_MESSAGE: dict[type[BaseModel], type[WireModel]] = {
    message: state for state, message in STAGE_MESSAGE_TYPES.items()
}
NOISE = [None, True, False, 0, 1, -1, 1.0, 2.5, "", "x", "1", "true", [], {}, ["x"], {"x": 1}]
EXTRA_KEYS = ["extra", "jobID", "Url", "x-y", "job_id", "schema_version"]


def worker_accepts(name: str, body: bytes) -> bool:
    """The worker's verdict, through the entry point the worker reads that message with."""
    model = export.MODELS[name]
    try:
        if model is JobRequest:
            StageCodec().decode_job(body)
        elif name in STAGE_SCHEMAS:
            StageCodec().decode(STATE_OF_MESSAGE[model], body)
        else:
            parse_message(model, body)
    except ScribeError:
        return False
    return True


_VALIDATORS = {
    name: (
        Draft202012Validator(schema),
        Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER),
    )
    for name, schema in SCHEMAS.items()
}


def _same_uuid(left: Json, right: Json) -> bool:
    try:
        return (
            isinstance(left, str) and isinstance(right, str) and uuid.UUID(left) == uuid.UUID(right)
        )
    except ValueError:
        return False


def schema_accepts(name: str, body: Json) -> bool:
    plain, with_formats = _VALIDATORS[name]
    verdict: bool = plain.is_valid(body)
    assert with_formats.is_valid(body) == verdict, "the patterns must carry what the formats say"
    if verdict and name in STAGE_SCHEMAS:  # the one rule JSON Schema cannot express
        return _same_uuid(body.get("jobId"), body["job"].get("jobId"))
    return verdict


# --- a generator of bodies near a schema's edges -------------------------------------------------
# Each schema node gives values it describes ("good") and the ways senders get it wrong ("bad");
# one node in MUTATION_ODDS takes a bad one, so that most bodies are wrong in one place or none.

MUTATION_ODDS = 40
Pair = tuple[st.SearchStrategy[Json], st.SearchStrategy[Json]]
CANONICAL: Callable[[uuid.UUID], str] = str
UUID_SPELLINGS: list[Callable[[uuid.UUID], str]] = [
    lambda u: str(u).upper(),  # the same form, in capitals: accepted
    lambda u: u.hex,
    lambda u: u.urn,
    lambda u: "{" + str(u) + "}",
    lambda u: str(u) + "\n",
    lambda u: " " + str(u),
    lambda u: str(u)[:-1],
]


def _spelled(spellings: list[Callable[[Any], Json]], values: st.SearchStrategy[Any]) -> Any:
    return st.builds(lambda spell, value: spell(value), st.sampled_from(spellings), values)


def uuid_texts() -> Pair:
    return st.uuids().map(CANONICAL), _spelled(UUID_SPELLINGS, st.uuids())


def _offset(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


GOOD_DATETIMES: list[Callable[[datetime], Json]] = [
    lambda d: d.isoformat(),
    lambda d: d.isoformat().replace("+00:00", "Z"),
    lambda d: d.isoformat().replace("+00:00", "z").replace("T", "t"),
    lambda d: d.isoformat(timespec="seconds"),
    lambda d: d.isoformat(timespec="microseconds"),
    lambda d: d.isoformat(timespec="microseconds")[:26] + "123Z",  # nine fraction digits
]
BAD_DATETIMES: list[Callable[[datetime], Json]] = [
    lambda d: d.isoformat(timespec="minutes"),  # no seconds
    lambda d: d.isoformat(sep=" "),
    lambda d: d.isoformat(sep="_"),
    lambda d: d.replace(tzinfo=None).isoformat(),  # no offset: which time is it?
    lambda d: d.date().isoformat(),
    lambda d: d.isoformat(timespec="microseconds")[:26].replace(".", ",") + "Z",
    lambda d: d.isoformat(timespec="seconds")[:19] + "+0100",
    lambda d: d.isoformat(timespec="seconds")[:19] + "+01",
    lambda d: d.isoformat(timespec="seconds")[:19] + "+24:00",
    lambda d: d.isoformat()[:11] + "24" + d.isoformat()[13:19] + "Z",
    lambda d: d.isoformat()[:17] + "60Z",
    lambda d: d.isoformat()[:5] + "13" + d.isoformat()[7:19] + "Z",
    lambda d: d.isoformat()[:8] + "00" + d.isoformat()[10:19] + "Z",
    lambda d: "0000" + d.isoformat()[4:19] + "Z",
    lambda d: d.isoformat()[:19] + ".Z",
    lambda d: "+" + d.isoformat(),
    lambda d: d.isoformat() + "\n",
    lambda d: int(d.timestamp()),
    lambda d: d.timestamp(),
]


def datetime_texts() -> Pair:
    moments = st.datetimes(
        min_value=datetime(1, 1, 2),  # bounds of naive values: the zone is drawn below
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, _offset(60), _offset(-330), _offset(23 * 60 + 59)]),
    )
    return _spelled(GOOD_DATETIMES, moments), _spelled(BAD_DATETIMES, moments)


def _resolve(root: dict[str, Json], schema: dict[str, Json]) -> dict[str, Json]:
    while "$ref" in schema:
        node: Json = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _strings(schema: dict[str, Json]) -> Pair:
    if schema.get("format") == "uuid":
        return uuid_texts()
    if schema.get("format") == "date-time":
        return datetime_texts()
    low, high = schema.get("minLength", 0), schema.get("maxLength", 5_000_000)
    if "pattern" in schema:
        pattern: str = schema["pattern"]
        matching = st.from_regex(pattern, fullmatch=True).filter(lambda t: len(t) <= high)
        return matching, st.one_of(matching.map(lambda text: text + "\n"), st.text(max_size=12))
    good = st.text(min_size=low, max_size=min(high, 12))
    edges = ["x" * n for n in (low - 1, high + 1) if 0 <= n <= 10_000]  # 5,000,000: left out
    if high <= 10_000:
        good = st.one_of(good, st.just("x" * high))
    return good, st.sampled_from(edges or [None])


def _numbers(schema: dict[str, Json]) -> Pair:
    ints = st.integers(min_value=-(2**40), max_value=2**40)
    if schema["type"] == "integer":
        good = st.one_of(ints, ints.map(float))  # 3.0 is the JSON integer 3
        return good, st.sampled_from([2.5, -0.5, 1e-9 + 1, True, False, "1", None])
    floats = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
    return st.one_of(floats, ints, st.just(1e300)), st.sampled_from([True, "1", "2.5", None])


def _enum(values: list[Json]) -> Pair:
    misses: list[Json] = [v.upper() for v in values if isinstance(v, str) and v.upper() != v]
    misses += [v + " " for v in values if isinstance(v, str)]
    misses += [float(v) for v in values if type(v) is int] + [str(v) for v in values]
    misses += [True for v in values if v == 1]
    good = st.sampled_from(values)
    # 1.0 equals the const 1 in JSON: good, not a miss
    return good, st.sampled_from([m for m in misses if not (type(m) is float and m in values)])


def _object(root: dict[str, Json], schema: dict[str, Json]) -> Pair:
    properties: dict[str, Json] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    members = {name: near(root, sub) for name, sub in properties.items()}
    extra = schema.get("additionalProperties", True)

    @st.composite
    def objects(draw: st.DrawFn, broken: bool) -> dict[str, Json]:
        found = {
            name: draw(values)
            for name, values in members.items()
            if name in required or draw(st.booleans())
        }
        if isinstance(extra, dict):
            found |= draw(st.dictionaries(st.text(max_size=8), near(root, extra), max_size=3))
        if broken and len(required) > 0 and draw(st.booleans()):
            found.pop(draw(st.sampled_from(sorted(required))))
        elif broken:
            found[draw(st.sampled_from(EXTRA_KEYS))] = draw(st.sampled_from(NOISE))
        return found

    return objects(broken=False), objects(broken=True)


def _array(root: dict[str, Json], schema: dict[str, Json]) -> Pair:
    items = near(root, schema.get("items", {}))
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    good = st.lists(items, min_size=low, max_size=min(3, high or 3))
    if high is not None:
        good = st.one_of(good, good, st.builds(lambda item: [item] * high, items))
        return good, st.builds(lambda item: [item] * (high + 1), items)
    return good, st.sampled_from([{"0": 1}, "[]"])


def _typed(root: dict[str, Json], schema: dict[str, Json]) -> Pair:
    for key in ("anyOf", "oneOf"):
        if key in schema and "type" not in schema and "properties" not in schema:
            return st.one_of([near(root, sub) for sub in schema[key]]), st.sampled_from(NOISE)
    if "const" in schema:
        return _enum([schema["const"]])
    if "enum" in schema:
        return _enum(schema["enum"])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return _object(root, schema)
    if kind == "array":
        return _array(root, schema)
    if kind == "string":
        return _strings(schema)
    if kind in ("integer", "number"):
        return _numbers(schema)
    if kind == "boolean":
        return st.booleans(), st.sampled_from([0, 1, "true", "yes", None])
    if kind == "null":
        return st.none(), st.sampled_from(["", "null", 0, False])
    return st.sampled_from(NOISE), st.sampled_from(NOISE)


def near(root: dict[str, Json], schema: dict[str, Json]) -> st.SearchStrategy[Json]:
    """Values for schema: mostly ones it describes, now and then one a sender got wrong, or
    something else entirely."""
    good, bad = _typed(root, _resolve(root, schema))
    wrong = st.one_of(bad, bad, bad, st.sampled_from(NOISE))
    return st.integers(0, MUTATION_ODDS - 1).flatmap(lambda n: wrong if n == 0 else good)


def bodies(name: str) -> st.SearchStrategy[Json]:
    root = SCHEMAS[name]
    generated = near(root, root)
    if name not in STAGE_SCHEMAS:
        return generated

    def same_job(body: Json, keep_apart: bool) -> Json:
        job = body.get("job") if isinstance(body, dict) else None
        if not keep_apart and isinstance(job, dict) and "jobId" in job:
            body["jobId"] = job["jobId"]
        return body

    return st.builds(same_job, generated, st.integers(0, 9).map(lambda n: n == 0))


def _wire(body: Json) -> bytes:
    return json.dumps(body).encode()


# --- the properties -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_schema_and_the_worker_agree_on_every_body(name: str) -> None:
    verdicts: set[bool] = set()

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies(name))
    def agree(body: Json) -> None:
        verdict = worker_accepts(name, _wire(body))
        assert schema_accepts(name, body) == verdict
        verdicts.add(verdict)

    agree()
    # Agreement on nothing but refusals would prove little: both verdicts were generated.
    assert verdicts == {True, False}


# --- the disagreements that were found, one by one ----------------------------------------------

JOB_ID = "7d0c31f6-52c5-4f53-a1b4-2a3c0dfc6a4e"
JOB: dict[str, Json] = {"schemaVersion": 1, "jobId": JOB_ID, "audio": {"path": "a/visit.wav"}}


@pytest.mark.parametrize(
    ("change", "accepted"),
    [
        ({"audio": {}}, False),
        ({"audio": {"url": "https://a.example/v.wav", "path": "a/visit.wav"}}, False),
        ({"audio": {"url": None, "path": "a/visit.wav"}}, True),
        ({"audio": {"url": None, "path": None}}, False),
        ({"schemaVersion": 1.0}, True),  # the same JSON number as 1
        ({"schemaVersion": True}, False),
        ({"schemaVersion": "1"}, False),
        ({"jobId": JOB_ID.upper()}, True),
        ({"jobId": uuid.UUID(JOB_ID).hex}, False),
        ({"jobId": uuid.UUID(JOB_ID).urn}, False),
        ({"jobId": "{" + JOB_ID + "}"}, False),
        ({"jobId": JOB_ID + "\n"}, False),
        ({"submittedAt": "2026-01-05T10:00:00Z"}, True),
        ({"submittedAt": "2026-01-05T10:00:00.123+01:00"}, True),
        ({"submittedAt": "2026-01-05T10:00:00"}, False),  # no offset: which time is it?
        ({"submittedAt": "2026-01-05 10:00:00Z"}, False),
        ({"submittedAt": 1767607200}, False),
        ({"summary": {"outputLanguage": "en\n"}}, False),
        ({"intron": {"useDiarization": "yes"}}, False),
        ({"intron": {"useDiarization": 1}}, False),
    ],
)
def test_each_reported_disagreement_is_settled(change: dict[str, Json], accepted: bool) -> None:
    body = {**JOB, **change}
    assert worker_accepts("job-request", _wire(body)) is accepted
    assert schema_accepts("job-request", body) is accepted


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [("attempts", 3, True), ("attempts", 3.0, True), ("attempts", "3", False),
     ("attempts", True, False), ("httpStatus", 503.5, False)],
)  # fmt: skip
def test_integers_are_json_integers(field: str, value: Json, accepted: bool) -> None:
    event = {
        "eventId": str(uuid.uuid4()),
        "jobId": JOB_ID,
        "stage": "poll",
        "errorType": "vendorUnavailable",
        "message": "m",
        "attempts": 1,
        "occurredAt": "2026-01-05T10:00:00Z",
        field: value,
    }
    assert worker_accepts("job-failed", _wire(event)) is accepted
    assert schema_accepts("job-failed", event) is accepted
