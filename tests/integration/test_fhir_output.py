"""The FHIR R4 output end to end: a job through every stage over the real RabbitMQ, against the
vendor emulator, whose job.completed carries a Bundle valid to both R4 validators; a job whose
FHIR references are malformed is dead-lettered at the door as invalidMessage."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest

from ops.sandbox import RunningSandbox
from schemas.errors import ErrorType
from schemas.jobs import ClinicalNoteField
from tests.fhir_r4 import Json, assert_valid_r4
from tests.harness import SAMPLE_TEMPLATE, make_job, running_worker, watching, worker_env
from worker.fhir import note_text

pytestmark = pytest.mark.broker

REFERENCES = {
    "patient": "Patient/example-1",
    "encounter": "Encounter/visit-42",
    "practitioner": "Practitioner/dr-7",
    "documentType": "11488-4",
}


def resources(bundle: Json, kind: str) -> list[Json]:
    found: list[Json] = [e["resource"] for e in bundle["entry"]]
    return [r for r in found if r["resourceType"] == kind]


def resource(bundle: Json, kind: str) -> Json:
    [match] = resources(bundle, kind)
    return match


async def test_a_completed_note_carries_a_valid_fhir_r4_bundle(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    job = make_job(
        audio_file,
        providers={"transcriber": "intron", "summarizer": "invox", "note": "invox"},
        template=SAMPLE_TEMPLATE,
        fhir=REFERENCES,
    )
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(job))

    assert outcome["type"] == "job.completed", outcome
    bundle = outcome["fhir"]
    assert_valid_r4(bundle)
    document, composition = resource(bundle, "DocumentReference"), resource(bundle, "Composition")
    assert document["docStatus"] == "preliminary"
    assert document["type"]["coding"][0]["code"] == "11488-4"
    assert document["subject"] == composition["subject"] == {"reference": "Patient/example-1"}
    assert composition["encounter"] == {"reference": "Encounter/visit-42"}
    assert document["author"][0] == {"reference": "Practitioner/dr-7"}
    # The attachment is the event's own note, field by field, and so are the sections.
    note = [ClinicalNoteField.model_validate(field) for field in outcome["clinicalNote"]]
    attachment = document["content"][0]["attachment"]
    assert base64.b64decode(attachment["data"]).decode() == note_text("Outpatient note", note)
    assert [s["title"] for s in composition["section"]] == [f.name for f in note]
    agents = resources(bundle, "Provenance")[0]["agent"]  # the note's own comes first
    assert [agent["who"]["display"] for agent in agents] == [
        "Intron Health speech and clinical AI API",
        "Invox Medical API",
        "Invox Medical API",
    ]
    assert {"code": "AIAST"}.items() <= document["meta"]["security"][0].items()
    # The note's evidence: a Provenance for the section of each field a segment supports.
    supported = {
        f"section-{index}"
        for index, field in enumerate(note)
        if any(e.supported and e.segment_ids for e in field.evidence or ())
    }
    targeted = {
        provenance["target"][0]["extension"][0]["valueUri"]
        for provenance in resources(bundle, "Provenance")[1:]
    }
    assert supported
    assert targeted == supported


async def test_a_summary_only_job_has_no_fhir_field(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    job = make_job(audio_file, fhir={"patient": "Patient/1"})  # no template: no note
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(job))
    assert outcome["type"] == "job.completed", outcome
    assert "fhir" not in outcome


@pytest.mark.parametrize(
    ("fhir", "field"),
    [
        pytest.param({"patient": "Patient/1 OR 1=1"}, "fhir.patient", id="pattern"),
        pytest.param({"encounter": "Encounter/" + "9" * 65}, "fhir.encounter", id="too-long"),
        pytest.param({"patient": "Patient/1", "name": "Jane Doe"}, "fhir.name", id="demographics"),
    ],
)
async def test_malformed_fhir_references_are_dead_lettered_as_invalid_message(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    fhir: Json,
    field: str,
) -> None:
    job_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "schemaVersion": 1,
            "jobId": job_id,
            "audio": {"path": str(audio_file), "mimeType": "audio/wav"},
            "template": SAMPLE_TEMPLATE,
            "fhir": fhir,
        }
    ).encode()
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        await watcher.publish(body, correlation_id=job_id)
        [dead] = await watcher.dead_letters(1)
        outcome = await watcher.outcome(job_id)
    assert dead.routing_key == f"transcribe.{ErrorType.INVALID_MESSAGE}"
    assert dead.body == body
    message = str(dead.headers["x-error-message"])
    assert message.startswith(field), message
    for value in fhir.values():
        assert value not in message
    assert outcome["type"] == "job.failed"
    assert outcome["errorType"] == ErrorType.INVALID_MESSAGE
    assert "Jane" not in json.dumps(outcome)
