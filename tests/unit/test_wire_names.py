"""Wire names have one home (issue 14, item 5): the dead-letter key is built and read by the
two functions in worker/topology.py, and no errorType is spelt as a string outside the
catalogue (schemas/errors.py), so a renamed value cannot leave a stale copy behind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from schemas.errors import ErrorType
from worker.constants import STAGES
from worker.settings import Settings
from worker.topology import (
    BROKER_DEAD_LETTER_BINDING,
    Names,
    dead_letter_routing_key,
    parse_dead_letter_routing_key,
    stage_queue_arguments,
)

ROOT = Path(__file__).parents[2]
VALUES = {error_type.value for error_type in ErrorType}
# The emulator's fault knob named "forbidden" (which endpoints answer 403), not an errorType.
# Values spelt like an errorType that are something else: the emulator's fault names, and the
# status API's own error codes (schemas/status.py ApiError.error).
NOT_ERROR_TYPES = {
    ("ops/sandbox/config.py", "forbidden"),
    ("ops/sandbox/state.py", "forbidden"),
    ("worker/jobs_api.py", "unauthorized"),
    ("worker/jobs_api.py", "badRequest"),
}


@pytest.mark.parametrize("stage", STAGES)
def test_the_dead_letter_key_reads_back_as_written(stage: str) -> None:
    for error_type in ErrorType:
        key = dead_letter_routing_key(stage, error_type)
        assert key == f"{stage}.{error_type.value}"
        assert parse_dead_letter_routing_key(key) == (stage, error_type.value)


def test_keys_the_broker_writes_are_built_the_same_way() -> None:
    retry = Settings.from_env({}).retry
    arguments = stage_queue_arguments(Names("p"), "poll", retry)
    assert arguments["x-dead-letter-routing-key"] == "poll.deliveryLimitExceeded"
    assert BROKER_DEAD_LETTER_BINDING == "*.deliveryLimitExceeded"


@pytest.mark.parametrize(
    ("key", "parsed"),
    [("", ("", "")), ("note", ("note", "")), ("a.b.c", ("a", "b.c")), (".x", ("", "x"))],
)
def test_any_key_parses_without_raising(key: str, parsed: tuple[str, str]) -> None:
    assert parse_dead_letter_routing_key(key) == parsed


def _literals(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            value = (
                node.value.decode("utf-8", "replace")
                if isinstance(node.value, bytes)
                else node.value
            )
            found.append((node.lineno, value))
    return found


def test_no_error_type_literal_outside_the_catalogue() -> None:
    spelt = []
    for package in ("worker", "ops"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for line, value in _literals(path):
                if value in VALUES and (relative, value) not in NOT_ERROR_TYPES:
                    spelt.append(f"{relative}:{line} {value!r}")
    assert spelt == [], "use the ErrorType member instead: " + ", ".join(spelt)
