"""scribe-fuzz's own parts, without a broker: what it generates, how it encodes it, and that its
accounting catches each broken invariant (tests/integration/test_fuzz_amqp.py runs it)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from ops.fuzz_amqp import (
    ALL_FIELD_TYPES,
    MAX_HEADER_BYTES,
    NAMED_HEADERS,
    Array,
    Case,
    Deep,
    Node,
    Observed,
    Planned,
    RunFigures,
    Scalar,
    Table,
    account,
    broker_refusal,
    encode_table,
    encode_value,
    generate_cases,
    make_plan,
    plan_case,
    summarize_input,
)
from tests.rawamqp import long_str, nested_table

AUDIO = Path("/data/fuzz.wav")
PLAIN = Case(
    anonymous=False,
    content_type=b"application/json",
    correlation="own",
    message_id=None,
    timestamp=None,
    delivery_mode=2,
    headers=None,
)


def figures(**changes: object) -> RunFigures:
    base = RunFigures(refused={}, reconnects=0, worker_alive=True, worker_ready=True, duration_s=1)
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def completed(
    observed: Observed, job_id: str, event_id: str = "e1", message_id: str = "m1"
) -> None:
    body = {"type": "job.completed", "jobId": job_id, "eventId": event_id}
    observed.add_event(body, message_id, {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"})


def failed(observed: Observed, item: Planned, error_type: str, dead_letters: int = 1) -> None:
    body = {"type": "job.failed", "jobId": item.job_id, "eventId": "f", "errorType": error_type}
    observed.add_event(body, "m", {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"})
    for _ in range(dead_letters):
        observed.add_dead_letter(item.body, f"transcribe.{error_type}", {})


def one_job(case: Case = PLAIN) -> tuple[list[Planned], Planned, Planned]:
    plan = make_plan([case], 1, AUDIO, seed_value=3)
    fuzzed, valid = plan
    assert (fuzzed.label, valid.label) == ("fuzzed", "valid")
    return plan, fuzzed, valid


def test_a_clean_run_has_no_violations() -> None:
    plan, fuzzed, valid = one_job()
    observed = Observed()
    assert fuzzed.job_id is not None
    assert valid.job_id is not None
    completed(observed, fuzzed.job_id)
    completed(observed, valid.job_id)
    report = account(plan, observed, figures())
    assert report.ok, report.violations
    assert report.outcomes == {"job.completed": 1}
    assert report.valid_completed == 1


@pytest.mark.parametrize(
    "breakage",
    ["lost", "two outcomes", "completed and dead-lettered", "failed without dead letter",
     "valid job failed", "reconnect", "worker exited", "not ready", "internalError",
     "bad traceparent", "CC carried"],
)  # fmt: skip
def test_each_broken_invariant_is_a_violation(breakage: str) -> None:
    plan, fuzzed, valid = one_job()
    assert fuzzed.job_id is not None
    assert valid.job_id is not None
    observed = Observed()
    run = figures()
    completed(observed, valid.job_id)
    if breakage == "lost":
        pass
    elif breakage == "two outcomes":
        completed(observed, fuzzed.job_id)
        failed(observed, fuzzed, "invalidMessage")
    elif breakage == "completed and dead-lettered":
        completed(observed, fuzzed.job_id)
        observed.add_dead_letter(fuzzed.body, "transcribe.invalidMessage", {})
    elif breakage == "failed without dead letter":
        failed(observed, fuzzed, "invalidMessage", dead_letters=0)
    elif breakage == "valid job failed":
        completed(observed, fuzzed.job_id)
        observed.events[valid.job_id] = [("job.failed", "f", "m", "internalError")]
    elif breakage == "internalError":
        failed(observed, fuzzed, "internalError")
    elif breakage == "bad traceparent":
        observed.add_event({"type": "job.completed", "jobId": fuzzed.job_id}, "m", {})
    elif breakage == "CC carried":
        observed.add_event(
            {"type": "job.completed", "jobId": fuzzed.job_id},
            "m",
            {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01", "CC": ["x"]},
        )
    else:
        completed(observed, fuzzed.job_id)
        run = figures(
            reconnects=1 if breakage == "reconnect" else 0,
            worker_alive=breakage != "worker exited",
            worker_ready=breakage != "not ready",
        )
    report = account(plan, observed, run)
    assert not report.ok
    assert len(report.violations) >= 1


def test_a_non_utf8_property_must_end_as_invalid_message() -> None:
    case = Case(False, b"application/json", b"\xff\xfe", None, None, 2, None)
    plan, fuzzed, valid = one_job(case)
    assert fuzzed.job_id is not None
    assert valid.job_id is not None
    observed = Observed()
    completed(observed, fuzzed.job_id)
    completed(observed, valid.job_id)
    assert any("non-UTF-8" in v for v in account(plan, observed, figures()).violations)
    observed = Observed()
    failed(observed, fuzzed, "invalidMessage")
    completed(observed, valid.job_id)
    assert account(plan, observed, figures()).ok


def test_an_outcome_under_a_decoy_correlation_id_is_a_violation() -> None:
    """correlation_id is informational when the body has a jobId: an event named after it means
    the worker took the sender's correlation_id for the job's identity."""
    case = Case(False, b"application/json", "decoy", None, None, 2, None)
    plan, fuzzed, valid = one_job(case)
    assert fuzzed.decoy is not None
    assert valid.job_id is not None
    observed = Observed()
    completed(observed, fuzzed.decoy)
    completed(observed, valid.job_id)
    violations = account(plan, observed, figures()).violations
    assert any("decoy" in violation for violation in violations)


def test_a_body_without_job_id_needs_exactly_one_dead_letter() -> None:
    case = Case(True, b"application/json", "own", None, None, 2, None)
    anonymous = plan_case(0, case, AUDIO, random.Random(1))
    assert anonymous.job_id is None
    assert anonymous.announced is not None
    for dead_letters, ok in ((0, False), (1, True), (2, False)):
        observed = Observed()
        for _ in range(dead_letters):
            observed.add_dead_letter(anonymous.body, "transcribe.invalidMessage", {})
        assert account([anonymous], observed, figures()).ok is ok


def test_refused_messages_must_produce_nothing() -> None:
    case = Case(False, b"application/json", "own", None, None, 0, None)
    plan, fuzzed, valid = one_job(case)
    assert broker_refusal(case) == "delivery_mode not 1 or 2"
    assert fuzzed.job_id is not None
    assert valid.job_id is not None
    observed = Observed()
    completed(observed, valid.job_id)
    refused = figures(refused={fuzzed.index: "Channel.Close"})
    report = account(plan, observed, refused)
    assert report.ok
    assert report.refused == {"delivery_mode not 1 or 2 (Channel.Close)": 1}
    completed(observed, fuzzed.job_id)
    assert not account(plan, observed, refused).ok


def test_broker_refusals_are_predicted_from_the_input() -> None:
    nan = Scalar(b"d", b"\x7f\xf8" + b"\x00" * 6)
    routes = Array((Scalar(b"S", long_str(b"fuzz-leak")),))
    assert broker_refusal(PLAIN) is None
    with_headers: list[tuple[tuple[bytes, Node], str | None]] = [
        ((b"CC", routes), None),
        ((b"CC", Scalar(b"S", long_str(b"x"))), "CC or BCC not an array"),
        ((b"k", Table(((b"n", Array((nan,))),))), "a header value the broker cannot parse"),
        ((b"k", Scalar(b"Z", b"")), "a header value the broker cannot parse"),
    ]
    for entry, expected in with_headers:
        case = Case(False, None, "own", None, None, 2, (entry,))
        assert broker_refusal(case) == expected


def test_deep_values_encode_like_the_raw_publisher_and_without_recursion() -> None:
    assert encode_value(Deep(b"F", 50)) == nested_table(50)
    deep_array = encode_value(Deep(b"A", 5_000))  # far past the recursion limit
    assert deep_array.startswith(b"A")
    assert deep_array.endswith(b"F\x00\x00\x00\x00")
    assert len(deep_array) == 5 * 5_000 + 5


def test_generated_cases_cover_every_field_type_and_worker_header_and_fit_a_frame() -> None:
    cases = generate_cases(150, seed_value=2)
    assert len(cases) == 150
    assert cases == generate_cases(150, seed_value=2)  # reproducible per seed
    summary = summarize_input(cases)
    assert summary["fieldTypesMissing"] == ""
    assert set(summary["fieldTypes"]) >= set(ALL_FIELD_TYPES)
    brief = {"x-attempts", "x-polls", "x-replays", "x-first-failure-at", "x-error-type",
             "x-stage", "x-job-id", "traceparent", "CC", "BCC", "scribe-delay-ms"}  # fmt: skip
    assert brief <= set(NAMED_HEADERS)
    assert brief <= set(summary["workerHeaders"])
    assert summary["oddKeys"].get("non-UTF-8", 0) > 0
    assert any(case.has_non_utf8_property() for case in cases)
    assert any(case.timestamp is not None and case.timestamp >= 2**63 - 1 for case in cases)
    for case in cases:
        if case.headers is not None:
            assert len(encode_table(case.headers)) <= MAX_HEADER_BYTES


def test_valid_jobs_are_interleaved() -> None:
    plan = make_plan([PLAIN] * 9, 4, AUDIO, seed_value=1)
    labels = [item.label for item in plan]
    assert labels.count("valid") == 3  # after the 4th, the 8th and the last
    assert labels[4] == "valid"
    assert labels[-1] == "valid"
    assert len({item.body for item in plan}) == len(plan)  # every body names one message
    assert all(uuid.UUID(str(item.job_id)) for item in plan)


def test_found_by_fuzzing_a_traceparent_with_a_trailing_newline_is_not_carried() -> None:
    """re.match with '$' accepted '...-01\\n' (a '$' matches before a final newline), so a
    sender's malformed traceparent travelled onto every event of its job."""
    from worker.broker import carried_headers
    from worker.tracing import valid_traceparent

    good = f"00-{'a' * 32}-{'b' * 16}-01"
    assert valid_traceparent(good) == good
    assert valid_traceparent(good + "\n") is None
    assert valid_traceparent((good + "\n").encode()) is None
    assert "traceparent" not in carried_headers({"traceparent": good + "\n"})


def test_a_body_naming_another_job_may_announce_its_failure_once_but_needs_its_dead_letter() -> (
    None
):
    """An "other-job" correlation_id names the valid job published before: the worker may
    announce job.failed (invalidMessage) under that jobId for it, and must dead-letter it."""
    naming = Case(True, b"application/json", "other-job", None, None, 2, None)
    plan = make_plan([PLAIN, naming], 1, AUDIO, seed_value=5)
    first_valid, anonymous = plan[1], plan[2]
    assert anonymous.names_other_job
    assert anonymous.announced == first_valid.job_id
    assert anonymous.properties.correlation_id == str(first_valid.job_id).encode()
    observed = Observed()
    for item in plan:
        if item.label != "anonymous":
            assert item.job_id is not None
            completed(observed, item.job_id)
    observed.add_event(
        {"type": "job.failed", "jobId": first_valid.job_id, "eventId": "f",
         "errorType": "invalidMessage"},
        "m2",
        {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"},
    )  # fmt: skip
    assert [v for v in account(plan, observed, figures()).violations if "dead letter" in v]
    observed.add_dead_letter(anonymous.body, "transcribe.invalidMessage", {})
    assert account(plan, observed, figures()).ok
    no_naming = make_plan([PLAIN, naming], 1, AUDIO, seed_value=5, other_job_ids=False)
    assert not no_naming[2].names_other_job
