"""worker/dead_letter_age.py: a dead letter's death time, whoever made it."""

from __future__ import annotations

from datetime import UTC, datetime

from worker import constants as c
from worker.dead_letter_age import death_time

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = datetime(2026, 1, 9, 3, 4, 5, tzinfo=UTC)


def test_the_worker_s_last_failure_time_comes_first() -> None:
    headers = {c.HEADER_LAST_FAILURE_AT: T1.isoformat(), c.BROKER_HEADER_DEATH: [{"time": T0}]}
    assert death_time(headers, T0) == T1


def test_the_broker_s_newest_death_then_the_timestamp() -> None:
    naive = T1.replace(tzinfo=None)
    assert death_time({c.BROKER_HEADER_DEATH: [{"time": T0}, {"time": naive}]}, None) == T1
    assert death_time({c.HEADER_LAST_FAILURE_AT: "not a time"}, T0) == T0
    assert death_time(None, None) is None
    assert death_time({c.BROKER_HEADER_DEATH: "hostile"}, "hostile") is None
