"""The clinical note as a FHIR R4 (4.0.1) Bundle, for EHR integrations (README "FHIR R4 output").

Pure functions, no I/O: the note stage calls `note_bundle` and the Bundle goes out as the `fhir`
field of job.completed (schemaRevision 2). The Bundle is of type `collection`, not `document`:
a FHIR document is an attested, immutable record that SHALL carry every resource its
Composition references (the Patient, the Encounter, the Practitioner), while this note is
unsigned (docStatus preliminary) and names those resources only by reference, never by
demographics. What it holds:

- a DocumentReference (US Core clinical-note practice): the job's LOINC type (default 11506-3,
  progress note), category clinical-note, docStatus preliminary, the note as a base64 text/plain
  attachment;
- a Composition: the structured note, one section per template field (Invox templates have no
  field groups), each section's narrative the field's value;
- a Provenance for both (HL7 AI Transparency on FHIR): the transcriber, the summarizer and the
  note writer as agents, each a Device in the Bundle;
- the note's evidence (issue 16): per field with a supported statement, a Provenance whose target
  is that field's section (the targetElement extension) and whose entities are the transcript
  segments each statement cites;
- one Device per provider.

DocumentReference, Composition and the Bundle carry the AIAST security label (v3
ObservationValue, "Artificial Intelligence asserted") in meta.security. Every id is a UUID
derived from the jobId and the resource's role, so a redelivery builds the same ids; the times
are the `issued` instant (the event's occurredAt). The subject, encounter and author are the
job's `fhir` references, when given.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from schemas.jobs import ClinicalNoteField, Evidence, FhirDocumentType, FhirOptions, JobRequest

Json = dict[str, Any]

# Ids: uuid5(FHIR_NAMESPACE, "<jobId>/<role>"); a fixed namespace of this project's own.
FHIR_NAMESPACE: Final = uuid.UUID("7008e436-b32c-42fe-aebf-da36c3c3ffe5")

LOINC: Final = "http://loinc.org"
DOCUMENT_TYPES: Final[dict[FhirDocumentType, str]] = {
    "11506-3": "Progress note",
    "34117-2": "History and physical note",
    "11488-4": "Consult note",
    "28570-0": "Procedure note",
}
AI_ASSERTED: Final[Json] = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}
CLINICAL_NOTE_CATEGORY: Final[Json] = {
    "coding": [
        {
            "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
            "code": "clinical-note",
            "display": "Clinical Note",
        }
    ]
}
# The element of a target a Provenance is about (a core extension, in R4 through the extensions
# package): here the Composition section of one note field.
TARGET_ELEMENT: Final = "http://hl7.org/fhir/StructureDefinition/targetElement"
_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_XHTML = "http://www.w3.org/1999/xhtml"
NOTE_CONTENT_TYPE: Final = "text/plain; charset=utf-8"

# Who each provider is, as a Device: (deviceName, manufacturer).
PROVIDER_DEVICES: Final[dict[str, tuple[str, str | None]]] = {
    "intron": ("Intron Health speech and clinical AI API", "Intron Health"),
    "invox": ("Invox Medical API", "Invox Medical"),
    "local": ("Scribe worker offline models (speech recognition, summary, note)", None),
    "llm": ("Scribe worker LLM endpoint (SCRIBE_LLM_BASE_URL)", None),
}

# FHIR strings are non-empty, and neither FHIR nor XHTML takes C0 controls other than tab, LF
# and CR: each becomes a space (lone surrogates never get this far: the wire models refuse them).
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(text: str, fallback: str) -> str:
    text = _CONTROLS.sub(" ", text)
    return text if text.strip() else fallback


def resource_id(job_id: str, role: str) -> str:
    return str(uuid.uuid5(FHIR_NAMESPACE, f"{job_id}/{role}"))


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _urn(resource: Json) -> str:
    return f"urn:uuid:{resource['id']}"


def _ref(resource: Json, display: str | None = None) -> Json:
    ref: Json = {"reference": _urn(resource), "type": resource["resourceType"]}
    if display is not None:
        ref["display"] = display
    return ref


def value_lines(field: ClinicalNoteField) -> list[str]:
    """A field's value as lines of text: list items one a line, yes/no, numbers as JSON."""
    value = field.value
    if isinstance(value, bool):
        return ["yes" if value else "no"]
    if isinstance(value, float):
        return [str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)]
    if isinstance(value, list):
        return [line for item in value if (line := _clean(item, "").strip())]
    return [line for raw in value.splitlines() if (line := _clean(raw, "").strip())]


def field_title(field: ClinicalNoteField) -> str:
    """The field's name, as its section's title and its heading in the attachment."""
    return _clean(field.name, _clean(field.id, "Field"))


def note_text(title: str, note: Sequence[ClinicalNoteField]) -> str:
    """The note as the attachment's plain text: the title, then each field's name and value."""
    parts = [title]
    for field in note:
        lines = value_lines(field)
        bullet = "- " if isinstance(field.value, list) else ""
        body = "\n".join(bullet + line for line in lines) or "(no content)"
        parts.append(f"{field_title(field)}:\n{body}")
    return "\n\n".join(parts) + "\n"


def _narrative(field: ClinicalNoteField) -> str:
    lines = [html.escape(line, quote=False) for line in value_lines(field)]
    if not lines:
        inner = "<p>No content.</p>"
    elif isinstance(field.value, list):
        inner = "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>"
    else:
        inner = "".join(f"<p>{line}</p>" for line in lines)
    return f'<div xmlns="{_XHTML}">{inner}</div>'


def section_id(index: int) -> str:
    return f"section-{index}"


def _section(index: int, field: ClinicalNoteField) -> Json:
    section: Json = {
        "id": section_id(index),
        "title": field_title(field),
        "text": {"status": "generated", "div": _narrative(field)},
    }
    if not value_lines(field):
        section["emptyReason"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
                    "code": "unavailable",
                    "display": "Unavailable",
                }
            ]
        }
    return section


def _devices(job_id: str, providers: Sequence[str]) -> dict[str, Json]:
    devices: dict[str, Json] = {}
    for provider in dict.fromkeys(providers):
        name, manufacturer = PROVIDER_DEVICES.get(provider, (f"{provider} provider", None))
        device: Json = {
            "resourceType": "Device",
            "id": resource_id(job_id, f"Device/{provider}"),
            "deviceName": [{"name": name, "type": "user-friendly-name"}],
            "type": {"text": "AI clinical documentation service"},
        }
        if manufacturer is not None:
            device["manufacturer"] = manufacturer
        devices[provider] = device
    return devices


def _job_identifier(job: JobRequest) -> Json:
    """The job this note came from (one note per job), for correlation with the job's events."""
    return {"type": {"text": "jobId"}, "value": str(job.job_id)}


def _document_type(code: FhirDocumentType) -> Json:
    display = DOCUMENT_TYPES[code]
    return {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display}


def _authors(options: FhirOptions, writer: Json) -> list[Json]:
    authors = [{"reference": options.practitioner}] if options.practitioner else []
    return [*authors, _ref(writer)]


def _document_reference(
    job: JobRequest, options: FhirOptions, text: str, title: str, writer: Json, issued: str
) -> Json:
    data = text.encode("utf-8")
    attachment: Json = {
        "contentType": NOTE_CONTENT_TYPE,
        "data": base64.b64encode(data).decode("ascii"),
        "size": len(data),
        "hash": base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode(),
        "title": title,
        "creation": issued,
    }
    resource: Json = {
        "resourceType": "DocumentReference",
        "id": resource_id(str(job.job_id), "DocumentReference"),
        "meta": {"security": [AI_ASSERTED]},
        "identifier": [_job_identifier(job)],
        "status": "current",
        "docStatus": "preliminary",
        "type": _document_type(options.document_type),
        "category": [CLINICAL_NOTE_CATEGORY],
        "date": issued,
        "author": _authors(options, writer),
        "description": "AI-generated clinical note, not yet reviewed or signed by a clinician",
        "content": [{"attachment": attachment}],
    }
    if job.note_language is not None:
        resource["language"] = job.note_language
        attachment["language"] = job.note_language
    if options.patient:
        resource["subject"] = {"reference": options.patient}
    if options.encounter:
        resource["context"] = {"encounter": [{"reference": options.encounter}]}
    return resource


def _composition(
    job: JobRequest,
    options: FhirOptions,
    note: Sequence[ClinicalNoteField],
    title: str,
    writer: Json,
    issued: str,
) -> Json:
    resource: Json = {
        "resourceType": "Composition",
        "id": resource_id(str(job.job_id), "Composition"),
        "meta": {"security": [AI_ASSERTED]},
        "identifier": _job_identifier(job),
        "status": "preliminary",
        "type": _document_type(options.document_type),
        "category": [CLINICAL_NOTE_CATEGORY],
        "date": issued,
        "author": _authors(options, writer),
        "title": title,
        "section": [_section(index, field) for index, field in enumerate(note)],
    }
    if job.note_language is not None:
        resource["language"] = job.note_language
    if options.patient:
        resource["subject"] = {"reference": options.patient}
    if options.encounter:
        resource["encounter"] = {"reference": options.encounter}
    return resource


def _agent(device: Json, participant: str, role: str) -> Json:
    return {
        "type": {"coding": [{"system": _PARTICIPANT_TYPE, "code": participant}]},
        "role": [{"text": role}],
        "who": _ref(device, device["deviceName"][0]["name"]),
    }


def _provenance(job_id: str, targets: Sequence[Json], agents: Sequence[Json], issued: str) -> Json:
    return {
        "resourceType": "Provenance",
        "id": resource_id(job_id, "Provenance"),
        "target": [_ref(target) for target in targets],
        "recorded": issued,
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": "CREATE",
                    "display": "create",
                }
            ]
        },
        "agent": list(agents),
        "entity": [
            {"role": "derivation", "what": {"display": "transcript of the consultation"}},
            {"role": "derivation", "what": {"display": "summary of the consultation"}},
        ],
    }


def _cited(evidence: Evidence) -> str:
    segments = ", ".join(str(segment) for segment in evidence.segment_ids)
    span = ""
    if evidence.start is not None and evidence.end is not None:
        span = f" ({evidence.start:.1f} s to {evidence.end:.1f} s)"
    return f"transcript segments {segments} of job.completed{span}"


def _evidence_provenance(
    job_id: str, index: int, composition: Json, writer: Json, field: ClinicalNoteField, issued: str
) -> Json | None:
    """Where a note field's statements rest in the transcript (the evidence of issue 16): a
    Provenance whose target is the field's section (the targetElement extension names it) and
    whose entities are the transcript segments each supported statement cites. A statement no
    segment supports cites none; job.completed's evidence flags it."""
    cited = [e for e in field.evidence or () if e.supported and e.segment_ids]
    if not cited:
        return None
    target = _ref(composition)
    target["extension"] = [{"url": TARGET_ELEMENT, "valueUri": section_id(index)}]
    return {
        "resourceType": "Provenance",
        "id": resource_id(job_id, f"Provenance/evidence/{index}"),
        "target": [target],
        "recorded": issued,
        "agent": [_agent(writer, "author", "clinical note")],
        "entity": [{"role": "source", "what": {"display": _cited(e)}} for e in cited],
    }


def note_bundle(
    job: JobRequest,
    transcriber: str,
    summarizer: str,
    note: Sequence[ClinicalNoteField],
    issued: datetime,
) -> Json:
    """The note as a FHIR R4 Bundle (type collection); see the module's docstring."""
    job_id = str(job.job_id)
    options = job.fhir or FhirOptions()
    when = _instant(issued)
    title = _clean(job.template.template_name, "Clinical note") if job.template else "Clinical note"
    devices = _devices(job_id, (transcriber, summarizer, job.providers.note))
    writer = devices[job.providers.note]
    document = _document_reference(job, options, note_text(title, note), title, writer, when)
    composition = _composition(job, options, note, title, writer, when)
    agents = [
        _agent(devices[transcriber], "assembler", "transcription"),
        _agent(devices[summarizer], "assembler", "summary"),
        _agent(writer, "author", "clinical note"),
    ]
    provenance = _provenance(job_id, (document, composition), agents, when)
    evidence = [
        _evidence_provenance(job_id, index, composition, writer, field, when)
        for index, field in enumerate(note)
    ]
    cited = [resource for resource in evidence if resource is not None]
    resources = [document, composition, provenance, *cited, *devices.values()]
    bundle_id = resource_id(job_id, "Bundle")
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "meta": {"security": [AI_ASSERTED]},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{bundle_id}"},
        "type": "collection",
        "timestamp": when,
        "entry": [{"fullUrl": _urn(resource), "resource": resource} for resource in resources],
    }
