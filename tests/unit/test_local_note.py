"""LocalNoteWriter: every IAPITemplate field type, enums only from options, missing -> empty."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from schemas.jobs import JobRequest, SoapField, Summary, Template, Transcript
from tests.unit.test_local_summary import DIALOGUE
from worker.providers.base import PreparedDocument
from worker.providers.local_note import LocalNoteWriter, fill_template
from worker.providers.local_summary import summarize_text

SAMPLE_TEMPLATE = Path(__file__).resolve().parents[2] / "ops" / "samples" / "template.json"


def template(*fields: dict[str, object]) -> Template:
    return Template.model_validate(
        {
            "id": "t1",
            "template_name": "Test",
            "template_language": "en",
            "fields": list(fields),
        }
    )


def job() -> JobRequest:
    return JobRequest.model_validate({"jobId": str(uuid.uuid4()), "audio": {"path": "/x.wav"}})


TRANSCRIPT = Transcript(provider="local", text=DIALOGUE)
SUMMARY = summarize_text(DIALOGUE, "SUMMARY")

EVERY_TYPE = template(
    {"id": "cc", "name": "Chief complaint", "type": "string", "value": ""},
    {"id": "age", "name": "Age", "type": "number", "value": 0},
    {"id": "numb", "name": "Numbness", "type": "boolean", "value": False},
    {"id": "swollen", "name": "Swelling", "type": "boolean", "value": False},
    {
        "id": "side",
        "name": "Side",
        "description": "Affected side",
        "type": "enum",
        "enumerableOptions": ["left", "right", "both"],
        "value": "",
    },
    {"id": "meds", "name": "Medications", "type": "array", "value": []},
    {"id": "plan", "name": "Plan", "type": "string", "value": ""},
    {"id": "hr", "name": "Heart rate", "type": "number", "value": 60},
    {"id": "smoker", "name": "Smoker", "type": "boolean", "value": False},
    {"id": "allergies", "name": "Allergies", "type": "array", "value": []},
    {
        "id": "sev",
        "name": "Severity",
        "type": "enum",
        "enumerableOptions": ["grade 1", "grade 2"],
        "value": "grade 1",
    },
    {"id": "family", "name": "Family history", "type": "string", "value": "placeholder"},
)


def test_fills_every_field_type_from_the_transcript() -> None:
    fields = {f.id: f for f in fill_template(EVERY_TYPE, TRANSCRIPT, SUMMARY)}
    assert list(fields) == [f.id for f in EVERY_TYPE.fields]  # same fields, same order
    assert fields["cc"].value == "Wrist pain."
    assert fields["age"].value == 52.0
    assert fields["numb"].value is False  # "any numbness or tingling?" "no."
    assert fields["swollen"].value is True
    assert fields["side"].value == "left"
    assert fields["side"].enumerable_options == ("left", "right", "both")
    meds = fields["meds"].value
    assert isinstance(meds, list)
    assert any("ibuprofen" in item for item in meds)
    assert isinstance(fields["plan"].value, str)
    assert "splint" in fields["plan"].value


def test_what_is_not_said_stays_empty() -> None:
    fields = {f.id: f for f in fill_template(EVERY_TYPE, TRANSCRIPT, SUMMARY)}
    assert fields["hr"].value == ""  # never the template's 60, never 0
    assert fields["smoker"].value == ""
    assert fields["allergies"].value == []
    assert fields["sev"].value == ""  # neither option is mentioned
    assert fields["family"].value == ""


def test_enum_gets_only_a_listed_option() -> None:
    options = ["mild", "moderate", "severe"]
    tpl = template(
        {
            "id": "s",
            "name": "Pain severity",
            "type": "enum",
            "enumerableOptions": options,
            "value": "",
        }
    )
    text = "[doctor] how bad is the pain ?\n[patient] the pain is severe , really severe .\n"
    [field] = fill_template(
        tpl,
        Transcript(provider="local", text=text),
        Summary(provider="invox", output_format="SUMMARY", text="Severe abdominal pain."),
    )
    assert field.value == "severe"
    tie = "[patient] it was mild at first and then moderate .\n"
    [field] = fill_template(
        tpl, Transcript(provider="local", text=tie), summarize_text(tie, "SUMMARY")
    )
    assert field.value in ("", *options)


def test_numbers_and_blood_pressure() -> None:
    text = (
        "[doctor] your blood pressure today is one twenty eight over seventy two and your "
        "heart rate is 64 .\n[patient] my pain is about a seven out of ten .\n"
    )
    tpl = template(
        {"id": "sys", "name": "Systolic blood pressure", "type": "number", "value": 0},
        {"id": "dia", "name": "Diastolic blood pressure", "type": "number", "value": 0},
        {"id": "hr", "name": "Heart rate", "type": "number", "value": 0},
        {"id": "pain", "name": "Pain score", "type": "number", "value": 0},
    )
    values = {
        f.id: f.value
        for f in fill_template(
            tpl, Transcript(provider="local", text=text), summarize_text(text, "SUMMARY")
        )
    }
    assert values == {"sys": 128.0, "dia": 72.0, "hr": 64.0, "pain": 7.0}


def test_soap_summary_from_another_provider_is_used() -> None:
    summary = Summary(
        provider="invox",
        output_format="SOAP_TEMPLATE",
        fields=(
            SoapField(name="Subjective", value="Cough for three days."),
            SoapField(name="Plan", value="Rest and fluids."),
        ),
    )
    tpl = template({"id": "p", "name": "Treatment plan", "type": "string", "value": ""})
    [field] = fill_template(tpl, Transcript(provider="local", text=""), summary)
    assert field.value == "Rest and fluids."


async def test_txt_documents_are_context_pdf_is_ignored() -> None:
    writer = LocalNoteWriter()
    request = job()
    documents = [
        PreparedDocument("TXT", "referral.txt", "text/plain", b"Allergies: penicillin rash."),
        PreparedDocument("PDF", "old.pdf", "application/pdf", b"%PDF-1.4 Smoker: yes"),
    ]
    tpl = template(
        {"id": "a", "name": "Allergies", "type": "array", "value": []},
        {"id": "s", "name": "Smoker", "type": "boolean", "value": False},
    )
    fields = await writer.write_note(request, tpl, TRANSCRIPT, SUMMARY, documents)
    assert fields[0].value == ["Allergies: penicillin rash."]
    assert fields[1].value == ""
    # The documents were for that call only: nothing is kept for a later one.
    again = await writer.write_note(request, tpl, TRANSCRIPT, SUMMARY)
    assert again[0].value == []


async def test_sample_template_is_valid_and_fills() -> None:
    tpl = Template.model_validate(json.loads(SAMPLE_TEMPLATE.read_text(encoding="utf-8")))
    assert {f.type for f in tpl.fields} == {"string", "number", "boolean", "enum", "array"}
    fields = await LocalNoteWriter().write_note(job(), tpl, TRANSCRIPT, SUMMARY)
    assert len(fields) == len(tpl.fields)
    for field in fields:
        if field.type == "enum":
            assert field.value in ("", *(field.enumerable_options or ()))
        if field.type == "array":
            assert isinstance(field.value, list)
