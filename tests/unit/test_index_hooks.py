"""Delivery tells the job index of a transition only once the broker has confirmed what it
caused, and one entry per outcome: every row of the delivery table (tests/delivery_table.py),
with an index that keeps what it is told."""

from __future__ import annotations

import json
import random

import pytest

from tests.delivery_table import (
    JOB_ID,
    RETRY,
    ROWS,
    Row,
    ScriptedHandler,
    ledger_for,
    row_id,
)
from tests.recorder import RecordedMessage, Recorder
from worker import constants as c
from worker.delivery import Delivery
from worker.jobindex import IndexEntry, Indexing
from worker.metrics import Metrics
from worker.topology import Names

NAMES = Names("table")


class KeptIndex:
    def __init__(self) -> None:
        self.entries: list[IndexEntry] = []

    def record(self, entry: IndexEntry) -> None:
        self.entries.append(entry)


_index: Indexing = KeptIndex()  # mypy: KeptIndex is what Delivery takes


async def _run(row: Row) -> tuple[list[IndexEntry], Recorder, RecordedMessage]:
    recorder = Recorder()
    recorder.fail_publishing = row.publish_fails
    message = RecordedMessage(
        row.body, headers=dict(row.headers), message_id="m-1", routing_key=row.stage,
        problem=row.problem,
    )  # fmt: skip
    index = KeptIndex()
    delivery = Delivery(
        recorder, NAMES, RETRY, await ledger_for(row), Metrics(), random.Random(0), index=index
    )
    await delivery.process(row.stage, ScriptedHandler(row.script), message)
    return index.entries, recorder, message


def _event_types(recorder: Recorder) -> list[str]:
    return [
        json.loads(p.body)["type"]
        for p in recorder.published
        if p.exchange == NAMES.events_exchange
    ]


@pytest.mark.parametrize("row", ROWS, ids=row_id)
async def test_the_index_hears_only_of_confirmed_outcomes(row: Row) -> None:
    entries, recorder, message = await _run(row)
    if row.publish_fails or message.settlements != ["ack"]:
        assert entries == []
        return
    assert len(entries) <= 1
    kinds = [entry.kind for entry in entries]
    events = _event_types(recorder)
    assert kinds.count("failed") == events.count("job.failed")
    assert kinds.count("completed") == events.count("job.completed")
    retried = [p for p in recorder.published if c.HEADER_ERROR_TYPE in p.headers]
    if "retry" in kinds:
        assert retried
        assert recorder.published[-1].exchange == NAMES.delay_exchange
    for entry in entries:
        assert entry.job_id == JOB_ID
        assert entry.stage == row.stage
        if entry.kind in ("failed", "retry"):
            assert entry.error_type
        else:
            assert entry.error_type is None


async def test_every_kind_of_transition_is_covered_by_the_table() -> None:
    kinds: set[str] = set()
    for row in ROWS:
        entries, _, _ = await _run(row)
        kinds.update(entry.kind for entry in entries)
    assert kinds == {"done", "retry", "completed", "failed"}
