"""The job request an upstream system publishes, and the message each later stage consumes.

Every stage message embeds the original job, so a dead letter can be replayed on its own.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from schemas.base import NO_NEWLINE, SchemaVersion, WireDatetime, WireInt, WireModel, WireUuid

TranscriberName = Literal["intron", "invox", "local"]
SummarizerName = Literal["intron", "invox", "local", "llm"]
NoteProviderName = Literal["invox", "local", "llm"]
OutputFormat = Literal["SUMMARY", "SOAP_TEMPLATE"]
NoteLanguage = Literal["es", "en", "ca", "pt-BR", "pt-PT"]
# Who a transcript segment's speaker is in the consultation (schemaRevision 2).
SpeakerRole = Literal["clinician", "patient", "other", "unknown"]
IntronCategory = Literal[
    "file_category_general",
    "file_category_telehealth",
    "file_category_procedure",
    "file_category_call_center",
]
IntronPostProcessing = Literal[
    "get_summary",
    "get_entity_list",
    "get_treatment_plan",
    "get_soap_note",
    "get_clerking",
    "get_op_note",
    "get_icd_codes",
    "get_suggestions",
    "get_call_center_results",
    "get_call_center_agent_score",
    "get_call_center_product_insights",
]
# Titled where they sit in an array or an optional: an enum there is anonymous to generators.
_TitledPostProcessing = Annotated[IntronPostProcessing, Field(title="IntronPostProcessing")]
_TitledNoteLanguage = Annotated[NoteLanguage, Field(title="NoteLanguage")]
ShortText = Annotated[str, Field(min_length=1, max_length=512)]
LanguageCode = Annotated[
    str,
    Field(
        min_length=2,
        max_length=16,
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        json_schema_extra=NO_NEWLINE,
    ),
]


def _located_by(member: str) -> dict[str, Any]:
    return {
        "title": f"By{member.capitalize()}",
        "required": [member],
        "properties": {member: {"type": "string"}},
    }


class BlobRef(WireModel):
    """Where the worker reads bytes from: an https URL or a path under its storage root."""

    # Exactly one of the two, as a schema says it (null counts as absent, as in the model).
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [_located_by("url"), _located_by("path")]}
    )

    url: Annotated[str, Field(max_length=4096)] | None = None
    path: Annotated[str, Field(max_length=4096)] | None = None

    @model_validator(mode="after")
    def _exactly_one_location(self) -> BlobRef:
        if (self.url is None) == (self.path is None):
            raise ValueError("give exactly one of url or path")
        return self


class AudioRef(BlobRef):
    mime_type: ShortText | None = None
    file_name: ShortText | None = None


class DocumentRef(BlobRef):
    document_type: Literal["PDF", "TXT"]
    document_name: ShortText


class Providers(WireModel):
    transcriber: TranscriberName = "intron"
    summarizer: SummarizerName = "invox"
    note: NoteProviderName = "invox"


class SummaryOptions(WireModel):
    output_format: OutputFormat = "SUMMARY"
    output_language: LanguageCode = "en"


class IntronOptions(WireModel):
    upload_mode: Literal["auto", "url", "file"] = "auto"
    use_diarization: bool = True
    category: IntronCategory = "file_category_telehealth"
    post_processing: tuple[_TitledPostProcessing, ...] = ()
    # Which post-processing output becomes the summary when summarizer is "intron".
    summary_source: Literal["get_summary", "get_soap_note", "get_clerking"] = "get_summary"


# FHIR output (schemaRevision 2, worker/fhir.py): the LOINC document types a note can be filed
# as (US Core clinical notes a consultation can produce), and references to resources the
# receiving EHR already holds: a relative reference "<Type>/<id>" with a FHIR id (1 to 64 of
# A-Z a-z 0-9 - .), nothing else. No names, birth dates or other demographics travel.
FhirDocumentType = Literal["11506-3", "34117-2", "11488-4", "28570-0"]


def _fhir_reference(resource_type: str) -> Any:
    return Field(
        min_length=len(resource_type) + 2,
        max_length=len(resource_type) + 65,
        pattern=rf"^{resource_type}/[A-Za-z0-9.\-]{{1,64}}$",
        json_schema_extra=NO_NEWLINE,
    )


PatientReference = Annotated[str, _fhir_reference("Patient")]
EncounterReference = Annotated[str, _fhir_reference("Encounter")]
PractitionerReference = Annotated[str, _fhir_reference("Practitioner")]


class FhirOptions(WireModel):
    """Where the FHIR document of the note belongs: references only (schemaRevision 2)."""

    patient: PatientReference | None = None
    encounter: EncounterReference | None = None
    practitioner: PractitionerReference | None = None
    # LOINC document type of the DocumentReference and the Composition (default progress note).
    document_type: Annotated[FhirDocumentType, Field(title="FhirDocumentType")] = "11506-3"


class TemplateField(WireModel):
    """One field of an Invox IAPITemplate (APITemplateField)."""

    id: ShortText
    name: ShortText
    description: Annotated[str, Field(max_length=4096)] = ""
    type: Literal["string", "number", "array", "boolean", "enum"]
    enumerable_options: tuple[str, ...] | None = None
    value: str | list[str] | float | bool = ""


class Template(WireModel):
    """An Invox IAPITemplate; field names keep Invox's snake_case spelling."""

    id: ShortText
    template_name: ShortText = Field(alias="template_name")
    template_description: str = Field(default="", alias="template_description")
    template_language: ShortText = Field(alias="template_language")
    fields: tuple[TemplateField, ...] = Field(min_length=1, max_length=200)


class JobRequest(WireModel):
    """Published by upstream systems to <prefix>.jobs with routing key "transcribe"."""

    schema_version: SchemaVersion = 1
    job_id: WireUuid
    consultation_session_id: ShortText | None = None
    audio: AudioRef
    providers: Providers = Providers()
    summary: SummaryOptions = SummaryOptions()
    template: Template | None = None
    note_language: _TitledNoteLanguage | None = None
    documents: tuple[DocumentRef, ...] = Field(default=(), max_length=20)
    intron: IntronOptions = IntronOptions()
    submitted_at: WireDatetime | None = None
    fhir: FhirOptions | None = None

    @property
    def session_id(self) -> str:
        return self.consultation_session_id or str(self.job_id)

    @property
    def intron_post_processing(self) -> tuple[IntronPostProcessing, ...]:
        """What to ask Intron for: the job's options, plus the output named by summarySource
        when Intron writes the summary (a job need not repeat it in postProcessing)."""
        needed: tuple[IntronPostProcessing, ...] = ()
        if self.providers.summarizer == "intron":
            needed = (self.intron.summary_source,)
        return tuple(dict.fromkeys((*self.intron.post_processing, *needed)))

    def provider_conflict(self) -> str | None:
        """Why this job's providers cannot work together on any worker, or None.

        Not a validator: the worker refuses such a job at its door with the errorType
        incompatibleProviders (not invalidMessage: the message is well-formed), and the JSON
        Schema, which states the shape only, keeps the parser's verdict. The reason names
        fields, never values a sender chose."""
        if self.providers.summarizer == "intron" and self.providers.transcriber != "intron":
            return (
                "providers.summarizer 'intron' needs providers.transcriber 'intron': Intron's "
                "summary comes with its transcript"
            )
        return None


class TranscriptionHandle(WireModel):
    """A vendor's id for a transcription in progress. In a poll message it carries the worker's
    signature (HMAC-SHA256 over jobId, provider, handle and submittedAt, worker/handles.py):
    a handle without it, or with one made for another job, is refused as untrustedHandle."""

    provider: TranscriberName
    handle: ShortText
    submitted_at: WireDatetime
    signature: ShortText | None = None


class TranscriptSegment(WireModel):
    start: float
    end: float
    text: str
    speaker: str | None = None
    # Filled by the worker on every segment it emits (schemaRevision 2); absent in older events.
    role: Annotated[SpeakerRole, Field(title="SpeakerRole")] | None = None


class Transcript(WireModel):
    provider: TranscriberName
    text: str
    segments: tuple[TranscriptSegment, ...] = ()
    duration_s: float | None = None
    # Intron post-processing outputs (Markdown), keyed by the option that asked for them.
    post_processing: dict[str, str] = Field(default_factory=dict)


class Evidence(WireModel):
    """Where one statement of a summary or note rests in the transcript (schemaRevision 2).

    The statement is located in the text it belongs to (the summary's text, a SOAP field's value,
    a note field's value, or one item of an array value) by character offsets [textStart,
    textEnd); both are absent for a number, boolean or enum value (the evidence is the whole
    value's). segmentIds are 0-based indexes into transcript.segments; when the transcript has no
    segments they index its pseudo-segments: transcript.text split into non-empty lines, each
    line split after every run of '.', '?' or '!' followed by white space (worker/evidence.py).
    start/end are the seconds the cited segments span (absent for pseudo-segments and untimed
    segments). supported is false when no segment of the transcript carries the statement's
    content words: the statement stays in the note, flagged."""

    item: WireInt | None = None
    text_start: WireInt | None = None
    text_end: WireInt | None = None
    segment_ids: tuple[WireInt, ...] = ()
    start: float | None = None
    end: float | None = None
    supported: bool


class SoapField(WireModel):
    name: str
    description: str = ""
    value: str
    evidence: tuple[Evidence, ...] | None = None


class Summary(WireModel):
    provider: SummarizerName
    output_format: OutputFormat
    text: str | None = None
    fields: tuple[SoapField, ...] | None = None
    # The evidence of the sentences of text (SOAP fields carry their own).
    evidence: tuple[Evidence, ...] | None = None


class ClinicalNoteField(WireModel):
    id: str
    name: str
    description: str = ""
    type: Literal["string", "number", "array", "boolean", "enum"]
    enumerable_options: tuple[str, ...] | None = None
    value: str | list[str] | float | bool
    evidence: tuple[Evidence, ...] | None = None


class StageEnvelope(WireModel):
    """The envelope of every later stage's message: the job, whole, so it replays on its own."""

    schema_version: SchemaVersion = 1
    job_id: WireUuid
    job: JobRequest

    @model_validator(mode="after")
    def _same_job(self) -> StageEnvelope:
        if self.job.job_id != self.job_id:
            raise ValueError("jobId differs from job.jobId")
        return self


class ChunkProgress(WireModel):
    """Where a long recording's transcription is (worker/chunking.py): chunk `index` (from 0) of
    `count`, spanning [startS, endS) seconds of the recording, and the transcript of the chunks
    before it, already stitched (absent for the first chunk). The worker checks that the values
    agree with each other, with the x-chunk header and with the recording's own split."""

    index: WireInt
    count: WireInt
    start_s: float
    end_s: float
    so_far: Transcript | None = None


class PollState(WireModel):
    """What a poll message carries besides the job (and, for a chunk, where it is)."""

    transcription: TranscriptionHandle
    chunks: ChunkProgress | None = None


class ChunkState(WireModel):
    """What the transcribe message of a chunk after the first carries besides the job."""

    chunks: ChunkProgress


class SummarizeState(WireModel):
    transcript: Transcript


class NoteState(WireModel):
    transcript: Transcript
    summary: Summary


# The wire messages: the envelope's fields first, then the stage's state.
class PollMessage(PollState, StageEnvelope):
    pass


class SummarizeMessage(SummarizeState, StageEnvelope):
    pass


class NoteMessage(NoteState, StageEnvelope):
    pass


class ChunkMessage(ChunkState, StageEnvelope):
    pass


STAGE_MESSAGE_TYPES: dict[type[WireModel], type[StageEnvelope]] = {
    PollState: PollMessage,
    SummarizeState: SummarizeMessage,
    NoteState: NoteMessage,
    ChunkState: ChunkMessage,
}
