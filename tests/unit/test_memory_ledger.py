"""The in-memory ledger (no Redis): what it remembers, and that it stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.jobs import TranscriptionHandle
from worker.ledger import MemoryLedger


def _handle(name: str) -> TranscriptionHandle:
    return TranscriptionHandle(provider="intron", handle=name, submitted_at=datetime.now(UTC))


async def test_it_remembers_done_stages_handles_and_claims() -> None:
    now = [100.0]
    ledger = MemoryLedger(clock=lambda: now[0])
    assert not await ledger.is_done("j1", "poll")
    await ledger.mark_done("j1", "poll")
    assert await ledger.is_done("j1", "poll")
    assert not await ledger.is_done("j1", "note")
    await ledger.record_transcription_handle("j1", _handle("f-1"))
    found = await ledger.transcription_handle("j1")
    assert found is not None
    assert found.handle == "f-1"
    assert await ledger.claim("j1", "note", ttl_s=5)
    assert not await ledger.claim("j1", "note", ttl_s=5)
    now[0] += 6
    assert await ledger.claim("j1", "note", ttl_s=5)  # an expired claim is taken over
    await ledger.release("j1", "note")
    assert await ledger.claim("j1", "note", ttl_s=5)


async def test_it_forgets_the_oldest_entries_beyond_its_bound() -> None:
    ledger = MemoryLedger(max_entries=3)
    for index in range(5):
        await ledger.mark_done(f"j{index}", "poll")
        await ledger.record_transcription_handle(f"j{index}", _handle(f"f-{index}"))
    assert [await ledger.is_done(f"j{index}", "poll") for index in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    assert await ledger.transcription_handle("j1") is None
    assert await ledger.transcription_handle("j4") is not None
