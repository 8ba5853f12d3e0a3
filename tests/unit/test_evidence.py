"""Evidence (issue 16): the local providers record which transcript segments each sentence
rests on; other providers' output is aligned to the transcript, and a sentence nothing in the
transcript carries stays, flagged unsupported."""

from __future__ import annotations

from pathlib import Path

from schemas.jobs import ClinicalNoteField, Summary, Template, Transcript, TranscriptSegment
from tests.unit.test_local_summary import DIALOGUE
from worker.evidence import (
    SegmentMap,
    align,
    content_stems,
    note_with_evidence,
    statement_spans,
    summary_with_evidence,
)
from worker.providers import local_note, local_summary

SAMPLES = Path(__file__).resolve().parents[2] / "ops" / "samples"


def _cited_text(segmap: SegmentMap, ids: tuple[int, ...]) -> str:
    return " ".join(segmap.segments[i].text for i in ids)


def test_pseudo_segments_are_lines_split_at_sentence_ends() -> None:
    text = "[doctor] hi . how are you ?\n\n[patient] my knee hurts.it is bad . since monday\n"
    segmap = SegmentMap.of(Transcript(provider="local", text=text))
    assert segmap.pseudo
    assert [s.text for s in segmap.segments] == [
        "[doctor] hi .",
        "how are you ?",
        "[patient] my knee hurts.it is bad .",
        "since monday",
    ]
    for segment in segmap.segments:
        assert text[segment.char_start : segment.char_end] == segment.text
        assert segment.start_s is None


def test_every_local_summary_sentence_has_its_source_segments() -> None:
    transcript = Transcript(provider="local", text=DIALOGUE)
    segmap = SegmentMap.of(transcript)
    summary = local_summary.summarize_text(DIALOGUE, "SUMMARY")
    assert summary.text
    assert summary.evidence
    sentences = [summary.text[a:b] for a, b in statement_spans(summary.text)]
    assert len(summary.evidence) == len(sentences)
    for evidence, sentence in zip(summary.evidence, sentences, strict=True):
        assert evidence.text_start is not None
        assert evidence.text_end is not None
        assert summary.text[evidence.text_start : evidence.text_end] == sentence
        assert evidence.supported
        assert evidence.segment_ids
        cited = set(content_stems(_cited_text(segmap, evidence.segment_ids)))
        words = content_stems(sentence)
        assert sum(w in cited for w in words) >= len(words) / 2, sentence
    wrist = next(
        e for e in summary.evidence if "zentrax bicycle" in summary.text[e.text_start : e.text_end]
    )
    assert "zentrax bicycle" in _cited_text(segmap, wrist.segment_ids)
    # The review of systems rests on the question and its answer.
    denies = next(
        e for e in summary.evidence if "Denies" in summary.text[e.text_start : e.text_end]
    )
    assert "numbness" in _cited_text(segmap, denies.segment_ids)
    assert "[patient] no ." in _cited_text(segmap, denies.segment_ids)


def test_timed_segments_give_times_and_soap_fields_carry_evidence() -> None:
    lines = [line for line in DIALOGUE.splitlines() if line]
    segments = tuple(
        TranscriptSegment(start=10.0 * i, end=10.0 * i + 8, text=line)
        for i, line in enumerate(lines)
    )
    transcript = Transcript(provider="local", text="\n".join(lines), segments=segments)
    summary = local_summary.summarize_text(
        transcript.text, "SOAP_TEMPLATE", segmap=SegmentMap.of(transcript)
    )
    assert summary.fields
    plan = next(f for f in summary.fields if f.name == "Plan")
    assert plan.value
    assert plan.evidence
    splint = next(e for e in plan.evidence if "splint" in plan.value[e.text_start : e.text_end])
    assert splint.segment_ids == (12,)
    assert (splint.start, splint.end) == (120.0, 128.0)


def test_local_note_fields_carry_evidence() -> None:
    template = Template.model_validate_json((SAMPLES / "template.json").read_text("utf-8"))
    transcript = Transcript(provider="local", text=DIALOGUE)
    summary = local_summary.summarize_text(DIALOGUE, "SUMMARY")
    fields = local_note.fill_template(template, transcript, summary)
    filled = [f for f in fields if f.value not in ("", [])]
    assert len(filled) >= 5
    for field in filled:
        assert field.evidence, field.name
        assert all(e.supported for e in field.evidence), field.name
        if isinstance(field.value, list):
            assert {e.item for e in field.evidence} == set(range(len(field.value)))
    for field in fields:
        if field.value in ("", []):
            assert field.evidence == ()


def test_a_vendor_summary_is_aligned_and_an_invented_sentence_flagged() -> None:
    transcript = Transcript(provider="local", text=DIALOGUE)
    segmap = SegmentMap.of(transcript)
    text = (
        "HISTORY OF PRESENT ILLNESS\n"
        "The patient fell off his Zentrax bicycle last Tuesday and landed on his left wrist.\n"
        "He takes ibuprofen 600 mg twice a day.\n"
        "He has a history of appendectomy in Portugal.\n\n"
        "PLAN\n- Splint for 2 weeks and follow up in 2 weeks."
    )
    summary = Summary(provider="invox", output_format="SUMMARY", text=text)
    aligned = summary_with_evidence(summary, transcript)
    assert aligned.evidence is not None
    shown = [(text[e.text_start : e.text_end], e) for e in aligned.evidence]
    assert next(s for s, _ in shown).startswith("The patient fell")
    assert len(shown) == 4  # headers are not statements
    fell, ibuprofen, invented, splint = (e for _, e in shown)
    assert "zentrax bicycle" in _cited_text(segmap, fell.segment_ids)
    assert "ibuprofen six hundred" in _cited_text(segmap, ibuprofen.segment_ids)
    assert not invented.supported
    assert invented.segment_ids == ()
    assert invented.start is None
    assert "splint" in _cited_text(segmap, splint.segment_ids)
    # Recorded evidence is kept as it is.
    assert summary_with_evidence(aligned, transcript) is aligned


def test_alignment_prefers_transcript_order_on_a_tie() -> None:
    text = "[patient] my knee hurts .\n[doctor] ok .\n[patient] my knee hurts .\n"
    segmap = SegmentMap.of(Transcript(provider="local", text=text))
    first, second = align(["Knee hurts.", "Knee hurts."], segmap)
    assert first.segment_ids == (0,)
    assert second.segment_ids in {(0,), (2,)}


def test_note_fields_of_another_writer_are_aligned() -> None:
    transcript = Transcript(provider="local", text=DIALOGUE)
    fields = (
        ClinicalNoteField(id="m", name="Medications", type="array", value=["Ibuprofen 600 mg."]),
        ClinicalNoteField(
            id="s", name="Side", type="enum", enumerable_options=("left", "right"), value="left"
        ),
        ClinicalNoteField(id="x", name="Allergies", type="string", value=""),
    )
    meds, side, empty = note_with_evidence(fields, transcript)
    assert meds.evidence
    assert meds.evidence[0].item == 0
    assert meds.evidence[0].supported
    assert side.evidence
    assert side.evidence[0].text_start is None
    assert empty.evidence == ()


def test_a_title_does_not_end_a_statement() -> None:
    text = "Dr. Brooks saw Mrs. Smith. She has knee pain."
    assert [text[a:b] for a, b in statement_spans(text)] == [
        "Dr. Brooks saw Mrs. Smith.",
        "She has knee pain.",
    ]
