"""The provider registry's wiring rules (issue 14, item 6): its names are the schema's, and it
closes every provider through the Protocol's close()."""

from __future__ import annotations

from typing import get_args

import pytest

from schemas.jobs import NoteProviderName, SummarizerName, TranscriberName, Transcript
from worker.providers.intron import IntronSummarizer, post_processing_output
from worker.providers.local_note import LocalNoteWriter
from worker.providers.local_summary import LocalSummarizer
from worker.providers.registry import (
    NOTE_PROVIDER_NAMES,
    SUMMARIZER_NAMES,
    TRANSCRIBER_NAMES,
    ProviderRegistry,
)


def test_the_names_are_the_schemas() -> None:
    assert frozenset(get_args(TranscriberName)) == TRANSCRIBER_NAMES
    assert frozenset(get_args(SummarizerName)) == SUMMARIZER_NAMES
    assert frozenset(get_args(NoteProviderName)) == NOTE_PROVIDER_NAMES


def test_a_provider_under_another_name_is_refused() -> None:
    """Registered as "llm", the local summarizer would report "local" on every outcome."""
    summarizer = LocalSummarizer()
    try:
        with pytest.raises(ValueError, match="'local' registered as 'llm'"):
            ProviderRegistry(summarizers={"llm": summarizer})
    finally:
        summarizer.close()


def test_a_name_the_schema_lacks_is_refused() -> None:
    writer = LocalNoteWriter()
    writer.name = "instant"
    try:
        with pytest.raises(ValueError, match="'instant' registered as 'instant'"):
            ProviderRegistry(note_writers={"instant": writer})  # type: ignore[dict-item]
    finally:
        writer.close()


class Closing(IntronSummarizer):
    closed = 0

    def close(self) -> None:
        self.closed += 1


def test_close_reaches_every_provider_once() -> None:
    shared = Closing()
    ProviderRegistry(summarizers={"intron": shared}).close()
    assert shared.closed == 1


def test_intron_outputs_read_by_flag() -> None:
    transcript = Transcript(
        provider="intron", text="t", post_processing={"get_summary": "MARKER-SUMMARY"}
    )
    assert post_processing_output(transcript, "get_summary") == "MARKER-SUMMARY"
    assert post_processing_output(transcript, "get_soap_note") is None
