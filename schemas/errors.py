"""The errorType catalogue: every value a dead letter or a job.failed event can carry.

Vendor-documented values keep the vendors' spelling; the rest are ours, in the same camelCase.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    # Documented by Invox Medical (400 / 404 bodies).
    INVALID_REQUEST_BODY = "invalidRequestBody"
    INCONSISTENT_INPUT = "inconsistentInput"
    INVALID_API_VERSION_FOR_ENDPOINT = "invalidApiVersionForEndpoint"
    SUMMARY_IS_REQUIRED = "summaryIsRequired"
    TEMPLATE_IS_REQUIRED = "templateIsRequired"
    INVALID_TEMPLATE = "invalidTemplate"
    INVALID_LANGUAGE = "invalidLanguage"
    INVALID_OUTPUT_FORMAT = "invalidOutputFormat"
    MISSING_OUTPUT_LANGUAGE = "missingOutputLanguage"
    TRANSCRIPTION_NOT_FOUND = "transcriptionNotFound"
    # Ours.
    INVALID_MESSAGE = "invalidMessage"
    CONFLICTING_JOB = "conflictingJob"
    UNSUPPORTED_SCHEMA_VERSION = "unsupportedSchemaVersion"
    PROVIDER_NOT_CONFIGURED = "providerNotConfigured"
    INCOMPATIBLE_PROVIDERS = "incompatibleProviders"
    URL_NOT_ALLOWED = "urlNotAllowed"
    AUDIO_UNAVAILABLE = "audioUnavailable"
    UNSUPPORTED_AUDIO = "unsupportedAudio"
    FILE_TOO_LARGE = "fileTooLarge"
    AUDIO_TOO_LONG = "audioTooLong"
    DOCUMENT_UNAVAILABLE = "documentUnavailable"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    BAD_REQUEST = "badRequest"
    RATE_LIMITED = "rateLimited"
    UPSTREAM_UNAVAILABLE = "upstreamUnavailable"
    UPSTREAM_TIMEOUT = "upstreamTimeout"
    CONNECTION_FAILED = "connectionFailed"
    MALFORMED_RESPONSE = "malformedResponse"
    TRANSCRIPTION_FAILED = "transcriptionFailed"
    TRANSCRIPTION_TIMED_OUT = "transcriptionTimedOut"
    UNKNOWN_VENDOR_STATUS = "unknownVendorStatus"
    NO_SPEECH = "noSpeech"
    TRANSCRIPT_TOO_LARGE = "transcriptTooLarge"
    TEMPLATE_TOO_LARGE = "templateTooLarge"
    SUMMARY_TIMED_OUT = "summaryTimedOut"
    NOTE_TIMED_OUT = "noteTimedOut"
    PATH_NOT_ALLOWED = "pathNotAllowed"
    UNTRUSTED_HANDLE = "untrustedHandle"
    UPLOAD_OUTCOME_UNKNOWN = "uploadOutcomeUnknown"
    DELIVERY_LIMIT_EXCEEDED = "deliveryLimitExceeded"
    LEDGER_UNAVAILABLE = "ledgerUnavailable"
    PAYLOAD_UNDECRYPTABLE = "payloadUndecryptable"
    INTERNAL_ERROR = "internalError"


_VENDOR_DOCUMENTED = frozenset(
    {
        ErrorType.INVALID_REQUEST_BODY,
        ErrorType.INCONSISTENT_INPUT,
        ErrorType.INVALID_API_VERSION_FOR_ENDPOINT,
        ErrorType.SUMMARY_IS_REQUIRED,
        ErrorType.TEMPLATE_IS_REQUIRED,
        ErrorType.INVALID_TEMPLATE,
        ErrorType.INVALID_LANGUAGE,
        ErrorType.INVALID_OUTPUT_FORMAT,
        ErrorType.MISSING_OUTPUT_LANGUAGE,
        ErrorType.TRANSCRIPTION_NOT_FOUND,
    }
)

ERROR_CATALOGUE: dict[ErrorType, str] = {
    ErrorType.INVALID_REQUEST_BODY: "Invox rejected the request body (400).",
    ErrorType.INCONSISTENT_INPUT: "Invox found the request fields inconsistent (400).",
    ErrorType.INVALID_API_VERSION_FOR_ENDPOINT: (
        "The configured Invox API version does not serve this endpoint (400)."
    ),
    ErrorType.SUMMARY_IS_REQUIRED: "Invox clinical-note call had no summary (400).",
    ErrorType.TEMPLATE_IS_REQUIRED: "Invox clinical-note call had no template (400).",
    ErrorType.INVALID_TEMPLATE: "The IAPITemplate is not valid for Invox (400).",
    ErrorType.INVALID_LANGUAGE: "The requested language is not supported (400).",
    ErrorType.INVALID_OUTPUT_FORMAT: "outputFormat is not SUMMARY or SOAP_TEMPLATE (400).",
    ErrorType.MISSING_OUTPUT_LANGUAGE: "The summary request had no outputLanguage (400).",
    ErrorType.TRANSCRIPTION_NOT_FOUND: "Invox does not know the transcription requestId (404).",
    ErrorType.INVALID_MESSAGE: "The message is not valid JSON or does not match its schema.",
    ErrorType.CONFLICTING_JOB: (
        "A job whose jobId was already done with other content (no job.failed: that job stands)."
    ),
    ErrorType.UNSUPPORTED_SCHEMA_VERSION: "The message's schemaVersion is not one we read.",
    ErrorType.PROVIDER_NOT_CONFIGURED: "The job names a provider this worker has no settings for.",
    ErrorType.INCOMPATIBLE_PROVIDERS: (
        "The job's providers cannot work together (Intron's summary needs Intron's transcript)."
    ),
    ErrorType.URL_NOT_ALLOWED: "A URL failed the fetch policy (scheme, private address, host).",
    ErrorType.AUDIO_UNAVAILABLE: "The audio could not be read or downloaded.",
    ErrorType.UNSUPPORTED_AUDIO: (
        "The audio is not WAV, FLAC, MP3, M4A/AAC, Ogg or WebM, or it is corrupt or truncated."
    ),
    ErrorType.FILE_TOO_LARGE: (
        "The audio or a document exceeds its size limit "
        "(SCRIBE_MAX_AUDIO_BYTES, SCRIBE_MAX_DOCUMENT_BYTES)."
    ),
    ErrorType.AUDIO_TOO_LONG: (
        "The audio is longer than the job maximum (SCRIBE_MAX_JOB_AUDIO_S, 2 hours by default)."
    ),
    ErrorType.DOCUMENT_UNAVAILABLE: "A supporting document could not be read or downloaded.",
    ErrorType.UNAUTHORIZED: "The vendor refused our credentials, even after one token refresh.",
    ErrorType.FORBIDDEN: "The vendor account lacks the permission (403 without an errorType).",
    ErrorType.BAD_REQUEST: "The vendor answered 4xx without a documented errorType.",
    ErrorType.RATE_LIMITED: "The vendor kept answering 429 until attempts ran out.",
    ErrorType.UPSTREAM_UNAVAILABLE: "The vendor kept answering 5xx until attempts ran out.",
    ErrorType.UPSTREAM_TIMEOUT: "The vendor kept timing out until attempts ran out.",
    ErrorType.CONNECTION_FAILED: "The vendor could not be reached until attempts ran out.",
    ErrorType.MALFORMED_RESPONSE: "The vendor answered with a body we cannot parse.",
    ErrorType.TRANSCRIPTION_FAILED: "The vendor reported the transcription as failed.",
    ErrorType.TRANSCRIPTION_TIMED_OUT: "The transcription was still pending at the poll deadline.",
    ErrorType.UNKNOWN_VENDOR_STATUS: "The vendor sent a status we do not know (not polled again).",
    ErrorType.NO_SPEECH: "The transcript has no words (a recording of silence, say).",
    ErrorType.TRANSCRIPT_TOO_LARGE: (
        "The transcript is over the size a summary or note may read (5 MB)."
    ),
    ErrorType.TEMPLATE_TOO_LARGE: (
        "The template has more options per field, or longer options, than the note writer reads."
    ),
    ErrorType.SUMMARY_TIMED_OUT: "The local summary did not finish within its time budget.",
    ErrorType.NOTE_TIMED_OUT: "The local note did not finish within its time budget.",
    ErrorType.PATH_NOT_ALLOWED: "A storage path is malformed (NUL, '..') or outside the root.",
    ErrorType.UNTRUSTED_HANDLE: (
        "A poll message's vendor handle was not issued by this worker for this job."
    ),
    ErrorType.UPLOAD_OUTCOME_UNKNOWN: (
        "An earlier delivery started a paid upload and never learnt its outcome; "
        "SCRIBE_INTRON_REDELIVERY=dead-letter leaves the choice to a person."
    ),
    ErrorType.DELIVERY_LIMIT_EXCEEDED: (
        "The broker dead-lettered a message redelivered too often (a crash loop)."
    ),
    ErrorType.LEDGER_UNAVAILABLE: "Redis (the job ledger) did not answer; the message waits.",
    ErrorType.PAYLOAD_UNDECRYPTABLE: (
        "An encrypted body whose key id is not configured (SCRIBE_PAYLOAD_KEYS), or that fails "
        "its authentication tag (wrong key, altered body or headers)."
    ),
    ErrorType.INTERNAL_ERROR: "A bug in the worker; the message is kept for replay.",
}


def is_documented_by_vendor(error_type: str) -> bool:
    return error_type in _VENDOR_DOCUMENTED
