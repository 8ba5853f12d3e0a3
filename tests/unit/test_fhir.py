"""worker/fhir.py: the note as a FHIR R4 Bundle, validated by two independent R4 validators.

Which validators and why (tests/fhir_r4.py): fhirclient 4.4, whose models are generated from
FHIR 4.0.1 (fhir.resources 8.x ships R5, R4B and STU3 models, no R4; its R4 line, 6.x, is built
on pydantic 1), and the official R4 JSON Schema, fhir.schema.json, from an npm package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
from fhirclient.models.fhirabstractbase import FHIRValidationError
from fhirclient.models.fhirelementfactory import FHIRElementFactory
from pydantic import ValidationError

from schemas.base import describe_validation_error
from schemas.jobs import ClinicalNoteField, Evidence, FhirDocumentType, FhirOptions, JobRequest
from tests.fhir_r4 import Json, assert_valid_r4, schema_errors
from tests.harness import SAMPLE_TEMPLATE
from worker.codec import parse_message
from worker.errors import InvalidMessage
from worker.fhir import AI_ASSERTED, DOCUMENT_TYPES, note_bundle, note_text

ISSUED = datetime(2026, 12, 1, 13, 30, 5, 250000, tzinfo=UTC)
REFERENCES = {
    "patient": "Patient/pat-123",
    "encounter": "Encounter/enc.9",
    "practitioner": "Practitioner/77",
}
NOTE = (
    ClinicalNoteField(id="f1", name="Chief complaint", type="string", value="Knee pain\nleft"),
    ClinicalNoteField(id="f2", name="Pain score", type="number", value=6.0),
    ClinicalNoteField(id="f3", name="Follow-up needed", type="boolean", value=True),
    ClinicalNoteField(
        id="f4", name="Side", type="enum", enumerable_options=("left", "right"), value="left"
    ),
    ClinicalNoteField(id="f5", name="Medications", type="array", value=["ibuprofen", "ice"]),
    ClinicalNoteField(id="f6", name="Allergies", type="string", value=""),
)


def make(job_id: str | None = None, **extra: Any) -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": job_id or str(uuid.uuid4()),
            "audio": {"path": "/data/visit.wav"},
            "providers": {"transcriber": "intron", "summarizer": "invox", "note": "invox"},
            "template": SAMPLE_TEMPLATE,
            **extra,
        }
    )


def build(job: JobRequest, issued: datetime = ISSUED, note: Any = NOTE) -> Json:
    return note_bundle(job, job.providers.transcriber, job.providers.summarizer, note, issued)


def resources(bundle: Json, kind: str) -> list[Json]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def one(bundle: Json, kind: str) -> Json:
    [resource] = resources(bundle, kind)
    return resource


# --- validity -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="no-references"),
        pytest.param({"fhir": REFERENCES}, id="all-references"),
        pytest.param({"fhir": {"patient": "Patient/1"}, "noteLanguage": "pt-BR"}, id="patient"),
        pytest.param(
            {"providers": {"transcriber": "local", "summarizer": "local", "note": "local"}},
            id="one-provider",
        ),
        pytest.param(
            {"providers": {"transcriber": "invox", "summarizer": "llm", "note": "llm"}}, id="llm"
        ),
        *[
            pytest.param({"fhir": {"documentType": code}}, id=code)
            for code in ("11506-3", "34117-2", "11488-4", "28570-0")
        ],
    ],
)
def test_every_resource_is_valid_r4(extra: Json) -> None:
    bundle = build(make(**extra))
    assert_valid_r4(bundle)
    kinds = [entry["resource"]["resourceType"] for entry in bundle["entry"]]
    assert kinds[:3] == ["DocumentReference", "Composition", "Provenance"]
    assert set(kinds[3:]) == {"Device"}
    assert bundle["type"] == "collection"


def test_the_validators_refuse_what_r4_does_not_say() -> None:
    """Both checks can fail: a missing required element, an element only R5 defines, an
    unknown one, a wrong type. R4's JSON Schema requires complex elements only (a primitive may
    stand as its _extension twin) and gives its backbone elements no "type", so a missing status
    and R5's list-shaped context are fhirclient's to refuse."""
    document = one(build(make(fhir=REFERENCES)), "DocumentReference")
    no_content = {k: v for k, v in document.items() if k != "content"}
    r5_attester = {**document, "attester": [{"mode": {"text": "legal"}}]}
    unknown = {**document, "modality": "text"}
    bad_label = {**document, "meta": {"security": [{"code": 7}]}}
    for broken in (no_content, r5_attester, unknown, bad_label):
        assert schema_errors(broken, "DocumentReference") != []
        with pytest.raises(FHIRValidationError):
            FHIRElementFactory.instantiate("DocumentReference", broken)
    no_status = {k: v for k, v in document.items() if k != "status"}
    r5_context = {**document, "context": [{"reference": "Encounter/enc.9"}]}
    for broken in (no_status, r5_context):
        with pytest.raises(FHIRValidationError):
            FHIRElementFactory.instantiate("DocumentReference", broken)


def test_hostile_text_still_makes_valid_fhir_and_xhtml() -> None:
    note = (
        ClinicalNoteField(id="a", name="\x0b", type="string", value="<b>x</b> & \x00\x1f \x7f"),
        ClinicalNoteField(id="b", name="List", type="array", value=["", " ", "<li>"]),
        ClinicalNoteField(id="c", name="Big", type="number", value=1e300),
    )
    bundle = build(make(), note=note)
    assert_valid_r4(bundle)
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", json.dumps(bundle, ensure_ascii=False))
    sections = one(bundle, "Composition")["section"]
    assert [s["title"] for s in sections] == ["a", "List", "Big"]
    assert note_text("T", note).startswith("T\n\na:\n<b>x</b> &")
    for section in sections:
        div = ElementTree.fromstring(section["text"]["div"])
        assert div.tag == "{http://www.w3.org/1999/xhtml}div"
    assert "&lt;b&gt;x&lt;/b&gt; &amp;" in sections[0]["text"]["div"]
    assert "<li>&lt;li&gt;</li>" in sections[1]["text"]["div"]


# --- what the resources say ---------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(DOCUMENT_TYPES))
def test_document_type_is_the_jobs_loinc_code(code: FhirDocumentType) -> None:
    bundle = build(make(fhir={"documentType": code}))
    for kind in ("DocumentReference", "Composition"):
        [coding] = one(bundle, kind)["type"]["coding"]
        assert coding == {
            "system": "http://loinc.org",
            "code": code,
            "display": DOCUMENT_TYPES[code],
        }


def test_the_default_is_a_progress_note_awaiting_signature() -> None:
    bundle = build(make())
    document, composition = one(bundle, "DocumentReference"), one(bundle, "Composition")
    assert document["type"]["coding"][0]["code"] == "11506-3"
    assert document["docStatus"] == "preliminary"
    assert document["status"] == "current"
    assert composition["status"] == "preliminary"
    category = document["category"][0]["coding"][0]
    assert (category["code"], category["system"]) == (
        "clinical-note",
        "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
    )
    assert document["date"] == composition["date"] == "2026-12-01T13:30:05.250Z"


def test_ai_generated_content_carries_the_aiast_label() -> None:
    bundle = build(make())
    assert AI_ASSERTED == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "AIAST",
        "display": "Artificial Intelligence asserted",
    }
    for labelled in (bundle, one(bundle, "DocumentReference"), one(bundle, "Composition")):
        assert AI_ASSERTED in labelled["meta"]["security"]


def test_the_provenance_names_each_provider_that_produced_the_note() -> None:
    bundle = build(make(providers={"transcriber": "intron", "summarizer": "llm", "note": "invox"}))
    by_url = {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"]}
    provenance = one(bundle, "Provenance")
    targets = {by_url[target["reference"]]["resourceType"] for target in provenance["target"]}
    assert targets == {"DocumentReference", "Composition"}
    agents = {
        agent["role"][0]["text"]: by_url[agent["who"]["reference"]]["deviceName"][0]["name"]
        for agent in provenance["agent"]
    }
    assert agents == {
        "transcription": "Intron Health speech and clinical AI API",
        "summary": "Scribe worker LLM endpoint (SCRIBE_LLM_BASE_URL)",
        "clinical note": "Invox Medical API",
    }
    assert len(resources(bundle, "Device")) == 3
    codes = [agent["type"]["coding"][0]["code"] for agent in provenance["agent"]]
    assert codes == ["assembler", "assembler", "author"]


def test_every_bundle_internal_reference_resolves() -> None:
    bundle = build(make(fhir=REFERENCES))
    urls = {entry["fullUrl"] for entry in bundle["entry"]}
    internal = re.findall(r'"reference": "(urn:uuid:[^"]+)"', json.dumps(bundle))
    assert internal
    assert set(internal) <= urls


def test_references_appear_only_when_the_job_gives_them() -> None:
    bare = build(make())
    text = json.dumps(bare)
    for name in ("Patient/", "Encounter/", "Practitioner/", '"subject"', '"encounter"'):
        assert name not in text
    document, composition = one(bare, "DocumentReference"), one(bare, "Composition")
    assert "context" not in document
    [author] = composition["author"]
    assert author["type"] == "Device"

    full = build(make(fhir=REFERENCES))
    document, composition = one(full, "DocumentReference"), one(full, "Composition")
    for resource in (document, composition):
        assert resource["subject"] == {"reference": "Patient/pat-123"}
        assert resource["author"][0] == {"reference": "Practitioner/77"}
        assert resource["author"][1]["type"] == "Device"
    assert document["context"] == {"encounter": [{"reference": "Encounter/enc.9"}]}
    assert composition["encounter"] == {"reference": "Encounter/enc.9"}


def test_ids_derive_from_the_job_so_a_redelivery_builds_the_same_ones() -> None:
    job_id = str(uuid.uuid4())

    def ids(bundle: Json) -> list[str]:
        return [bundle["id"]] + [e["fullUrl"] for e in bundle["entry"]]

    first = build(make(job_id))
    again = build(make(job_id), issued=ISSUED + timedelta(minutes=5))
    other = build(make())
    assert ids(first) == ids(again)
    assert set(ids(first)).isdisjoint(ids(other))
    assert len(set(ids(first))) == len(ids(first))
    for entry in first["entry"]:
        assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
        assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", entry["resource"]["id"])
    assert one(first, "DocumentReference")["identifier"] == [
        {"type": {"text": "jobId"}, "value": job_id}
    ]
    assert json.dumps(build(make(job_id))) == json.dumps(first)  # pure: same input, same bytes


def test_the_attachment_is_the_note_as_plain_text() -> None:
    bundle = build(make(noteLanguage="en"))
    attachment = one(bundle, "DocumentReference")["content"][0]["attachment"]
    data = base64.b64decode(attachment["data"], validate=True)
    assert attachment["contentType"] == "text/plain; charset=utf-8"
    assert attachment["size"] == len(data)
    assert base64.b64decode(attachment["hash"]) == hashlib.sha1(data).digest()
    assert attachment["language"] == "en"
    text = data.decode("utf-8")
    assert text == note_text("Outpatient note", NOTE)
    assert text.startswith("Outpatient note\n\nChief complaint:\nKnee pain\nleft\n\n")
    assert "Pain score:\n6\n" in text
    assert "Follow-up needed:\nyes\n" in text
    assert "Medications:\n- ibuprofen\n- ice\n" in text
    assert "Allergies:\n(no content)\n" in text


def test_one_section_per_template_field() -> None:
    sections = one(build(make()), "Composition")["section"]
    assert [section["title"] for section in sections] == [field.name for field in NOTE]
    assert "<p>Knee pain</p><p>left</p>" in sections[0]["text"]["div"]
    assert "<ul><li>ibuprofen</li><li>ice</li></ul>" in sections[4]["text"]["div"]
    assert [("emptyReason" in section) for section in sections] == [False] * 5 + [True]


def test_no_demographics_travel() -> None:
    """The EHR's resources are named by reference only: none of them is in the Bundle, and no
    element that carries demographics appears anywhere in it."""
    bundle = build(make(fhir=REFERENCES))
    kinds = {entry["resource"]["resourceType"] for entry in bundle["entry"]}
    assert kinds == {"DocumentReference", "Composition", "Provenance", "Device"}
    keys = set(re.findall(r'"([A-Za-z]+)": ', json.dumps(bundle)))
    assert keys.isdisjoint({"birthDate", "gender", "address", "telecom", "photo", "qualification"})
    references = re.findall(r'"reference": "((?!urn:uuid:)[^"]+)"', json.dumps(bundle))
    assert set(references) == set(REFERENCES.values())


# --- the job's fhir object ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("patient", "Patient/"),
        ("patient", "Patient/1 OR 1=1"),
        ("patient", "Patient/1\n"),
        ("patient", "Patient/" + "a" * 65),
        ("patient", "Patient/1/_history/2"),
        ("patient", "https://ehr.example/Patient/1"),
        ("patient", "Practitioner/1"),
        ("patient", "patient/1"),
        ("patient", {"reference": "Patient/1"}),
        ("encounter", "Encounter/é"),
        ("practitioner", "Practitioner/../x"),
        ("documentType", "18842-5"),
        ("name", "Jane Doe"),
        ("birthDate", "1950-11-15"),
    ],
)
def test_malformed_fhir_options_are_an_invalid_message(field: str, value: Any) -> None:
    body = make().model_dump(by_alias=True, exclude_none=True, mode="json")
    body["fhir"] = {field: value}
    with pytest.raises(InvalidMessage) as raised:
        parse_message(JobRequest, json.dumps(body).encode())
    message = str(raised.value)
    assert message.startswith(f"invalidMessage: fhir.{field}")
    if isinstance(value, str) and len(value) > 3:
        assert value not in message  # named by field, never by value


def test_fhir_options_are_optional_and_round_trip() -> None:
    job = make(fhir=REFERENCES | {"documentType": "11488-4"})
    assert job.fhir == FhirOptions(**REFERENCES, document_type="11488-4")
    assert parse_message(JobRequest, job.to_wire()) == job
    assert make().fhir is None
    with pytest.raises(ValidationError) as raised:
        FhirOptions.model_validate({"patient": "Patient/1", "gender": "female"})
    assert describe_validation_error(raised.value) == "gender: extra_forbidden"


def test_evidence_becomes_provenance_of_the_fields_section() -> None:
    cites = Evidence(
        text_start=0, text_end=9, segment_ids=(0, 1), start=0.0, end=4.5, supported=True
    )
    listed = Evidence(item=0, segment_ids=(2,), supported=True)
    unsupported = Evidence(item=1, supported=False)
    note = (
        NOTE[0].model_copy(update={"evidence": (cites,)}),
        NOTE[1].model_copy(update={"evidence": (Evidence(supported=False),)}),
        NOTE[4].model_copy(update={"evidence": (listed, unsupported)}),
        NOTE[5],
    )
    bundle = build(make(), note=note)
    assert_valid_r4(bundle)
    composition = one(bundle, "Composition")
    sections = {section["id"]: section["title"] for section in composition["section"]}
    provenances = resources(bundle, "Provenance")
    assert len(provenances) == 3  # the note's own, then one per field with a supported statement
    cited = {}
    for provenance in provenances[1:]:
        [target] = provenance["target"]
        assert target["reference"] == f"urn:uuid:{composition['id']}"
        [element] = target["extension"]
        assert element["url"] == "http://hl7.org/fhir/StructureDefinition/targetElement"
        cited[sections[element["valueUri"]]] = [e["what"]["display"] for e in provenance["entity"]]
        assert {e["role"] for e in provenance["entity"]} == {"source"}
    assert cited == {
        "Chief complaint": ["transcript segments 0, 1 of job.completed (0.0 s to 4.5 s)"],
        "Medications": ["transcript segments 2 of job.completed"],
    }
    job_id = str(uuid.uuid4())
    first, again = build(make(job_id), note=note), build(make(job_id), note=note)
    assert [p["id"] for p in resources(first, "Provenance")] == [
        p["id"] for p in resources(again, "Provenance")
    ]
