"""Blocks that used to be repeated exist once (issue 14, item 9): each user imports the one
definition instead of keeping a copy that could drift."""

from __future__ import annotations

import re
from pathlib import Path

import ops.dlq
import worker.delivery
from worker import constants as c


def test_failure_headers_are_defined_once_in_constants() -> None:
    assert vars(worker.delivery)["FAILURE_HEADERS"] is c.FAILURE_HEADERS
    for copy in ("_FAILURE_HEADERS", "_FAILURE_HEADER_PREFIXES", "_VOLATILE_HEADERS"):
        assert not hasattr(ops.dlq, copy), copy


def test_a_replay_drops_what_a_success_drops_and_more() -> None:
    assert set(c.FAILURE_HEADERS) < c.REPLAY_DROPPED_HEADERS
    assert c.VOLATILE_BROKER_HEADERS < c.REPLAY_DROPPED_HEADERS


ROOT = Path(__file__).resolve().parents[2]


def definitions(pattern: str) -> list[str]:
    """Where a top-level class or function of this name is defined in ops/, worker/, tests/."""
    found = re.compile(pattern, re.MULTILINE)
    return sorted(
        str(path.relative_to(ROOT))
        for package in ("ops", "worker", "tests")
        for path in (ROOT / package).rglob("*.py")
        if found.search(path.read_text(encoding="utf-8"))
    )


def test_one_fake_clock_for_the_tests() -> None:
    assert definitions(r"^class FakeClock\b") == ["tests/fakes.py"]


def test_one_wav_writer() -> None:
    assert definitions(r"^def write_wav\b") == ["ops/wav.py"]
