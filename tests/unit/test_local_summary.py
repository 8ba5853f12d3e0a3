# ruff: noqa: E501 - the test dialogues keep one turn per line
"""LocalSummarizer: both output formats, three input styles, and nothing not from the transcript."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from schemas.jobs import JobRequest, Summary, Transcript
from worker.providers.local_summary import (
    LocalSummarizer,
    clean,
    digits_for_numbers,
    parse_turns,
    summarize_text,
    to_third_person,
)

# Marker words no other note or dictionary would produce: they prove where a sentence came from.
DIALOGUE = "".join(
    line + "\n"
    for line in (
        "[doctor] hi , mr. quxley . how are you ?",
        "[patient] hi , doctor .",
        "[doctor] hey , dragon , zorblat quxley is a 52 year old male here for wrist pain . so tell me what happened .",
        "[patient] well , i , i fell off my zentrax bicycle last tuesday and landed on my left wrist .",
        "[patient] um , it has been swollen and it hurts when i twist it , you know , like opening jars .",
        "[doctor] okay . have you had any numbness or tingling ?",
        "[patient] no .",
        "[doctor] and are you taking anything for the pain ?",
        "[patient] i have been taking ibuprofen six hundred milligrams twice a day .",
        "[doctor] okay . let's go ahead and do a quick physical exam . on exam of your left wrist , there is tenderness over the snuffbox and mild swelling .",
        "[doctor] let's look at your x-ray . the x-ray of your left wrist shows no fracture .",
        "[doctor] so for my assessment and plan , i think you have a wrist sprain from the zentrax fall .",
        "[doctor] i want you to wear a splint for two weeks and continue the ibuprofen , and we will follow up in two weeks .",
        "[patient] okay , sounds good .",
    )
)
SPEAKER_LINES = "".join(
    line + "\n"
    for line in (
        "SPEAKER_01: Good morning. What brings you in today?",
        "SPEAKER_00: I have had a bad cough with green phlegm for five days, and my chest feels tight.",
        "SPEAKER_01: Any fever?",
        "SPEAKER_00: No.",
        "SPEAKER_01: Let me listen to your lungs. On exam there are crackles in the right lower lobe.",
        "SPEAKER_01: My impression is a right lower lobe pneumonia, so I will prescribe amoxicillin for seven days.",
    )
)
PLAIN = (
    "Patient is a 61 year old female presenting for follow up of hypertension. "
    "She has been taking lisinopril 20 mg daily and checks her blood pressure at home. "
    "On exam her blood pressure is 132 over 84 and her heart sounds are regular. "
    "The plan is to continue lisinopril and recheck labs in three months."
)

SECTION_HEADERS = {
    "CHIEF COMPLAINT",
    "HISTORY OF PRESENT ILLNESS",
    "REVIEW OF SYSTEMS",
    "PHYSICAL EXAMINATION",
    "RESULTS",
    "ASSESSMENT AND PLAN",
}
# Words the local path adds on its own: ROS and attribution verbs, pronouns, digits for spoken
# numbers, "mg".
REWRITE_WORDS = {"denies", "endorses", "reports", "he", "she", "his", "her", "him", "their", "them"}
REWRITE_WORDS |= {"the", "patient", "mg", "year", "old"}
# The review of systems by system (issue 16).
REWRITE_WORDS |= {"musculoskeletal", "neurological", "constitutional", "respiratory"}
REWRITE_WORDS |= {"cardiovascular"}


def job(output_format: str = "SUMMARY") -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"path": "/x.wav"},
            "summary": {"outputFormat": output_format, "outputLanguage": "en"},
        }
    )


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def assert_derived(output: str, transcript: str) -> None:
    """Every word of every sentence is a transcript word, a section name or a rewrite word."""
    allowed = words(transcript) | words(" ".join(SECTION_HEADERS)) | REWRITE_WORDS
    allowed |= {"has", "is", "was", "does", "not", "i"}
    for line in output.splitlines():
        if not line.strip() or line.strip() in SECTION_HEADERS:
            continue
        extra = {
            w
            for w in words(line) - allowed
            # third-person verb forms of transcript words: "twist" -> "twists", "try" -> "tries"
            if not ({w[:-1], w[:-2], w[:-3] + "y"} & words(transcript))
        }
        assert not extra, f"{line!r} has words not in the transcript: {extra}"


async def test_summary_from_doctor_patient_turns_is_a_sectioned_note() -> None:
    summary = await LocalSummarizer().summarize(job(), Transcript(provider="local", text=DIALOGUE))
    assert summary.provider == "local"
    assert summary.output_format == "SUMMARY"
    assert summary.fields is None
    text = summary.text or ""
    lines = text.splitlines()
    assert lines[0] == "CHIEF COMPLAINT"
    for header in ("HISTORY OF PRESENT ILLNESS", "PHYSICAL EXAMINATION", "ASSESSMENT AND PLAN"):
        assert header in lines
    assert "Wrist pain." in text
    assert "zentrax bicycle" in text  # the patient's own story
    assert "He fell off his zentrax bicycle" in text  # in third person
    assert "Denies numbness or tingling." in text  # review of systems from question + answer
    assert "52-year-old" in text
    assert "600 mg" in text  # spoken numbers as digits
    assert "snuffbox" in text
    assert "dragon" not in text.lower()  # voice-assistant commands are dropped
    assert " um" not in text
    assert "you know" not in text
    assert_derived(text, DIALOGUE)


async def test_soap_template_from_doctor_patient_turns() -> None:
    summary = await LocalSummarizer().summarize(
        job("SOAP_TEMPLATE"), Transcript(provider="local", text=DIALOGUE)
    )
    assert summary.output_format == "SOAP_TEMPLATE"
    assert summary.text is None
    fields = {f.name: f for f in summary.fields or ()}
    assert list(fields) == ["Subjective", "Objective", "Assessment", "Plan"]
    assert all(f.description for f in fields.values())
    assert "zentrax" in fields["Subjective"].value
    assert "snuffbox" in fields["Objective"].value
    assert "no fracture" in fields["Objective"].value
    assert "sprain" in fields["Assessment"].value + fields["Plan"].value
    assert "splint" in fields["Plan"].value
    for field in fields.values():
        assert_derived(field.value, DIALOGUE)
    # Round-trips as the wire model every provider returns.
    assert Summary.model_validate_json(summary.model_dump_json(by_alias=True)) == summary


@pytest.mark.parametrize("output_format", ["SUMMARY", "SOAP_TEMPLATE"])
def test_plain_text_and_speaker_lines(output_format: str) -> None:
    for transcript, marker in ((PLAIN, "lisinopril"), (SPEAKER_LINES, "crackles")):
        summary = summarize_text(transcript, output_format)  # type: ignore[arg-type]
        text = summary.text or " ".join(f.value for f in summary.fields or ())
        assert marker in text
        assert_derived(text, transcript)


def test_speaker_lines_first_speaker_is_the_clinician() -> None:
    turns = parse_turns(SPEAKER_LINES)
    assert [t.role for t in turns[:2]] == ["doctor", "patient"]
    text = summarize_text(SPEAKER_LINES, "SUMMARY").text or ""
    assert "Denies fever." in text
    assert "amoxicillin" in text


def test_empty_transcript_gives_an_empty_note() -> None:
    assert summarize_text("", "SUMMARY").text == ""
    fields = summarize_text("", "SOAP_TEMPLATE").fields or ()
    assert [f.value for f in fields] == ["", "", "", ""]


def test_cleaning_and_person() -> None:
    # The comma before a filler goes with it (issue 16: no stray commas where "uh" was).
    # "just" is spoken scaffolding (issue 16) and goes too.
    assert clean("i , i just feel , uh , tired .") == "i feel tired."
    assert clean("it does n't help , okay ?") == "it does not help."
    assert to_third_person("i feel bloated and my legs hurt", "i", "male") == (
        "he feels bloated and his legs hurt"
    )
    assert to_third_person("we sent you for therapy", "you", "female") == (
        "we sent her for therapy"
    )
    assert digits_for_numbers("about two weeks , forty milligrams") == "about 2 weeks , 40 mg"
    assert digits_for_numbers("the right one") == "the right one"


def test_sample_transcript_file_summarizes(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "ops" / "samples" / "consultation.txt"
    text = summarize_text(sample.read_text(encoding="utf-8"), "SUMMARY").text or ""
    assert "finger" in text
