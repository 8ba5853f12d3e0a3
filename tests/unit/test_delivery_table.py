"""The delivery rules (tests/delivery_table.py) against the in-memory recorder: the real
Delivery, with only its publisher and the consumed message replaced (issue 14, item 2)."""

from __future__ import annotations

import pytest

from tests.delivery_table import (
    NOT_RUN,
    ROWS,
    Arrived,
    Row,
    exchange_kind,
    mismatches,
    row_id,
    run_row,
)
from tests.recorder import RecordedMessage, Recorder
from worker.topology import Names

NAMES = Names("table")


@pytest.mark.parametrize("row", ROWS, ids=row_id)
async def test_delivery_rule(row: Row) -> None:
    recorder = Recorder()
    recorder.fail_publishing = row.publish_fails
    message = RecordedMessage(
        row.body,
        headers=dict(row.headers),
        message_id="incoming-1",
        routing_key=row.stage,
        problem=row.problem,
    )
    calls = await run_row(row, recorder, message, NAMES)
    arrived = [
        Arrived(exchange_kind(NAMES, p.exchange), p.routing_key, p.body, p.headers, p.mandatory)
        for p in recorder.published
    ]
    assert mismatches(row, arrived, row.body) == []
    assert message.settlements == [row.settled]
    if row.script is NOT_RUN:
        assert calls == 0


def test_the_table_covers_every_rule() -> None:
    """Each rule the issue names has its row; a row removed by mistake fails here."""
    firsts = {row_id(row) for row in ROWS}
    assert len(firsts) == len(ROWS)
    assert len(ROWS) >= 15
