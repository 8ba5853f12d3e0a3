"""The local summary and note run off the event loop, within a time budget, on capped inputs.

A hostile but valid job (huge transcript, templates with thousands of enum options, big TXT
documents) used to block the whole worker, health endpoint included, for minutes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ops.local_budget import (
    HEAVY_TRANSCRIPT,
    enum_field,
    heavy_note,
    job,
    template,
)
from schemas.errors import ErrorType
from schemas.jobs import Summary, Template, Transcript
from tests.unit.test_local_summary import DIALOGUE
from worker.constants import MAX_TRANSCRIPT_BYTES
from worker.errors import PermanentError, SettingsError
from worker.providers import local_note, local_summary
from worker.providers.base import PreparedDocument
from worker.providers.local_note import LocalNoteWriter, fill_template
from worker.providers.local_summary import LocalSummarizer, summarize_text
from worker.settings import Settings


@pytest.fixture
async def summarizer() -> AsyncIterator[Callable[[float], LocalSummarizer]]:
    made: list[LocalSummarizer] = []

    def make(budget_s: float) -> LocalSummarizer:
        made.append(LocalSummarizer(budget_s=budget_s))
        return made[-1]

    yield make
    for provider in made:
        provider.close()


@pytest.fixture
async def writer() -> AsyncIterator[Callable[[float], LocalNoteWriter]]:
    made: list[LocalNoteWriter] = []

    def make(budget_s: float) -> LocalNoteWriter:
        made.append(LocalNoteWriter(budget_s=budget_s))
        return made[-1]

    yield make
    for provider in made:
        provider.close()


async def expect_error(call: Awaitable[object], error_type: str) -> None:
    """The heavy inputs take tens of seconds unbudgeted: only the budget ends them in an error."""
    with pytest.raises(PermanentError) as caught:
        await call
    assert caught.value.error_type == error_type


async def cpu_seconds_while_idle(duration_s: float = 1.0) -> float:
    """CPU this process burns while the event loop only sleeps: ~0 once no thread works."""
    before = time.process_time()
    await asyncio.sleep(duration_s)
    return time.process_time() - before


# --------------------------------------------------------------------------- (a) budgets


async def test_summary_over_budget_is_summary_timed_out_and_the_thread_stops(
    summarizer: Callable[[float], LocalSummarizer],
) -> None:
    provider = summarizer(0.2)
    transcript = Transcript(provider="local", text=HEAVY_TRANSCRIPT)
    await expect_error(provider.summarize(job(), transcript), "summaryTimedOut")
    # The thread stopped at its deadline instead of finishing a job nobody waits for.
    assert await cpu_seconds_while_idle() < 0.5


async def test_note_over_budget_is_note_timed_out_and_the_thread_stops(
    writer: Callable[[float], LocalNoteWriter],
) -> None:
    await expect_error(heavy_note(writer(0.2)), "noteTimedOut")
    assert await cpu_seconds_while_idle() < 0.5


async def test_cancelled_note_stops_its_thread(
    writer: Callable[[float], LocalNoteWriter],
) -> None:
    task = asyncio.create_task(heavy_note(writer(600.0)))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)  # one loop step of the algorithm, at most
    assert await cpu_seconds_while_idle() < 0.5


# --------------------------------------------------------------------------- (b) event loop


async def test_event_loop_keeps_running_while_the_note_is_written(
    writer: Callable[[float], LocalNoteWriter],
) -> None:
    ticks = 0
    working = True

    async def ticker() -> None:
        nonlocal ticks
        while working:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        await expect_error(heavy_note(writer(1.0)), "noteTimedOut")
    finally:
        working = False
        await tick_task
    # 1 s of work at 10 ms per tick: ~100 when the loop is free, 0 or 1 when it is blocked.
    assert ticks >= 20


# --------------------------------------------------------------------------- (c) caps


def enum_template(options: list[str]) -> Template:
    return template(enum_field(1, options))


async def test_too_many_enum_options_is_template_too_large(
    writer: Callable[[float], LocalNoteWriter],
) -> None:
    transcript = Transcript(provider="local", text=DIALOGUE)
    summary = summarize_text(DIALOGUE, "SUMMARY")
    limit = local_note.MAX_ENUM_OPTIONS
    at_limit = enum_template([f"option {n}" for n in range(limit)])
    assert len(fill_template(at_limit, transcript, summary)) == 1
    over = enum_template([f"option {n}" for n in range(limit + 1)])
    with pytest.raises(PermanentError) as caught:
        fill_template(over, transcript, summary)
    assert caught.value.error_type == ErrorType.TEMPLATE_TOO_LARGE
    await expect_error(
        writer(60.0).write_note(job(), over, transcript, summary), "templateTooLarge"
    )


async def test_too_long_enum_option_is_template_too_large(
    writer: Callable[[float], LocalNoteWriter],
) -> None:
    transcript = Transcript(provider="local", text=DIALOGUE)
    summary = summarize_text(DIALOGUE, "SUMMARY")
    limit = local_note.MAX_OPTION_CHARS
    assert len(fill_template(enum_template(["left", "x" * limit]), transcript, summary)) == 1
    over = enum_template(["left", "x" * (limit + 1)])
    await expect_error(
        writer(60.0).write_note(job(), over, transcript, summary), "templateTooLarge"
    )


async def test_transcript_over_5_mb_is_transcript_too_large(
    summarizer: Callable[[float], LocalSummarizer],
    writer: Callable[[float], LocalNoteWriter],
) -> None:
    assert MAX_TRANSCRIPT_BYTES == 5 * 1024 * 1024
    # Counted in UTF-8 bytes, not characters ('é' is two): under the models' character cap.
    over = Transcript(provider="local", text="é" * (MAX_TRANSCRIPT_BYTES // 2 + 1))
    under = "é" * (MAX_TRANSCRIPT_BYTES // 2)
    assert summarize_text(under, "SUMMARY").text == ""  # one long word, nothing to say
    await expect_error(summarizer(60.0).summarize(job(), over), "transcriptTooLarge")
    summary = Summary(provider="invox", output_format="SUMMARY", text="Knee pain.")
    await expect_error(
        writer(60.0).write_note(job(), enum_template(["left"]), over, summary),
        "transcriptTooLarge",
    )


def numbered_dialogue(count: int) -> list[str]:
    return [f"[patient] my knee has hurt for {n} days since the fall ." for n in range(count)]


def test_summary_considers_only_the_first_sentences() -> None:
    limit = local_summary.MAX_SENTENCES
    lines = numbered_dialogue(limit + 10)
    marker = "[patient] my zorblat elbow has hurt for a week since the fall ."
    late = "\n".join([*lines, marker]) + "\n"
    assert "zorblat" not in (summarize_text(late, "SUMMARY").text or "")
    early = "\n".join([*lines[: limit - 1], marker, *lines[limit:]]) + "\n"
    assert "zorblat" in (summarize_text(early, "SUMMARY").text or "")


async def test_note_considers_only_the_first_sentences_and_1_mb_of_each_document(
    writer: Callable[[float], LocalNoteWriter],
) -> None:
    tpl = template({"id": "a", "name": "Allergies", "type": "array", "value": []})
    transcript = Transcript(provider="local", text="")
    summary = Summary(provider="invox", output_format="SUMMARY", text="")
    marker = "Allergies: zorblat rash."
    filler = " ".join(f"Knee pain for {n} days." for n in range(local_note.MAX_NOTE_SENTENCES))
    cap = local_note.MAX_TXT_DOCUMENT_BYTES
    documents = {
        "early": marker + " " + filler,
        "after the sentence cap": filler + " " + marker,
        "after 1 MB": "\n" * cap + marker,
        "before 1 MB": "\n" * (cap - len(marker)) + marker,
    }
    found: dict[str, bool] = {}
    provider = writer(60.0)
    for name, text in documents.items():
        document = PreparedDocument("TXT", "d.txt", "text/plain", text.encode())
        [field] = await provider.write_note(job(), tpl, transcript, summary, [document])
        assert isinstance(field.value, list)
        found[name] = marker in field.value
    assert found == {
        "early": True,
        "after the sentence cap": False,
        "after 1 MB": False,
        "before 1 MB": True,
    }


async def test_documents_are_not_kept_between_notes(
    writer: Callable[[float], LocalNoteWriter],
) -> None:
    """Documents come with the note call and are read inside it: no job's text is parked in the
    writer (it once was, per job, bounded in count and size), so a later note sees none of it."""
    provider = writer(60.0)
    tpl = template({"id": "a", "name": "Allergies", "type": "array", "value": []})
    transcript = Transcript(provider="local", text="Doctor: Hello.")
    summary = Summary(provider="invox", output_format="SUMMARY", text="Knee pain.")
    referral = PreparedDocument("TXT", "d.txt", "text/plain", b"Allergies: penicillin rash.")
    [with_it] = await provider.write_note(job(), tpl, transcript, summary, [referral] * 3)
    [without] = await provider.write_note(job(), tpl, transcript, summary)
    assert with_it.value == ["Allergies: penicillin rash."]
    assert without.value == []


# --------------------------------------------------------------------------- (d) unchanged


async def test_normal_consultation_is_the_same_through_the_providers(
    summarizer: Callable[[float], LocalSummarizer],
    writer: Callable[[float], LocalNoteWriter],
) -> None:
    transcript = Transcript(provider="local", text=DIALOGUE)
    summary = await summarizer(60.0).summarize(job(), transcript)
    assert summary == summarize_text(DIALOGUE, "SUMMARY")
    tpl = template(
        enum_field(1, ["left", "right", "both"]),
        {"id": "m", "name": "Medications", "type": "array", "value": []},
    )
    fields = await writer(60.0).write_note(job(), tpl, transcript, summary)
    assert fields == fill_template(tpl, transcript, summary)


# --------------------------------------------------------------------------- settings


def test_budgets_are_settings() -> None:
    defaults = Settings.from_env({}).local
    assert (defaults.summary_budget_s, defaults.note_budget_s) == (60.0, 60.0)
    local = Settings.from_env(
        {"SCRIBE_LOCAL_SUMMARY_BUDGET_S": "2.5", "SCRIBE_LOCAL_NOTE_BUDGET_S": "30"}
    ).local
    assert (local.summary_budget_s, local.note_budget_s) == (2.5, 30.0)
    for variable in ("SCRIBE_LOCAL_SUMMARY_BUDGET_S", "SCRIBE_LOCAL_NOTE_BUDGET_S"):
        for wrong in ("0", "-1", "soon", "nan"):
            with pytest.raises(SettingsError, match=variable):
                Settings.from_env({variable: wrong})
